"""The Deblurrer facade: any size, dtype and layout in, the same out; batches; tiling; default model."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("torch")

from runtime_helpers import exported  # noqa: E402

from edge_deblur import Deblurrer  # noqa: E402
from edge_deblur.errors import InputError, ModelError  # noqa: E402
from edge_deblur.runtime.preprocess import frame_to_tensor, tensor_to_frame  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return exported(tmp_path_factory)


@pytest.fixture(scope="module")
def deblur(tiny):
    with Deblurrer.open(tiny["onnx"]) as d:
        yield d


def _rand(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


@pytest.mark.parametrize(
    "shape,dtype",
    [((37, 53, 3), np.uint8), ((30, 41, 3), np.uint16), ((33, 27), np.uint8), ((18, 22, 1), np.uint16),
     ((25, 19, 3), np.float32), ((21, 23, 4), np.uint8), ((1, 1, 3), np.uint8)],
)
def test_round_trip_keeps_shape_and_dtype(deblur, shape, dtype):
    f = _rand(shape, dtype)
    out = deblur(f)
    assert out.shape == f.shape and out.dtype == f.dtype
    if len(shape) == 3 and shape[2] == 4:
        assert np.array_equal(out[..., 3], f[..., 3])  # alpha untouched


def test_output_is_the_model_output(tiny, deblur):
    import onnxruntime as ort

    f = _rand((29, 45, 3), np.uint16, 5)
    x, info = frame_to_tensor(f, 4, rgb=False)
    y = ort.InferenceSession(str(tiny["onnx"]), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    expect = tensor_to_frame(y, info)
    got = deblur(f)
    assert np.abs(got.astype(np.int64) - expect.astype(np.int64)).max() <= 1
    assert np.abs(got.astype(np.int64) - f.astype(np.int64)).max() > 1000  # and the model changes the frame


def test_rgb_option_swaps_channel_order(tiny, deblur):
    bgr = _rand((24, 31, 3), np.uint8, 2)
    with Deblurrer.open(tiny["onnx"], rgb=True) as d_rgb:
        out_rgb = d_rgb(np.ascontiguousarray(bgr[..., ::-1]))
    assert np.array_equal(out_rgb[..., ::-1], deblur(bgr))


def test_run_batch_matches_single_calls(deblur):
    frames = [_rand((20, 28, 3), np.uint8, i) for i in range(3)] + [_rand((13, 9), np.uint8, 9), _rand((20, 28, 3), np.uint16, 4)]
    batch = deblur.run_batch(frames)
    for f, b in zip(frames, batch):
        s = deblur(f)
        assert b.shape == f.shape and b.dtype == f.dtype
        assert np.abs(b.astype(np.int64) - s.astype(np.int64)).max() <= 1


def test_run_batch_splits_batches_for_a_model_with_a_fixed_batch(tmp_path):
    from runtime_helpers import fixed_batch_onnx

    frames = [_rand((20, 28, 3), np.uint8, i) for i in range(3)]
    with Deblurrer.open(fixed_batch_onnx(tmp_path / "b1.onnx")) as d:
        for size in (None, 2):  # all at once, or 2 at a time: more than the model's batch of 1
            out = d.run_batch(frames, batch_size=size)
            assert all(np.array_equal(o, d(f)) for o, f in zip(out, frames))


def test_checkpoint_and_onnx_agree(tiny, deblur):
    f = _rand((26, 35, 3), np.uint8, 3)
    with Deblurrer.open(tiny["ckpt"]) as d:
        assert d.info["backend"] == "torch"
        assert np.abs(d(f).astype(int) - deblur(f).astype(int)).max() <= 1


def test_tiled_deblurrer_close_to_whole_frame(tiny):
    f = _rand((150, 170, 3), np.uint8, 6)
    with Deblurrer.open(tiny["onnx"]) as whole, Deblurrer.open(tiny["onnx"], tile=64, overlap=32) as tiled:
        a, b = whole(f).astype(int), tiled(f).astype(int)
        assert tiled.info["tile"] == 64
    assert a.shape == b.shape
    assert np.abs(a - b)[8:-8, 8:-8].mean() < 1.0  # uint8 levels, on average
    assert np.abs(a - b)[8:-8, 8:-8].max() <= 40


def test_info_and_bad_arguments(tiny, deblur):
    info = deblur.info
    for k in ("model", "backend", "precision", "stride", "rgb", "tile", "threads", "macs_per_pixel"):
        assert k in info
    assert info["backend"] == "onnxruntime" and info["stride"] == 4 and info["model"].endswith("model.onnx")
    with pytest.raises(InputError):
        deblur(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(InputError):
        deblur(np.zeros((10, 10, 3), np.int32))
    with pytest.raises(InputError):
        Deblurrer.open(tiny["onnx"], tile=2)  # smaller than the stride


def test_default_model_lookup(tiny, tmp_path, monkeypatch):
    import shutil

    from edge_deblur.runtime import bundled

    root = tmp_path / "export"
    shutil.copytree(tiny["dir"], root / "tiny")
    monkeypatch.delenv(bundled.ENV, raising=False)
    monkeypatch.setattr(bundled, "model_roots", lambda: [root])
    with pytest.raises(ModelError, match="no default model"):
        Deblurrer.open()
    # a "default": true manifest field
    man = json.loads((root / "tiny" / "manifest.json").read_text())
    man["default"] = True
    (root / "tiny" / "manifest.json").write_text(json.dumps(man))
    with Deblurrer.open() as d:
        assert d.info["model"].endswith(os.path.join("tiny", "model.onnx"))
    # the DEFAULT file wins over manifest fields
    shutil.copytree(tiny["dir"], root / "other")
    (root / "DEFAULT").write_text("other\n")
    with Deblurrer.open() as d:
        assert os.path.join("other", "model.") in d.info["model"]
    (root / "DEFAULT").write_text("missing\n")
    with pytest.raises(ModelError, match="missing"):
        Deblurrer.open()
    # the environment variable overrides everything
    monkeypatch.setenv(bundled.ENV, str(tiny["fp16"]))
    with Deblurrer.open() as d:
        assert d.info["precision"] == "fp16"


def test_checkout_export_folder_is_a_root():
    from pathlib import Path

    from edge_deblur.runtime.bundled import model_roots

    repo = Path(__file__).resolve().parents[1]
    if not (repo / "export").is_dir():
        pytest.skip("no export/ folder in this checkout")
    assert repo / "export" in model_roots()


def test_a_closed_deblurrer_says_so_and_its_streams_too(tiny):
    """Frames after close() raised "'NoneType' object has no attribute 'run'" from inside ONNX
    Runtime's wrapper; a for_stream() Deblurrer whose parent was closed, the same."""
    from edge_deblur.errors import BackendError

    frame = np.full((20, 30, 3), 80, np.uint8)
    d = Deblurrer.open(tiny["onnx"])
    child = d.for_stream()
    assert child(frame).shape == frame.shape
    child.close()                                   # the child leaves the shared model open
    assert d(frame).shape == frame.shape
    d.close()
    d.close()                                       # twice is harmless
    with pytest.raises(BackendError, match=r"this Deblurrer .* is closed; open a new one"):
        d(frame)
    with pytest.raises(BackendError, match="is closed"):
        d.warmup(16, 16)
    with pytest.raises(BackendError, match=r"shares its model with .* is closed; keep it open"):
        d.for_stream()(frame)
    assert "Threads" in Deblurrer.__doc__ and Deblurrer.__call__.__doc__
    top = Deblurrer.open(tiny["onnx"])
    grandchild = top.for_stream().for_stream()          # two levels down: still knows who owns the model
    top.close()
    with pytest.raises(BackendError, match="shares its model with"):
        grandchild(frame)


def test_small_api_edges():
    import edge_deblur
    from edge_deblur.errors import BackendError
    from edge_deblur.runtime.preprocess import check_frame

    assert {"Deblurrer", "MultiCamera", "run_stream"} <= set(dir(edge_deblur))   # lazy names listed too
    assert edge_deblur.MultiCamera.__name__ == "MultiCamera"
    with pytest.raises(InputError, match=r">u2 is uint16 in the other byte order; convert it with frame.astype\('<u2'\)"):
        check_frame(np.zeros((4, 4, 3), ">u2"))
    with pytest.raises(InputError, match="select='fastest' is not 'features' or 'measure'"):
        Deblurrer.open(select="fastest")
    with pytest.raises(BackendError) as e:
        Deblurrer.open(backend="foo")
    assert str(e.value).count("onnxruntime") == 1                               # the backends listed once
