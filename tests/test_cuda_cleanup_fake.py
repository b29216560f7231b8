"""CUDA resources on error paths, over the fakes (tests/trt_fakes.py): what was made before a
failure is freed, and a failed (re)allocation never leaves a size key naming freed buffers."""
import itertools
import types

import numpy as np
import pytest

from edge_deblur.errors import BackendError, InputError
from edge_deblur.runtime import cudart
from edge_deblur.runtime.gpu_pipeline import SlotExecutor
from test_trt_slots_fake import frames, reference
from trt_fakes import FakeCuda, FakeDriver, FakeEngine, FakeNvrtc, no_kernels, open_fake_backend


@pytest.fixture
def cuda():
    return FakeCuda()


def fail_nth(kind, n):
    """fail(kind, size) for FakeCuda: the n-th creation (from 1) of ``kind`` fails."""
    count = itertools.count(1)
    return lambda k, size: k == kind and next(count) == n


def test_a_slot_whose_event_fails_frees_its_stream_and_events(monkeypatch, tmp_path, cuda):
    b = open_fake_backend(monkeypatch, tmp_path, FakeEngine(cuda), frame_kernels=no_kernels)
    cuda.fail = fail_nth("Event", 7)  # slot 0 makes 5 events (3 + the compute timing pair); slot 1 fails on its second
    with pytest.raises(BackendError, match="out of memory"):
        b.pipeline(slots=2, gpu_preprocess=False)
    cuda.fail = None
    b.close()
    assert not cuda.open_objects()  # slot 1's stream and first event included


def test_too_few_slots_allocates_nothing(monkeypatch, tmp_path, cuda):
    kernels = []

    class Kernels:
        def __init__(self, device=0):
            self.closed = False
            kernels.append(self)

        def close(self):
            self.closed = True

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    b = open_fake_backend(monkeypatch, tmp_path, FakeEngine(cuda), frame_kernels=Kernels)
    contexts = len(b.engine.contexts)
    with pytest.raises(InputError, match="at least one slot"):
        b.pipeline(slots=0)
    assert all(k.closed for k in kernels) and len(b.engine.contexts) == contexts
    b.close()
    assert not cuda.open_objects()


def test_schedule_closes_the_executor_it_cannot_schedule():
    from edge_deblur.runtime.gpu_pipeline import schedule

    class Ex(SlotExecutor):
        slots = 0
        closed = False
        stage = upload = compute = download = collect = lambda *a, **k: None

        def close(self):
            self.closed = True

    ex = Ex()
    with pytest.raises(InputError, match="at least one slot"):
        schedule(ex)
    assert ex.closed


def test_failed_buffer_growth_keeps_the_old_size_working(monkeypatch, tmp_path, cuda):
    """The key of the old size outlived its freed buffers: the next infer of that size used the
    half-made buffers of the size that failed."""
    b = open_fake_backend(monkeypatch, tmp_path, FakeEngine(cuda), frame_kernels=no_kernels)
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    assert np.array_equal(b.infer(x), 1.0 - x)
    big = np.zeros((1, 3, 64, 64), np.float32)
    cuda.fail = lambda kind, size: kind == "DeviceBuffer" and size == big.nbytes and next(count) == 2  # the output's
    count = itertools.count(1)
    with pytest.raises(BackendError, match="out of memory"):
        b.infer(big)
    cuda.fail = None
    assert np.array_equal(b.infer(x), 1.0 - x)
    b.close()
    assert not cuda.open_objects()


def test_failed_state_growth_keeps_the_old_size_working(monkeypatch, tmp_path, cuda):
    """The same for the slot pipeline's recurrent state buffers."""
    b = open_fake_backend(monkeypatch, tmp_path, FakeEngine(cuda, state=True), frame_kernels=no_kernels)
    state_bytes = 2 * (64 // 4) * (64 // 4) * 4  # FakeEngine's state of a 64x64 frame: (1, 2, 16, 16) float32
    sched = b.pipeline(slots=2, gpu_preprocess=False)
    fs = frames(3)
    with sched.ex:
        assert len(list(sched.run(fs))) == 3
        cuda.fail = lambda kind, size: kind == "DeviceBuffer" and size == state_bytes
        with pytest.raises(BackendError, match="out of memory"):
            list(sched.run(frames(1, h=64, w=64)))
        cuda.fail = None
        got = list(sched.run(fs))
    for a, r in zip(got, reference(fs, b.stride, state=True)):  # a new state for the size: it restarts
        assert np.array_equal(a, r)
    b.close()
    assert not cuda.open_objects()


class CountingNvrtc(FakeNvrtc):
    def __init__(self, fail_get=False):
        super().__init__()
        self.fail_get, self.programs = fail_get, 0

    def nvrtcCreateProgram(self, *a):
        self.programs += 1
        return super().nvrtcCreateProgram(*a)

    def nvrtcGetCUBIN(self, prog, buf):
        return (self.nvrtcResult.NVRTC_ERROR_COMPILATION,) if self.fail_get else (0,)

    def nvrtcDestroyProgram(self, prog):
        self.programs -= 1
        return (0,)


class CountingDriver(FakeDriver):
    def __init__(self, fail_function=False):
        self.fail_function, self.modules = fail_function, 0

    def cuModuleLoadData(self, image):
        self.modules += 1
        return super().cuModuleLoadData(image)

    def cuModuleGetFunction(self, module, name):
        return (700, None) if self.fail_function else super().cuModuleGetFunction(module, name)

    def cuModuleUnload(self, module):
        self.modules -= 1
        return (0,)


@pytest.mark.parametrize("nvrtc, driver, what", [
    (CountingNvrtc(fail_get=True), CountingDriver(), "nvrtcGetCUBIN failed"),
    (CountingNvrtc(), CountingDriver(fail_function=True), "cuModuleGetFunction failed"),
])
def test_frame_kernels_free_the_program_and_module_on_failure(monkeypatch, cuda, nvrtc, driver, what):
    cuda.install(monkeypatch)
    monkeypatch.setattr(cudart, "_driver_and_nvrtc", lambda: (driver, nvrtc))
    with pytest.raises(BackendError, match=what):
        cudart.FrameKernels(0)
    assert nvrtc.programs == 0 and driver.modules == 0
    nvrtc.fail_get = driver.fail_function = False
    with cudart.FrameKernels(0):  # and on success: the program is destroyed, the module loaded until close
        assert nvrtc.programs == 0 and driver.modules == 1
    assert driver.modules == 0


def test_pinned_buffer_frees_its_memory_when_the_view_fails(monkeypatch):
    freed = []
    runtime = types.SimpleNamespace(cudaError_t=types.SimpleNamespace(cudaSuccess=0),
                                    cudaMallocHost=lambda n: (0, 0x1000), cudaFreeHost=lambda p: freed.append(p) or (0,))
    monkeypatch.setattr(cudart, "_cudart", runtime)

    class Array:
        @staticmethod
        def from_address(ptr):
            raise ValueError(f"cannot map {ptr:#x}")

    class U8:
        def __mul__(self, n):
            return Array

    monkeypatch.setattr(cudart, "ctypes", types.SimpleNamespace(c_uint8=U8()))
    with pytest.raises(ValueError, match="cannot map"):
        cudart.PinnedBuffer((2, 3))
    assert freed == [0x1000]
