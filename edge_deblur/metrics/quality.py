"""PSNR and SSIM on RGB frames, as in the deblurring literature: both images in [0, 1] (uint8
and uint16 are scaled by their dtype's maximum), PSNR over all channels, SSIM (Wang et al. 2004,
11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03) averaged over channels."""
from __future__ import annotations

import math

import cv2
import numpy as np

from ..errors import InputError


def to_float01(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float64) / 65535.0
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float64)
    raise InputError(f"unsupported image dtype {img.dtype}; use uint8, uint16 or float in [0, 1]")


def _check(a, b):
    if a.shape != b.shape:
        raise InputError(f"images differ in shape: {a.shape} vs {b.shape}; compare frames of the same size")


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    _check(a, b)
    a, b = to_float01(a), to_float01(b)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(data_range**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    _check(a, b)
    a, b = to_float01(a), to_float01(b)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]
        blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)
        mx, my = blur(x), blur(y)
        sxx = blur(x * x) - mx * mx
        syy = blur(y * y) - my * my
        sxy = blur(x * y) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(m.mean())
    return float(np.mean(vals))
