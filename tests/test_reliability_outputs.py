"""Outputs that survive: a full disk is an error (not exit 0), a good existing file is never
replaced by a broken one, a killed process leaves a decodable fragmented MP4, the default H.264
keeps the model's frames (>= 45 dB), and an interrupted `deblur` never publishes a truncated
video under the final name."""
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_deblur.cli import main
from edge_deblur.errors import SinkWriteError
from edge_deblur.io import FrameMeta, StreamOptions, open_sink
from edge_deblur.io import video_writer
from edge_deblur.io.video_writer import count_video_frames

from test_cli_stream import tiny_onnx  # noqa: F401  (fixture)
from video_helpers import make_video, numbered_frame

REPO = Path(__file__).resolve().parents[1]


class FullDisk:
    """A file object that accepts ``limit`` bytes, then fails like a full disk (ENOSPC)."""

    def __init__(self, path, limit):
        self._f = open(path, "wb")
        self.limit = limit
        self.n = 0

    def write(self, b):
        if self.n + len(b) > self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.n += len(b)
        return self._f.write(b)

    def __getattr__(self, k):
        return getattr(self._f, k)


def noisy(i, w=64, h=48):
    return np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def full_disk(monkeypatch):
    def use(limit):
        monkeypatch.setattr(video_writer, "_open_file", lambda p: FullDisk(p, limit))
    return use


def test_disk_full_is_an_error_and_the_good_file_survives(tmp_path, full_disk):
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"the good recording from yesterday")
    full_disk(20_000)
    sink = open_sink(str(dst), StreamOptions(), fps=10.0)
    with pytest.raises(SinkWriteError, match="no space left on device"):
        for i in range(200):
            sink.write(noisy(i), FrameMeta(i))
    assert sink.frames_written < 200
    sink.close()  # closing after the failure must not rename the broken file
    assert dst.read_bytes() == b"the good recording from yesterday"


def test_disk_full_during_stream_exits_non_zero(tmp_path, full_disk, capsys, tiny_onnx):
    src = make_video(tmp_path / "in.avi", n=60, w=96, h=64)
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"good")
    full_disk(1_200)  # the header and part of the first fragment
    rc = main(["stream", "--source", str(src), "-o", str(dst), "--model", str(tiny_onnx), "--json"])
    out, err = capsys.readouterr()
    assert rc == SinkWriteError.exit_code, err
    assert "no space left on device" in err and re.search(r"\.out\.\d+-[0-9a-f]{6}\.partial\.mp4", err)
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["stopped_by"] == "error" and "no space" in stats["error"]
    assert stats["outputs"][0]["frames_written"] < 60  # the stats do not claim frames that were lost
    assert dst.read_bytes() == b"good"


def test_a_video_that_does_not_read_back_is_not_published(tmp_path, monkeypatch):
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"good")
    sink = open_sink(str(dst), StreamOptions(), fps=10.0)
    for i in range(5):
        sink.write(numbered_frame(i), FrameMeta(i))
    monkeypatch.setattr("edge_deblur.io.sinks.count_video_frames", lambda p: 3)  # the check finds 3 of 5
    with pytest.raises(SinkWriteError, match="holds 3 frames but 5 were written"):
        sink.close()
    assert dst.read_bytes() == b"good" and sink.tmp_path.exists()


def test_default_codec_is_fragmented_h264(tmp_path):
    av = pytest.importorskip("av")
    dst = tmp_path / "out.mp4"
    with open_sink(str(dst), StreamOptions(), fps=10.0) as sink:
        for i in range(45):  # 4.5 s at 10 fps: keyframes (fragments) at 0, 2 and 4 s
            sink.write(numbered_frame(i), FrameMeta(i))
    with av.open(str(dst)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        keys = [p.pts for p in c.demux(s) if p.size and p.is_keyframe]
    assert len(keys) == 3
    data = dst.read_bytes()
    assert data.count(b"moof") >= 3  # fragments, each playable without the end of the file
    assert count_video_frames(dst, decode=True) == 45


def test_default_quality_keeps_the_models_frames(tmp_path):
    """Moving gradients with fine texture (like a deblurred camera frame): the default H.264
    (4:4:4, CRF 6) stays >= 45 dB from what went in, where 4:2:0 H.264 cannot (its chroma
    subsampling alone costs more on coloured texture)."""
    import cv2

    av = pytest.importorskip("av")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:128]
    tex = cv2.GaussianBlur(rng.normal(0, 30, (136, 168, 3)).astype(np.float32), (0, 0), 1.5)
    frames = []
    for i in range(10):
        base = np.stack([(xx * 2 + i * 5) % 256, (yy * 2) % 256, (xx + yy) % 256], -1).astype(np.float32) * 0.5 + 64
        frames.append(np.clip(base + tex[i:i + 96, 2 * i:2 * i + 128], 0, 255).astype(np.uint8))

    def psnr_through(codec):
        dst = tmp_path / f"q_{codec}.mp4"
        with open_sink(str(dst), StreamOptions(codec=codec), fps=10.0) as sink:
            for i, f in enumerate(frames):
                sink.write(f, FrameMeta(i))
        with av.open(str(dst)) as c:
            out = [fr.to_ndarray(format="bgr24") for fr in c.decode(video=0)]
        assert len(out) == len(frames)
        mse = np.mean([np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(out, frames)])
        return 10 * np.log10(255 ** 2 / mse)

    assert psnr_through(None) >= 45.0
    assert psnr_through("h264-420") < 45.0


def test_codec_and_quality_options(tmp_path):
    dst = tmp_path / "o.mkv"
    with open_sink(str(dst), StreamOptions(codec="mp4v", quality=4), fps=10.0) as sink:
        assert sink.codec == "mpeg4"
        for i in range(4):
            sink.write(numbered_frame(i), FrameMeta(i))
    assert count_video_frames(dst) == 4
    with pytest.raises(Exception, match="unknown video codec"):
        StreamOptions(codec="h264x").validate()
    with pytest.raises(Exception, match="quality"):
        StreamOptions(quality=99).validate()


def _child_env():
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def test_sigkill_leaves_the_frames_up_to_the_last_fragment(tmp_path, tiny_onnx):
    """A stream to .mp4 killed with SIGKILL: its hidden partial file decodes to the frames of every
    fragment finished before the kill (fragments of 0.5 s here, 2 s by default)."""
    src = make_video(tmp_path / "in.avi", n=600, w=96, h=64)
    out = tmp_path / "out.mp4"
    cmd = [sys.executable, "-m", "edge_deblur", "stream", "--source", str(src), "--output", str(out),
           "--model", str(tiny_onnx), "--live", "--fps", "20", "--fragment-s", "0.5", "--stats-every", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_child_env(),
                            cwd=tmp_path)
    seen = 0
    try:
        for line in proc.stderr:
            if line.startswith("[stream]"):
                seen += 5
                if seen >= 60:  # 3 s of video written
                    break
        else:
            pytest.fail("the stream did not start")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    partials = list(tmp_path.glob(".out.*.partial.mp4"))
    assert len(partials) == 1 and not out.exists(), partials
    partial = partials[0]
    n = count_video_frames(partial, decode=True)
    # whole fragments of 10 frames survive; the encoder holds up to ~20 frames (lookahead) and the muxer
    # the fragment in progress
    assert 20 <= n <= 60, n
    # a rerun to the same output (here in this process) neither reuses nor clobbers the crash's
    # recoverable partial file
    saved = partial.read_bytes()
    with open_sink(str(out), StreamOptions(), fps=10.0) as sink:
        assert sink.tmp_path != partial
        for i in range(3):
            sink.write(numbered_frame(i), FrameMeta(i))
    assert count_video_frames(out) == 3
    assert partial.read_bytes() == saved and count_video_frames(partial, decode=True) == n


def test_interrupted_deblur_does_not_publish_a_truncated_video(tmp_path, tiny_onnx):
    src = make_video(tmp_path / "in.avi", n=1500, w=320, h=240)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous complete result")
    cmd = [sys.executable, "-m", "edge_deblur", "deblur", str(src), "-o", str(out), "--model", str(tiny_onnx)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env(),
                            cwd=tmp_path)
    def partial():
        found = list(tmp_path.glob(".out.*.partial.mp4"))
        return found[0] if found else tmp_path / ".none"

    t0 = time.time()
    while not (partial().exists() and partial().stat().st_size > 2000) and time.time() - t0 < 60 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    summary, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert out.read_bytes() == b"previous complete result"
    assert "finished nothing" in summary and "not published under" in summary   # not "deblurred nothing (N frames)"
    assert "not renamed" in err and count_video_frames(partial(), decode=True) > 0
    assert partial().name in err  # the log names the file that holds the frames
