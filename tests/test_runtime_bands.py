"""Raster band plans: sample values -> model inputs -> blended outputs -> sample values, against
the formulas written out in numpy (the fast paths must agree with them to one level)."""
from __future__ import annotations

import numpy as np
import pytest

from edge_deblur.runtime.bands import BandConfig, plan_bands


def reference_values(plan, y, orig):
    """``orig + (clip(y, 0, 1) - clip((orig - lo) / (hi - lo), 0, 1)) * (hi - lo)``, rounded/clipped."""
    lo = plan.lo[:, None, None]
    hi = plan.hi[:, None, None]
    xn = np.clip((orig - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    b = plan.processed
    v = orig[b] + (np.clip(y, 0, 1) - xn[b]) * (hi - lo)[b]
    if orig.dtype.kind in "ui":
        info = np.iinfo(orig.dtype)
        v = np.clip(np.floor(v + 0.5), info.min, info.max)
    return v


CASES = [
    (np.uint16, BandConfig(normalize="bitdepth", bit_depth=12), 0, 5000),   # values above 4095 keep their offset
    (np.uint16, BandConfig(), 0, 65535),
    (np.uint8, BandConfig(others="triples"), 0, 255),
    (np.uint16, BandConfig(normalize="percentile", percentiles=(5, 95)), 0, 9000),
    (np.int16, BandConfig(normalize="percentile"), -3000, 3000),
    (np.float32, BandConfig(normalize="percentile", others="triples"), -1, 1),
]


@pytest.mark.parametrize("dtype,cfg,vmin,vmax", CASES)
def test_round_trip_matches_the_formulas(dtype, cfg, vmin, vmax):
    rng = np.random.default_rng(0)
    orig = rng.uniform(vmin, vmax, (5, 24, 30)).astype(dtype)
    plan = plan_bands(cfg, 5, dtype, sample=lambda: orig.reshape(5, -1).astype(np.float64))
    x = plan.to_model(orig)
    lo, hi = plan.lo[:, None, None], plan.hi[:, None, None]
    xn = np.clip((orig.astype(np.float64) - lo) / (hi - lo), 0, 1)
    for g, (chans, _, _) in enumerate(plan.groups):
        assert np.allclose(x[g], xn[list(chans)], atol=1e-6)
    y = (x + rng.normal(0, 0.1, x.shape)).astype(np.float32)           # a "model" that moves values
    w = rng.uniform(0.2, 1.0, orig.shape[1:]).astype(np.float32)       # a blend weight and its sum
    acc = np.zeros((len(plan.processed),) + orig.shape[1:], np.float32)
    plan.accumulate(y, w, acc)
    blended = np.empty_like(acc)
    for k, src in enumerate(plan._sources):
        blended[k] = y[src[1]].mean(axis=0) if src[0] == "single" else y[src[1], src[2]]
    assert np.allclose(acc / w, blended, atol=1e-5)
    out = np.zeros_like(orig)
    plan.to_values(acc, orig, out, inv_weight=1.0 / w)
    ref = reference_values(plan, blended.astype(np.float64), orig.astype(np.float64))
    assert np.abs(out[plan.processed].astype(np.float64) - ref).max() <= (1 if orig.dtype.kind in "ui" else 1e-3)
    if cfg.bit_depth == 12:
        over = orig[plan.processed] > 4095
        assert over.any() and (out[plan.processed][over] > 4095).any()   # the offset above the range is kept
