"""The streaming pipeline with fake processors: order, drops for live sources only, stop,
errors, stats, and deblur_video. (The real model runs in tests/test_cli_stream.py.)"""
import random
import threading
import time

import numpy as np
import pytest

from edge_deblur.errors import InputError
from edge_deblur.io import StreamOptions, open_source
from edge_deblur.runtime.pipeline import Pipeline, StageTimes, deblur_video, run_stream

from video_helpers import count_frames, frame_index, make_video, numbered_frame


class StagedFake:
    """Exposes the Deblurrer's three stages; each sleeps a random time so that a pipeline that
    reorders would show it. Inverts the frame so that the output is visibly processed."""

    def __init__(self, infer_s=(0.0, 0.01), pre_s=(0.0, 0.004), post_s=(0.0, 0.004), seed=0):
        self.rng = random.Random(seed)
        self.infer_s, self.pre_s, self.post_s = infer_s, pre_s, post_s
        self.threads = {}
        self.calls = 0

    def _nap(self, span, stage):
        self.threads.setdefault(stage, set()).add(threading.current_thread().name)
        time.sleep(self.rng.uniform(*span))

    def preprocess(self, frame):
        self._nap(self.pre_s, "pre")
        return frame.astype(np.float32), frame.shape

    def infer_tensor(self, x):
        self._nap(self.infer_s, "infer")
        self.calls += 1
        return 255.0 - x

    def postprocess(self, y, shape):
        self._nap(self.post_s, "post")
        return y.astype(np.uint8)


class SlowCall:
    """A plain callable processor (no stages)."""

    def __init__(self, delay):
        self.delay = delay

    def __call__(self, frame):
        time.sleep(self.delay)
        return frame.copy()


def collect():
    got = []
    return got, (lambda f, m: got.append((m.index, frame_index(f))))


def test_order_preserved_with_stages_in_their_own_threads(tmp_path):
    p = make_video(tmp_path / "clip.avi", n=24)
    got, sink = collect()
    proc = StagedFake()
    stats = Pipeline(proc, str(p), sink, warmup=False).run()
    assert [i for i, _ in got] == list(range(24))
    assert [v for _, v in got] == [round((255 - 8 * i) / 8) for i in range(24)]  # inverted frames
    assert stats["frames_in"] == stats["frames_out"] == 24 and stats["dropped"] == 0
    # pre, infer and post ran in three different threads
    names = [next(iter(proc.threads[s])) for s in ("pre", "infer", "post")]
    assert len(set(names)) == 3


def test_order_preserved_with_a_plain_callable():
    got, sink = collect()
    frames = [numbered_frame(i) for i in range(15)]
    stats = Pipeline(SlowCall(0.002), frames, sink).run()
    assert got == [(i, i) for i in range(15)]
    assert set(stats["stages"]) >= {"capture", "infer", "write"}


def test_files_never_drop_even_when_inference_is_slow(tmp_path):
    p = make_video(tmp_path / "clip.avi", n=10)
    got, sink = collect()
    stats = Pipeline(SlowCall(0.03), str(p), sink, StreamOptions(queue_size=1)).run()
    assert stats["live"] is False and stats["drop_policy"] == "never"
    assert stats["dropped"] == 0 and [i for i, _ in got] == list(range(10))


def camera(n, fps):
    """A simulated live camera: frames at a fixed rate whatever the consumer does."""
    t0 = time.perf_counter()
    for i in range(n):
        due = t0 + i / fps
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield numbered_frame(i)


def test_live_source_drops_oldest_and_counts_it():
    got, sink = collect()
    opts = StreamOptions(live=True, queue_size=2)
    stats = Pipeline(StagedFake(infer_s=(0.04, 0.04), pre_s=(0, 0), post_s=(0, 0)), camera(40, 200.0), sink, opts,
                     warmup=False).run()
    assert stats["live"] is True and stats["drop_policy"] == "oldest"
    assert stats["frames_in"] == 40
    assert stats["dropped"] > 0
    assert stats["frames_out"] + stats["dropped"] == stats["frames_in"]
    idx = [i for i, _ in got]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)  # order kept, nothing twice
    assert idx[-1] == 39  # latest frame wins: the newest frame is the last one processed


def test_live_source_keeping_up_drops_nothing():
    got, sink = collect()
    # 50 ms between frames and room for 4: only a stall of 200 ms on a loaded machine could drop one
    stats = Pipeline(SlowCall(0.0), camera(10, 20.0), sink, StreamOptions(live=True, queue_size=4)).run()
    assert stats["dropped"] == 0 and [i for i, _ in got] == list(range(10))


def test_drop_newest_policy_keeps_the_early_frames():
    got, sink = collect()
    frames = (numbered_frame(i) for i in range(30))  # a burst: all frames arrive at once
    stats = Pipeline(SlowCall(0.02), frames, sink, StreamOptions(live=True, drop="newest", queue_size=2)).run()
    idx = [i for i, _ in got]
    assert stats["dropped"] == 30 - len(idx) > 0
    assert idx[:2] == [0, 1]  # the waiting frames were kept (with 'oldest' they would be 28, 29)


def test_never_policy_on_a_live_source():
    got, sink = collect()
    stats = Pipeline(SlowCall(0.01), camera(15, 500.0), sink, StreamOptions(live=True, drop="never")).run()
    assert stats["dropped"] == 0 and len(got) == 15


def test_max_frames():
    got, sink = collect()
    stats = Pipeline(SlowCall(0.0), [numbered_frame(i) for i in range(20)], sink, StreamOptions(max_frames=7)).run()
    assert [i for i, _ in got] == list(range(7))
    assert stats["frames_out"] == 7 and stats["stopped_by"] == "max_frames"


def test_stop_from_another_thread_finalizes_the_video(tmp_path):
    out = tmp_path / "out.mp4"
    pipe = Pipeline(SlowCall(0.01), camera(1000, 100.0), str(out), StreamOptions(live=True))
    pipe.start()
    deadline = time.monotonic() + 10
    while pipe.stats()["frames_out"] < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    pipe.stop()
    stats = pipe.join(timeout=10)
    assert stats is not None and stats["stopped_by"] == "stop"
    assert 5 <= stats["frames_out"] < 1000
    assert count_frames(out) == stats["frames_out"] == stats["outputs"][0]["frames_written"]


def test_a_sink_can_ask_to_stop():
    n = []

    def sink(f, m):
        n.append(m.index)
        return False if len(n) == 3 else None

    stats = Pipeline(SlowCall(0.0), [numbered_frame(i) for i in range(50)], sink).run()
    assert stats["stopped_by"] == "sink" and 3 <= stats["frames_out"] < 50


class Boom(Exception):
    pass


def test_processor_error_is_raised_and_the_video_is_still_finalized(tmp_path):
    calls = []

    def proc(frame):
        calls.append(1)
        if len(calls) == 6:
            raise Boom("model failed")
        return frame

    out = tmp_path / "out.avi"
    written = []
    with pytest.raises(Boom):
        Pipeline(proc, [numbered_frame(i) for i in range(20)], [str(out), lambda f, m: written.append(m.index)],
                 warmup=False).run()
    assert written == list(range(len(written))) and len(written) <= 5
    assert count_frames(out) == len(written)
    assert not list(tmp_path.glob(".*partial*"))


def test_keyboard_interrupt_in_a_sink_still_finalizes(tmp_path):
    out = tmp_path / "out.avi"
    seen = []

    def sink(f, m):
        seen.append(m.index)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Pipeline(SlowCall(0.0), [numbered_frame(i) for i in range(20)], [str(out), sink]).run()
    assert count_frames(out) == 4


def test_stats_keys_and_periodic_reports():
    reports = []
    opts = StreamOptions(stats_every=4)
    stats = Pipeline(StagedFake(), [numbered_frame(i) for i in range(10)], "null://", opts,
                     on_stats=reports.append).run()
    for k in ("fps", "frames_in", "frames_out", "dropped", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99",
              "elapsed_s", "stages", "live", "source", "outputs"):
        assert k in stats
    assert stats["fps"] > 0 and stats["latency_ms_p50"] <= stats["latency_ms_p99"]
    for stage in ("capture", "preprocess", "infer", "postprocess", "write"):
        assert set(stats["stages"][stage]) == {"p50", "p95", "p99", "mean", "count"}
        assert stats["stages"][stage]["count"] == 10
    assert [r["frames_out"] for r in reports] == [4, 8]
    assert all(r["interval_fps"] > 0 for r in reports)


def test_stage_times_are_bounded():
    t = StageTimes(window=8)
    for v in range(100):
        t.add("infer", float(v))
    p = t.percentiles("infer")
    assert p["count"] == 100 and p["mean"] == pytest.approx(49.5)
    assert p["p50"] == pytest.approx(np.percentile(np.arange(92, 100), 50))


def test_bad_processor():
    with pytest.raises(InputError, match="processor"):
        Pipeline(object(), [numbered_frame(0)])


def test_deblur_video(tmp_path):
    src = make_video(tmp_path / "in.avi", n=9, fps=15.0)
    dst = tmp_path / "out" / "deblurred.avi"
    stats = deblur_video(StagedFake(), str(src), str(dst))
    assert stats["frames_out"] == 9 and stats["dropped"] == 0 and stats["live"] is False
    with open_source(str(dst)) as s:
        assert s.fps == pytest.approx(15.0)
        # the processor inverts frames: undo it and read the frame numbers back, in order
        assert [frame_index(255 - f) for f, _ in s] == list(range(9))


def test_run_stream_with_options(tmp_path):
    src = make_video(tmp_path / "in.avi", n=6)
    out = tmp_path / "frames"
    stats = run_stream(StreamOptions(source=str(src), output=str(out)), StagedFake())
    assert stats["frames_out"] == 6
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(6)]


def test_streaming_path_does_not_import_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; import edge_deblur.io, edge_deblur.runtime.pipeline, edge_deblur.cli.stream_cmd, "
            "edge_deblur.cli.demo_cmd, edge_deblur.data.blur; print('torch' in sys.modules)")
    repo = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_stop_returns_while_the_source_is_blocked_in_a_read():
    """A camera whose read blocks (a hung driver, a reconnect that never answers): stop() used to
    wait for the read, forever; the frames already taken are still written."""
    release = threading.Event()

    def hangs_after_three():
        for i in range(3):
            yield numbered_frame(i)
        release.wait(30)  # blocked in the read
        yield numbered_frame(3)

    got, sink = collect()
    pipe = Pipeline(SlowCall(0.0), hangs_after_three(), sink, StreamOptions(read_timeout=1.0), warmup=False)
    pipe.start()
    deadline = time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    pipe.stop()
    stats = pipe.join(timeout=10)
    release.set()
    assert stats is not None and time.monotonic() - t0 < 5
    assert [i for i, _ in got] == [0, 1, 2] and stats["stopped_by"] == "stop"


class _DropFirstChannel:
    """A backend that zeroes the model's channel 0 (R when the Deblurrer is rgb=True): any channel
    swap on the way in or out shows."""
    stride = 1

    def infer(self, x):
        y = x.copy()
        y[:, 0] = 0
        return y

    def close(self):
        pass


def test_python_frames_keep_their_channel_order_with_rgb():
    """With rgb=True a Python source gives RGB frames and gets RGB back: they were swapped to
    'RGB' as if they were a camera's BGR, so the model saw blue where the caller had red."""
    from edge_deblur.runtime.deblurrer import Deblurrer

    red = np.zeros((16, 24, 3), np.uint8)
    red[..., 0] = 200                                        # RGB red
    for source in (iter([red, red]), [red, red]):            # pumped generator, and a list read directly
        out = []
        stats = run_stream(StreamOptions(source=source, output=lambda f, m: out.append(f), rgb=True),
                           processor=Deblurrer(_DropFirstChannel(), rgb=True))
        assert stats["frames_out"] == 2 and all(int(f.max()) == 0 for f in out)   # R zeroed, nothing else there
    with pytest.raises(InputError, match=r"rgb=True.*opened with rgb=False.*swapped"):
        run_stream(StreamOptions(source=[red], output=lambda f, m: None, rgb=True),
                   processor=Deblurrer(_DropFirstChannel()))


def test_a_generator_source_is_closed_when_the_stream_stops_early():
    """A stream that stops before a generator ends (max_frames, a sink that says stop) closed it
    never: its pump thread stayed blocked holding it, and its finally (a camera SDK's release) never
    ran, one thread more per run."""
    from edge_deblur.runtime.deblurrer import Deblurrer

    released = []

    def camera():
        try:
            while True:
                yield np.full((8, 8, 3), 50, np.uint8)
        finally:
            released.append(1)

    d = Deblurrer(_DropFirstChannel())
    for opts in (StreamOptions(source=camera(), output=lambda f, m: None, max_frames=3),
                 StreamOptions(source=camera(), output=lambda f, m: False)):
        run_stream(opts, processor=d)
    t0 = time.time()
    while len(released) < 2 and time.time() - t0 < 5:
        time.sleep(0.05)
    assert released == [1, 1]
    assert not [t for t in threading.enumerate() if t.name == "edge-deblur-python-source" and t.is_alive()]


def test_run_stream_takes_a_list_of_frames_and_names_the_sources_of_a_rig_briefly():
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (10, 20, 30)]
    got = []
    stats = run_stream(StreamOptions(source=frames, output=lambda f, m: got.append(f)),
                       processor=lambda f: f)
    assert stats["frames_out"] == 3 and [int(g[0, 0, 0]) for g in got] == [10, 20, 30]
    with pytest.raises(InputError, match=r"runs one source, got 2: \['a.mp4', 'rtsp://cam'\]; for several cameras"):
        run_stream(StreamOptions(source=["a.mp4", "rtsp://cam"]))
