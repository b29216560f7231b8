"""Distrust models and sizes: a model with the wrong output shape or channel count fails at open
with a clear message, NaN/Inf outputs are counted and passed through (and fail the run after a
run of them), tiling keeps float32 accumulators, a frame too large for memory suggests --tile,
and thread counts are bounded by the cores."""
import logging
import tracemalloc

import numpy as np
import pytest

from edge_deblur.cli import main
from edge_deblur.errors import InputError, ModelError
from edge_deblur.runtime.backends.onnxruntime import OnnxRuntimeBackend, bounded_threads, cpu_cores
from edge_deblur.runtime.deblurrer import Deblurrer
from edge_deblur.runtime.pipeline import Pipeline
from edge_deblur.runtime.tiling import tiled_infer

from test_cli_stream import tiny_onnx  # noqa: F401  (fixture)
from video_helpers import make_video


def _save(tmp_path, name, nodes, out_shape, inits=()):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    p = tmp_path / f"{name}.onnx"
    onnx.save(model, str(p))
    return p


@pytest.fixture
def one_channel_onnx(tmp_path):
    from onnx import numpy_helper

    w = np.full((1, 3, 1, 1), 1 / 3, np.float32)  # a gray (1-channel) output
    return _save(tmp_path, "gray", [__import__("onnx").helper.make_node("Conv", ["input", "w"], ["output"])],
                 ["batch", 1, "height", "width"], [numpy_helper.from_array(w, "w")])


@pytest.fixture
def half_size_onnx(tmp_path):
    from onnx import helper

    return _save(tmp_path, "half", [helper.make_node("MaxPool", ["input"], ["output"], kernel_shape=[2, 2], strides=[2, 2])],
                 ["batch", 3, "h2", "w2"])


@pytest.fixture
def nan_when_bright_onnx(tmp_path):
    """output = input + 0 * sqrt(0.9 - input): NaN wherever a pixel is brighter than 0.9."""
    from onnx import helper, numpy_helper

    c = numpy_helper.from_array(np.array(0.9, np.float32), "c")
    z = numpy_helper.from_array(np.array(0.0, np.float32), "z")
    nodes = [helper.make_node("Sub", ["c", "input"], ["d"]), helper.make_node("Sqrt", ["d"], ["s"]),
             helper.make_node("Mul", ["s", "z"], ["m"]), helper.make_node("Add", ["input", "m"], ["output"])]
    return _save(tmp_path, "nan_bright", nodes, ["batch", 3, "height", "width"], [c, z])


def test_wrong_channel_count_fails_at_open(one_channel_onnx):
    with pytest.raises(ModelError, match=r"returns \(1, 1, 32, 33\).*wrong channels"):
        Deblurrer.open(one_channel_onnx)


def test_wrong_output_size_fails_at_open(half_size_onnx):
    with pytest.raises(ModelError, match="wrong shape"):
        Deblurrer.open(half_size_onnx)


def test_wrong_model_in_the_cli_is_one_clear_line(tmp_path, one_channel_onnx, capsys):
    src = make_video(tmp_path / "in.avi", n=3)
    rc = main(["stream", "--source", str(src), "--model", str(one_channel_onnx)])
    err = capsys.readouterr().err
    assert rc == 2 and "wrong channels" in err and "Traceback" not in err


def test_nan_output_passes_the_input_through_counts_and_warns_once(nan_when_bright_onnx, caplog):
    caplog.set_level(logging.WARNING)
    frames = [np.full((24, 32, 3), v, np.uint8) for v in (100, 250, 100, 250, 250, 100)]
    with Deblurrer.open(nan_when_bright_onnx, max_bad_frames=3) as d:
        written = []
        stats = Pipeline(d, frames, lambda f, m: written.append(f), warmup=False).run()
    assert [int(f.mean()) for f in written] == [100, 250, 100, 250, 250, 100]  # bright frames passed through
    assert stats["model_output"] == {"bad_frames": 3, "longest_bad_run": 2}
    assert caplog.text.count("returned NaN/Inf") == 1


def test_a_run_of_nan_outputs_fails(nan_when_bright_onnx):
    frames = [np.full((24, 32, 3), 250, np.uint8)] * 10
    with Deblurrer.open(nan_when_bright_onnx, max_bad_frames=4) as d:
        written = []
        pipe = Pipeline(d, frames, lambda f, m: written.append(f), warmup=False)
        with pytest.raises(ModelError, match="4 frames in a row"):
            pipe.run()
    assert len(written) == 3  # the frames before the limit were written


def test_tiling_memory_stays_near_one_frame():
    """float32 accumulators updated in place: peak traced memory about one output frame plus the
    weights, where float64 accumulators and out-of-place division took over 4 frames."""
    x = np.random.default_rng(0).random((1, 3, 768, 1024), dtype=np.float32)
    tracemalloc.start()
    try:
        y = tiled_infer(lambda t: t.copy(), x, 256, overlap=32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert y.dtype == np.float32 and np.allclose(y, x, atol=1e-5)
    assert peak < 2.0 * x.nbytes, peak / x.nbytes  # float64 accumulators: 5.9x


class _ProfileBackend:
    """Like a TensorRT engine: only shapes inside its optimization profile run."""
    stride = 8
    path = "engine.plan"
    profile = ((1, 3, 64, 96), (1, 3, 720, 1280), (1, 3, 1080, 1920))

    def infer(self, x):
        lo, _, hi = self.profile
        if not all(a <= v <= b for a, v, b in zip(lo, x.shape, hi)):
            raise RuntimeError(f"shape {x.shape} outside the profile")
        return x.copy()

    def close(self):
        pass


def test_the_probe_respects_an_engines_profile():
    d = Deblurrer(_ProfileBackend())
    d.probe()  # at the profile's smallest shape, not at 32x40


class _NoMemoryBackend:
    stride = 4
    path = "big.onnx"

    def infer(self, x):
        raise MemoryError("Unable to allocate 4.3 GiB for an array")

    def close(self):
        pass


def test_a_frame_too_large_suggests_tiling():
    d = Deblurrer(_NoMemoryBackend())
    with pytest.raises(InputError, match="--tile"):
        d(np.zeros((64, 96, 3), np.uint8))


def test_thread_counts_are_bounded(tiny_onnx, caplog):
    caplog.set_level(logging.WARNING)
    assert bounded_threads(100000) == cpu_cores()
    assert "100000 threads asked" in caplog.text
    with pytest.raises(InputError, match="positive integer"):
        bounded_threads(0)
    b = OnnxRuntimeBackend(tiny_onnx, threads=100000, verify=False)
    assert b.threads == cpu_cores()
    b.close()
