"""The TensorRT backend and its two-slot executor on the CPU, over a fake TensorRT engine and
fake cuda-python (tests/trt_fakes.py): every I/O tensor is bound (scratch buffers for outputs the
runtime does not use), set_tensor_address results are checked, the shared execution context is
rebound only after the host waited for its previous run, NVRTC missing falls back to CPU
pre/post-processing (or raises when asked for the GPU kernels), and outputs equal the CPU path."""
import numpy as np
import pytest

from edge_deblur.errors import BackendError, DependencyError
from edge_deblur.runtime import cudart
from edge_deblur.runtime.gpu_pipeline import run_sync
from edge_deblur.runtime.preprocess import frame_to_tensor, tensor_to_frame
from trt_fakes import FakeCuda, FakeEngine, no_kernels, open_fake_backend


def frames(n, h=30, w=41, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def reference(fs, stride, state=False):
    out = []
    for k, f in enumerate(fs):
        x, info = frame_to_tensor(f, stride)
        y = 1.0 - x + (k / 255.0 if state else 0.0)  # the fake state counts frames: frame k sees state k
        out.append(tensor_to_frame(y.astype(np.float32), info))
    return out


@pytest.fixture
def cuda():
    return FakeCuda()


def test_every_io_tensor_is_bound_including_unused_outputs(monkeypatch, tmp_path, cuda, caplog):
    engine = FakeEngine(cuda, extra=("aux", "edges"))
    b = open_fake_backend(monkeypatch, tmp_path, engine, frame_kernels=no_kernels)
    assert b.extra_outputs == ["aux", "edges"]
    assert "outputs the runtime does not use: ['aux', 'edges']" in caplog.text
    fs = frames(5)
    sched = b.pipeline(slots=2, gpu_preprocess=False)
    with sched.ex:
        got = list(sched.run(fs))
    for a, r in zip(got, reference(fs, b.stride)):
        assert np.array_equal(a, r)
    ctx = engine.contexts[0]
    assert ctx.runs == len(fs) and set(ctx.addresses) == {"input", "output", "aux", "edges"}
    # each slot has its own scratch buffer for the unused outputs
    aux = {e[2] for e in cuda.log if e[:2] == ("bind", "aux")}
    assert len(aux) == 2
    # the synchronous path binds them too
    x, info = frame_to_tensor(fs[0], b.stride)
    assert np.array_equal(b.infer(x), 1.0 - x)
    b.close()


def test_without_the_scratch_binding_the_run_would_fail(monkeypatch, tmp_path, cuda):
    """The fake fails like TensorRT when an output has no address: the binding is what makes it work."""
    engine = FakeEngine(cuda, extra=("aux",))
    b = open_fake_backend(monkeypatch, tmp_path, engine, frame_kernels=no_kernels)
    monkeypatch.setattr(b, "extra_outputs", [])
    sched = b.pipeline(slots=2, gpu_preprocess=False)
    with pytest.raises(BackendError, match="execute_async_v3 failed"):
        with sched.ex:
            list(sched.run(frames(2)))
    b.close()


def test_data_dependent_extra_output_is_a_clear_error(monkeypatch, tmp_path, cuda):
    engine = FakeEngine(cuda, extra=("boxes",), data_dependent=("boxes",))
    b = open_fake_backend(monkeypatch, tmp_path, engine, frame_kernels=no_kernels)
    x, _ = frame_to_tensor(frames(1)[0], b.stride)
    with pytest.raises(BackendError) as e:
        b.infer(x)
    msg = str(e.value)
    assert "['boxes']" in msg and "data-dependent" in msg and "re-export the model without that output" in msg
    b.close()


def test_rejected_tensor_address_is_a_backend_error(monkeypatch, tmp_path, cuda):
    engine = FakeEngine(cuda)
    b = open_fake_backend(monkeypatch, tmp_path, engine, frame_kernels=no_kernels)
    with pytest.raises(BackendError, match=r"refused the device address 0x1000 for tensor 'nope'"):
        b.bind(b._ctx, "nope", 0x1000)
    ctx = engine.contexts[0]
    monkeypatch.setattr(ctx, "set_tensor_address", lambda name, ptr: False)  # e.g. a misaligned buffer
    x, _ = frame_to_tensor(frames(1)[0], b.stride)
    with pytest.raises(BackendError, match="for tensor 'input'"):
        b.infer(x)
    b.close()


def test_rebinding_waits_for_the_previous_run_on_the_shared_context(monkeypatch, tmp_path, cuda):
    engine = FakeEngine(cuda, state=True)
    b = open_fake_backend(monkeypatch, tmp_path, engine, frame_kernels=no_kernels)
    fs = frames(6)
    sched = b.pipeline(slots=2, gpu_preprocess=False)
    with sched.ex:
        got = list(sched.run(fs))
        computed = {sl.computed.id: i for i, sl in enumerate(sched.ex._slots)}
    for a, r in zip(got, reference(fs, b.stride, state=True)):
        assert np.array_equal(a, r)  # the state is carried in frame order across the two slots
    # replay the log: after each run, the next bind must come after a host wait on that run's event
    log = cuda.log
    runs = [i for i, e in enumerate(log) if e[0] == "execute"]
    assert len(runs) == len(fs)
    for k, (run, nxt) in enumerate(zip(runs, runs[1:])):
        record = next(e for e in log[run + 1:] if e[0] == "record" and e[1] in computed)
        first_bind = next(i for i in range(run + 1, nxt) if log[i][0] == "bind")
        waited = [e for e in log[run + 1:first_bind] if e == ("event_sync", record[1])]
        assert waited, f"run {k + 1} rebinds the context before the host waited for run {k}"
    b.close()


def test_missing_nvrtc_falls_back_to_cpu_preprocessing(monkeypatch, tmp_path, cuda, caplog):
    class DynamicLibNotFoundError(RuntimeError):  # cuda.pathfinder's, a RuntimeError and not an ImportError
        pass

    class Nvrtc:
        class nvrtcResult:
            NVRTC_SUCCESS = 0

        @staticmethod
        def nvrtcVersion():
            raise DynamicLibNotFoundError('Failure finding "libnvrtc.so.13 or libnvrtc.so.12"')

    monkeypatch.setattr(cudart, "_driver_and_nvrtc", lambda: (object(), Nvrtc))
    engine = FakeEngine(cuda)
    b = open_fake_backend(monkeypatch, tmp_path, engine)  # the real FrameKernels, over the failing NVRTC
    with pytest.raises(DependencyError) as e:
        cudart.FrameKernels(0)
    msg = str(e.value)
    assert "DynamicLibNotFoundError" in msg and "libnvrtc" in msg
    assert "pip install 'edge-deblur[tensorrt]'" in msg and "gpu_preprocess=False" in msg
    fs = frames(4)
    sched = b.pipeline(slots=2)  # default: the GPU kernels where NVRTC loads, else the CPU
    with sched.ex:
        assert not sched.ex.gpu_preprocess and "converted on the CPU" in sched.ex.preprocess_note
        got = list(sched.run(fs))
    assert "frames are converted on the CPU" in caplog.text
    for a, r in zip(got, reference(fs, b.stride)):
        assert np.array_equal(a, r)
    with pytest.raises(DependencyError, match="libnvrtc"):
        b.pipeline(slots=2, gpu_preprocess=True)  # asked for the GPU kernels: no silent fallback
    sched1 = b.pipeline(slots=1, gpu_preprocess=False)
    with sched1.ex:
        assert list(run_sync(sched1.ex, fs[:2])) and len(got) == 4
    b.close()


def test_nvrtc_error_result_is_a_dependency_error():
    class Nvrtc:
        class nvrtcResult:
            NVRTC_SUCCESS = 0

        @staticmethod
        def nvrtcVersion():
            return 7, 0, 0

    with pytest.raises(DependencyError, match="nvrtcVersion returned 7"):
        cudart.require_nvrtc(Nvrtc)


def test_a_scene_cut_resets_the_device_state(monkeypatch, tmp_path, cuda):
    """The scheduler looked for the backend at executor.backend, which the GPU executors did not
    set: no scene-cut detector, and the previous scene's state went on into the new one."""
    b = open_fake_backend(monkeypatch, tmp_path, FakeEngine(cuda, state=True), frame_kernels=no_kernels)
    base = frames(1)[0] // 4
    bright = [np.roll(base + 180, k, axis=1) for k in range(3)]  # one scene panning
    dark = [np.roll(base + 10, k, axis=1) for k in range(3)]     # a cut to another
    sched = b.pipeline(slots=2, gpu_preprocess=False)
    with sched.ex:
        got = list(sched.run(bright + dark))
    assert sched.scene_cuts == 1
    want = reference(bright, b.stride, state=True) + reference(dark, b.stride, state=True)  # the state restarts
    for a, r in zip(got, want):
        assert np.array_equal(a, r)
    b.close()


def test_one_frame_outside_the_profile_fails_alone(monkeypatch, tmp_path, cuda):
    """The slot's buffers were freed before the shape was refused: the slot stayed keyed to freed
    memory, and every later frame of the usual size failed too."""
    from edge_deblur.errors import InputError

    b = open_fake_backend(monkeypatch, tmp_path, FakeEngine(cuda), frame_kernels=no_kernels)
    sched = b.pipeline(slots=2, gpu_preprocess=False)
    with sched.ex:
        assert len(list(sched.run(frames(3)))) == 3
        with pytest.raises((BackendError, InputError)):
            list(sched.run(frames(1, h=200, w=200)))  # over the profile's 128x128
        got = list(sched.run(frames(4, seed=1)))
    for a, r in zip(got, reference(frames(4, seed=1), b.stride)):
        assert np.array_equal(a, r)
    b.close()
