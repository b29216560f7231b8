"""Evaluate any frame -> frame function on blur/sharp pairs (no torch here): PSNR/SSIM per scene
and overall, next to the blurry input's own PSNR/SSIM, and side-by-side PNGs."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from ..errors import DatasetError
from .quality import psnr, ssim


def read_image(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image {str(path)!r}: missing, unreadable or not an image; check the file")
    return img


def evaluate_pairs(
    fn: Callable[[np.ndarray], np.ndarray],
    pairs: Iterable[tuple[str, str, str]],
    save_dir: str | None = None,
    save_count: int = 3,
    with_ssim: bool = True,
    reset: Callable[[], None] | None = None,
) -> dict:
    """``pairs``: (scene, blur_path, sharp_path), frames of a scene in order. ``fn`` maps a BGR uint8
    frame to a BGR uint8 frame; ``reset`` (e.g. a recurrent model's state reset) is called at the
    start of every scene."""
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
        out = fn(blur)
        row = {
            "psnr": psnr(out, sharp),
            "input_psnr": psnr(blur, sharp),
        }
        if with_ssim:
            row["ssim"] = ssim(out, sharp)
            row["input_ssim"] = ssim(blur, sharp)
        per_scene.setdefault(scene, []).append(row)
        if save_dir is not None and saved < save_count:
            d = Path(save_dir)
            d.mkdir(parents=True, exist_ok=True)
            panel = np.concatenate([blur, out, sharp], axis=1)
            name = f"{scene}_{Path(bpath).stem}.png".replace("/", "_")
            cv2.imwrite(str(d / name), panel)
            saved += 1
    if not per_scene:
        raise DatasetError("no pairs to evaluate; check the data folder and the scene filter")
    keys = list(next(iter(per_scene.values()))[0])
    scenes = {s: {k: float(np.mean([r[k] for r in rows])) for k in keys} | {"pairs": len(rows)} for s, rows in per_scene.items()}
    allrows = [r for rows in per_scene.values() for r in rows]
    result = {k: float(np.mean([r[k] for r in allrows])) for k in keys}
    result["psnr_gain"] = result["psnr"] - result["input_psnr"]
    result["pairs"] = len(allrows)
    result["scenes"] = scenes
    return result
