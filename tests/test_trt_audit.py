"""TensorRT API audit, on the fakes (tests/trt_fakes.py): CUDA work on a worker thread runs on
the backend's device (the current device is per thread); engine I/O of a dtype numpy cannot hold
(BF16) is a BackendError naming the tensor; an NVRTC that cannot compile the frame kernels falls
back to CPU pre/post-processing unless the GPU kernels were asked for, and a GPU newer than NVRTC
gets PTX for the newest architecture NVRTC knows; every build and runtime shares one TensorRT
logger; engines are built with detailed profiling verbosity."""
import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edge_deblur.errors import BackendError
from edge_deblur.export import trt_build as tb
from edge_deblur.runtime import cudart
from edge_deblur.runtime.cudart import GpuInfo
from edge_deblur.runtime.preprocess import frame_to_tensor, tensor_to_frame
from trt_fakes import (FakeCuda, FakeDriver, FakeEngine, FakeNvrtc, FakeTrt, fake_trt, no_kernels, open_fake_backend,
                       write_relu_onnx)


def frames(n, h=30, w=41, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def reference(fs, stride):
    out = []
    for f in fs:
        x, info = frame_to_tensor(f, stride)
        out.append(tensor_to_frame((1.0 - x).astype(np.float32), info))
    return out


def on_worker_thread(fn):
    with ThreadPoolExecutor(1) as pool:  # a fresh thread: CUDA's current device there is 0
        return pool.submit(fn).result()


@pytest.fixture
def cuda():
    return FakeCuda()


# -- 1. the device is set on the thread that does the work --------------------------------------


def test_inference_on_a_worker_thread_runs_on_the_backends_device(monkeypatch, tmp_path, cuda):
    engine = FakeEngine(cuda)
    b = open_fake_backend(monkeypatch, tmp_path, engine, frame_kernels=no_kernels, device="cuda:1")
    assert b.device == 1 and cuda.current_device() == 1  # set while opening, on this thread only
    x, _ = frame_to_tensor(frames(1)[0], b.stride)

    def infer():
        before = cuda.current_device()
        return before, b.infer(x)

    before, y = on_worker_thread(infer)
    assert before == 0 and np.array_equal(y, 1.0 - x)
    fs = frames(5)
    sched = b.pipeline(slots=2, gpu_preprocess=False)  # made here, run on the worker (as a pipeline thread does)
    with sched.ex:
        got = on_worker_thread(lambda: list(sched.run(fs)))
    for a, r in zip(got, reference(fs, b.stride)):
        assert np.array_equal(a, r)
    runs = [d for what, d in cuda.work_devices if what == "execute"]
    assert len(runs) == 1 + len(fs)
    assert {d for _, d in cuda.work_devices} == {1}, f"CUDA work ran on device 0: {cuda.work_devices}"
    b.close()


# -- 2. BF16/FP8/FP4/INT4 engine I/O --------------------------------------------------------------


def test_bf16_engine_io_is_a_backend_error_naming_the_tensor(monkeypatch, tmp_path, cuda):
    engine = FakeEngine(cuda, dtypes={"output": FakeTrt.bfloat16})
    with pytest.raises(BackendError) as e:
        open_fake_backend(monkeypatch, tmp_path, engine, frame_kernels=no_kernels)
    msg = str(e.value)
    assert "'output'" in msg and "BF16" in msg
    assert "float32 or float16 inputs and outputs" in msg and "keep_io_types" in msg
    assert isinstance(e.value.__cause__, TypeError)


# -- 3. NVRTC cannot compile the kernels for this GPU ---------------------------------------------


def test_kernel_compile_failure_falls_back_to_cpu_preprocessing(monkeypatch, tmp_path, cuda, caplog):
    nvrtc = FakeNvrtc(fail=True)
    monkeypatch.setattr(cudart, "_driver_and_nvrtc", lambda: (FakeDriver(), nvrtc))
    b = open_fake_backend(monkeypatch, tmp_path, FakeEngine(cuda))  # the real FrameKernels, over the fake NVRTC
    fs = frames(4)
    sched = b.pipeline(slots=2)  # default (auto): the CPU, with one warning saying why
    with sched.ex:
        assert not sched.ex.gpu_preprocess and "could not compile the frame kernels" in sched.ex.preprocess_note
        got = list(sched.run(fs))
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "converted on the CPU" in r.getMessage()]
    assert len(warnings) == 1 and "sm_87" in warnings[0].getMessage()
    for a, r in zip(got, reference(fs, b.stride)):
        assert np.array_equal(a, r)
    with pytest.raises(BackendError, match="could not compile the frame kernels"):
        b.pipeline(slots=2, gpu_preprocess=True)  # asked for the GPU kernels: no silent fallback
    b.close()


def test_gpu_newer_than_nvrtc_gets_ptx_for_the_newest_supported_arch(monkeypatch, cuda):
    cuda.install(monkeypatch)
    nvrtc = FakeNvrtc(archs=(75, 80, 86, 87, 89, 90))
    monkeypatch.setattr(cudart, "_driver_and_nvrtc", lambda: (FakeDriver(), nvrtc))
    with cudart.FrameKernels(0):  # Fake GPU 8.7: a CUBIN for sm_87, as before
        pass
    monkeypatch.setattr(cudart, "gpu_info", lambda device=0: GpuInfo("Newer GPU", 12, 0))
    with cudart.FrameKernels(0):  # sm_120 is newer than this NVRTC: PTX for compute_90, JIT-compiled at load
        pass
    assert [o[0] for o in nvrtc.options] == ["--gpu-architecture=sm_87", "--gpu-architecture=compute_90"]
    assert cudart.nvrtc_target(FakeNvrtc(archs=(90, 100)), 8, 7) == ("sm_87", False)  # older than all: NVRTC says why


# -- 4. one TensorRT logger per process -----------------------------------------------------------


@pytest.fixture
def model(tmp_path):
    pytest.importorskip("onnx")
    return write_relu_onnx(tmp_path / "m.onnx")


build = functools.partial(tb.build_engine, stride=16, state_downscale=4)


def install_builder(monkeypatch, cuda):
    cuda.install(monkeypatch)
    trt = fake_trt()
    monkeypatch.setattr(tb, "import_tensorrt", lambda: trt)
    return trt


def test_builds_and_runtimes_share_one_tensorrt_logger(monkeypatch, tmp_path, cuda, model, caplog):
    b1 = open_fake_backend(monkeypatch, tmp_path, FakeEngine(cuda), frame_kernels=no_kernels)
    b2 = open_fake_backend(monkeypatch, tmp_path, FakeEngine(cuda), frame_kernels=no_kernels)  # e.g. a second camera
    assert b1._runtime.logger is b2._runtime.logger
    trt = install_builder(monkeypatch, cuda)
    build(model, tmp_path / "m.engine", "1x3x16x16:1x3x32x48:1x3x64x64")
    assert trt.built["logger"] is b1._runtime.logger
    b1.close()  # closing a runtime leaves the logger TensorRT holds alive
    logger = tb._Logger.make(trt, verbose=True)  # the verbosity is adjustable, on the same object
    assert logger is b2._runtime.logger and logger.verbose
    with caplog.at_level("DEBUG", logger=tb.log.name):
        logger.log(FakeTrt.ILogger.Severity.INFO, "an info line")
        tb._Logger.make(trt, verbose=False).log(FakeTrt.ILogger.Severity.INFO, "a hidden line")
    assert "an info line" in caplog.text and "a hidden line" not in caplog.text
    b2.close()


# -- 5. profiling verbosity -----------------------------------------------------------------------


def test_engine_is_built_with_detailed_profiling_verbosity(monkeypatch, tmp_path, cuda, model):
    trt = install_builder(monkeypatch, cuda)
    build(model, tmp_path / "m.engine", "1x3x16x16:1x3x32x48:1x3x64x64")
    assert trt.built["config"].profiling_verbosity == trt.ProfilingVerbosity.DETAILED
    del trt.ProfilingVerbosity  # a TensorRT without the enum: built as before
    build(model, tmp_path / "n.engine", "1x3x16x16:1x3x32x48:1x3x64x64")
    assert trt.built["config"].profiling_verbosity == "LAYER_NAMES_ONLY"
