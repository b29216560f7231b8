"""Several cameras through one model: batched output identical to per-camera output, frames of
different sizes grouped, one camera failing while the others go on, per-camera recurrent state,
and the CLI with several --source. The bundled model on small frames, one ORT thread."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_deblur.errors import InputError, SourceError
from edge_deblur.io import StreamOptions
from edge_deblur.runtime.deblurrer import Deblurrer
from edge_deblur.runtime.multicam import MultiCamera

from test_reliability_sources import FakeCapture
from video_helpers import count_frames, make_video

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "checkpoints" / "edgenet_s" / "model.onnx"


def frames(n, h, w, seed):
    rng = np.random.default_rng(seed)
    return [cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (0, 0), 1.5) for _ in range(n)]


@pytest.fixture(scope="module")
def deblur():
    with Deblurrer.open(MODEL, threads=1) as d:
        yield d


def collect():
    got = []
    return got, (lambda frame, meta: got.append(frame.copy()))


def test_batched_cameras_equal_one_camera_at_a_time_and_sizes_are_grouped(deblur):
    cams = [frames(5, 48, 64, 0), frames(5, 48, 64, 1), frames(4, 64, 80, 2)]
    outs = [collect() for _ in cams]
    stats = MultiCamera(deblur, cams, [o[1] for o in outs], StreamOptions(queue_size=8)).run()
    assert [c["frames_out"] for c in stats["cameras"]] == [5, 5, 4]
    assert [c["status"] for c in stats["cameras"]] == ["ended"] * 3
    # the two 64x48 cameras share backend calls; the 80x64 one runs in its own group
    assert stats["backend_calls"] < 14 and max(stats["mean_batch"], 0) > 1
    for cam, (got, _) in zip(cams, outs):
        for f, g in zip(cam, got):
            ref = deblur(f)
            assert g.shape == f.shape and g.dtype == f.dtype
            assert np.abs(g.astype(int) - ref.astype(int)).max() <= 1  # batch of 2 vs 1: float rounding only
        assert not np.array_equal(got[0], cam[0])


def test_a_model_with_a_fixed_batch_of_one_runs_the_cameras_one_call_each(tmp_path):
    # batching two same-size cameras into a batch-1 ONNX failed the whole run in ONNX Runtime
    # ("Got invalid dimensions for input ... Got: 2 Expected: 1")
    from runtime_helpers import fixed_batch_onnx

    cams = [frames(4, 48, 64, 0), frames(4, 48, 64, 1)]
    outs = [collect() for _ in cams]
    with Deblurrer.open(fixed_batch_onnx(tmp_path / "b1.onnx"), threads=1) as d:
        stats = MultiCamera(d, cams, [o[1] for o in outs], StreamOptions(queue_size=8)).run()
        assert [c["status"] for c in stats["cameras"]] == ["ended"] * 2, stats["cameras"]
        assert [c["frames_out"] for c in stats["cameras"]] == [4, 4]
        assert stats["backend_calls"] == 8 and stats["mean_batch"] == 1
        for cam, (got, _) in zip(cams, outs):
            for f, g in zip(cam, got):
                assert np.array_equal(g, d(f))
        assert d.backend.max_batch == 1


def test_one_camera_failing_does_not_stop_the_others(deblur):
    def dying():
        for i, f in enumerate(frames(10, 48, 64, 3)):
            if i == 3:
                raise SourceError("camera unplugged (rtsp://cam-b: no frame after 3 reconnect attempts)")
            yield f

    good, sink = collect()
    stats = MultiCamera(deblur, [frames(8, 48, 64, 4), dying()], [sink, "null://"], names=["front", "rear"]).run()
    front, rear = stats["cameras"]
    assert front["status"] == "ended" and front["frames_out"] == 8 and len(good) == 8
    assert rear["status"] == "failed" and "no frame after 3 reconnect attempts" in rear["error"]
    assert rear["frames_out"] == 3 and stats["failed"] == ["rear"]
    assert stats["stopped_by"] == "end"            # as run_stream says when its source ends (it was None)


def test_a_failing_output_stops_only_its_camera(deblur):
    def broken(frame, meta):
        raise OSError("disk full")

    good, sink = collect()
    stats = MultiCamera(deblur, [frames(4, 48, 64, 5), frames(4, 48, 64, 6)], [sink, broken]).run()
    assert stats["cameras"][0]["frames_out"] == 4 and stats["cameras"][1]["status"] == "failed"
    assert "disk full" in stats["cameras"][1]["error"]


def test_outputs_must_match_the_cameras(deblur, tmp_path):
    with pytest.raises(InputError, match="3 cameras need 3 outputs"):
        MultiCamera(deblur, [frames(1, 48, 64, 0)] * 3, ["a.mp4", "b.mp4"])
    m = MultiCamera(deblur, [frames(2, 48, 64, 0), frames(2, 48, 64, 1)], str(tmp_path / "out_{name}"))
    m.run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_cam0", "out_cam1"]


def test_recurrent_state_is_carried_per_camera(tmp_path_factory):
    pytest.importorskip("torch")
    from runtime_helpers import TINY_RNN_SPEC, exported

    rnn = exported(tmp_path_factory, "tiny_rnn_mc", TINY_RNN_SPEC, fp16=False)
    a, b = frames(4, 32, 48, 7), frames(4, 32, 48, 8)
    with Deblurrer.open(rnn["onnx"], threads=1) as d:
        assert d.recurrent
        outs = [collect(), collect()]
        MultiCamera(d, [a, b], [outs[0][1], outs[1][1]], StreamOptions(queue_size=8)).run()
        refs = []
        for cam in (a, b):  # each camera alone, state carried from its own previous frames
            d.reset()
            refs.append([d(f) for f in cam])
        d.reset()
        [d(f) for f in a]
        shared = [d(f) for f in b]  # camera B run on with camera A's state: what must not happen
    for (got, _), ref in zip(outs, refs):
        assert len(got) == 4
        for g, r in zip(got, ref):
            assert np.abs(g.astype(int) - r.astype(int)).max() <= 1
    assert np.abs(shared[0].astype(int) - refs[1][0].astype(int)).max() > 1  # the state does matter


def test_cli_stream_several_sources(tmp_path):
    a = make_video(tmp_path / "a.avi", n=6, w=64, h=48)
    b = make_video(tmp_path / "b.avi", n=4, w=80, h=64)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "edge_deblur", "stream", "--source", str(a), "--source", str(b),
           "--output", str(tmp_path / "out_{i}.avi"), "--model", str(MODEL), "--threads", "1", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert [c["frames_out"] for c in stats["cameras"]] == [6, 4]
    assert count_frames(tmp_path / "out_0.avi") == 6 and count_frames(tmp_path / "out_1.avi") == 4
    bad = subprocess.run(cmd[:8] + ["--output", "x.avi", "--output", "y.avi", "--output", "z.avi"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "2 cameras need 2 outputs" in bad.stderr


def test_nan_output_passes_the_input_and_stops_only_that_camera():
    class NanForBright:  # NaN for frames brighter than mid-grey: only camera 1's
        stride = 1

        def infer(self, x):
            y = 1.0 - x
            y[x.reshape(x.shape[0], -1).mean(axis=1) > 0.5] = np.nan
            return y

        def close(self):
            pass

    dark = [np.full((16, 24, 3), 40, np.uint8)] * 5
    bright = [np.full((16, 24, 3), 200, np.uint8)] * 5
    got = [collect(), collect()]
    d = Deblurrer(NanForBright(), max_bad_frames=3)
    stats = MultiCamera(d, [dark, bright], [got[0][1], got[1][1]], StreamOptions(queue_size=8), warmup=False).run()
    cam0, cam1 = stats["cameras"]
    assert cam0["status"] == "ended" and cam0["frames_out"] == 5 and (got[0][0][0] == 215).all()
    assert cam1["status"] == "failed" and "NaN/Inf for 3 frames in a row" in cam1["error"]
    assert cam1["frames_out"] == 2 and all(np.array_equal(g, bright[0]) for g in got[1][0])  # input passed through
    assert cam1["model_output"]["bad_frames"] == 3


def test_recurrent_cameras_reset_on_a_restart_and_report_the_state(tmp_path_factory, tmp_path):
    pytest.importorskip("torch")
    from runtime_helpers import TINY_RNN_SPEC, exported

    rnn = exported(tmp_path_factory, "tiny_rnn_mc", TINY_RNN_SPEC, fp16=False)
    clip = make_video(tmp_path / "a.avi", n=4, w=48, h=32)
    outs = [collect(), collect()]
    with Deblurrer.open(rnn["onnx"], threads=1, scene_cut=0) as d:
        stats = MultiCamera(d, [str(clip), str(clip)], [outs[0][1], outs[1][1]],
                            StreamOptions(queue_size=8, loop=1)).run()
    assert [len(o[0]) for o in outs] == [8, 8]
    for cam in stats["cameras"]:  # each camera started once and started over once (the loop)
        assert cam["state_resets"]["start"] == 1 and cam["state_resets"]["restart"] == 1
    assert stats["state"]["kind"] == "recurrent" and stats["state"]["resets"]["restart"] == 2
    with Deblurrer.open(MODEL, threads=1) as img:
        assert MultiCamera(img, [frames(2, 32, 48, 1)], [collect()[1]]).run()["state"] == {"kind": "image"}


def test_outputs_that_would_collide_or_cannot_be_filled_are_refused_before_any_frame(deblur, tmp_path):
    a, b = make_video(tmp_path / "a.avi", n=3, w=48, h=32), make_video(tmp_path / "b.avi", n=3, w=48, h=32)
    cases = [
        ([str(tmp_path / "same.avi")] * 2, "several cameras would write the same file"),
        ([str(tmp_path / "x_{i}_{cam}.avi")], "placeholder that cannot be filled.*'cam'"),
        ([str(tmp_path / "img_{i}.png")], "frames"),  # one image file per camera, but each camera has 3 frames
    ]
    for outputs, match in cases:
        with pytest.raises((InputError, SourceError), match=match):
            MultiCamera(deblur, [str(a), str(b)], outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.avi", "b.avi"]  # nothing written


def test_one_null_output_serves_every_camera(deblur):
    stats = MultiCamera(deblur, [frames(2, 32, 48, 1), frames(2, 32, 48, 2)], "null://").run()  # was an IndexError
    assert [c["frames_out"] for c in stats["cameras"]] == [2, 2]


class _NetworkOnly(FakeCapture):
    """test_reliability_sources' fake network camera (``plan``: frames per connection, None: the
    open fails) for rtsp:// URLs; files go to the real OpenCV capture."""

    real = cv2.VideoCapture

    def __new__(cls, location, *a, **kw):
        if not str(location).startswith("rtsp://"):
            return cls.real(location, *a, **kw)
        return super().__new__(cls)


def _network(plan):
    FakeCapture.plan, FakeCapture.opens, FakeCapture.served = list(plan), [], 0


def test_a_network_camera_lost_after_its_reconnects_stops_alone(deblur, tmp_path, monkeypatch, capsys, caplog):
    """The rear camera goes through the real network source: 5 frames, a stall, reconnect attempts
    that fail; it is reported failed (credentials redacted) while the front camera's file is
    written whole, through the API and through `stream` (exit status 1, the camera named)."""
    from edge_deblur.cli import main

    monkeypatch.setattr(cv2, "VideoCapture", _NetworkOnly)
    url = "rtsp://admin:s3cret@cam-b.local/stream1"
    opts = StreamOptions(read_timeout=0.2, reconnect=2, reconnect_delay=0.05, reconnect_max_delay=0.1, drop="never")
    front = make_video(tmp_path / "front.avi", n=12, w=64, h=48)
    _network([5, None, None])
    got, sink = collect()
    stats = MultiCamera(deblur, [str(front), url], [sink, "null://"], opts, names=["front", "rear"]).run()
    f, r = stats["cameras"]
    assert f["status"] == "ended" and f["frames_out"] == 12 and len(got) == 12
    assert r["status"] == "failed" and "2 reconnect attempts" in r["error"] and r["frames_out"] == 5
    assert "s3cret" not in json.dumps(stats) and stats["failed"] == ["rear"]

    _network([5, None, None])
    out = tmp_path / "out_{i}.avi"
    rc = main(["stream", "--source", str(front), "--source", url, "--output", str(out), "--model", str(MODEL),
               "--threads", "1", "--read-timeout", "0.2", "--reconnect", "2", "--reconnect-delay", "0.05",
               "--reconnect-max-delay", "0.1"])
    cap = capsys.readouterr()
    said = cap.out + cap.err + caplog.text
    assert rc == 1 and "cam1" in said and "2 reconnect attempts" in said and "s3cret" not in said
    assert count_frames(tmp_path / "out_0.avi") == 12        # the other camera's video is whole
