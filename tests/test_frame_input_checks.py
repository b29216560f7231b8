"""Bad frames and arguments fail loudly with an InputError naming the value and the way out:
float frames outside [0, 1] or with NaN/Inf (they used to come back silently clipped or ~0),
a non-positive run_batch batch_size (it used to return [None, ...]), a float/bool tile (it used
to raise "TypeError: 'float' object is not iterable") and an unknown Deblurrer.open keyword (it
used to raise a TypeError naming OnnxRuntimeBackend.__init__)."""
import numpy as np
import pytest

from edge_deblur import Deblurrer
from edge_deblur.errors import EdgeDeblurError, InputError
from edge_deblur.runtime.preprocess import FLOAT_TOLERANCE, check_frame, frame_to_tensor


class _Invert:
    """A model y = 1 - x (stride 4), counting its calls."""

    stride = 4
    path = "invert.onnx"

    def __init__(self):
        self.batches = []

    def infer(self, x):
        self.batches.append(x.shape[0])
        return (1.0 - x).astype(np.float32)

    def close(self):
        pass


def _img(shape=(21, 30, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# -- 1. float frames ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_frame_in_0_255_is_refused_with_its_range(dtype):
    img = _img()
    img[0, 0] = 255
    f = img.astype(dtype)
    with pytest.raises(InputError) as e:
        Deblurrer(_Invert())(f)
    msg = str(e.value)
    assert "[0, 1]" in msg and "255" in msg and "uint8" in msg and "/ 255" in msg
    assert f"from {float(f.min()):.6g} to 255" in msg  # the observed min and max


def test_float_frame_in_0_65535_and_in_minus1_1_are_refused():
    f16 = np.linspace(0, 65535, 21 * 30 * 3, dtype=np.float32).reshape(21, 30, 3)
    with pytest.raises(InputError, match=r"0 to 65535.*uint16.*/ 65535"):
        frame_to_tensor(f16, 4)
    fm1 = np.linspace(-1, 1, 21 * 30 * 3, dtype=np.float32).reshape(21, 30, 3)
    with pytest.raises(InputError, match=r"from -1 to 1\b.*\(frame \+ 1\) / 2"):
        frame_to_tensor(fm1, 4)


@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
@pytest.mark.parametrize("shape", [(20, 28, 3), (20, 28), (20, 28, 4)])
def test_non_finite_float_frame_is_refused(bad, word, shape):
    f = np.full(shape, 0.5, np.float32)
    f[(3, 5) + (0,) * (f.ndim - 2)] = bad  # one value
    with pytest.raises(InputError, match=rf"non-finite values \(1 {word}\).*nan_to_num"):
        Deblurrer(_Invert())(f)
    with pytest.raises(InputError, match="non-finite"):
        Deblurrer(_Invert()).run_batch([f])


def test_float_frames_in_range_still_work():
    d = Deblurrer(_Invert())
    f = np.random.default_rng(1).random((21, 30, 3), dtype=np.float32)
    f[0, 0], f[0, 1] = 0.0, 1.0
    out = d(f)
    assert out.dtype == np.float32 and out.shape == f.shape
    np.testing.assert_allclose(out, 1.0 - f, atol=1e-6)
    # a little overshoot (e.g. a bicubic resize of a [0, 1] image) is accepted
    g = f.astype(np.float64)
    g[1, 1], g[1, 2] = -FLOAT_TOLERANCE / 2, 1.0 + FLOAT_TOLERANCE / 2
    assert check_frame(g) is g
    assert d(g).dtype == np.float64
    # just past the tolerance is not
    g[1, 2] = 1.0 + 2 * FLOAT_TOLERANCE
    with pytest.raises(InputError, match="must be in"):
        d(g)
    # grayscale and BGRA floats; the alpha channel is passed through untouched, so not range-checked
    assert d(f[..., 0]).shape == (21, 30)
    bgra = np.concatenate([f, np.full((21, 30, 1), 200.0, np.float32)], axis=2)
    assert np.array_equal(d(bgra)[..., 3], bgra[..., 3])


def test_integer_frames_are_not_range_checked():
    d = Deblurrer(_Invert())
    assert d(_img()).dtype == np.uint8
    assert d(np.full((9, 9, 3), 65535, np.uint16)).max() == 0


# -- 2. run_batch batch_size ----------------------------------------------------------------------
@pytest.mark.parametrize("bad", [-1, 0, 1.5, 2.0, True, "2"])
def test_run_batch_refuses_a_bad_batch_size(bad):
    b = _Invert()
    with pytest.raises(InputError, match=rf"batch_size must be a positive integer or None.*got {bad!r}"):
        Deblurrer(b).run_batch([_img(seed=i) for i in range(3)], batch_size=bad)
    assert b.batches == []  # refused before any work


@pytest.mark.parametrize("size,batches", [(None, [5]), (2, [2, 2, 1]), (np.int64(3), [3, 2]), (1, [1] * 5)])
def test_run_batch_good_batch_sizes(size, batches):
    b = _Invert()
    frames = [_img(seed=i) for i in range(5)]
    out = Deblurrer(b).run_batch(frames, batch_size=size)
    assert b.batches == batches
    for f, o in zip(frames, out):
        assert o is not None and np.abs(o.astype(int) - (255 - f.astype(int))).max() <= 1


# -- 3. tile and Deblurrer.open keywords ----------------------------------------------------------
@pytest.mark.parametrize("tile", [256.0, 64.5, True, False, np.float32(64), "64", "64x64", (64.0, 64), (64, True),
                                  (64,), (64, 64, 64), {"h": 64, "w": 64}, 2, (64, 2)])
def test_bad_tile_gets_the_tile_message(tile):
    with pytest.raises(InputError, match=r"tile must be a positive integer \(or \(height, width\)\) >= the stride 4"):
        Deblurrer(_Invert(), tile=tile)


@pytest.mark.parametrize("tile", [True, np.True_, 1.0, (True, True)])
def test_bool_tile_is_refused_at_stride_1(tile):
    b = _Invert()
    b.stride = 1
    with pytest.raises(InputError, match=r"tile must be a positive integer .* >= the stride 1"):
        Deblurrer(b, tile=tile)


@pytest.mark.parametrize("tile", [64, np.int64(64), (64, 96), [64, 96], np.array([64, 96])])
def test_good_tile_values(tile):
    d = Deblurrer(_Invert(), tile=tile, overlap=16)
    f = _img((150, 170, 3))
    out = d(f)
    assert np.abs(out.astype(int) - (255 - f.astype(int))).max() <= 1
    assert d.backend.batches.count(1) > 1  # it was tiled


def test_open_with_a_float_tile_gets_the_tile_message(tmp_path, monkeypatch):
    from edge_deblur.runtime import backends

    closed = []
    b = _Invert()
    b.close = lambda: closed.append(True)
    monkeypatch.setattr(backends, "open_backend", lambda *a, **k: b)
    with pytest.raises(InputError, match=r"tile must be .* got 256\.0"):
        Deblurrer.open(tmp_path / "m.onnx", tile=256.0, probe=False)
    assert closed == [True]  # the backend opened for it is closed again


def test_open_names_an_unknown_keyword(tmp_path):
    pytest.importorskip("onnxruntime")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: the keyword is refused first")
    with pytest.raises(InputError) as e:
        Deblurrer.open(model, tile_size=512)
    msg = str(e.value)
    assert "Deblurrer.open()" in msg and "'tile_size'" in msg and "OnnxRuntimeBackend" not in msg
    for k in ("tile", "overlap", "device", "threads", "select", "providers"):
        assert k in msg
    assert isinstance(e.value, TypeError) and isinstance(e.value, EdgeDeblurError)  # old `except TypeError` still works
