"""Tone-aligned PSNR: how much of a restoration is deblurring rather than a change of tone.

Per colour channel, the gain ``a`` and offset ``b`` that bring an image closest to the sharp
reference in the least-squares sense are fitted (``a * x + b ~ ref``) and applied; PSNR is then
measured as usual. Applied to the blurry input and to the model's output alike, the difference of
the two (the *tone-aligned gain*) is what is left after any global per-channel brightness,
contrast or colour-balance change is taken out. A model whose output is only a gain and offset of
its input has a tone-aligned gain of 0 dB exactly (an affine map of an affine map is affine: both
fits reach the same residual), whatever its plain PSNR gain.

The aligned image is not clipped to [0, 1] (clipping would make the map non-affine and break that
invariance). numpy only.
"""
from __future__ import annotations

import numpy as np

from .quality import _check, psnr, to_float01


def tone_fit(img: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel least-squares ``(gain, offset)`` with ``gain * img + offset ~ ref``; both
    arrays have one entry per channel (1 for a 2-D image). Images in [0, 1] units (uint8/uint16
    scaled by their maximum). A constant channel gets gain 0 and the reference's mean as offset."""
    _check(img, ref)
    x, y = to_float01(img), to_float01(ref)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    x = x.reshape(-1, x.shape[-1])
    y = y.reshape(-1, y.shape[-1])
    mx, my = x.mean(0), y.mean(0)
    dx = x - mx
    var = (dx * dx).mean(0)
    cov = (dx * (y - my)).mean(0)
    gain = np.where(var > 1e-12, cov / np.maximum(var, 1e-12), 0.0)
    return gain, my - gain * mx


def tone_align(img: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``img`` (float64, [0, 1] units, unclipped) after the per-channel gain and offset that bring it
    closest to ``ref``."""
    gain, offset = tone_fit(img, ref)
    x = to_float01(img)
    if x.ndim == 2:
        return x * gain[0] + offset[0]
    return x * gain + offset


def tone_aligned_psnr(img: np.ndarray, ref: np.ndarray) -> float:
    """PSNR of ``img`` against ``ref`` after the per-channel gain/offset fit (see module doc)."""
    return psnr(tone_align(img, ref), to_float01(ref))
