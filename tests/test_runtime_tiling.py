"""Tiled inference: tiles on the stride grid, raised-cosine blending, normalized weights."""
import cv2
import numpy as np
import pytest

from edge_deblur.errors import InputError
from edge_deblur.runtime.tiling import tile_starts, tiled_infer


def conv_net(depth: int):
    """A fixed 'conv net' in numpy: ``depth`` 3x3 convs with zero padding (receptive radius ``depth``)
    mixing channels, with a ReLU between them."""
    rng = np.random.default_rng(0)
    kernels = []
    for _ in range(depth):
        k = rng.random((3, 3)).astype(np.float32) + 0.2 * rng.standard_normal((3, 3)).astype(np.float32)
        kernels.append(k / k.sum())

    def fn(x):
        y = x.astype(np.float32).copy()
        for k in kernels:
            z = np.empty_like(y)
            for n in range(y.shape[0]):
                for c in range(y.shape[1]):
                    z[n, c] = cv2.filter2D(y[n, c], -1, k, borderType=cv2.BORDER_CONSTANT)
            y = np.maximum(z + 0.3 * np.roll(z, 1, axis=1) - 0.2, 0)
        return y

    return fn


@pytest.mark.parametrize("h,w,tile,overlap,stride", [(200, 300, 96, 32, 4), (132, 100, 64, 24, 4), (64, 257, 64, 16, 1)])
def test_tiled_equals_untiled_when_margin_covers_receptive_field(h, w, tile, overlap, stride):
    fn = conv_net(3)
    x = np.random.default_rng(1).random((1, 3, h, w), dtype=np.float32)
    full = fn(x)
    assert full.std() > 0.01
    tiled = tiled_infer(fn, x, tile, overlap, stride, margin=4)  # margin >= receptive radius 3
    assert tiled.shape == full.shape
    assert np.abs(tiled - full).max() < 1e-5


def test_tiled_close_in_interior_with_small_margin():
    fn = conv_net(6)
    x = np.random.default_rng(2).random((2, 3, 160, 224), dtype=np.float32)
    full = fn(x)
    assert full.std() > 0.01
    tiled = tiled_infer(fn, x, 64, 24, 4, margin=2, batch=3)  # less context than the receptive field
    err = np.abs(tiled - full)[:, :, 6:-6, 6:-6]  # away from the frame border
    assert err.max() < 0.05 * np.abs(full).max()
    assert err.mean() < 1e-3 * np.abs(full).max()
    # seamless: the error does not jump at the tile boundaries
    assert not np.allclose(tiled, full)


@pytest.mark.parametrize("h,w", [(150, 250), (96, 97), (301, 64)])
def test_weights_are_normalized(h, w):
    x = np.random.default_rng(3).random((1, 3, h, w), dtype=np.float32)
    same = tiled_infer(lambda t: t, x, 48, 16, 1)
    assert np.abs(same - x).max() < 1e-6  # identity stays identity: weights sum to one everywhere
    const = np.full((1, 3, h, w), 0.37, np.float32)
    out = tiled_infer(lambda t: t * 0.5 + 0.25, const, 48, 16, 1)
    assert np.abs(out - (0.37 * 0.5 + 0.25)).max() < 1e-6


def test_blend_has_no_seam_with_a_per_tile_offset():
    # each tile's output carries a different constant offset; a hard cut would show steps as large
    # as the offsets, the raised-cosine blend spreads them over the overlap
    calls = {"n": 0}

    def fn(t):
        calls["n"] += 1
        return t + 0.1 * (calls["n"] % 2)

    x = np.zeros((1, 3, 64, 256), np.float32)
    out = tiled_infer(fn, x, 64, 32, 1, margin=4)
    steps = np.abs(np.diff(out[0, 0, 32], axis=-1))
    assert calls["n"] > 2 and steps.max() < 0.1 / 8


def test_small_frames_are_not_tiled_and_bad_settings_fail():
    calls = []
    x = np.zeros((1, 3, 32, 32), np.float32)
    tiled_infer(lambda t: calls.append(t.shape) or t, x, 64, 16, 4)
    assert calls == [(1, 3, 32, 32)]
    with pytest.raises(InputError):
        tiled_infer(lambda t: t, np.zeros((1, 3, 200, 200), np.float32), 64, 48, 4)  # tile < 2 * overlap
    with pytest.raises(InputError):
        tiled_infer(lambda t: t, np.zeros((1, 3, 200, 200), np.float32), 64, 0, 4)


def test_tile_starts_cover_and_align():
    for size, tile, ov, s in [(1000, 256, 32, 16), (720, 256, 64, 16), (257, 64, 16, 1), (100, 100, 10, 4)]:
        starts = tile_starts(size, tile, ov, s)
        assert starts[0] == 0 and starts[-1] + tile >= size
        assert all(v % s == 0 for v in starts if v != size - tile) and all(b - a <= tile - ov for a, b in zip(starts, starts[1:]))
