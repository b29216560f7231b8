"""Evaluate any frame -> frame function on blur/sharp pairs (no torch here): PSNR, SSIM and
tone-aligned PSNR per scene and overall, next to the blurry input's own, and side-by-side PNGs."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from ..errors import DatasetError
from .quality import psnr, ssim
from .tone import tone_aligned_psnr


def read_image(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image {str(path)!r}: missing, unreadable or not an image; check the file")
    return img


def center_crop(img: np.ndarray, crop: tuple[int, int] | None, path="") -> np.ndarray:
    """The centre ``crop`` = (width, height) of ``img``; DatasetError when the frame is smaller."""
    if crop is None:
        return img
    w, h = int(crop[0]), int(crop[1])
    H, W = img.shape[:2]
    if w > W or h > H:
        raise DatasetError(f"validation crop {w}x{h} is larger than the frame {str(path)!r} ({W}x{H}); "
                           f"use a crop of at most {W}x{H}, or full frames (crop: [])")
    y, x = (H - h) // 2, (W - w) // 2
    return img[y:y + h, x:x + w]


def evaluate_pairs(
    fn: Callable[[np.ndarray], np.ndarray],
    pairs: Iterable[tuple[str, str, str]],
    save_dir: str | None = None,
    save_count: int = 3,
    with_ssim: bool = True,
    reset: Callable[[], None] | None = None,
    with_tone: bool = True,
    crop: tuple[int, int] | None = None,
    save_prefix: str = "",
) -> dict:
    """``pairs``: (scene, blur_path, sharp_path), frames of a scene in order. ``fn`` maps a BGR uint8
    frame to a BGR uint8 frame; ``reset`` (e.g. a recurrent model's state reset) is called at the
    start of every scene. ``crop`` = (width, height) evaluates the centre of every frame only.
    ``with_tone`` adds the tone-aligned PSNR of output and input (metrics/tone.py)."""
    per_scene: "OrderedDict[str, list]" = OrderedDict()
    saved = 0
    current = None
    for scene, bpath, spath in pairs:
        if scene != current and reset is not None:
            reset()
        current = scene
        blur = read_image(bpath)
        sharp = read_image(spath)
        if blur.shape != sharp.shape:
            raise DatasetError(f"size mismatch: {bpath} is {blur.shape[1]}x{blur.shape[0]}, {spath} is {sharp.shape[1]}x{sharp.shape[0]}")
        blur, sharp = center_crop(blur, crop, bpath), center_crop(sharp, crop, spath)
        out = fn(blur)
        row = {
            "psnr": psnr(out, sharp),
            "input_psnr": psnr(blur, sharp),
        }
        if with_ssim:
            row["ssim"] = ssim(out, sharp)
            row["input_ssim"] = ssim(blur, sharp)
        if with_tone:
            row["tone_psnr"] = tone_aligned_psnr(out, sharp)
            row["input_tone_psnr"] = tone_aligned_psnr(blur, sharp)
        per_scene.setdefault(scene, []).append(row)
        if save_dir is not None and saved < save_count:
            d = Path(save_dir)
            d.mkdir(parents=True, exist_ok=True)
            panel = np.concatenate([blur, out, sharp], axis=1)
            name = f"{save_prefix}{scene}_{Path(bpath).stem}.png".replace("/", "_")
            cv2.imwrite(str(d / name), panel)
            saved += 1
    if not per_scene:
        raise DatasetError("no pairs to evaluate; check the data folder and the scene filter")
    keys = list(next(iter(per_scene.values()))[0])
    scenes = {s: _gains({k: float(np.mean([r[k] for r in rows])) for k in keys}) | {"pairs": len(rows)}
              for s, rows in per_scene.items()}
    allrows = [r for rows in per_scene.values() for r in rows]
    result = _gains({k: float(np.mean([r[k] for r in allrows])) for k in keys})
    result["pairs"] = len(allrows)
    result["scenes"] = scenes
    return result


def _gains(m: dict) -> dict:
    """Add ``psnr_gain``, ``ssim_gain`` and ``tone_gain`` (output minus input) where both are there."""
    for gain, out, inp in (("psnr_gain", "psnr", "input_psnr"), ("ssim_gain", "ssim", "input_ssim"),
                           ("tone_gain", "tone_psnr", "input_tone_psnr")):
        if out in m and inp in m:
            m[gain] = m[out] - m[inp]
    return m
