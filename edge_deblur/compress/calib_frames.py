"""Calibration frames for INT8: from a folder of images, a video, or synthetic blur over sharp
images (``synthetic:FOLDER``), cut (or resized, when smaller) to the deploy tile size and turned
into model inputs by ``edge_deblur.runtime.preprocess.frame_to_tensor``, the runtime's own
preprocessing. numpy + OpenCV only."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from ..data.pairs import IMAGE_EXTS as _PAIR_EXTS
from ..errors import DatasetError, InputError
from ..runtime import preprocess

IMAGE_EXTS = set(_PAIR_EXTS)
VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}


def parse_tile(text) -> tuple[int, int]:
    """'256x256' or (w, h) -> (width, height)."""
    if isinstance(text, (tuple, list)):
        vals = list(text)
    else:
        try:
            vals = [int(v) for v in str(text).lower().split("x")]
        except ValueError:
            vals = []
    if len(vals) != 2 or any((not isinstance(v, (int, np.integer))) or v <= 0 for v in vals):
        raise InputError(f"tile {text!r} must look like WIDTHxHEIGHT with positive sizes, e.g. 256x256")
    return int(vals[0]), int(vals[1])




def _list_images(root: Path) -> list[Path]:
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
    # a pairs folder (scene/blur, scene/sharp): the blurry inputs are what the model sees
    blur = [f for f in files if "blur" in f.parent.name.lower()]
    return blur or files


def describe_source(source) -> tuple[str, Path]:
    """-> (kind, path): kind is 'images', 'video' or 'synthetic'."""
    text = str(source)
    kind = None
    if text.startswith("synthetic:"):
        kind, text = "synthetic", text[len("synthetic:"):]
    p = Path(text)
    if not p.exists():
        raise DatasetError(
            f"calibration source {str(source)!r} not found; pass a folder of images, a video file, "
            "or synthetic:FOLDER (synthetic blur over the sharp images in FOLDER)"
        )
    if kind is None:
        if p.is_dir():
            kind = "images"
        elif p.suffix.lower() in VIDEO_EXTS:
            kind = "video"
        elif p.suffix.lower() in IMAGE_EXTS:
            kind = "images"
        else:
            raise DatasetError(f"calibration source {str(p)!r} is neither a folder, an image nor a video ({sorted(VIDEO_EXTS)})")
    elif not p.is_dir():
        raise DatasetError(f"synthetic calibration needs a folder of sharp images, got {str(p)!r}")
    return kind, p


def _read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot read calibration image {str(path)!r}; remove it or convert it to PNG/JPEG")
    return img


def _video_frames(path: Path, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DatasetError(f"cannot open calibration video {str(path)!r} (OpenCV/FFmpeg cannot decode it)")
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        frames = []
        if total > 0:
            want = sorted(set(np.linspace(0, total - 1, num=min(count, total)).round().astype(int).tolist()))
            for idx in want:
                cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
                ok, f = cap.read()
                if ok and f is not None:
                    frames.append(f)
        if not frames:  # no frame count or no seeking: read sequentially
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            while len(frames) < count:
                ok, f = cap.read()
                if not ok:
                    break
                frames.append(f)
    finally:
        cap.release()
    if not frames:
        raise DatasetError(f"calibration video {str(path)!r} yielded no frames")
    return frames


def fit_to_tile(frame: np.ndarray, tile: tuple[int, int], rng: np.random.Generator, max_upscale: float = 2.0) -> np.ndarray:
    """Random crop of ``frame`` at ``tile`` = (w, h); a frame smaller than the tile is resized up
    (keeping its aspect) when that takes at most ``max_upscale``x, else InputError."""
    tw, th = tile
    if frame.ndim == 3 and frame.shape[2] not in (1, 3, 4):
        raise InputError(
            f"calibration frame has {frame.shape[2]} channels (shape {frame.shape}); pass 3-channel colour "
            "(or grayscale / BGRA) frames"
        )
    h, w = frame.shape[:2]
    if h < th or w < tw:
        s = max(th / h, tw / w)
        if s > max_upscale:
            raise InputError(
                f"calibration frame of {w}x{h} is far smaller than the tile {tw}x{th} (needs {s:.1f}x upscaling); "
                "pass larger frames or a smaller --tile"
            )
        nw, nh = max(tw, int(math.ceil(w * s))), max(th, int(math.ceil(h * s)))
        frame = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_CUBIC)
        h, w = nh, nw
    y = int(rng.integers(0, h - th + 1))
    x = int(rng.integers(0, w - tw + 1))
    return np.ascontiguousarray(frame[y:y + th, x:x + tw])


def calibration_frames(source, count: int, tile: tuple[int, int], seed: int = 0, blur_cfg=None) -> tuple[list[np.ndarray], bool, dict]:
    """``count`` frames of exactly ``tile`` size from ``source``. Returns (frames, rgb, info):
    ``rgb`` tells the colour order (image files and videos are BGR; synthetic frames RGB)."""
    kind, path = describe_source(source)
    rng = np.random.default_rng(seed)
    info = {"kind": kind, "path": str(path)}
    if kind == "video":
        frames = _video_frames(path, count)
        info["distinct_frames"] = len(frames)
        return [fit_to_tile(frames[i % len(frames)], tile, rng) for i in range(count)], False, info
    files = [path] if path.is_file() else _list_images(path)
    if not files:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) under {str(path)!r} for calibration")
    order = rng.permutation(len(files))
    picks = [files[order[i % len(files)]] for i in range(count)]
    info["distinct_frames"] = min(count, len(files))
    if kind == "images":
        return [fit_to_tile(_read_image(f), tile, rng) for f in picks], False, info
    # synthetic blur over sharp images
    from ..data.blur import synthesize

    tw, th = tile
    out = []
    for f in picks:
        img = _read_image(f)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        img = np.ascontiguousarray(img[..., 2::-1])  # BGR(A) -> RGB
        h, w = img.shape[:2]
        # leave room for the blur's margin; upscale small photos first
        need = 1.25
        if h < th * need or w < tw * need:
            s = max(th * need / h, tw * need / w)
            if s > 2.5:
                raise InputError(f"sharp image {str(f)!r} ({w}x{h}) is too small for tile {tw}x{th}; use a smaller --tile")
            img = cv2.resize(img, (int(math.ceil(w * s)), int(math.ceil(h * s))), interpolation=cv2.INTER_CUBIC)
        blurred, _ = synthesize(img, rng, blur_cfg, crop=(th, tw))
        out.append(blurred)
    return out, True, info


def frames_to_tensors(frames: Iterable[np.ndarray], stride: int, tile: tuple[int, int] | None = None, rgb: bool = False) -> list[np.ndarray]:
    """Frames -> (1, 3, H, W) float32 model inputs through the runtime's own preprocessing
    (``runtime.preprocess.frame_to_tensor``). With ``tile``, every frame must be exactly that
    size (no padding happens at calibration time)."""
    out = []
    for i, f in enumerate(frames):
        if not isinstance(f, np.ndarray):
            raise InputError(f"calibration frame {i} is a {type(f).__name__}, not a numpy array")
        if f.ndim == 3 and f.shape[2] not in (1, 3, 4):
            raise InputError(f"calibration frame {i} has {f.shape[2]} channels (shape {f.shape}); pass 3-channel frames")
        if tile is not None and (f.shape[1], f.shape[0]) != tuple(tile):
            raise InputError(
                f"calibration frame {i} is {f.shape[1]}x{f.shape[0]}, not the tile size {tile[0]}x{tile[1]}; "
                "cut frames to the tile (calibration_frames does) or pass a matching --tile"
            )
        t, _ = preprocess.frame_to_tensor(f, stride, rgb)
        if t.ndim != 4 or t.shape[:2] != (1, 3):
            raise InputError(f"calibration frame {i} gave a tensor of shape {t.shape}, expected (1, 3, H, W)")
        out.append(t)
    return out


