"""The TensorRT slot executor's model time per frame (``compute_ms``) and its NaN/Inf check on the
GPU-conversion path, over the fakes of tests/trt_fakes.py.

- ``compute_ms``: two timing events around ``execute_async_v3`` on the slot's stream, read at
  collect once the download has been synchronized. The fake device clock advances by the
  engine's ``run_ms`` per run and by other amounts per copy and kernel launch, so the figure is
  the run's own time exactly, frame by frame, and is what the stream records as ``infer``.
- NaN/Inf: with the NVRTC kernels (the real ``cudart.FrameKernels`` over a fake driver that runs
  the kernels with numpy, over the grid launched) the postprocess kernel sets a per-slot device
  flag, zeroed before each launch and downloaded with the frame; ``finite()`` reports it and the
  stream's guard counts it (no ``unchecked_frames`` left on that path).
"""
import shutil
import subprocess

import numpy as np
import pytest

from edge_deblur.io import StreamOptions
from edge_deblur.runtime import cudart
from edge_deblur.runtime.deblurrer import Deblurrer
from edge_deblur.runtime.pipeline import Pipeline
from test_trt_slots_fake import frames, reference
from trt_fakes import FakeContext, FakeCuda, FakeEngine, emulated_kernels, no_kernels, open_fake_backend


def open_backend(monkeypatch, tmp_path, gpu: bool, **engine_kw):
    """A fake TensorRT backend; ``gpu``: the real FrameKernels over the emulating driver, else none."""
    cuda = FakeCuda()
    engine = FakeEngine(cuda, **engine_kw)
    driver = emulated_kernels(monkeypatch, cuda) if gpu else None
    b = open_fake_backend(monkeypatch, tmp_path, engine, frame_kernels=None if gpu else no_kernels)
    return b, engine, cuda, driver


def collect_all(sched, fs):
    """Outputs, and the scheduler's last_compute_ms / last_finite after each collect."""
    out, ms, finite = [], [], []

    def take(ys):
        for y in ys:
            out.append(y)
            ms.append(sched.last_compute_ms)
            finite.append(sched.last_finite)

    for f in fs:
        take(sched.submit(f))  # at most one output per submit: the figures are that frame's
    while sched.in_flight:
        take([sched.collect_oldest()])  # one at a time (flush() collects them all before returning)
    return out, ms, finite


def poison(monkeypatch, runs: dict):
    """The executor's context writes ``value`` at ``where`` (an index into the 1x3xHxW output) on
    its k-th run (from 1) for each ``k: (value, where)`` of ``runs``."""
    run = FakeContext.execute_async_v3

    def execute(self, stream):
        ok = run(self, stream)
        if self.runs in runs:
            value, where = runs[self.runs]
            self.cuda.tensor(self.addresses["output"], self.get_tensor_shape("output"))[where] = value
        return ok

    monkeypatch.setattr(FakeContext, "execute_async_v3", execute)


# -- compute_ms -----------------------------------------------------------------------------------


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu-conversion", "gpu-conversion"])
@pytest.mark.parametrize("slots", [1, 2, 3])
def test_compute_ms_is_each_frames_engine_time(monkeypatch, tmp_path, gpu, slots):
    b, engine, cuda, driver = open_backend(monkeypatch, tmp_path, gpu, run_ms=lambda k: 2.0 + 0.5 * k)
    fs = frames(7)
    sched = b.pipeline(slots=slots, gpu_preprocess=gpu)
    with sched.ex:
        assert sched.ex.gpu_preprocess is gpu
        out, ms, _ = collect_all(sched, fs)
        ex = sched.ex
        timing = {e.id for sl in ex._slots for e in (sl.compute0, sl.compute1)}
        downloaded = {sl.downloaded.id: s for s, sl in enumerate(ex._slots)}
        pairs = {sl.compute0.id: s for s, sl in enumerate(ex._slots)}
        own = {s: sl.downloaded.id for s, sl in enumerate(ex._slots)}
        allowed_syncs = {e.id for sl in ex._slots for e in (sl.uploaded, sl.computed, sl.downloaded)}
    for a, r in zip(out, reference(fs, b.stride)):
        assert np.array_equal(a, r)
    assert (len(driver.launches) == 2 * len(fs)) if gpu else driver is None  # the path under test ran
    # each frame's own run (k-th run: 2 + 0.5 k ms), not the copies and kernels around it
    assert ms == pytest.approx([2.0 + 0.5 * k for k in range(len(fs))])
    assert all(isinstance(m, float) and m > 0 for m in ms)
    # read after the slot's own download was synchronized, and no new host wait was added
    log = cuda.log
    reads = [i for i, e in enumerate(log) if e[0] == "elapsed" and e[1] in pairs]
    assert len(reads) == len(fs)
    for i in reads:
        slot = pairs[log[i][1]]
        last_record = max(j for j in range(i) if log[j] == ("record", log[i][2]))
        assert ("event_sync", own[slot]) in log[last_record:i], f"read at {i} before slot {slot}'s download sync"
    synced = {e[1] for e in log if e[0] == "event_sync"}
    assert not synced & timing and synced <= allowed_syncs
    assert set(downloaded) <= synced
    b.close()


def test_compute_ms_of_the_timeline_pair_and_the_timeline_agree(monkeypatch, tmp_path):
    """With the timeline on, its compute marks are the same pair of events."""
    b, engine, cuda, _ = open_backend(monkeypatch, tmp_path, False, run_ms=4.0)
    sched = b.pipeline(slots=2, gpu_preprocess=False, timeline=True)
    with sched.ex:
        _, ms, _ = collect_all(sched, frames(4))
        tl = [t for t in sched.ex.timeline() if t.stage == "compute"]
    assert ms == pytest.approx([4.0] * 4)
    assert [t.end_ms - t.start_ms for t in tl] == pytest.approx([4.0] * 4)
    assert all(t.end_ms - t.start_ms == pytest.approx(cuda.copy_ms) for t in sched.ex.timeline() if t.stage == "upload")
    b.close()


def test_a_failed_time_read_costs_the_figure_not_the_frame(monkeypatch, tmp_path, caplog):
    b, engine, cuda, _ = open_backend(monkeypatch, tmp_path, False)
    sched = b.pipeline(slots=2, gpu_preprocess=False)
    with sched.ex:
        for sl in sched.ex._slots:
            sl.compute0.timing = False  # as an event made with cudaEventDisableTiming: CUDA refuses the read
        fs = frames(3)
        out, ms, _ = collect_all(sched, fs)
    assert ms == [None] * 3 and len(out) == 3
    assert sum("cannot be read" in r.getMessage() for r in caplog.records) == 1
    b.close()


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu-conversion", "gpu-conversion"])
def test_the_stream_records_the_engine_time_as_infer_for_slot_frames(monkeypatch, tmp_path, gpu):
    b, engine, cuda, _ = open_backend(monkeypatch, tmp_path, gpu, run_ms=lambda k: 3.0 if k % 2 else 5.0)
    fs = frames(8)
    got = []
    stats = Pipeline(Deblurrer(b), list(fs), lambda f, m: got.append(f),
                     StreamOptions(slots=2, gpu_preprocess=gpu), warmup=False).run()
    assert stats["schedule"] == "slots" and len(got) == 8
    inf, fl = stats["stages"]["infer"], stats["stages"]["in_flight"]
    assert inf["count"] == fl["count"] == 8  # every slot frame has its model time
    # the fake device's runs, 5 and 3 ms in turn (in_flight is the host's wall time, not comparable)
    assert (inf["mean"], inf["p50"], inf["p99"]) == pytest.approx((4.0, 4.0, 5.0))
    b.close()


# -- NaN/Inf on the GPU-conversion path ---------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["frame", "padding"])
def test_the_postprocess_kernel_flags_non_finite_outputs(monkeypatch, tmp_path, value, where):
    b, engine, cuda, driver = open_backend(monkeypatch, tmp_path, True)
    # 41x17 frames padded to 48x32 (stride 16): the padding is checked too, as on the host; its
    # last rows lie beyond a grid launched over the frame alone (8-row blocks: rows 0-23)
    b.stride = 16
    idx = (0, 1, 3, 5) if where == "frame" else (0, 2, 31, 47)
    poison(monkeypatch, {3: (value, idx)})  # the third frame, on slot 0; slot 0 runs frames 1 and 5 clean
    fs = frames(5, h=17, w=41)
    sched = b.pipeline(slots=2, gpu_preprocess=True)
    with sched.ex:
        assert sched.ex.gpu_preprocess
        out, _, finite = collect_all(sched, fs)
    assert finite == [True, True, False, True, True]  # the flag is cleared before each launch
    ref = reference(fs, b.stride)
    for k in (0, 1, 3, 4):
        assert np.array_equal(out[k], ref[k])
    flags = [e for e in cuda.log if e[0] == "memset"]
    assert len(flags) == len(fs)
    b.close()


def test_a_nan_output_on_the_gpu_conversion_path_is_counted_by_the_stream(monkeypatch, tmp_path):
    """The stream's NaN/Inf guard sees it: the input passes through, and no frame is unchecked."""
    b, engine, cuda, driver = open_backend(monkeypatch, tmp_path, True)
    poison(monkeypatch, {3: (np.nan, slice(None))})
    fs = frames(6)
    got = []
    stats = Pipeline(Deblurrer(b), list(fs), lambda f, m: got.append(f), StreamOptions(slots=2),
                     warmup=False).run()  # gpu_preprocess default: the GPU kernels, which load here
    assert stats["schedule"] == "slots" and len(got) == 6
    assert any(name == "f32nchw_to_u8hwc" for name, *_ in driver.launches)
    assert stats["model_output"] == {"bad_frames": 1, "longest_bad_run": 1, "unchecked_frames": 0}
    assert np.array_equal(got[2], fs[2])  # passed through, not the black frame the kernel made of NaN
    ref = reference(fs, b.stride)
    assert all(np.array_equal(got[i], ref[i]) for i in (0, 1, 3, 4, 5))
    b.close()


def test_clean_gpu_conversion_frames_are_checked_not_unchecked(monkeypatch, tmp_path):
    b, engine, cuda, driver = open_backend(monkeypatch, tmp_path, True)
    stats = Pipeline(Deblurrer(b), frames(5), lambda f, m: None, StreamOptions(slots=2), warmup=True).run()
    assert stats["schedule"] == "slots"
    assert stats["model_output"] == {"bad_frames": 0, "longest_bad_run": 0, "unchecked_frames": 0}
    b.close()


def test_the_kernel_flag_buffer_must_hold_an_int(monkeypatch):
    cuda = FakeCuda()
    cuda.install(monkeypatch)
    emulated_kernels(monkeypatch, cuda)
    with cudart.FrameKernels(0) as k:
        small = cuda.DeviceBuffer(2)
        with pytest.raises(Exception, match="4-byte device buffer"):
            k.postprocess(cuda.DeviceBuffer(3 * 4 * 4 * 4), cuda.DeviceBuffer(48), small, 4, 4, 4, 4, False,
                          cuda.Stream())


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc to compile the kernel source")
def test_the_kernel_source_compiles_with_the_parameters_the_launch_passes(tmp_path):
    """nvcc (no GPU needed) compiles FRAME_KERNELS to PTX; the postprocess kernel takes the eight
    parameters FrameKernels.postprocess packs (src, dst, bad, h, w, hp, wp, swap_rb)."""
    src = tmp_path / "frames.cu"
    src.write_text(cudart.FRAME_KERNELS)
    ptx = tmp_path / "frames.ptx"
    r = subprocess.run(["nvcc", "--ptx", "-arch=sm_87", "-std=c++11", str(src), "-o", str(ptx)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    text = ptx.read_text()
    post = text[text.index(".entry f32nchw_to_u8hwc"):]
    params = post[: post.index(")")].count(".param")
    assert params == 8
    assert "atom" in post  # the flag is set with an atomic
