"""Evaluate any frame -> frame function on blur/sharp pairs (no torch here): PSNR, SSIM and
tone-aligned PSNR per frame, per scene and overall, next to the blurry input's own, a
temporal-consistency error over consecutive frames (``temporal_error``), and side-by-side PNGs."""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from ..errors import DatasetError, InputError, SinkWriteError
from .quality import psnr, ssim, to_float01
from .tone import tone_aligned_psnr


def temporal_error(prev_out: np.ndarray, out: np.ndarray, prev_ref: np.ndarray, ref: np.ndarray) -> float:
    """Flicker of a sequence against its ground truth, between two consecutive frames: the mean
    absolute difference between the output's frame-to-frame change and the ground truth's, in
    8-bit levels (0..255). 0 when the output changes exactly as the truth does (a perfect output,
    or one off by a constant); it grows with flicker, and with motion the output gets wrong."""
    a, b, c, d = (to_float01(np.asarray(v)) for v in (prev_out, out, prev_ref, ref))
    if not a.shape == b.shape == c.shape == d.shape:
        raise DatasetError(f"temporal error needs four frames of one size, got {a.shape}, {b.shape}, {c.shape}, {d.shape}")
    return float(np.mean(np.abs((b - a) - (d - c))) * 255.0)


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


# a frame equal to its sharp partner counts as 100 dB: an infinite PSNR would make every mean and
# gain of its set inf or -inf (and --json invalid)
PSNR_CAP = 100.0


def _frame_number(path) -> int | None:
    """The integer a frame's file name ends with (``00000012.png``, ``GOPR0385_11_01-003016.png``)."""
    m = re.search(r"(\d+)$", Path(path).stem)
    return int(m.group(1)) if m else None


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
    temporal: bool = True,
    consecutive: bool = True,
) -> dict:
    """``pairs``: (scene, blur_path, sharp_path), frames of a scene in order. ``fn`` maps a BGR uint8
    frame to a BGR uint8 frame; ``reset`` (e.g. a recurrent model's state reset) is called at the
    start of every scene. ``crop`` = (width, height) evaluates the centre of every frame only.
    ``with_tone`` adds the tone-aligned PSNR of output and input (metrics/tone.py). With ``temporal``
    (and consecutive frames in a scene, as in REDS) each scene also gets ``temporal_error`` (see
    :func:`temporal_error`, lower is better) for the output and ``input_temporal_error`` for the
    blurry input; every frame's figures are in ``scenes[name]["frames"]``. ``consecutive=False``
    (frames that are unrelated images) resets before every frame and takes no temporal pairs."""
    if save_dir is not None and save_count > 0:
        check_save_dir(save_dir)
    per_scene: "OrderedDict[str, list]" = OrderedDict()
    temporal_rows: "OrderedDict[str, list]" = OrderedDict()
    saved = 0
    current = None
    prev = None
    number = None
    for scene, bpath, spath in pairs:
        n = _frame_number(bpath)
        # a new scene, or a gap in a scene's frame numbers (GoPro's test frames are picked out of
        # their videos): the frames are not consecutive, so no state or temporal pair spans them
        if scene != current or not consecutive or (n is not None and number is not None and n != number + 1):
            if reset is not None:
                reset()
            prev = None
        current, number = scene, n
        blur = read_image(bpath)
        sharp = read_image(spath)
        if blur.shape != sharp.shape:
            raise DatasetError(f"size mismatch: {bpath} is {blur.shape[1]}x{blur.shape[0]}, {spath} is {sharp.shape[1]}x{sharp.shape[0]}")
        blur, sharp = center_crop(blur, crop, bpath), center_crop(sharp, crop, spath)
        out = fn(blur)
        row = {
            "psnr": min(psnr(out, sharp), PSNR_CAP),
            "input_psnr": min(psnr(blur, sharp), PSNR_CAP),
        }
        if with_ssim:
            row["ssim"] = ssim(out, sharp)
            row["input_ssim"] = ssim(blur, sharp)
        if with_tone:
            row["tone_psnr"] = min(tone_aligned_psnr(out, sharp), PSNR_CAP)
            row["input_tone_psnr"] = min(tone_aligned_psnr(blur, sharp), PSNR_CAP)
        per_scene.setdefault(scene, []).append(row)
        if temporal and prev is not None and prev[0].shape == out.shape:
            temporal_rows.setdefault(scene, []).append({
                "temporal_error": temporal_error(prev[0], out, prev[2], sharp),
                "input_temporal_error": temporal_error(prev[1], blur, prev[2], sharp),
            })
        prev = (out, blur, sharp)
        row["name"] = Path(bpath).name
        if save_dir is not None and saved < save_count:
            panel = np.concatenate([blur, out, sharp], axis=1)
            name = f"{save_prefix}{scene}_{Path(bpath).stem}.png".replace("/", "_")
            _save_png(Path(save_dir) / name, panel)
            saved += 1
    if not per_scene:
        raise DatasetError("no pairs to evaluate; check the data folder and the scene filter")
    keys = [k for k in next(iter(per_scene.values()))[0] if k != "name"]
    scenes = {s: _gains({k: float(np.mean([r[k] for r in rows])) for k in keys}) | {"pairs": len(rows), "frames": rows}
              for s, rows in per_scene.items()}
    allrows = [r for rows in per_scene.values() for r in rows]
    result = _gains({k: float(np.mean([r[k] for r in allrows])) for k in keys})
    result["pairs"] = len(allrows)
    if temporal_rows:
        for s, rows in temporal_rows.items():
            for k in ("temporal_error", "input_temporal_error"):
                scenes[s][k] = float(np.mean([r[k] for r in rows]))
            scenes[s]["temporal_pairs"] = len(rows)
        trows = [r for rows in temporal_rows.values() for r in rows]
        for k in ("temporal_error", "input_temporal_error"):
            result[k] = float(np.mean([r[k] for r in trows]))
        result["temporal_pairs"] = len(trows)
    result["scenes"] = scenes
    return result


def check_save_dir(save_dir, what: str = "save folder") -> None:
    """Raise InputError unless ``save_dir`` is a folder or can be made as one (not an existing
    file, not under a file): checked before any frame is evaluated."""
    d = Path(save_dir)
    for p in (d, *d.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == d else f"lies under {str(p)!r}, which is a file"
                raise InputError(f"{what} {str(save_dir)!r} {where}, not a folder; pass a folder for the PNGs "
                                 "(a new one is made)")
            break


def _save_png(path: Path, img: np.ndarray) -> None:
    """Write a PNG atomically (temporary file + rename); a failure is a SinkWriteError naming it."""
    from ..runtime.manifest import atomic_write_bytes

    check_save_dir(path.parent)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise SinkWriteError(f"cannot encode the PNG {str(path)!r} (a {img.shape} {img.dtype} image)")
    try:
        atomic_write_bytes(path, buf.tobytes())
    except OSError as e:
        raise SinkWriteError(f"cannot write {str(path)!r} ({e}); free disk space or pass another --save folder; "
                             "the PNGs written before it are kept") from e


def _gains(m: dict) -> dict:
    """Add ``psnr_gain``, ``ssim_gain`` and ``tone_gain`` (output minus input) where both are there."""
    for gain, out, inp in (("psnr_gain", "psnr", "input_psnr"), ("ssim_gain", "ssim", "input_ssim"),
                           ("tone_gain", "tone_psnr", "input_tone_psnr")):
        if out in m and inp in m:
            m[gain] = m[out] - m[inp]
    return m
