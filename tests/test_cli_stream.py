"""`edge-deblur stream` end to end with a real ONNX model on ONNX Runtime: --json keys, bad
input (missing camera, unknown scheme, no display, unwritable output), and SIGINT/SIGTERM in a
subprocess leaving a finalized video that OpenCV reads to the last written frame."""
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_deblur.cli import main

from video_helpers import count_frames, make_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A one-layer ONNX model (3x3 conv, identity weights): the real backend, no training."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((3, 3, 3, 3), np.float32)
    for c in range(3):
        w[c, c, 1, 1] = 1.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"], pads=[1, 1, 1, 1])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    p = tmp_path_factory.mktemp("tiny_model") / "tiny.onnx"
    onnx.save(model, str(p))
    return p


def run_cli(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_stream_json_keys(tmp_path, tiny_onnx, capsys):
    src = make_video(tmp_path / "in.avi", n=12)
    rc, out, err = run_cli(["stream", "--source", str(src), "--output", "null://", "--model", str(tiny_onnx),
                            "--json"], capsys)
    assert rc == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    for k in ("fps", "frames_in", "frames_out", "dropped", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99",
              "stages", "backend", "interrupted"):
        assert k in stats, k
    assert stats["frames_in"] == stats["frames_out"] == 12 and stats["dropped"] == 0
    assert stats["backend"] == "onnxruntime" and stats["interrupted"] is False
    for stage in ("capture", "preprocess", "infer", "postprocess", "write"):
        assert {"p50", "p95", "p99"} <= set(stats["stages"][stage])


def test_stream_to_video_keeps_frames_and_order(tmp_path, tiny_onnx, capsys):
    src = make_video(tmp_path / "in.avi", n=10)
    out = tmp_path / "out.avi"
    rc, _, err = run_cli(["stream", "--source", str(src), "-o", str(out), "--model", str(tiny_onnx),
                          "--max-frames", "8", "--json"], capsys)
    assert rc == 0, err
    cap = cv2.VideoCapture(str(out))
    idx = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        idx.append(int(round(f.mean() / 8)))
    assert idx == list(range(8))


@pytest.mark.parametrize("args, match", [
    (["--camera", "99"], "camera 99"),
    (["--source", "foo://bar"], "unknown URI scheme 'foo://'"),
    (["--source", "missing.mp4"], "missing.mp4"),
    ([], "give a source"),
])
def test_stream_bad_sources_fail_fast(args, match, capsys):
    t = time.monotonic()
    rc, out, err = run_cli(["stream", *args, "--open-timeout", "5"], capsys)
    assert rc != 0 and match in err
    assert time.monotonic() - t < 5


def test_stream_bad_outputs(tmp_path, tiny_onnx, capsys, monkeypatch):
    src = make_video(tmp_path / "in.avi", n=3)
    (tmp_path / "blocker").write_text("x")
    rc, _, err = run_cli(["stream", "--source", str(src), "-o", str(tmp_path / "blocker" / "o.mp4"),
                          "--model", str(tiny_onnx)], capsys)
    assert rc != 0 and "blocker" in err
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        rc, _, err = run_cli(["stream", "--source", str(src), "--display", "--model", str(tiny_onnx)], capsys)
        assert rc != 0 and "display" in err


def test_stream_missing_model(tmp_path, capsys):
    src = make_video(tmp_path / "in.avi", n=3)
    rc, _, err = run_cli(["stream", "--source", str(src), "--model", str(tmp_path / "nope.onnx")], capsys)
    assert rc != 0 and "nope.onnx" in err


def _interrupt(tmp_path, tiny_onnx, sig, out_name):
    """Start a paced stream in a subprocess, signal it once it has written frames, return
    (returncode, stats, output path)."""
    src = make_video(tmp_path / "in.avi", n=300, w=96, h=64)
    out = tmp_path / out_name
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "edge_deblur", "stream", "--source", str(src), "--output", str(out),
           "--model", str(tiny_onnx), "--live", "--fps", "30", "--stats-every", "5", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    seen = threading.Event()
    err_lines = []

    def watch():
        for line in proc.stderr:
            err_lines.append(line)
            if line.startswith("[stream]"):
                seen.set()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        assert seen.wait(60), "".join(err_lines)
        proc.send_signal(sig)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    t.join(5)
    stats = json.loads(stdout.strip().splitlines()[-1])
    return proc.returncode, stats, out, "".join(err_lines)


@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "out.mp4"), (signal.SIGTERM, 143, "out.avi")])
def test_signal_leaves_a_finalized_video(tmp_path, tiny_onnx, sig, code, name):
    rc, stats, out, err = _interrupt(tmp_path, tiny_onnx, sig, name)
    assert rc == code, err
    assert stats["interrupted"] is True and stats["stopped_by"] in ("SIGINT", "SIGTERM")
    n = stats["frames_out"]
    assert 5 <= n < 300
    assert stats["outputs"][0]["frames_written"] == n
    assert out.exists() and count_frames(out) == n  # OpenCV reads the file to the last written frame
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("extra, match", [
    (["--threads", "0"], "threads must be a positive integer"),
    (["--tile", "0"], "--tile must be a whole number"),
    (["--overlap", "16"], "--overlap 16 only applies with --tile"),
    (["--tile", "64", "--overlap", "64"], "--tile 64 is smaller than twice the --overlap 64; use --tile 128"),
])
def test_stream_refuses_bad_numbers(tmp_path, tiny_onnx, capsys, extra, match):
    """0 threads or a 0 tile were ignored (all cores, no tiling); a tile too small for the overlap
    failed only once the stream ran, and stream had no --overlap to follow its advice with."""
    src = make_video(tmp_path / "in.avi", n=3)
    rc, _, err = run_cli(["stream", "--source", str(src), "--model", str(tiny_onnx), *extra], capsys)
    assert rc == 2 and match in err, err


def test_stream_tiles_with_the_overlap_given(tmp_path, tiny_onnx, capsys):
    src = make_video(tmp_path / "in.avi", n=3, w=96, h=64)
    rc, out, err = run_cli(["stream", "--source", str(src), "--model", str(tiny_onnx), "--tile", "48",
                            "--overlap", "16", "--json"], capsys)
    assert rc == 0, err
    assert json.loads(out.strip().splitlines()[-1])["frames_out"] == 3


@pytest.mark.parametrize("extra, policy, note", [
    ([], "never", "file: no drops"),
    (["--drop", "oldest"], "oldest", "file: drops the oldest frame when behind"),
    (["--drop", "newest"], "newest", "file: drops the newest frame when behind"),
    (["--live", "--fps", "1000", "--drop", "never"], "never", "live: no drops"),
])
def test_stream_startup_line_says_the_drop_policy_that_runs(tmp_path, tiny_onnx, capsys, caplog, extra, policy, note):
    # the line used to say "file: no drops" / "live: drops the oldest" whatever --drop (or a profile) said
    src = make_video(tmp_path / "in.avi", n=3)
    with caplog.at_level(logging.INFO, logger="edge_deblur.stream"):
        rc, out, err = run_cli(["stream", "--source", str(src), "--model", str(tiny_onnx), "--json", *extra], capsys)
    assert rc == 0, err
    assert json.loads(out.strip().splitlines()[-1])["drop_policy"] == policy
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stream: ")]
    assert len(lines) == 1 and lines[0].endswith(f"| {note}"), lines


def test_a_profiles_drop_policy_is_for_live_sources(tmp_path, tiny_onnx, capsys, caplog):
    """A runtime profile for live cameras (drop: oldest) replayed on a recorded file kept only the
    frames inference caught up with (30 read, 4 written); now a file keeps every frame unless
    --drop or --live says otherwise."""
    (tmp_path / "drops.yaml").write_text("stream:\n  drop: oldest\n")
    src = make_video(tmp_path / "in.avi", n=6)
    base = ["stream", "--source", str(src), "--model", str(tiny_onnx), "--profile", str(tmp_path / "drops.yaml"),
            "--json"]
    for extra, policy in (([], "never"), (["--drop", "oldest"], "oldest"), (["--live", "--fps", "1000"], "oldest")):
        with caplog.at_level(logging.INFO):
            rc, out, err = run_cli(base + extra, capsys)
        assert rc == 0, err
        stats = json.loads(out.strip().splitlines()[-1])
        assert stats["drop_policy"] == policy, extra
        if not extra:
            assert stats["frames_out"] == 6 and "drops frames (oldest) from live sources only" in caplog.text


def test_sigterm_while_the_model_opens_exits_143(tmp_path, tiny_onnx, capsys, monkeypatch):
    import edge_deblur.runtime.pipeline as pipeline

    real = pipeline.open_processor

    def open_then_signalled(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, in the main thread
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "open_processor", open_then_signalled)
    src = make_video(tmp_path / "in.avi", n=3)
    rc, _, err = run_cli(["stream", "--source", str(src), "--model", str(tiny_onnx)], capsys)
    assert rc == 143 and "interrupted (SIGTERM)" in err, err


@pytest.mark.parametrize("signals, completes", [(1, True), (2, False)], ids=["one", "two"])
def test_a_signal_while_opening_is_acted_on_between_steps(tmp_path, tiny_onnx, capsys, monkeypatch, signals,
                                                           completes):
    """One Ctrl-C while the model opens lets that step finish and ends the command after it (raised
    inside an import, a library or a wait on FFmpeg's open thread it gave false errors, was
    swallowed, or aborted the process); a second one ends it at once. Exit status 130 either way."""
    import edge_deblur.runtime.pipeline as pipeline

    real, done = pipeline.open_processor, []

    def open_while_signalled(*a, **k):
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, in the main thread
        done.append(True)                        # the rest of the step (an import, a session)
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "open_processor", open_while_signalled)
    src = make_video(tmp_path / "in.avi", n=3)
    out = tmp_path / "out.avi"
    rc, _, err = run_cli(["stream", "--source", str(src), "--model", str(tiny_onnx), "-o", str(out)], capsys)
    assert rc == 130 and "interrupted" in err, err
    assert bool(done) is completes
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))   # nothing half-written


def test_a_pipeline_that_starts_after_a_signal_is_stopped_at_once():
    from edge_deblur.cli.signals import Interrupted, Signals

    class Pipe:
        calls = []

        def stop(self, drain=True, reason="stop"):
            self.calls.append((drain, reason))

    sig = Signals()
    sig._handle(signal.SIGTERM, None)            # while opening: remembered, not raised
    assert sig.received == [signal.SIGTERM]
    sig.pipeline = p = Pipe()
    assert p.calls == [(True, "SIGTERM")]        # the frames in flight (none yet) finish
    opening = Signals()
    opening._handle(signal.SIGINT, None)
    with pytest.raises(Interrupted) as e:
        opening.check()                          # the next step of opening ends the command
    assert e.value.exit_code == 130
    lenient = Signals(raise_while_idle=False)    # deblur: checks between files itself
    lenient._handle(signal.SIGINT, None)
    lenient._handle(signal.SIGINT, None)
    lenient.check()
    assert lenient.stopped and lenient.exit_code == 130


def test_stream_and_eval_take_the_deblurrers_device_and_threads(tmp_path, tiny_onnx, capsys):
    """The API's Deblurrer.open(device=..., threads=...) as flags: stream had no --device, eval
    neither --device nor --threads."""
    src = make_video(tmp_path / "in.avi", n=3)
    rc, _, err = run_cli(["stream", "--source", str(src), "--model", str(tiny_onnx), "--device", "gpu9"], capsys)
    assert rc != 0 and "unknown ONNX Runtime device 'gpu9'" in err
    rc, out, err = run_cli(["stream", "--source", str(src), "--model", str(tiny_onnx), "--device", "cpu",
                            "--threads", "1", "--json"], capsys)
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["frames_out"] == 3, err
    pairs = tmp_path / "pairs"
    for sub in ("blur", "sharp"):
        (pairs / sub).mkdir(parents=True)
        cv2.imwrite(str(pairs / sub / "0.png"), np.full((32, 48, 3), 90, np.uint8))
    rc, _, err = run_cli(["eval", "-m", str(tiny_onnx), "-d", str(pairs), "--threads", "0"], capsys)
    assert rc == 2 and "threads must be a positive integer" in err
    rc, out, err = run_cli(["eval", "-m", str(tiny_onnx), "-d", str(pairs), "--threads", "1", "--device", "cpu",
                            "--json"], capsys)
    assert rc == 0, err


def test_stream_paths_with_bang_self_overwrite_fps_inf_and_skipped_images(tmp_path, tiny_onnx, capsys, caplog):
    src = make_video(tmp_path / "take!.avi", n=4)  # an existing file with '!' is a file, not a pipeline
    rc, out, err = run_cli(["stream", "--source", str(src), "-o", str(tmp_path / "run!1.avi"), "--model",
                            str(tiny_onnx), "--json"], capsys)
    assert rc == 0, err
    assert count_frames(tmp_path / "run!1.avi") == 4
    before = src.read_bytes()
    rc, _, err = run_cli(["stream", "--source", str(src), "-o", str(src), "--model", str(tiny_onnx)], capsys)
    assert rc == 2 and "is the source file" in err and src.read_bytes() == before
    assert "was left as it was" in caplog.text and "was not created" not in caplog.text  # it exists: it is the source
    rc, _, err = run_cli(["stream", "--source", str(src), "-o", str(tmp_path / "o.avi"), "--fps", "inf",
                          "--model", str(tiny_onnx)], capsys)
    assert rc == 2 and "fps must be a finite number" in err
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"f{i}.png"), np.full((24, 32, 3), 40 * i, np.uint8))
    (folder / "f3.png").write_bytes(b"not a png")
    rc, out, err = run_cli(["stream", "--source", str(folder), "--model", str(tiny_onnx), "--json"], capsys)
    stats = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and stats["frames_out"] == 3
    assert stats["source"]["skipped"]["count"] == 1 and stats["source"]["skipped"]["first"][0].endswith("f3.png")


@pytest.mark.parametrize("fps", ["0.0001", "0", "-5", "nan", "1e6"])
def test_stream_refuses_an_fps_out_of_range(tmp_path, fps, capsys):
    """--fps 0.0001 was accepted and the video written at 24 fps (its rate rounded to 0, which
    FFmpeg replaces by 24): refused before anything opens, naming the value and the range."""
    src = make_video(tmp_path / "in.avi", n=2)
    rc, _, err = run_cli(["stream", "--source", str(src), "-o", str(tmp_path / "o.mp4"), "--fps", fps], capsys)
    assert rc == 2 and f"got {float(fps)!r}" in err and "from 0.001 to 1000 frames per second" in err, err
    assert not list(tmp_path.glob("*o.*"))


def test_stream_negative_camera_index_is_a_clear_error(capsys):
    rc, _, err = run_cli(["stream", "--camera", "-1"], capsys)
    assert rc == 2
    assert "--camera -1 is not a camera index: indexes count from 0" in err, err
    assert "--source URI" in err and "list the devices" in err


@pytest.mark.parametrize("given, source", [("+1", "camera://1"), ("-0", "camera://0"), (" 2 ", "camera://2"),
                                           ("007", "camera://7"), ("/dev/video3", "/dev/video3")])
def test_a_signed_camera_index_is_that_camera(given, source):
    """The index check accepted a sign, but '--camera +1' and '--camera -0' became file sources
    named '+1' and '-0'."""
    import argparse

    from edge_deblur.io import StreamOptions

    parser = argparse.ArgumentParser()
    StreamOptions.add_arguments(parser)
    assert StreamOptions.from_args(parser.parse_args(["--camera", given])).source == source
