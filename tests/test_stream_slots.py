"""The stream's inference stage on the backend's slot scheduler (double buffering), on the CPU:
a fake backend whose ``pipeline(slots, rgb)`` is ``schedule(CpuSlotExecutor(...))`` (worker
threads stand in for CUDA streams), and the TensorRT backend over the fake TensorRT of
tests/trt_fakes.py. Checks that a stream through the slots gives the synchronous path's frames,
in order, with their metadata (also when stopped midway: the frames in flight are flushed), that
a recurrent state is reset on a loop restart, that a live stream hands outputs on without waiting
for the next frame, and the ``--slots`` option (0: an error; ONNX Runtime: synchronous)."""
import json
import logging
import random
import threading
import time

import numpy as np
import pytest

from edge_deblur.cli import main
from edge_deblur.errors import InputError
from edge_deblur.io import StreamOptions
from edge_deblur.runtime.backends.base import Backend
from edge_deblur.runtime.deblurrer import Deblurrer
from edge_deblur.runtime.gpu_pipeline import CpuSlotExecutor, schedule
from edge_deblur.runtime.pipeline import Pipeline, run_stream

from video_helpers import make_video, numbered_frame
from test_cli_stream import tiny_onnx  # noqa: F401  (fixture)


class SlotInvert(Backend):
    """y = 1 - x (stride 4), with a random nap per call so that a schedule that reorders shows it;
    ``pipeline()`` as the GPU backends offer it, run on CPU worker threads."""

    name = "fake-slots"

    def __init__(self, nap=(0.0, 0.004), seed=0):
        super().__init__()
        self.stride = 4
        self.nap = nap
        self.rng = random.Random(seed)
        self.pipelines = []
        self.infer_threads = set()

    def infer(self, x):
        self.infer_threads.add(threading.current_thread().name)
        time.sleep(self.rng.uniform(*self.nap))
        return (1.0 - x).astype(np.float32)

    def pipeline(self, slots=2, rgb=False):
        sched = schedule(CpuSlotExecutor(self, slots=slots, rgb=rgb))
        self.pipelines.append(sched)
        return sched


class SlotCounter(SlotInvert):
    """A recurrent model: the state counts the frames since the last reset, and the output
    carries the count (y = x / 2 + count / 255), so a reset shows in the frames."""

    name = "fake-slots-rnn"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.state_specs = [{"input": "state_in", "output": "state_out", "channels": 1, "scale": 4, "rank": 4}]
        self.seen = []

    def zero_state(self, n, h, w):
        return {"state_in": np.zeros((n, 1, h // 4, w // 4), np.float32)}

    def infer_state(self, x, state):
        time.sleep(self.rng.uniform(*self.nap))
        k = float(state["state_in"].flat[0])
        self.seen.append(int(k))
        y = (x * 0.5 + k / 255.0).astype(np.float32)
        return y, {"state_in": state["state_in"] + 1.0}


def run(backend_or_deblurrer, source, slots, warmup=True, **opts):
    d = backend_or_deblurrer if isinstance(backend_or_deblurrer, Deblurrer) else Deblurrer(backend_or_deblurrer)
    got = []
    stats = Pipeline(d, source, lambda f, m: got.append((f, m)), StreamOptions(slots=slots, **opts),
                     warmup=warmup).run()
    return got, stats


def same_frames(a, b):
    assert len(a) == len(b)
    for (fa, ma), (fb, mb) in zip(a, b):
        assert (ma.index, ma.name, ma.pts, ma.restart) == (mb.index, mb.name, mb.pts, mb.restart)
        assert fa.shape == fb.shape and fa.dtype == fb.dtype and np.array_equal(fa, fb), ma.index


@pytest.mark.parametrize("slots", [2, 3])
def test_a_stream_through_the_slots_equals_the_synchronous_stream(tmp_path, slots):
    src = make_video(tmp_path / "clip.avi", n=14, w=62, h=46)  # padded to the stride and cropped back
    b = SlotInvert()
    got, stats = run(b, str(src), slots)
    assert len(b.pipelines) == 1 and b.pipelines[0].slots == slots  # the stream ran the backend's scheduler
    assert any(t.startswith("slot") for t in b.infer_threads)        # on the executor's slot threads
    assert stats["schedule"] == "slots" and stats["slots"] == slots and stats["schedule_reason"] is None
    want, sync = run(SlotInvert(), str(src), 1)
    assert sync["schedule"] == "sync" and sync["slots"] == 1 and "slots=1" in sync["schedule_reason"]
    same_frames(got, want)
    assert [m.index for _, m in got] == list(range(14))
    assert stats["frames_in"] == stats["frames_processed"] == stats["frames_out"] == 14
    assert stats["state"] == {"kind": "image"}
    # the CPU executor checks each float output for NaN/Inf before the uint8 conversion
    assert stats["model_output"] == {"bad_frames": 0, "longest_bad_run": 0, "unchecked_frames": 0}
    # pre/post-processing ran inside the executor: the CPU stages passed the frames through
    assert "infer" in stats["stages"] and "preprocess" not in stats["stages"] and "postprocess" not in stats["stages"]


def test_stopped_midway_the_frames_in_flight_are_flushed(tmp_path):
    src = make_video(tmp_path / "clip.avi", n=40)
    d = Deblurrer(SlotInvert(nap=(0.01, 0.02)))
    got = []
    pipe = None

    def sink(f, m):
        got.append((f, m))
        if len(got) == 3:
            pipe.stop()  # as Ctrl-C does: capture ends, the frames in flight finish

    pipe = Pipeline(d, str(src), sink, StreamOptions(slots=2))
    stats = pipe.run()
    assert stats["schedule"] == "slots" and stats["stopped_by"] == "stop"
    n = len(got)
    assert 3 < n < 40  # frames were in flight when it stopped, and they were written
    assert stats["frames_in"] == stats["frames_processed"] == stats["frames_out"] == n
    want, _ = run(SlotInvert(nap=(0, 0)), str(src), 1, max_frames=n)
    same_frames(got, want)


def test_frames_the_executor_does_not_take_run_the_synchronous_stages_in_order():
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(6)]
    frames[2] = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    frames[4] = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    got, stats = run(SlotInvert(), list(frames), 2, warmup=False)
    want, _ = run(SlotInvert(), list(frames), 1, warmup=False)
    assert stats["schedule"] == "slots"
    same_frames(got, want)


def test_a_recurrent_state_resets_at_a_loop_restart(tmp_path):
    src = make_video(tmp_path / "clip.avi", n=5)
    b = SlotCounter()
    got, stats = run(Deblurrer(b, scene_cut=0), str(src), 2, loop=1)
    assert stats["schedule"] == "slots" and len(got) == 10
    assert [m.restart for _, m in got] == [False] * 5 + [True] + [False] * 4
    assert b.seen[-10:] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]  # the second pass starts from a zero state
    st = stats["state"]
    assert st["kind"] == "recurrent" and st["frames"] == 10
    assert st["resets"]["start"] == 1 and st["resets"]["restart"] == 1 and st["scene_cuts"] == 0
    want, sync = run(Deblurrer(SlotCounter(), scene_cut=0), str(src), 1, loop=1)
    same_frames(got, want)
    assert sync["state"]["resets"] == st["resets"]


def test_the_deblurrers_scene_cut_threshold_reaches_the_scheduler(tmp_path):
    src = make_video(tmp_path / "clip.avi", n=8)  # frame i is flat grey 8*i: a "cut" every other frame
    d = Deblurrer(SlotCounter(), scene_cut=0.16)
    got, stats = run(d, str(src), 2)
    want, sync = run(Deblurrer(SlotCounter(), scene_cut=0.16), str(src), 1)
    assert stats["state"]["scene_cuts"] == sync["state"]["scene_cuts"] > 0
    assert stats["state"]["scene_cut_threshold"] == 0.16
    same_frames(got, want)
    d_off = Deblurrer(SlotCounter(), scene_cut=0)
    _, off = run(d_off, str(src), 2)
    assert off["state"]["scene_cuts"] == 0 and off["state"]["scene_cut_threshold"] is None


def test_a_live_stream_hands_each_output_on_before_the_next_frame():
    """Two slots on a camera slower than the model: an output must not wait in its slot until the
    next frames need it (that would add two frame intervals of latency)."""
    produced = []

    def camera(n=12, fps=12.0):
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            produced.append(i)
            yield numbered_frame(i)

    seen_at_write = []
    d = Deblurrer(SlotInvert(nap=(0, 0)))
    stats = Pipeline(d, camera(), lambda f, m: seen_at_write.append((m.index, len(produced))),
                     StreamOptions(live=True, slots=2, queue_size=4)).run()
    assert stats["schedule"] == "slots" and stats["frames_out"] == 12
    on_time = sum(n == i + 1 for i, n in seen_at_write)  # written before frame i+1 was captured
    assert on_time >= 9, seen_at_write


def test_the_tensorrt_backend_streams_through_its_slots(monkeypatch, tmp_path, caplog):
    """The real TensorRT slot executor over the fake TensorRT (CPU pre/post-processing): a looped
    video, recurrent, equals the synchronous stream, and the executor is closed at the end."""
    from trt_fakes import FakeCuda, FakeEngine, no_kernels, open_fake_backend

    engine = FakeEngine(FakeCuda(), state=True)
    b = open_fake_backend(monkeypatch, tmp_path, engine, frame_kernels=no_kernels)
    src = make_video(tmp_path / "clip.avi", n=4)
    got, stats = run(Deblurrer(b, scene_cut=0), str(src), 2, loop=1)
    assert stats["schedule"] == "slots" and stats["slots"] == 2 and len(got) == 8
    assert stats["state"]["resets"]["restart"] == 1
    assert not b._profiles_in_use  # the executor was closed: its optimization profile is free again
    want, _ = run(Deblurrer(b, scene_cut=0), str(src), 1, loop=1)
    same_frames(got, want)
    assert np.array_equal(got[4][0], got[0][0])  # the second pass starts from a zero state again
    b.close()


def test_backends_without_a_slot_pipeline_run_synchronously_and_say_why(caplog):
    class Plain(SlotInvert):
        pipeline = None

    frames = [numbered_frame(i) for i in range(4)]
    with caplog.at_level(logging.INFO, logger="edge_deblur.runtime.pipeline"):
        got, stats = run(Plain(), frames, 2)
    assert stats["schedule"] == "sync" and stats["slots"] == 1 and len(got) == 4
    assert "has no slot pipeline" in stats["schedule_reason"]
    assert sum("slots=2:" in r.getMessage() and "no slot pipeline" in r.getMessage() for r in caplog.records) == 1
    # the default (no slots given) runs synchronously without the line
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edge_deblur.runtime.pipeline"):
        _, stats = run(Plain(), frames, None)
    assert stats["schedule"] == "sync" and not any("slot pipeline" in r.getMessage() for r in caplog.records)
    # tiles run one frame at a time
    _, stats = run(Deblurrer(SlotInvert(), tile=16, overlap=4), frames, 2)
    assert stats["schedule"] == "sync" and "tile" in stats["schedule_reason"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_slots_are_refused(bad):
    with pytest.raises(InputError, match=f"slots must be a whole number >= 1 .*got {bad!r}; use --slots 2"):
        StreamOptions(slots=bad).validate()


# ---- the CLI --------------------------------------------------------------------------------

def cli(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("n", ["0", "-2"])
def test_cli_slots_zero_or_negative_is_an_input_error(tmp_path, capsys, n):
    src = make_video(tmp_path / "in.avi", n=2)
    rc, _, err = cli(["stream", "--source", str(src), "--slots", n], capsys)
    assert rc == 2, err
    assert f"got {int(n)}" in err and "--slots 2" in err and "--slots 1" in err, err


def test_cli_slots_2_on_onnxruntime_runs_synchronously(tmp_path, tiny_onnx, capsys, caplog):
    src = make_video(tmp_path / "in.avi", n=5)
    with caplog.at_level(logging.INFO):
        rc, out, err = cli(["stream", "--source", str(src), "--model", str(tiny_onnx), "--slots", "2", "--json"],
                           capsys)
    assert rc == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["frames_out"] == 5 and stats["schedule"] == "sync" and stats["slots"] == 1
    assert "onnxruntime backend has no slot pipeline" in stats["schedule_reason"]
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("slots=2: the onnxruntime backend has no slot pipeline" in m for m in msgs) == 1
    assert any("schedule sync: one frame at a time" in m for m in msgs)


def test_cli_stream_runs_the_slots_of_a_backend_that_has_them(tmp_path, capsys, caplog, monkeypatch):
    import edge_deblur.runtime.pipeline as pipeline

    backends = []

    def fake_open(model=None, backend=None, rgb=False, **kw):
        backends.append(SlotInvert())
        return Deblurrer(backends[-1], rgb=rgb)

    monkeypatch.setattr(pipeline, "open_processor", fake_open)
    src = make_video(tmp_path / "in.avi", n=6)
    with caplog.at_level(logging.INFO):
        rc, out, err = cli(["stream", "--source", str(src), "--json"], capsys)  # the default: 2 slots
    assert rc == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["schedule"] == "slots" and stats["slots"] == 2 and stats["frames_out"] == 6
    assert stats["backend"] == "fake-slots" and backends[0].pipelines[0].slots == 2
    assert any("schedule slots: 2 frames in flight" in r.getMessage() for r in caplog.records)
    rc, out, err = cli(["stream", "--source", str(src), "--slots", "1", "--json"], capsys)
    stats = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and stats["schedule"] == "sync" and not backends[1].pipelines


# ---- runtime profiles: engine options and slots reach the backend and the pipeline ----------

def test_a_profiles_engine_section_names_tensorrt_keywords():
    import inspect

    from edge_deblur.config.runtime import EngineSection
    from edge_deblur.runtime.backends.tensorrt import TensorRTBackend

    sec = EngineSection(shapes="1x3x64x64:1x3x128x128:1x3x256x256", workspace_mb=512, dla_core=0, gpu_fallback=False,
                        timing_cache="t.cache", opt_level=4, cache_dir="engines")
    opts = sec.backend_options()
    assert opts == {"shapes": "1x3x64x64:1x3x128x128:1x3x256x256", "workspace_mb": 512, "dla_core": 0,
                    "gpu_fallback": False, "timing_cache": "t.cache", "opt_level": 4, "cache_dir": "engines"}
    params = inspect.signature(TensorRTBackend.__init__).parameters
    assert set(opts) <= set(params)
    assert EngineSection().backend_options() == {}


def test_deblur_with_a_profile_passes_its_engine_options_and_slots(tmp_path, capsys, monkeypatch):
    """The profile's engine: section was read by nothing (the engine was built with the defaults)
    and its pipeline.slots neither."""
    seen = {}
    backends = []

    def fake_open(cls, model=None, backend=None, **kw):
        seen.update(kw, backend=backend)
        backends.append(SlotInvert())
        return Deblurrer(backends[-1])

    monkeypatch.setattr(Deblurrer, "open", classmethod(fake_open))
    src = make_video(tmp_path / "in.avi", n=4)
    (tmp_path / "prof.yaml").write_text(
        "backend: tensorrt\nengine:\n  shapes: 1x3x32x32:1x3x48x64:1x3x64x64\n  workspace_mb: 256\n  opt_level: 2\n"
        "pipeline:\n  slots: 3\n")
    rc = main(["deblur", str(src), "-o", str(tmp_path / "out.avi"), "--profile", str(tmp_path / "prof.yaml")])
    assert rc == 0, capsys.readouterr().err
    assert seen["backend"] == "tensorrt"
    assert (seen["shapes"], seen["workspace_mb"], seen["opt_level"]) == ("1x3x32x32:1x3x48x64:1x3x64x64", 256, 2)
    assert "dla_core" not in seen and "gpu_fallback" not in seen
    assert [s.slots for s in backends[0].pipelines] == [3]  # the video ran through 3 slots


def test_deblur_with_a_profile_on_onnxruntime_gets_no_engine_options(tmp_path, tiny_onnx, capsys):
    src = make_video(tmp_path / "in.avi", n=2)
    (tmp_path / "prof.yaml").write_text("backend: onnxruntime\nengine:\n  workspace_mb: 256\n")
    rc = main(["deblur", str(src), "-o", str(tmp_path / "out.avi"), "-m", str(tiny_onnx),
               "--profile", str(tmp_path / "prof.yaml")])
    assert rc == 0, capsys.readouterr().err


# ---- runtime profiles: pipeline.gpu_preprocess / cuda_graphs, stream --profile, batch engine ----

class TrtLikeSlots(SlotInvert):
    """``pipeline()`` with the TensorRT backend's keywords; records what it was called with."""

    name = "fake-trt-slots"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.pipeline_kw = []

    def pipeline(self, slots=2, rgb=False, gpu_preprocess=None, timeline=False):
        self.pipeline_kw.append({"slots": slots, "rgb": rgb, "gpu_preprocess": gpu_preprocess, "timeline": timeline})
        return SlotInvert.pipeline(self, slots=slots, rgb=rgb)


class TorchCudaLikeSlots(SlotInvert):
    """``pipeline()`` with the torch-cuda backend's keywords; records what it was called with."""

    name = "fake-torch-cuda-slots"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.pipeline_kw = []

    def pipeline(self, slots=2, rgb=False, timeline=False, cuda_graphs=False):
        self.pipeline_kw.append({"slots": slots, "rgb": rgb, "timeline": timeline, "cuda_graphs": cuda_graphs})
        return SlotInvert.pipeline(self, slots=slots, rgb=rgb)


def test_gpu_preprocess_and_cuda_graphs_reach_the_pipeline_that_takes_them(tmp_path):
    """StreamOptions.gpu_preprocess / cuda_graphs go to backend.pipeline() only where it takes the
    keyword: TensorRT gpu_preprocess, torch-cuda cuda_graphs, neither for a plain pipeline(slots, rgb)."""
    src = make_video(tmp_path / "clip.avi", n=5)
    opts = dict(gpu_preprocess=False, cuda_graphs=True)
    trt, tc, plain = TrtLikeSlots(), TorchCudaLikeSlots(), SlotInvert()
    for b in (trt, tc, plain):
        got, stats = run(b, str(src), 2, **opts)
        assert stats["schedule"] == "slots" and stats["frames_out"] == 5
    assert trt.pipeline_kw == [{"slots": 2, "rgb": False, "gpu_preprocess": False, "timeline": False}]
    assert tc.pipeline_kw == [{"slots": 2, "rgb": False, "timeline": False, "cuda_graphs": True}]
    assert len(plain.pipelines) == 1
    # None (the default): nothing passed, the backends' own defaults hold
    trt2 = TrtLikeSlots()
    run(trt2, str(src), 2)
    assert trt2.pipeline_kw[0]["gpu_preprocess"] is None


def test_slot_pipeline_options_follow_the_real_backends_signatures():
    from edge_deblur.runtime.backends.tensorrt import TensorRTBackend
    from edge_deblur.runtime.backends.torch_cuda import TorchCudaBackend
    from edge_deblur.runtime.pipeline import slot_pipeline_options

    class Trt:
        pipeline = TensorRTBackend.pipeline

    class TorchCuda:
        pipeline = TorchCudaBackend.pipeline

    opts = StreamOptions(gpu_preprocess=True, cuda_graphs=True)
    assert slot_pipeline_options(Trt(), opts) == {"gpu_preprocess": True}
    assert slot_pipeline_options(TorchCuda(), opts) == {"cuda_graphs": True}
    assert slot_pipeline_options(SlotInvert(), opts) == {}
    assert slot_pipeline_options(Trt(), StreamOptions()) == {}
    with pytest.raises(InputError, match="gpu_preprocess must be true, false or None"):
        StreamOptions(gpu_preprocess="yes").validate()


def test_deblur_with_a_profile_passes_gpu_preprocess_to_the_slot_pipeline(tmp_path, capsys, monkeypatch):
    """pipeline.gpu_preprocess / cuda_graphs were read by nothing: a video of `deblur --profile`
    ran the backend's pipeline with its defaults."""
    backends = []

    def fake_open(cls, model=None, backend=None, **kw):
        backends.append(TrtLikeSlots())
        return Deblurrer(backends[-1])

    monkeypatch.setattr(Deblurrer, "open", classmethod(fake_open))
    src = make_video(tmp_path / "in.avi", n=3)
    (tmp_path / "prof.yaml").write_text("backend: tensorrt\npipeline:\n  slots: 2\n  gpu_preprocess: false\n"
                                        "  cuda_graphs: true\n")
    rc = main(["deblur", str(src), "-o", str(tmp_path / "out.avi"), "--profile", str(tmp_path / "prof.yaml")])
    assert rc == 0, capsys.readouterr().err
    assert [k["gpu_preprocess"] for k in backends[0].pipeline_kw] == [False]


def write_stream_profile(tmp_path, src):
    p = tmp_path / "live.yaml"
    p.write_text(
        "backend: tensorrt\n"
        "engine:\n  shapes: 1x3x32x32:1x3x48x64:1x3x64x64\n  workspace_mb: 256\n"
        f"stream:\n  source: {str(src)!r}\n  width: 64\n  height: 48\n  fps: 12\n  queue_size: 3\n  drop: never\n"
        "pipeline:\n  slots: 3\n  gpu_preprocess: false\n  scene_cut: 0.3\n")
    return p


def test_cli_stream_profile_applies_its_sections_and_flags_win(tmp_path, capsys, monkeypatch):
    """`stream` had no --profile: a profile's stream:, pipeline: and engine: sections were not used there."""
    import edge_deblur.runtime.pipeline as pipeline

    opened, backends = [], []

    def fake_open(model=None, backend=None, rgb=False, **kw):
        opened.append(dict(kw, model=model, backend=backend))
        backends.append(TrtLikeSlots())
        return Deblurrer(backends[-1], rgb=rgb)

    monkeypatch.setattr(pipeline, "open_processor", fake_open)
    src = make_video(tmp_path / "in.avi", n=6)
    prof = write_stream_profile(tmp_path, src)
    # no --source: the profile's; --slots 2 wins over its slots: 3
    rc, out, err = cli(["stream", "--profile", str(prof), "--slots", "2", "--json"], capsys)
    assert rc == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["frames_out"] == 6 and stats["schedule"] == "slots" and stats["slots"] == 2
    kw = opened[0]
    assert kw["backend"] == "tensorrt" and kw["scene_cut"] == 0.3
    assert (kw["shapes"], kw["workspace_mb"]) == ("1x3x32x32:1x3x48x64:1x3x64x64", 256)
    assert backends[0].pipeline_kw == [{"slots": 2, "rgb": False, "gpu_preprocess": False, "timeline": False}]
    # without the flag: the profile's slots; --scene-cut wins over its scene_cut
    rc, out, err = cli(["stream", "--profile", str(prof), "--scene-cut", "0.5", "--json"], capsys)
    assert rc == 0, err
    assert json.loads(out.strip().splitlines()[-1])["slots"] == 3 and opened[1]["scene_cut"] == 0.5


def test_stream_profile_fills_only_the_flags_left_unset(tmp_path):
    from edge_deblur.cli import build_parser
    from edge_deblur.cli.deblur_cmd import load_profile
    from edge_deblur.cli.stream_cmd import apply_profile

    src = make_video(tmp_path / "in.avi", n=2)
    prof_path = write_stream_profile(tmp_path, src)
    parse = build_parser().parse_args
    args = parse(["stream", "--profile", str(prof_path), "--queue-size", "5", "--fps", "20"])
    opts = StreamOptions.from_args(apply_profile(args, load_profile(args)))
    assert (opts.queue_size, opts.fps) == (5, 20.0)                      # flags win
    assert (opts.drop, opts.width, opts.height, opts.slots) == ("never", 64, 48, 3)  # the profile's
    assert (opts.gpu_preprocess, opts.cuda_graphs) == (False, False)
    args = parse(["stream", "--profile", str(prof_path), "--width", "32", "--height", "24", "--drop", "oldest"])
    opts = StreamOptions.from_args(apply_profile(args, load_profile(args)))
    assert (opts.width, opts.height, opts.drop, opts.queue_size) == (32, 24, "oldest", 3)
    # --no-live ("never drop frames, even from a camera") wins over a profile that drops the oldest
    (tmp_path / "drops.yaml").write_text("stream:\n  drop: oldest\n")
    args = parse(["stream", "--source", str(src), "--profile", str(tmp_path / "drops.yaml"), "--no-live"])
    opts = StreamOptions.from_args(apply_profile(args, load_profile(args)))
    assert (opts.live, opts.drop) == (False, "auto")
    args = parse(["stream", "--source", str(src), "--profile", str(tmp_path / "drops.yaml")])
    assert StreamOptions.from_args(apply_profile(args, load_profile(args))).drop == "oldest"
    # no profile: the flags' own defaults
    args = parse(["stream", "--source", str(src)])
    opts = StreamOptions.from_args(apply_profile(args, load_profile(args)))
    assert (opts.queue_size, opts.drop, opts.slots, opts.gpu_preprocess, opts.cuda_graphs) == (2, "auto", None, None, None)
    # a profile's tile/overlap reach the model open
    (tmp_path / "tiles.yaml").write_text("pipeline:\n  tile: 64\n  overlap: 16\n")
    args = apply_profile(parse(["stream", "--source", str(src), "--profile", str(tmp_path / "tiles.yaml")]),
                         load_profile(parse(["stream", "--profile", str(tmp_path / "tiles.yaml")])))
    assert (args.tile, args.overlap) == (64, 16)


def test_cli_stream_unknown_profile_names_it_and_lists_the_profiles(tmp_path, capsys):
    from edge_deblur.config.runtime import available_profiles

    src = make_video(tmp_path / "in.avi", n=2)
    rc, out, err = cli(["stream", "--source", str(src), "--profile", "orin_nan"], capsys)
    assert rc != 0 and "unknown runtime profile 'orin_nan'" in err and "did you mean 'orin_nano'" in err
    names = available_profiles()
    assert names and all(n in err for n in names)


def test_batch_passes_a_profiles_engine_options_to_the_model_open(tmp_path, monkeypatch):
    """Ray batch opened the model without the profile's engine section (deblur passes it); no Ray
    here: the settings, the driver's check_model and an actor's open, with Deblurrer.open faked."""
    from edge_deblur.cli import build_parser
    from edge_deblur.cli.batch_cmd import settings_from_args
    from edge_deblur.runtime import ray_batch

    seen = []

    def fake_open(cls, model=None, backend=None, **kw):
        seen.append(dict(kw, backend=backend))
        return Deblurrer(SlotInvert())

    monkeypatch.setattr(Deblurrer, "open", classmethod(fake_open))
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: the open is faked")
    (tmp_path / "prof.yaml").write_text("backend: tensorrt\nengine:\n  shapes: 1x3x32x32:1x3x48x64:1x3x64x64\n"
                                        "  workspace_mb: 256\n  opt_level: 2\n")
    (tmp_path / "in").mkdir()
    args = build_parser().parse_args(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model),
                                      "--profile", str(tmp_path / "prof.yaml")])
    settings = settings_from_args(args)
    want = {"shapes": "1x3x32x32:1x3x48x64:1x3x64x64", "workspace_mb": 256, "opt_level": 2}
    assert settings["engine"] == want and settings["backend"] == "tensorrt"
    ray_batch.check_model(settings)
    ray_batch.DeblurActor(settings)
    assert len(seen) == 2
    for kw in seen:
        assert kw["backend"] == "tensorrt" and {k: kw[k] for k in want} == want
    # other backends: no engine options
    (tmp_path / "ort.yaml").write_text("backend: onnxruntime\nengine:\n  workspace_mb: 256\n")
    args.profile = str(tmp_path / "ort.yaml")
    assert settings_from_args(args)["engine"] == {}


def test_a_profiles_gpu_preprocess_true_means_where_the_kernels_build():
    """`gpu_preprocess: true` in a shipped Jetson profile must not demand the NVRTC kernels (the
    TensorRT backend's True): where they do not build, the slots would be refused and the stream
    would fall back to one frame at a time. It reaches the backend as None (GPU where possible)."""
    from edge_deblur.cli.deblur_cmd import pipeline_options
    from edge_deblur.config.runtime import load_runtime_profile

    prof = load_runtime_profile("orin_nano")
    assert prof.pipeline.gpu_preprocess is True
    assert pipeline_options(prof)["gpu_preprocess"] is None
    prof.pipeline.gpu_preprocess = False
    assert pipeline_options(prof)["gpu_preprocess"] is False


# ---- review fixes: outputs kept when a submit fails, live frames in flight, NaN/Inf guard ----------

class RefusingExecutor(CpuSlotExecutor):
    """Refuses frames taller than 100 rows at stage(), as TensorRTSlotExecutor._buffers refuses a
    frame outside the engine's profile."""

    def stage(self, slot, index, frame):
        if frame.shape[0] > 100:
            from edge_deblur.errors import BackendError

            raise BackendError("input outside the engine's profile")
        super().stage(slot, index, frame)


class RefusingSlots(SlotInvert):
    def pipeline(self, slots=2, rgb=False):
        return schedule(RefusingExecutor(self, slots=slots, rgb=rgb))


@pytest.mark.parametrize("slots", [2, 3])
def test_a_failing_submit_loses_no_finished_output(slots):
    """Frame 6 is refused: every frame before it is written (the one collected to free its slot
    too: it was dropped), then the error, as on the synchronous path."""
    from edge_deblur.errors import BackendError

    frames = [numbered_frame(i) for i in range(6)] + [numbered_frame(6, 640, 480)] + [numbered_frame(i) for i in range(7, 9)]
    got = []
    pipe = Pipeline(Deblurrer(RefusingSlots(nap=(0, 0))), frames, lambda f, m: got.append(m.index),
                    StreamOptions(slots=slots))
    with pytest.raises(BackendError, match="outside the engine's profile"):
        pipe.run()
    assert got == [0, 1, 2, 3, 4, 5]
    assert pipe._result["schedule"] == "slots" and pipe._result["frames_out"] == 6


def fast_camera(n, fps):
    t0 = time.perf_counter()
    for i in range(n):
        delay = t0 + i / fps - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield numbered_frame(i)


def test_a_fast_live_source_keeps_several_frames_in_flight(monkeypatch):
    """A camera faster than the model: the next frame is staged while the last one is in flight,
    so frame N+1 uploads while N computes (the infer thread collected the frame it had just
    submitted before the preprocess stage could move the next one: never two in flight)."""
    import edge_deblur.runtime.pipeline as pipeline

    after_submit = []
    orig = pipeline._SlotRun.submit

    def submit(self, frame, meta):
        orig(self, frame, meta)
        after_submit.append(self.in_flight)

    monkeypatch.setattr(pipeline._SlotRun, "submit", submit)
    pipe = Pipeline(Deblurrer(SlotInvert(nap=(0.01, 0.01))), fast_camera(40, 400.0), lambda f, m: None,
                    StreamOptions(live=True, slots=2, queue_size=4))
    stats = pipe.run()
    assert stats["schedule"] == "slots" and stats["live"] and stats["frames_out"] == len(after_submit) > 5
    assert pipe._slot_run.peak_in_flight == 2
    assert sum(n == 2 for n in after_submit) >= len(after_submit) // 2, after_submit


class NaNFor(SlotInvert):
    """y = 1 - x, NaN for the frames whose number (numbered_frame) is in ``bad``."""

    def __init__(self, bad, **kw):
        super().__init__(nap=(0, 0), **kw)
        self.bad = set(bad)

    def infer(self, x):
        y = super().infer(x)
        if int(round(float(x.mean()) * 255 / 8)) in self.bad:
            y[:] = np.nan
        return y


class NaNCounter(SlotCounter):
    """The recurrent counter, NaN on the ``at``-th call (the state it passes on is NaN too)."""

    def __init__(self, at, **kw):
        super().__init__(nap=(0, 0), **kw)
        self.at, self.calls = at, 0

    def infer_state(self, x, state):
        y, new = super().infer_state(x, state)
        self.calls += 1
        if self.calls == self.at:
            y[:] = np.nan
        return y, new


@pytest.mark.parametrize("slots", [1, 2])
def test_nan_outputs_on_the_slots_pass_the_input_through_and_are_counted(slots):
    frames = [numbered_frame(i) for i in range(10)]
    d = Deblurrer(NaNFor({3, 4}))
    got, stats = run(d, list(frames), slots, warmup=False)
    assert stats["schedule"] == ("slots" if slots == 2 else "sync")
    assert [m.index for _, m in got] == list(range(10))
    for (f, m), src in zip(got, frames):
        want = src if m.index in (3, 4) else 255 - src  # NaN: the input frame itself; else the model's
        assert np.array_equal(f, want), m.index
    mo = stats["model_output"]
    assert (mo["bad_frames"], mo["longest_bad_run"]) == (2, 2)
    assert mo.get("unchecked_frames", 0) == 0
    assert d.frames == 10  # Deblurrer.frames counts the stream's frames on either path


@pytest.mark.parametrize("slots", [1, 2])
def test_a_run_of_nan_outputs_on_the_slots_fails_with_max_bad_frames(slots):
    from edge_deblur.errors import ModelError

    frames = [numbered_frame(10 + i) for i in range(20)]
    got = []
    pipe = Pipeline(Deblurrer(NaNFor(range(256)), max_bad_frames=5), frames, lambda f, m: got.append((f, m)),
                    StreamOptions(slots=slots), warmup=False)
    with pytest.raises(ModelError, match="NaN/Inf for 5 frames in a row"):
        pipe.run()
    # the frame that made it 5 in a row is the error; the frames before it were passed through, and
    # so is (slots) the frame already computed behind it, written as the frames in flight are on an error
    assert [m.index for _, m in got] == [0, 1, 2, 3] + ([5] if slots == 2 else [])
    assert all(np.array_equal(f, frames[m.index]) for f, m in got)
    assert pipe._result["model_output"]["bad_frames"] == 5  # counted once, not again for the frame behind it


def test_a_nan_output_on_the_slots_resets_the_recurrent_state():
    b = NaNCounter(at=3)
    got, stats = run(Deblurrer(b, scene_cut=0), [numbered_frame(i) for i in range(8)], 2, warmup=False)
    assert len(got) == 8 and stats["model_output"]["bad_frames"] == 1
    assert stats["state"]["resets"]["bad_output"] == 1
    assert b.seen[:3] == [0, 1, 2] and 0 in b.seen[3:]  # a frame after the bad one starts from zeros again


def test_cli_stream_logs_the_schedule_that_ran_after_a_fall_back(tmp_path, capsys, caplog, monkeypatch):
    """The slot pipeline cannot be made (here: BackendError from pipeline()): the stream falls back
    to one frame at a time, and the log says that, not the planned "schedule slots: 2"."""
    import edge_deblur.runtime.pipeline as pipeline
    from edge_deblur.errors import BackendError

    class NoSlots(SlotInvert):
        def pipeline(self, slots=2, rgb=False):
            raise BackendError("no NVRTC here")

    monkeypatch.setattr(pipeline, "open_processor", lambda model=None, backend=None, rgb=False, **kw:
                        Deblurrer(NoSlots(), rgb=rgb))
    src = make_video(tmp_path / "in.avi", n=3)
    with caplog.at_level(logging.INFO):
        rc, out, err = cli(["stream", "--source", str(src), "--json"], capsys)
    assert rc == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["schedule"] == "sync" and "could not be made" in stats["schedule_reason"]
    msgs = [r.getMessage() for r in caplog.records]
    assert not any("schedule slots" in m for m in msgs), msgs
    assert sum("schedule sync: one frame at a time" in m for m in msgs) == 1


def test_deblur_with_a_profile_on_onnxruntime_does_not_explain_slots_it_was_not_given(tmp_path, tiny_onnx, capsys,
                                                                                     caplog):
    """deblur has no --slots: a profile's pipeline.slots (2) on onnxruntime logged "slots=2: the
    onnxruntime backend has no slot pipeline" for every video, as if asked."""
    src = make_video(tmp_path / "in.avi", n=2)
    (tmp_path / "prof.yaml").write_text("backend: onnxruntime\npipeline:\n  slots: 2\n")
    with caplog.at_level(logging.INFO):
        rc = main(["deblur", str(src), "-o", str(tmp_path / "out.avi"), "-m", str(tiny_onnx),
                   "--profile", str(tmp_path / "prof.yaml")])
    assert rc == 0, capsys.readouterr().err
    assert not any("no slot pipeline" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("precision, file", [("fp16", "model.fp16.onnx"), ("int8", "model.int8.onnx"),
                                             ("fp32", "model.onnx")])
def test_a_tensorrt_profiles_precision_picks_the_default_folders_file(tmp_path, monkeypatch, precision, file):
    """`precision:` in a Jetson profile with no `model:` was read by nothing: the bundled folder
    ran its FP32 ONNX whatever the profile said."""
    from types import SimpleNamespace

    from edge_deblur.cli.deblur_cmd import model_settings
    from edge_deblur.config.runtime import load_runtime_profile

    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        (folder / name).write_bytes(b"x")
    monkeypatch.setenv("EDGE_DEBLUR_MODEL", str(folder))
    prof = load_runtime_profile("orin_nano", [f"precision={precision}"])
    args = SimpleNamespace(model=None, backend=None, device=None, tile=None, overlap=None)
    model, backend, *_ = model_settings(args, prof)
    assert backend == "tensorrt" and model == str(folder / file)
    # a model on the command line wins; an auto-backend profile leaves the folder's own choice
    args.model = "x.onnx"
    assert model_settings(args, prof)[0] == "x.onnx"
    args.model = None
    auto = load_runtime_profile("satellite_tiles")
    assert auto.backend == "auto" and model_settings(args, auto)[0] is None


@pytest.mark.parametrize("precision, file", [("fp32", "model.onnx"), ("int8", "model.int8-cpu.onnx"),
                                             ("fp16", "model.fp16.onnx")])
def test_an_onnxruntime_profiles_precision_picks_the_default_folders_file(tmp_path, monkeypatch, precision, file):
    """`deblur --profile satellite_multispectral_cpu` said fp32 and ran the folder's automatic
    choice: model.int8-cpu.onnx on a VNNI CPU."""
    from types import SimpleNamespace

    from edge_deblur.cli.deblur_cmd import model_settings
    from edge_deblur.config.runtime import load_runtime_profile

    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8-cpu.onnx"):
        (folder / name).write_bytes(b"x")
    monkeypatch.setenv("EDGE_DEBLUR_MODEL", str(folder))
    prof = load_runtime_profile("satellite_multispectral_cpu", [f"precision={precision}"])
    args = SimpleNamespace(model=None, backend=None, device=None, tile=None, overlap=None)
    model, backend, *_ = model_settings(args, prof)
    assert backend == "onnxruntime" and model == str(folder / file)


@pytest.mark.parametrize("flags, file", [("avx2 fma", "model.int8-avx2.onnx"), ("avx2 avx512_vnni", "model.int8-cpu.onnx")])
def test_an_onnxruntime_int8_profile_runs_the_int8_file_for_this_cpu(tmp_path, monkeypatch, flags, file):
    """precision: int8 on ONNX Runtime: the 7-bit-weight file on a CPU without VNNI (the 8-bit one
    would saturate there), the 8-bit one with VNNI."""
    from types import SimpleNamespace

    from edge_deblur.cli.deblur_cmd import model_settings
    from edge_deblur.config.runtime import load_runtime_profile

    folder = tmp_path / "m"
    folder.mkdir()
    dot = ["avx512_vnni", "avx_vnni", "amx_int8"]
    arts = {"model.onnx": {"precision": "fp32"},
            "model.int8-cpu.onnx": {"precision": "int8", "target": "cpu", "weight_bits": 8, "tuned_for": {"any_of": dot}},
            "model.int8-avx2.onnx": {"precision": "int8", "target": "cpu-avx2", "weight_bits": 7,
                                     "tuned_for": {"any_of": dot + ["avx2"]}}}
    for name in arts:
        (folder / name).write_bytes(b"x")
    (folder / "manifest.json").write_text(json.dumps({"onnx": "model.onnx", "artifacts": arts}))
    monkeypatch.setenv("EDGE_DEBLUR_MODEL", str(folder))
    monkeypatch.setenv("EDGE_DEBLUR_CPU_FLAGS", flags)
    prof = load_runtime_profile("satellite_multispectral_cpu", ["precision=int8"])
    args = SimpleNamespace(model=None, backend=None, device=None, tile=None, overlap=None)
    assert model_settings(args, prof)[0] == str(folder / file)


def test_an_onnxruntime_profile_naming_a_folder_runs_its_cpu_int8_file_not_tensorrts(tmp_path, monkeypatch):
    """model: <folder> with backend onnxruntime and precision int8 resolved to model.int8.onnx, the
    TensorRT layout (slower than FP32 on ONNX Runtime's CPU kernels)."""
    from types import SimpleNamespace

    from edge_deblur.cli.deblur_cmd import model_settings
    from edge_deblur.config.runtime import load_runtime_profile

    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("model.onnx", "model.int8.onnx", "model.int8-cpu.onnx"):
        (folder / name).write_bytes(b"x")
    prof = load_runtime_profile("satellite_multispectral_cpu", ["precision=int8", f"model={folder}"])
    args = SimpleNamespace(model=None, backend=None, device=None, tile=None, overlap=None)
    model, backend, *_ = model_settings(args, prof)
    assert backend == "onnxruntime" and model == str(folder / "model.int8-cpu.onnx")
    fp32 = load_runtime_profile("satellite_multispectral_cpu", ["precision=fp32", f"model={folder}"])
    assert model_settings(args, fp32)[0] == str(folder / "model.onnx")


def test_an_onnxruntime_int8_profile_without_the_cpu_int8_file_keeps_the_folders_choice(tmp_path, monkeypatch,
                                                                                        caplog):
    from types import SimpleNamespace

    from edge_deblur.cli.deblur_cmd import model_settings
    from edge_deblur.config.runtime import load_runtime_profile

    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("model.onnx", "model.int8.onnx"):  # TensorRT's INT8 only: not for ONNX Runtime
        (folder / name).write_bytes(b"x")
    monkeypatch.setenv("EDGE_DEBLUR_MODEL", str(folder))
    prof = load_runtime_profile("satellite_multispectral_cpu", ["precision=int8"])
    args = SimpleNamespace(model=None, backend=None, device=None, tile=None, overlap=None)
    with caplog.at_level(logging.WARNING):
        assert model_settings(args, prof)[0] is None
    assert any("model.int8-cpu.onnx" in r.getMessage() and "own choice" in r.getMessage() for r in caplog.records)


# ---- review fixes 2: launch errors, gpu_preprocess=True, stage times, mixed state, peak in flight ----

class BoomSlots(SlotInvert):
    """backend.pipeline() fails with something other than an EdgeDeblurError (CUDA out of memory)."""

    def pipeline(self, slots=2, rgb=False):
        raise RuntimeError("CUDA error: out of memory")


def test_a_slot_pipeline_failing_with_a_runtime_error_closes_the_sinks_and_the_source(tmp_path):
    src = make_video(tmp_path / "in.avi", n=5)
    pipe = Pipeline(Deblurrer(BoomSlots()), str(src), str(tmp_path / "out.avi"), StreamOptions(slots=2))
    closed = []
    orig = pipe.sinks[0].close
    pipe.sinks[0].close = lambda *a, **k: (closed.append(1), orig(*a, **k))[1]
    with pytest.raises(RuntimeError, match="out of memory"):
        with pipe:
            pipe.run()
    assert closed and pipe.source._closed and pipe.stopped_by == "error"


def test_a_slot_run_that_fails_after_the_pipeline_was_made_closes_the_executor():
    closed = []

    class Ex(CpuSlotExecutor):
        def close(self):
            closed.append(1)
            super().close()

    class Sched:
        def __init__(self, ex):
            self.ex = ex
            self.slots = ex.slots

        def set_scene_cut(self, t):
            raise RuntimeError("no scene cuts here")

    class B(SlotInvert):
        def pipeline(self, slots=2, rgb=False):
            return Sched(Ex(self, slots=slots, rgb=rgb))

    frames = [numbered_frame(i) for i in range(3)]
    with pytest.raises(RuntimeError, match="no scene cuts"):
        Pipeline(Deblurrer(B()), frames, lambda f, m: None, StreamOptions(slots=2)).run()
    assert closed == [1]  # the executor (a TensorRT profile) was freed


@pytest.mark.parametrize("gpu_preprocess", [True, None, False])
def test_gpu_preprocess_true_where_the_kernels_do_not_build_is_an_error_not_a_fall_back(
        monkeypatch, tmp_path, gpu_preprocess):
    """True: "the GPU kernels are required"; the stream fell back to one frame at a time on the
    CPU without a word. None and False run the slots with the CPU conversion."""
    from trt_fakes import FakeCuda, FakeEngine, no_kernels, open_fake_backend
    from edge_deblur.errors import BackendError

    b = open_fake_backend(monkeypatch, tmp_path, FakeEngine(FakeCuda()), frame_kernels=no_kernels)
    frames = [numbered_frame(i) for i in range(4)]
    got = []
    pipe = Pipeline(Deblurrer(b), frames, lambda f, m: got.append(m.index),
                    StreamOptions(slots=2, gpu_preprocess=gpu_preprocess), warmup=False)
    if gpu_preprocess:
        with pytest.raises(BackendError, match="gpu_preprocess=None .* or False"):
            pipe.run()
        assert got == [] and pipe.stopped_by == "error" and not b._profiles_in_use
    else:
        stats = pipe.run()
        assert stats["schedule"] == "slots" and got == [0, 1, 2, 3]
    b.close()


def test_slot_frames_record_the_models_time_as_infer_and_their_time_in_flight_apart():
    """stages.infer on the slots was each frame's submit-to-collect time (~slots x the model's), and
    demo printed it as "model p50 ms/frame". The CPU executor measures the backend call."""
    frames = [numbered_frame(i) for i in range(12)]
    _, st = run(SlotInvert(nap=(0.02, 0.02)), list(frames), 3, warmup=False)
    inf, fl = st["stages"]["infer"], st["stages"]["in_flight"]
    assert inf["count"] == fl["count"] == 12
    assert 19 <= inf["p50"] < fl["p50"] / 1.5, (inf, fl)
    _, sync = run(SlotInvert(nap=(0.02, 0.02)), list(frames), 1, warmup=False)
    assert "in_flight" not in sync["stages"] and sync["stages"]["infer"]["count"] == 12


def test_an_executor_that_cannot_time_its_compute_leaves_infer_out_for_slot_frames():
    class Untimed(CpuSlotExecutor):
        def compute_ms(self, slot):
            return None

    class B(SlotInvert):
        def pipeline(self, slots=2, rgb=False):
            return schedule(Untimed(self, slots=slots, rgb=rgb))

    frames = [numbered_frame(i) for i in range(5)]
    frames[2] = frames[2].astype(np.uint16) * 257  # runs the synchronous stages: its model time is known
    _, st = run(B(nap=(0, 0)), frames, 2, warmup=False)
    assert st["stages"]["in_flight"]["count"] == 4 and st["stages"]["infer"]["count"] == 1


def test_a_recurrent_fallback_frame_does_not_continue_the_previous_fallback_frames_state():
    """Recurrent model, uint16 frames 2 and 6 among uint8 ones: frame 6 ran the Deblurrer's own
    state, left at frame 2, as if frames 3-5 had not happened."""
    fr = [numbered_frame(i) for i in range(8)]
    for i in (2, 6):
        fr[i] = fr[i].astype(np.uint16) * 257
    b = SlotCounter(nap=(0, 0))
    got, st = run(Deblurrer(b, scene_cut=0), fr, 2, warmup=False)
    assert [m.index for _, m in got] == list(range(8))
    # frames in execution (= capture) order; each change of path starts a zero state
    assert b.seen == [0, 1, 0, 0, 1, 2, 0, 0]
    assert st["state"]["frames"] == 8
    assert st["state"]["resets"]["start"] == 1 and st["state"]["resets"]["size"] == 4


def test_the_stats_report_the_peak_in_flight_apart_from_the_configured_slots():
    """`slots` was documented as the most frames in flight and reported the count asked for; a
    stream of one frame through 3 slots had one in flight."""
    _, st = run(SlotInvert(nap=(0, 0)), [numbered_frame(0)], 3, warmup=False)
    assert st["slots"] == 3 and st["peak_in_flight"] == 1
    _, st = run(SlotInvert(nap=(0, 0)), [numbered_frame(i) for i in range(6)], 3, warmup=False)
    assert st["slots"] == 3 and st["peak_in_flight"] == 3
    _, st = run(SlotInvert(nap=(0, 0)), [numbered_frame(i) for i in range(6)], 1, warmup=False)
    assert st["slots"] == 1 and st["peak_in_flight"] == 1


def test_outputs_the_executor_cannot_check_are_counted_as_unchecked():
    class Blind(CpuSlotExecutor):
        def finite(self, slot):
            return None  # an executor that cannot check its float outputs

    class B(SlotInvert):
        def pipeline(self, slots=2, rgb=False):
            return schedule(Blind(self, slots=slots, rgb=rgb))

    _, st = run(B(nap=(0, 0)), [numbered_frame(i) for i in range(7)], 2)
    assert st["schedule"] == "slots" and st["frames_out"] == 7
    assert st["model_output"]["unchecked_frames"] == 7 and st["model_output"]["bad_frames"] == 0
