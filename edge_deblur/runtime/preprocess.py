"""Frame <-> model tensor conversion shared by the runtime, calibration and evaluation.

Contract of every model: input and output are NCHW float32 RGB in [0, 1]; height and width are
multiples of the model's stride. Frames are HxWx3 BGR (OpenCV's order) by default, uint8 or
uint16 (depth kept), or float in [0, 1]; grayscale (HxW or HxWx1) is replicated to RGB and
converted back; a 4th (alpha) channel is set aside and re-attached untouched.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError

_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


@dataclass
class FrameInfo:
    """What is needed to turn the model output back into a frame like the input."""

    height: int
    width: int
    dtype: np.dtype
    channels: int          # 1 (gray), 3 or 4 as given (2-D gray counts as 0)
    rgb: bool              # True when the frame's colour order is RGB
    alpha: np.ndarray | None = None


def check_frame(frame) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise InputError(f"a frame must be a numpy array (H x W x 3), got {type(frame).__name__}")
    if frame.ndim not in (2, 3):
        raise InputError(f"a frame must be H x W x C (or H x W for grayscale), got shape {frame.shape}")
    if frame.ndim == 3 and frame.shape[2] not in (1, 3, 4):
        raise InputError(
            f"a frame must have 1, 3 or 4 channels, got {frame.shape[2]} (shape {frame.shape}); "
            "pass BGR/RGB, grayscale or BGRA frames"
        )
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise InputError(f"empty frame of shape {frame.shape}")
    if frame.dtype not in _SCALE and frame.dtype not in (np.float32, np.float64):
        native = frame.dtype.newbyteorder("=")
        if not frame.dtype.isnative and (native in _SCALE or native in (np.float32, np.float64)):
            raise InputError(f"frame dtype {frame.dtype.str} is {native.name} in the other byte order; "
                             f"convert it with frame.astype('{native.str}')")
        raise InputError(
            f"frame dtype {frame.dtype} is not supported; use uint8, uint16, or float32 in [0, 1] "
            "(e.g. frame.astype(np.uint8) for 8-bit data)"
        )
    if frame.dtype.kind == "f":
        _check_float_range(frame)
    return frame


# Float frames must be in [0, 1]. The slack absorbs the small overshoot of legitimate float
# processing (bicubic/Lanczos resizing, colour conversion, rounding) while a frame in 0-255 or
# 0-65535 (the usual mistake: img.astype(np.float32)) or in [-1, 1] still fails unless it is
# nearly black (or nearly white), where no range check can tell the scales apart.
FLOAT_TOLERANCE = 0.05


def _check_float_range(frame: np.ndarray) -> None:
    """InputError for a float frame with NaN/Inf or values outside [0, 1] (+- FLOAT_TOLERANCE):
    it would otherwise come back silently clipped to [0, 1] or as garbage. One min and one max
    over the colour channels (an alpha channel is passed through untouched, so it is not checked)."""
    img = frame[..., :3] if frame.ndim == 3 and frame.shape[2] == 4 else frame
    lo, hi = float(img.min()), float(img.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = ~np.isfinite(img)  # the error path only: count what was found
        n_nan = int(np.isnan(img).sum())
        n_inf = int(bad.sum()) - n_nan
        found = " and ".join(f"{n} {k}" for n, k in ((n_nan, "NaN"), (n_inf, "Inf")) if n)
        raise InputError(
            f"{frame.dtype} frame of shape {frame.shape} holds non-finite values ({found}); "
            "frames must be finite: replace them (e.g. np.nan_to_num(frame, nan=0.0, posinf=1.0, neginf=0.0)) "
            "or fix the source of the frame"
        )
    if lo < -FLOAT_TOLERANCE or hi > 1.0 + FLOAT_TOLERANCE:
        hint = ("it looks like 8-bit data: pass it as uint8 (np.rint(frame).astype(np.uint8)) or scale it with frame / 255"
                if hi <= 255.0 + FLOAT_TOLERANCE and lo >= -FLOAT_TOLERANCE else
                "it looks like 16-bit data: pass it as uint16 or scale it with frame / 65535"
                if hi <= 65535.0 + FLOAT_TOLERANCE and lo >= -FLOAT_TOLERANCE else
                "pass uint8/uint16 frames, or scale float frames to [0, 1] (e.g. (frame + 1) / 2 for data in [-1, 1])")
        raise InputError(
            f"float frames must be in [0, 1], got values from {lo:.6g} to {hi:.6g} ({frame.dtype}, shape {frame.shape}); "
            f"{hint}"
        )


def pad_amounts(h: int, w: int, stride: int) -> tuple[int, int]:
    return (-h) % stride, (-w) % stride


def frame_to_tensor(frame: np.ndarray, stride: int = 1, rgb: bool = False) -> tuple[np.ndarray, FrameInfo]:
    """HxWxC frame -> (1, 3, Hp, Wp) float32 RGB in [0, 1], padded (reflect) to ``stride``."""
    frame = check_frame(frame)
    h, w = frame.shape[:2]
    channels = 0 if frame.ndim == 2 else frame.shape[2]
    if frame.dtype in _SCALE:
        return _frame_to_tensor_planes(frame, h, w, channels, stride, rgb)
    alpha = None
    img = frame
    if channels == 4:
        alpha = frame[..., 3].copy()
        img = frame[..., :3]
    elif channels in (0, 1):
        g = frame if channels == 0 else frame[..., 0]
        img = np.repeat(g[..., None], 3, axis=2)
    scale = _SCALE.get(frame.dtype)
    x = img.astype(np.float32)
    if scale is not None:
        x *= np.float32(1.0 / scale)
    if not rgb and channels in (3, 4):
        x = x[..., ::-1]
    ph, pw = pad_amounts(h, w, stride)
    if ph or pw:
        mode = cv2.BORDER_REFLECT_101 if (h > ph and w > pw) else cv2.BORDER_REPLICATE
        x = cv2.copyMakeBorder(np.ascontiguousarray(x), 0, ph, 0, pw, mode)
    t = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    return t, FrameInfo(h, w, frame.dtype, channels, rgb, alpha)


def _frame_to_tensor_planes(frame, h, w, channels, stride, rgb):
    """Fast path for uint8/uint16 frames, bit-identical to the general path: pad the integer
    image, split it into planes with OpenCV, and convert each plane straight into its slot of
    the NCHW tensor (no interleaved float copy, no strided transpose): ~20x faster at 640x360."""
    alpha = frame[..., 3].copy() if channels == 4 else None
    ph, pw = pad_amounts(h, w, stride)
    img = frame
    if ph or pw:
        mode = cv2.BORDER_REFLECT_101 if (h > ph and w > pw) else cv2.BORDER_REPLICATE
        img = cv2.copyMakeBorder(np.ascontiguousarray(frame), 0, ph, 0, pw, mode)
    if channels in (0, 1):
        g = img if img.ndim == 2 else img[..., 0]
        planes = [g, g, g]
    else:
        planes = cv2.split(np.ascontiguousarray(img))[:3]
        if not rgb:
            planes = planes[::-1]
    t = np.empty((1, 3, h + ph, w + pw), np.float32)
    inv = np.float32(1.0 / _SCALE[frame.dtype])
    for i, plane in enumerate(planes):
        t[0, i] = plane
        t[0, i] *= inv
    return t, FrameInfo(h, w, frame.dtype, channels, rgb, alpha)


def _tensor_to_frame_planes(t: np.ndarray, info: FrameInfo, scale: float) -> np.ndarray:
    """Fast path for 3/4-channel integer frames, bit-identical to the general path."""
    order = (0, 1, 2) if info.rgb else (2, 1, 0)
    s = np.float32(scale)
    q = np.empty((info.height, info.width), np.float32)
    planes = []
    for c in order:
        np.multiply(t[c, : info.height, : info.width], s, out=q)
        q += np.float32(0.5)
        np.clip(q, 0, s, out=q)
        planes.append(q.astype(info.dtype))
    if info.alpha is not None:
        planes.append(info.alpha)
    return cv2.merge(planes)


def tensor_to_frame(t: np.ndarray, info: FrameInfo) -> np.ndarray:
    """(1, 3, Hp, Wp) model output -> a frame with the input's shape, dtype and colour order."""
    if t.ndim == 4:
        t = t[0]
    scale = _SCALE.get(np.dtype(info.dtype))
    if scale is not None and info.channels in (3, 4) and t.dtype == np.float32:
        return _tensor_to_frame_planes(t, info, scale)
    x = t[:, : info.height, : info.width].transpose(1, 2, 0)
    if info.channels in (0, 1):
        # back to one channel: ITU-R BT.601 luma of the RGB output
        x = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
        if info.channels == 1:
            x = x[..., None]
    elif not info.rgb:
        x = x[..., ::-1]
    scale = _SCALE.get(np.dtype(info.dtype))
    if scale is not None:
        out = np.clip(x * scale + 0.5, 0, scale).astype(info.dtype)
    else:
        out = np.clip(x, 0.0, 1.0).astype(info.dtype)
    if info.alpha is not None:
        out = np.concatenate([out, info.alpha[..., None]], axis=2)
    return np.ascontiguousarray(out)
