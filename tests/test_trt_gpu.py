"""TensorRT on a GPU (skipped where TensorRT, cuda-python or a GPU is missing): build with a
profile and a manifest, the engine cache's reuse, agreement with ONNX Runtime (verify, FP32 and
FP16), clear errors for shapes outside the profile, a foreign engine and unsupported ops, the
two-slot pipeline (NVRTC pre/post-processing kernels; skipped where NVRTC is not installed), an
engine with an output the runtime does not use, the recurrent state on the device, and the GPU
conversion's NaN/Inf flag with the model time per frame.

Run on a machine with TensorRT 10 or 11:  python -m pytest -m tensorrt tests/test_trt_gpu.py -v
"""
import json

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt")
pytest.importorskip("cuda")


def _gpu():
    from edge_deblur.runtime import cudart

    try:
        return cudart.device_count()[0] > 0
    except Exception:
        return False


pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu, pytest.mark.skipif(not _gpu(), reason="needs a CUDA GPU")]

from edge_deblur.errors import BackendError, ModelError  # noqa: E402
from edge_deblur.export import engine_cache as ec  # noqa: E402
from edge_deblur.export import trt_build as tb  # noqa: E402
from edge_deblur.runtime.gpu_pipeline import run_sync  # noqa: E402
from edge_deblur.runtime.preprocess import frame_to_tensor, tensor_to_frame  # noqa: E402
from runtime_helpers import TINY_RNN_SPEC, exported  # noqa: E402

SHAPES = "1x3x16x16:1x3x64x96:1x3x128x128"  # the tiny model's stride is 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return exported(tmp_path_factory)


@pytest.fixture(scope="module")
def engine(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("engines") / "tiny.engine"
    cache = out.parent / "timing.cache"
    man = tb.build_engine(tiny["onnx"], out, SHAPES, workspace_mb=256, timing_cache=cache)
    return out, man, cache


def rand_frames(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_build_writes_engine_manifest_and_timing_cache(engine, tiny):
    path, man, cache = engine
    assert path.is_file() and cache.is_file() and cache.stat().st_size > 0
    got = tb.read_manifest(path)
    assert got["tensorrt"] == trt.__version__ and got["precision"] == "fp32" and got["stride"] == 4
    assert got["onnx"]["sha256"] == tb.sha256_file(tiny["onnx"])
    assert got["profile"] == tb.parse_shapes(SHAPES, 4).to_dict() and got["build"]["strongly_typed"]
    assert got["gpu"]["name"] and got["gpu"]["compute_capability"]


def test_engine_cache_builds_once(tiny, tmp_path):
    calls = []

    def counting(*a, **k):
        calls.append(a)
        return tb.build_engine(*a, **k)

    p1 = ec.ensure_engine(tiny["fp16"], shapes=SHAPES, cache_dir=tmp_path, build_fn=counting)
    p2 = ec.ensure_engine(tiny["fp16"], shapes=SHAPES, cache_dir=tmp_path, build_fn=counting)
    assert p1 == p2 and len(calls) == 1 and tb.read_manifest(p1)["precision"] == "fp16"


@pytest.mark.parametrize("which", ["onnx", "fp16"])
def test_verify_tensorrt_against_the_reference(tiny, which):
    from edge_deblur.runtime.verify import format_report, verify

    r = verify(tiny[which], backends="onnxruntime,tensorrt", frames=3, size=(90, 60), checkpoint=tiny["ckpt"],
               trt_opts={"shapes": SHAPES})
    assert r.passed, format_report(r)
    assert {row.backend: row for row in r.rows}["tensorrt"].status == "pass"


def test_shapes_outside_the_profile_say_how_to_widen(engine):
    from edge_deblur.runtime.backends.tensorrt import TensorRTBackend

    with TensorRTBackend(engine[0]) as b:
        b.infer(np.zeros((1, 3, 64, 96), np.float32))
        with pytest.raises(BackendError, match="--shapes"):
            b.infer(np.zeros((1, 3, 256, 256), np.float32))


def test_engine_from_another_gpu_is_refused(engine, tmp_path):
    from edge_deblur.runtime.backends.tensorrt import TensorRTBackend

    path = tmp_path / "foreign.engine"
    path.write_bytes(engine[0].read_bytes())
    man = dict(engine[1], gpu={"name": "Orin", "compute_capability": "8.7", "slug": "orin-sm87"})
    tb.manifest_path(path).write_text(json.dumps(man))
    with pytest.raises(BackendError, match="GPU: engine has 'Orin'"):
        TensorRTBackend(path)


def test_unsupported_op_lists_parser_errors(tmp_path):
    import onnx
    from onnx import TensorProto as T, helper as h

    g = h.make_graph([h.make_node("NoSuchOp", ["input"], ["output"], domain="edge.fake")], "g",
                     [h.make_tensor_value_info("input", T.FLOAT, [1, 3, -1, -1])],
                     [h.make_tensor_value_info("output", T.FLOAT, [1, 3, -1, -1])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("edge.fake", 1)])
    path = tmp_path / "bad.onnx"
    onnx.save(m, str(path))
    with pytest.raises(ModelError) as e:
        tb.build_engine(path, tmp_path / "bad.engine", "1x3x16x16", stride=16)
    assert "  1. " in str(e.value) and "--backend onnxruntime" in str(e.value)


@pytest.fixture(scope="module")
def nvrtc():
    """The GPU frame kernels need NVRTC, which cuda-python alone does not install."""
    from edge_deblur.runtime import cudart

    why = cudart.nvrtc_available()
    if why:
        pytest.skip(why)


def test_two_slot_pipeline_matches_one_frame_at_a_time(engine, nvrtc):
    from edge_deblur.runtime.backends.tensorrt import TensorRTBackend

    fs = rand_frames(6, 30, 41) + rand_frames(3, 64, 90, seed=1)
    with TensorRTBackend(engine[0]) as b:
        ref = []
        for f in fs:
            x, info = frame_to_tensor(f, b.stride)
            ref.append(tensor_to_frame(b.infer(x), info))
        sched = b.pipeline(slots=2, timeline=True, gpu_preprocess=True)
        with sched.ex:
            two = list(sched.run(fs))
            assert len(sched.ex.timeline()) == 3 * len(fs)
        sched1 = b.pipeline(slots=1, gpu_preprocess=False)
        with sched1.ex:
            one = list(run_sync(sched1.ex, fs))
    for a, s, r in zip(two, one, ref):
        assert a.shape == r.shape
        assert np.abs(a.astype(int) - r.astype(int)).max() <= 1
        assert np.array_equal(s, r)


def test_engine_with_an_unused_output_runs_with_a_scratch_buffer(tmp_path):
    import onnx
    from onnx import TensorProto as T, helper as h

    from edge_deblur.runtime.backends.tensorrt import TensorRTBackend

    one = h.make_tensor("one", T.FLOAT, [], [1.0])
    g = h.make_graph([h.make_node("Sub", ["one", "input"], ["output"]), h.make_node("Relu", ["input"], ["aux"])],
                     "g", [h.make_tensor_value_info("input", T.FLOAT, [1, 3, -1, -1])],
                     [h.make_tensor_value_info("output", T.FLOAT, [1, 3, -1, -1]),
                      h.make_tensor_value_info("aux", T.FLOAT, [1, 3, -1, -1])], initializer=[one])
    path = tmp_path / "two_outputs.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    tb.build_engine(path, tmp_path / "two.engine", "1x3x16x16:1x3x32x32:1x3x64x64", stride=16)
    fs = rand_frames(4, 30, 41)
    with TensorRTBackend(tmp_path / "two.engine") as b:
        assert b.extra_outputs == ["aux"]
        x = np.random.default_rng(0).random((1, 3, 32, 48), np.float32)
        assert np.allclose(b.infer(x), 1.0 - x, atol=1e-6)
        sched = b.pipeline(slots=2, gpu_preprocess=False)
        with sched.ex:
            out = list(sched.run(fs))
    for f, o in zip(fs, out):
        x, info = frame_to_tensor(f, 16)
        assert np.abs(o.astype(int) - tensor_to_frame(1.0 - x, info).astype(int)).max() <= 1


def test_recurrent_engine_carries_state_on_the_device(tmp_path_factory, tmp_path):
    from edge_deblur.runtime.backends.tensorrt import TensorRTBackend

    rnn = exported(tmp_path_factory, "tiny_rnn", TINY_RNN_SPEC, fp16=False)
    path = tmp_path / "rnn.engine"
    tb.build_engine(rnn["onnx"], path, SHAPES)
    fs = rand_frames(5, 32, 48)
    with TensorRTBackend(path) as b:
        assert b.state_specs and b.state_specs[0]["scale"] == 4
        ref, state = [], None
        for f in fs:
            x, info = frame_to_tensor(f, b.stride)
            state = state or b.zero_state(1, x.shape[2], x.shape[3])
            y, state = b.infer_state(x, state)
            ref.append(tensor_to_frame(y, info))
        sched = b.pipeline(slots=2)
        with sched.ex:
            out = list(sched.run(fs))
    for a, r in zip(out, ref):
        assert np.abs(a.astype(int) - r.astype(int)).max() <= 1


def test_gpu_conversion_flags_nan_and_times_each_run(tmp_path, nvrtc):
    """The NVRTC postprocess kernel's NaN/Inf flag and the compute events on a real GPU: an
    engine computing sqrt(x - 0.5) gives NaN for dark frames and finite values for bright ones;
    each collected frame has a positive engine time."""
    import onnx
    from onnx import TensorProto as T, helper as h

    from edge_deblur.runtime.backends.tensorrt import TensorRTBackend

    half = h.make_tensor("half", T.FLOAT, [], [0.5])
    g = h.make_graph([h.make_node("Sub", ["input", "half"], ["d"]), h.make_node("Sqrt", ["d"], ["output"])],
                     "g", [h.make_tensor_value_info("input", T.FLOAT, [1, 3, -1, -1])],
                     [h.make_tensor_value_info("output", T.FLOAT, [1, 3, -1, -1])], initializer=[half])
    path = tmp_path / "sqrt.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    tb.build_engine(path, tmp_path / "sqrt.engine", "1x3x16x16:1x3x32x48:1x3x64x64", stride=16)
    bright, dark = np.full((30, 41, 3), 255, np.uint8), np.zeros((30, 41, 3), np.uint8)
    fs = [bright, bright, dark, bright, bright]
    with TensorRTBackend(tmp_path / "sqrt.engine") as b:
        sched = b.pipeline(slots=2, gpu_preprocess=True)
        finite, ms = [], []
        with sched.ex:
            for f in fs:
                for _ in sched.submit(f):
                    finite.append(sched.last_finite)
                    ms.append(sched.last_compute_ms)
            while sched.in_flight:
                sched.collect_oldest()
                finite.append(sched.last_finite)
                ms.append(sched.last_compute_ms)
    assert finite == [True, True, False, True, True]
    assert len(ms) == 5 and all(isinstance(m, float) and m > 0 for m in ms), ms
