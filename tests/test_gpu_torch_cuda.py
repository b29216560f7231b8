"""torch-cuda backend and its two-slot pipeline on a CUDA GPU (skipped elsewhere): GPU
pre/post-processing equal to the CPU's bit for bit, the same pixels from the pipeline and from
one frame at a time, agreement with ONNX Runtime (verify, FP32 and FP16), the recurrent state
kept on the GPU, copy/compute overlap seen in the CUDA event timeline, no device memory
leaked across 1,000 frames, NaN outputs reported, and the model time per frame (compute_ms).

Run on a CUDA machine:  python -m pytest -m gpu tests/test_gpu_torch_cuda.py -v
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to torch")]

from edge_deblur.runtime.gpu_pipeline import run_sync  # noqa: E402
from edge_deblur.runtime.preprocess import frame_to_tensor, tensor_to_frame  # noqa: E402
from runtime_helpers import TINY_RNN_SPEC, exported, make_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return exported(tmp_path_factory)


def open_cuda(ckpt=None, **kw):
    from edge_deblur.runtime.backends.torch_cuda import TorchCudaBackend

    return TorchCudaBackend(ckpt, **kw)


def rand_frames(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_gpu_pre_and_postprocessing_equal_the_cpu_bit_for_bit(tiny):
    b = open_cuda(tiny["ckpt"])
    rng = np.random.default_rng(1)
    for h, w in ((30, 41), (64, 64), (3, 2), (17, 5)):  # reflect, none, replicate (pad >= size)
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for rgb in (False, True):
            x_cpu, info = frame_to_tensor(frame, b.stride, rgb)
            x_gpu = b.gpu_preprocess(torch.from_numpy(frame).cuda(), rgb).cpu().numpy()
            assert x_gpu.shape == x_cpu.shape and np.array_equal(x_gpu, x_cpu), (h, w, rgb)
            y = rng.uniform(-0.2, 1.2, x_cpu.shape).astype(np.float32)
            f_gpu = b.gpu_postprocess(torch.from_numpy(y).cuda(), h, w, rgb).cpu().numpy()
            assert np.array_equal(f_gpu, tensor_to_frame(y, info)), (h, w, rgb)
    b.close()


def test_pipeline_gives_the_pixels_of_one_frame_at_a_time(tiny):
    b = open_cuda(tiny["ckpt"])
    fs = rand_frames(7, 30, 41) + rand_frames(3, 64, 48, seed=2)  # a size change mid-stream
    sched = b.pipeline(slots=2)
    two = list(sched.run(fs))
    sched.ex.close()
    ex = b.sync_executor()
    one = list(run_sync(ex, fs))
    ex.close()
    ref = []
    for f in fs:
        x, info = frame_to_tensor(f, b.stride)
        ref.append(tensor_to_frame(b.infer(x), info))
    for a, s, r in zip(two, one, ref):
        assert a.shape == r.shape and np.array_equal(a, s)
        assert np.abs(a.astype(int) - r.astype(int)).max() <= 1


@pytest.mark.parametrize("which", ["onnx", "fp16"])
def test_verify_against_onnxruntime(tiny, which):
    from edge_deblur.runtime.verify import format_report, verify

    r = verify(tiny[which], backends="onnxruntime,torch-cuda", frames=3, size=(96, 64), checkpoint=tiny["ckpt"])
    rows = {row.backend: row for row in r.rows}
    assert r.passed, format_report(r)
    assert rows["torch-cuda"].status == "pass"
    assert rows["torch-cuda"].precision == ("fp16" if which == "fp16" else "fp32")


def test_torch_cuda_agrees_with_onnxruntime_directly(tiny):
    from edge_deblur.runtime.backends import open_backend
    from edge_deblur.runtime.verify import psnr_float

    x, _ = frame_to_tensor(rand_frames(1, 64, 96)[0], 4)
    with open_backend(tiny["onnx"], "onnxruntime") as ort, open_cuda(tiny["ckpt"]) as cu:
        a, b = ort.infer(x), cu.infer(x)
    assert psnr_float(np.clip(a, 0, 1), np.clip(b, 0, 1)) >= 50


def test_recurrent_state_stays_on_the_gpu_and_follows_frame_order(tmp_path):
    ckpt = make_checkpoint(tmp_path / "rnn.safetensors", TINY_RNN_SPEC)
    b = open_cuda(ckpt)
    assert b.recurrent
    fs = rand_frames(6, 32, 48) + rand_frames(2, 40, 48, seed=3)
    sched = b.pipeline(slots=2)
    out = []
    for i, f in enumerate(fs):
        out += sched.submit(f, reset=(i == 3))
    out += sched.flush()
    sched.ex.close()
    # the same through the host-side state API, frame by frame
    ref, state, key = [], None, None
    for i, f in enumerate(fs):
        x, info = frame_to_tensor(f, b.stride)
        k = (1, x.shape[2], x.shape[3])
        if state is None or k != key or i == 3:
            state, key = b.zero_state(*k), k
        y, state = b.infer_state(x, state)
        ref.append(tensor_to_frame(y, info))
    for a, r in zip(out, ref):
        assert np.abs(a.astype(int) - r.astype(int)).max() <= 1


def _overlaps(a, b):
    return a.start_ms < b.end_ms and b.start_ms < a.end_ms


def test_copy_and_compute_overlap_in_the_event_timeline():
    """Behaviour, not speed: with two slots, frame k+1's upload or k-1's download runs on the
    GPU while frame k computes (CUDA event timestamps); one frame at a time, never.

    The GPU must be the bottleneck for copies to have compute to overlap with. On an H200,
    edgenet S at 1280x720 is not: without a CUDA graph Python launches its ~100 kernels slower
    than the GPU runs them (0 of 14 frames overlapped), and with one its ~1 ms per frame is about
    what the host needs to stage and collect a frame (0 of 14 in this test, 1-8 of 10 in
    benchmarks/gpu_overlap.py). So the test runs edgenet L (6x the MACs) as a CUDA graph."""
    import yaml

    from edge_deblur.models import build_model, to_deploy

    model = to_deploy(build_model(yaml.safe_load("{type: edgenet, size: L}"))).eval()
    b = open_cuda(model=model)
    fs = rand_frames(4, 720, 1280)
    for _ in b.pipeline(slots=2, cuda_graphs=True).run(fs):  # warm-up (cuDNN, allocator)
        pass
    n = 16
    sched = b.pipeline(slots=2, timeline=True, cuda_graphs=True)
    list(sched.run(fs[i % 4] for i in range(n)))
    tl = {(e.stage, e.index): e for e in sched.ex.timeline()}
    sched.ex.close()
    hits = sum(1 for k in range(1, n - 1)
               if _overlaps(tl[("upload", k + 1)], tl[("compute", k)]) or _overlaps(tl[("download", k - 1)], tl[("compute", k)]))
    assert hits >= (n - 2) // 2, f"copies overlapped compute for only {hits} of {n - 2} frames"
    for k in range(1, n):  # one model run at a time, in frame order
        assert tl[("compute", k - 1)].end_ms <= tl[("compute", k)].start_ms + 1e-3

    ex = b.sync_executor(timeline=True, cuda_graphs=True)
    list(run_sync(ex, (fs[i % 4] for i in range(6))))
    st = {(e.stage, e.index): e for e in ex.timeline()}
    ex.close()
    for k in range(1, 6):
        assert st[("download", k - 1)].end_ms <= st[("upload", k)].start_ms + 1e-3


def test_no_device_memory_leak_over_1000_frames(tiny):
    b = open_cuda(tiny["ckpt"])
    fs = rand_frames(4, 48, 64)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    sched = b.pipeline(slots=2)
    readings = []
    for i, _ in enumerate(sched.run(fs[i % 4] for i in range(1000))):
        if i % 100 == 99:
            readings.append(torch.cuda.memory_allocated())
    sched.ex.close()
    del sched
    torch.cuda.synchronize()
    after = torch.cuda.memory_allocated()
    # steady while streaming; the last reading comes as the pipeline drains and slots empty (lower)
    assert max(readings[1:]) == readings[1], f"device memory grew while streaming: {readings}"
    assert after <= before, f"{after - before} bytes still allocated after closing the pipeline"
    b.close()


def test_the_slot_executor_reports_nan_outputs(tiny):
    """The float output is checked on the device before the uint8 conversion (read at collect):
    a NaN output is reported as not finite, so the stream's guard counts it."""
    b = open_cuda(tiny["ckpt"])
    forward, calls = b.forward, []

    def nan_on_second(x, state=None):
        y, new = forward(x, state)
        calls.append(1)
        return (y * float("nan") if len(calls) == 2 else y), new

    b.forward = nan_on_second
    sched = b.pipeline(slots=2)
    seen = []
    for f in rand_frames(4, 48, 64):
        for _ in sched.submit(f):
            seen.append(sched.last_finite)
    for _ in sched.flush():
        seen.append(sched.last_finite)
    sched.ex.close()
    assert seen == [True, False, True, True]
    b.close()


def test_the_slot_executor_times_each_frames_model_call(tiny):
    """compute_ms: CUDA events around the model call on the slot's stream, read at collect. A
    model made slower on the GPU (torch.cuda._sleep on its stream) shows in the figure, and the
    stream records it as its infer stage for every slot frame."""
    from edge_deblur.io import StreamOptions
    from edge_deblur.runtime.deblurrer import Deblurrer
    from edge_deblur.runtime.pipeline import Pipeline

    b = open_cuda(tiny["ckpt"])
    fs = rand_frames(6, 48, 64)

    def times(sched):
        ms = []
        for f in fs:
            for _ in sched.submit(f):
                ms.append(sched.last_compute_ms)
        while sched.in_flight:
            sched.collect_oldest()
            ms.append(sched.last_compute_ms)
        sched.ex.close()
        return ms

    fast = times(b.pipeline(slots=2))
    assert len(fast) == len(fs) and all(isinstance(m, float) and m > 0 for m in fast), fast
    forward = b.forward

    def slow(x, state=None):
        torch.cuda._sleep(50_000_000)  # ~25 ms of GPU spinning at 2 GHz, on the current (slot) stream
        return forward(x, state)

    b.forward = slow
    slowed = times(b.pipeline(slots=2))
    b.forward = forward
    assert min(slowed) - max(fast) > 5.0, (fast, slowed)

    stats = Pipeline(Deblurrer(b), list(fs), lambda f, m: None, StreamOptions(slots=2), warmup=False).run()
    assert stats["schedule"] == "slots" and stats["stages"]["infer"]["count"] == len(fs)
    b.close()
