import math

import cv2

import numpy as np
import pytest

from edge_deblur.metrics import psnr, ssim
from edge_deblur.errors import InputError


def test_psnr_hand_computed():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255  # one pixel of 48 off by 1.0 -> mse = 1/48
    assert psnr(a, b) == pytest.approx(10 * math.log10(48))
    assert psnr(a, a) == float("inf")
    c = np.full((2, 2, 3), 0.5, np.float32)
    assert psnr(c, c + 0.1) == pytest.approx(20.0, abs=1e-4)


def test_psnr_uint16_scaling():
    a = np.zeros((2, 2, 3), np.uint16)
    b = np.full((2, 2, 3), 6554, np.uint16)  # ~0.1
    assert psnr(a, b) == pytest.approx(20.0, abs=0.01)


def test_ssim_properties():
    rng = np.random.default_rng(0)
    a = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    # constant images: luminance term only; hand-computed
    x = np.full((16, 16, 3), 0.2)
    y = np.full((16, 16, 3), 0.4)
    c1, c2 = 0.01**2, 0.03**2
    expected = (2 * 0.2 * 0.4 + c1) * c2 / ((0.2**2 + 0.4**2 + c1) * c2)
    assert ssim(x, y) == pytest.approx(expected, rel=1e-6)
    noisy = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert 0.5 < ssim(a, noisy) < 0.99


def test_shape_mismatch():
    with pytest.raises(InputError, match="differ in shape"):
        psnr(np.zeros((2, 2, 3)), np.zeros((2, 3, 3)))


def test_temporal_error_is_zero_for_a_perfect_output_and_grows_with_flicker():
    from edge_deblur.metrics.evaluate import temporal_error

    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8), (96, 72), interpolation=cv2.INTER_CUBIC)
    gt = [np.roll(base, 2 * i, axis=1) for i in range(6)]  # a pan

    def seq_error(outs):
        return float(np.mean([temporal_error(outs[i - 1], outs[i], gt[i - 1], gt[i]) for i in range(1, len(gt))]))

    assert seq_error(gt) == 0.0
    assert seq_error([np.clip(g.astype(int) + 5, 0, 250).astype(np.uint8) for g in gt]) == pytest.approx(0.0, abs=0.2)
    errs = []
    for amp in (2, 6, 12):  # brightness flicker: +amp, -amp, +amp, ... levels
        outs = [np.clip(g.astype(int) + (amp if i % 2 else -amp), 0, 255).astype(np.uint8) for i, g in enumerate(gt)]
        errs.append(seq_error(outs))
    assert 0 < errs[0] < errs[1] < errs[2]
    assert errs[2] == pytest.approx(24, rel=0.1)  # |(+12) - (-12)| levels per frame pair, minus clipping
