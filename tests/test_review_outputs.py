"""Review fixes for outputs of `deblur`, `stream` and `demo`: HEVC refused on frames libx265 crashes
on, partial videos unique per writer and never clobbered, `deblur --codec/--quality` as `stream`,
a single image output refused up front for a many-frame source, `deblur` never re-reading its own
output folder, `--tile` vs `--overlap` checked once, unknown output extensions refused, fsync
before rename, an atomic `demo_stats.json`, and a warning for audio that is not carried."""
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_deblur.cli import build_parser, main
from edge_deblur.errors import SinkWriteError, SourceError
from edge_deblur.io import FrameMeta, StreamOptions, open_sink
from edge_deblur.io import sinks
from edge_deblur.io.video_writer import CODECS, HEVC_MIN_SIZE, VideoWriter, count_video_frames

from test_cli_stream import tiny_onnx  # noqa: F401  (fixture)
from video_helpers import make_video, numbered_frame

REPO = Path(__file__).resolve().parents[1]


def run_cli(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def _child_env():
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


# ---- 1. HEVC on tiny frames ---------------------------------------------------------------------
@pytest.mark.parametrize("w, h", [(34, 18), (40, 24), (48, 48), (48, 96), (160, 14)])
def test_hevc_refuses_frames_libx265_cannot_encode(tmp_path, w, h):
    p = tmp_path / ".x.partial.mp4"
    wr = VideoWriter(p, ".mp4", CODECS["hevc"], 10.0)
    with pytest.raises(SourceError, match=rf"{w}x{h}.*--codec h264"):
        wr.open(w, h)
    assert not p.exists()  # refused before the file is created


def test_hevc_encodes_at_the_floor(tmp_path):
    w, h = HEVC_MIN_SIZE
    dst = tmp_path / "floor.mp4"
    with open_sink(str(dst), StreamOptions(codec="hevc"), fps=10.0) as sink:
        for i in range(5):
            sink.write(numbered_frame(i, w, h), FrameMeta(i))
    assert count_video_frames(dst, decode=True) == 5


def test_stream_hevc_on_tiny_frames_is_a_clear_error(tmp_path, tiny_onnx):
    """The reported command: libx265 used to corrupt the heap and abort the process."""
    src = make_video(tmp_path / "tiny.avi", n=6)
    out = tmp_path / "out" / "h.mp4"
    cmd = [sys.executable, "-m", "edge_deblur", "stream", "--source", str(src), "--width", "34", "--height", "18",
           "-o", str(out), "--codec", "hevc", "--model", str(tiny_onnx)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(), cwd=tmp_path, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "34x18" in r.stderr and "--codec h264" in r.stderr
    assert not out.exists() and not list(out.parent.glob(".*partial*"))


# ---- 2. partial files: unique per writer, never clobbered ---------------------------------------
def test_two_writers_of_one_output_have_their_own_partial_file(tmp_path):
    dst = tmp_path / "out.mp4"
    a = open_sink(str(dst), StreamOptions(), fps=10.0)
    for i in range(3):
        a.write(numbered_frame(i), FrameMeta(i))
    b = open_sink(str(dst), StreamOptions(), fps=10.0)
    assert a.tmp_path != b.tmp_path
    for t in (a.tmp_path, b.tmp_path):  # hidden, next to the output (the rename stays atomic)
        assert t.parent == dst.parent and t.name.startswith(".out.") and t.name.endswith(".partial.mp4")
    for i in range(5):
        b.write(numbered_frame(i), FrameMeta(i))
    b.close()
    assert count_video_frames(dst) == 5
    a.close()
    assert count_video_frames(dst) == 3 and not list(tmp_path.glob(".*partial*"))


def test_the_writer_never_truncates_an_existing_file(tmp_path):
    p = tmp_path / ".out.partial.mp4"
    p.write_bytes(b"frames recovered from a crash")
    wr = VideoWriter(p, ".mp4", CODECS["h264"], 10.0)
    with pytest.raises(SinkWriteError, match="exists"):
        wr.open(64, 48)
    assert p.read_bytes() == b"frames recovered from a crash"


# ---- 3. deblur --codec / --quality, as stream ---------------------------------------------------
def _subparser(name):
    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "command")
    return sub.choices[name]


def test_deblur_and_stream_share_the_video_flags():
    d, s = _subparser("deblur"), _subparser("stream")
    for dest in ("codec", "quality", "fragment_s"):
        da = next(a for a in d._actions if a.dest == dest)
        sa = next(a for a in s._actions if a.dest == dest)
        assert (da.option_strings, da.type, da.default, da.help) == (sa.option_strings, sa.type, sa.default, sa.help)
    # `batch` writes with the defaults: it must not accept flags it would ignore
    assert not any(a.dest == "codec" for a in _subparser("batch")._actions)


def test_deblur_writes_the_chosen_codec_and_quality(tmp_path, tiny_onnx, capsys):
    av = pytest.importorskip("av")
    src = make_video(tmp_path / "in.avi", n=4)
    m = ["--model", str(tiny_onnx)]
    rc, _, err = run_cli(["deblur", str(src), "-o", str(tmp_path / "o.mp4"), "--codec", "h264-420", "--quality", "20"] + m,
                         capsys)
    assert rc == 0, err
    with av.open(str(tmp_path / "o.mp4")) as c:
        cc = c.streams.video[0].codec_context
        assert cc.name == "h264" and cc.pix_fmt == "yuv420p"
    rc, _, err = run_cli(["deblur", str(src), "-o", str(tmp_path / "o.mkv"), "--codec", "ffv1"] + m, capsys)
    assert rc == 0, err
    with av.open(str(tmp_path / "o.mkv")) as c:
        assert c.streams.video[0].codec_context.name == "ffv1"
    assert count_video_frames(tmp_path / "o.mkv", decode=True) == 4


@pytest.mark.parametrize("flags, match", [
    (["--codec", "ffv1"], "cannot hold codec 'ffv1'"),
    (["--codec", "h264x"], "unknown video codec 'h264x'"),
    (["--quality", "99"], "quality"),
    (["--codec", "mjpeg", "--quality", "40"], "1 \\(best\\) to 31"),
])
def test_deblur_video_flags_are_checked_before_the_model_loads(tmp_path, capsys, flags, match):
    import re

    src = make_video(tmp_path / "in.avi", n=2)
    rc, _, err = run_cli(["deblur", str(src), "-o", str(tmp_path / "o.mp4"), "--model", str(tmp_path / "nope.onnx")]
                         + flags, capsys)
    assert rc == 2 and re.search(match, err), err
    assert "nope.onnx" not in err  # refused before the model was looked at


# ---- 4. stream: many frames into one image file --------------------------------------------------
def test_stream_refuses_a_single_image_for_many_frames_up_front(tmp_path, tiny_onnx, capsys):
    src = make_video(tmp_path / "tiny.avi", n=3)
    single = tmp_path / "out" / "single.png"
    rc, _, err = run_cli(["stream", "--source", str(src), "-o", str(single), "--model", str(tiny_onnx)], capsys)
    assert rc == 2, err
    assert "single image" in err and "3 frames" in err and "--max-frames 1" in err and ".mp4" in err
    assert not single.exists() and not list(single.parent.iterdir())  # nothing written, no temp left
    rc, _, err = run_cli(["stream", "--source", str(src), "-o", str(single), "--model", str(tiny_onnx),
                          "--max-frames", "1"], capsys)
    assert rc == 0, err
    assert cv2.imread(str(single)).shape == (48, 64, 3)


def test_single_image_check_counts_loops(tmp_path):
    img = tmp_path / "one.png"
    cv2.imwrite(str(img), numbered_frame(1))
    from edge_deblur.io import open_source

    with open_source(str(img)) as src:
        sink = open_sink(str(tmp_path / "o.png"))
        sinks.check_frames_fit([sink], src, StreamOptions())  # one frame: fine
        with pytest.raises(SourceError, match="3 frames"):
            sinks.check_frames_fit([sink], src, StreamOptions(loop=2))
        with pytest.raises(SourceError, match="endless"):
            sinks.check_frames_fit([sink], src, StreamOptions(loop=-1))
        sinks.check_frames_fit([open_sink(str(tmp_path / "s_%03d.png"))], src, StreamOptions(loop=2))  # a pattern


# ---- 5. deblur never reads its own output folder --------------------------------------------------
@pytest.fixture
def fold(tmp_path):
    d = tmp_path / "fold"
    d.mkdir()
    rng = np.random.default_rng(0)
    for n in ("a.png", "b.png"):
        cv2.imwrite(str(d / n), rng.integers(0, 256, (16, 24, 3), dtype=np.uint8))
    return d


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_deblur_twice_into_a_folder_inside_the_input(fold, tiny_onnx, capsys):
    m = ["--model", str(tiny_onnx)]
    for _ in range(2):
        rc, out, err = run_cli(["deblur", str(fold), "-o", str(fold / "out")] + m, capsys)
        assert rc == 0, err
        assert "2 images" in out
    assert _files(fold / "out") == ["a.png", "b.png"]
    # a recursive glob reaching into the output folder leaves its files out too
    rc, out, err = run_cli(["deblur", str(fold / "**" / "*.png"), "-o", str(fold / "out")] + m, capsys)
    assert rc == 0, err
    assert "2 images" in out and _files(fold / "out") == ["a.png", "b.png"]


# ---- 6. --tile vs --overlap, once, up front -------------------------------------------------------
def test_bad_tile_is_one_error_before_the_model_loads(tmp_path, tiny_onnx, capsys):
    for n in ("big1.png", "big2.png"):
        cv2.imwrite(str(tmp_path / n), np.zeros((160, 200, 3), np.uint8))
    ins = [str(tmp_path / "big1.png"), str(tmp_path / "big2.png")]
    rc, _, err = run_cli(["deblur", *ins, "-o", str(tmp_path / "o"), "--tile", "100",
                          "--model", str(tmp_path / "nope.onnx")], capsys)
    assert rc == 2 and "--tile 100" in err and "--overlap 128" in err and "--tile 256" in err, err
    assert "nope.onnx" not in err
    rc, _, err = run_cli(["deblur", *ins, "-o", str(tmp_path / "o"), "--tile", "100", "--model", str(tiny_onnx)],
                         capsys)
    assert rc == 2 and err.count("--tile 100") == 1, err  # one error, not one per file
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
    rc, _, err = run_cli(["deblur", *ins, "-o", str(tmp_path / "o"), "--tile", "64", "--overlap", "0",
                          "--model", str(tiny_onnx)], capsys)
    assert rc == 2 and "--overlap > 0" in err, err
    rc, _, err = run_cli(["deblur", *ins, "-o", str(tmp_path / "o"), "--tile", "100", "--overlap", "32",
                          "--model", str(tiny_onnx)], capsys)
    assert rc == 0, err


# ---- 7. unknown output extensions -----------------------------------------------------------------
def test_deblur_refuses_an_unknown_output_extension(tmp_path, tiny_onnx, capsys):
    img = tmp_path / "small.png"
    cv2.imwrite(str(img), np.zeros((16, 16, 3), np.uint8))
    m = ["--model", str(tiny_onnx)]
    rc, _, err = run_cli(["deblur", str(img), "-o", str(tmp_path / "out" / "bad.xyz")] + m, capsys)
    assert rc == 2 and "'.xyz'" in err and "folder" in err, err
    assert not (tmp_path / "out" / "bad.xyz").exists()
    rc, _, err = run_cli(["deblur", str(img), str(img), "-o", str(tmp_path / "out" / "clip.webm")] + m, capsys)
    assert rc == 2 and "'.webm'" in err, err
    assert not (tmp_path / "out" / "clip.webm").exists()
    # a trailing slash (or an existing folder) names a folder whatever the dots in its name
    rc, _, err = run_cli(["deblur", str(img), "-o", str(tmp_path / "out" / "run.v2") + "/"] + m, capsys)
    assert rc == 0, err
    assert (tmp_path / "out" / "run.v2" / "small.png").is_file()
    rc, _, err = run_cli(["deblur", str(img), "-o", str(tmp_path / "out" / "run.v2")] + m, capsys)
    assert rc == 0, err


# ---- 8. fsync before rename; demo_stats.json atomic -----------------------------------------------
def test_atomic_imwrite_fsyncs_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(sinks.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(sinks.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    sinks.atomic_imwrite(tmp_path / "x.png", numbered_frame(2))
    assert calls == ["fsync", "replace"]
    assert cv2.imread(str(tmp_path / "x.png")) is not None and os.listdir(tmp_path) == ["x.png"]


def test_demo_stats_are_written_atomically(tmp_path, tiny_onnx, monkeypatch, capsys):
    written = []
    real = sinks.atomic_write_bytes

    def spy(path, data):
        written.append(Path(path).name)
        return real(path, data)

    monkeypatch.setattr(sinks, "atomic_write_bytes", spy)
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo_stats.json").write_text('{"previous": true}')
    rc = main(["demo", "--out", str(out), "--frames", "2", "--size", "64x48", "--model", str(tiny_onnx), "--json"])
    assert rc == 0, capsys.readouterr().err
    assert "demo_stats.json" in written
    assert json.loads((out / "demo_stats.json").read_text())["pipeline"]["frames_out"] == 2
    assert not [p for p in os.listdir(out) if p.startswith(".")]


# ---- 9. audio is not carried: say so --------------------------------------------------------------
def _video_with_audio(path, n=4, w=64, h=48):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=10)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        for i in range(n):
            f = av.VideoFrame.from_ndarray(numbered_frame(i, w, h), format="bgr24")
            f.pts = i
            for p in vs.encode(f):
                c.mux(p)
        for k in range(4):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, k * 1024
            for p in a.encode(af):
                c.mux(p)
        for s in (vs, a):
            for p in s.encode(None):
                c.mux(p)
    return path


def test_deblur_warns_that_audio_is_not_carried(tmp_path, tiny_onnx, caplog, capsys):
    src = _video_with_audio(tmp_path / "talk.mp4")
    quiet = make_video(tmp_path / "quiet.avi", n=3)
    with caplog.at_level(logging.WARNING):
        rc = main(["deblur", str(src), str(quiet), "-o", str(tmp_path / "o"), "--model", str(tiny_onnx)])
    assert rc == 0, capsys.readouterr().err
    audio = [r.getMessage() for r in caplog.records if "audio" in r.getMessage()]
    assert len(audio) == 1 and "talk.mp4" in audio[0] and "not carried" in audio[0], audio
    assert count_video_frames(tmp_path / "o" / "talk.mp4", decode=True) == 4


def test_pipeline_refuses_a_single_image_for_many_frames_before_writing(tmp_path):
    """The Python API checks as the CLI does: Pipeline(...) refuses, nothing is written."""
    from edge_deblur.runtime.pipeline import Pipeline

    src = make_video(tmp_path / "tiny.avi", n=3)
    single = tmp_path / "out" / "single.png"
    single.parent.mkdir()
    with pytest.raises(SourceError, match="3 frames"):
        Pipeline(lambda f: f, str(src), str(single))
    assert not list(single.parent.iterdir())
    stats = Pipeline(lambda f: f, str(src), str(single), StreamOptions(max_frames=1)).run()
    assert cv2.imread(str(single)).shape == (48, 64, 3) and stats["frames_out"] == 1
