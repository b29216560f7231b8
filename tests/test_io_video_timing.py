"""Video outputs keep the input's timing: a variable frame rate video stays variable (frame times
and duration), and a fragmented MP4 (no edit list: its first frame is shown after x264's B-frame
delay) comes out starting at 0 with every frame."""
import pytest

from edge_deblur.cli import main
from edge_deblur.io import FrameMeta, StreamOptions, open_sink, open_source

from test_cli_stream import tiny_onnx  # noqa: F401  (fixture)
from test_reliability_outputs import FullDisk
from video_helpers import frame_times, make_timed_video, numbered_frame

pytest.importorskip("av")

VFR_TIMES = [0.0, 0.1, 0.2, 0.5, 0.6, 1.2, 1.3, 1.4, 2.0, 2.1, 2.2, 2.3]  # gaps of 0.1 to 0.6 s


def test_source_frames_carry_the_files_presentation_times(tmp_path):
    src = make_timed_video(tmp_path / "vfr.mp4", VFR_TIMES)
    with open_source(str(src)) as s:
        times = [meta.pts for _, meta in s]
    assert times == pytest.approx(VFR_TIMES, abs=1e-3)
    with open_source(str(src), loop=1) as s:  # the second pass runs on, a frame after the first's last
        times = [meta.pts for _, meta in s]
    assert times == pytest.approx(VFR_TIMES + [2.4 + t for t in VFR_TIMES], abs=1e-3)


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_deblur_keeps_a_variable_frame_rate(tmp_path, tiny_onnx, ext, capsys):
    src = make_timed_video(tmp_path / "vfr.mp4", VFR_TIMES)
    want, want_duration = frame_times(src)
    out = tmp_path / f"out{ext}"
    assert main(["deblur", str(src), "-o", str(out), "--model", str(tiny_onnx)]) == 0, capsys.readouterr().err
    got, duration = frame_times(out)
    assert [i for i, _ in got] == list(range(len(VFR_TIMES)))
    assert [t for _, t in got] == pytest.approx([t for _, t in want], abs=1e-3)
    assert duration == pytest.approx(want_duration, abs=1e-3)


def test_a_fragmented_mp4_starts_at_its_first_frame(tmp_path, tiny_onnx, capsys):
    times = [i / 10 for i in range(12)]
    src = make_timed_video(tmp_path / "frag.mp4", times, options={"movflags": "frag_keyframe+empty_moov"})
    first_shown = frame_times(src)[0][0][1]
    assert first_shown == pytest.approx(0.2)  # the input itself: x264's 2-frame B-frame delay, no edit list
    out = tmp_path / "out.mp4"
    assert main(["deblur", str(src), "-o", str(out), "--model", str(tiny_onnx)]) == 0, capsys.readouterr().err
    got, duration = frame_times(out)
    assert [i for i, _ in got] == list(range(12))
    assert [t for _, t in got] == pytest.approx(times, abs=1e-3)
    assert duration == pytest.approx(1.2, abs=1e-3)


def test_frames_without_times_and_avi_keep_the_constant_rate(tmp_path):
    for name in ("cfr.mp4", "cfr.avi"):
        out = tmp_path / name
        with open_sink(str(out), StreamOptions(), fps=10.0) as sink:
            for i, t in enumerate([0.0, 0.5, 0.6]):
                sink.write(numbered_frame(i), FrameMeta(i, pts=None if name.endswith(".mp4") else t))
        got, _ = frame_times(out)
        assert [t for _, t in got] == pytest.approx([0.0, 0.1, 0.2], abs=1e-3), name


def keyframe_times(path):
    import av

    with av.open(str(path)) as c:
        return [float(p.pts * p.time_base) for p in c.demux(video=0) if p.size and p.is_keyframe]


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_a_variable_frame_rate_keeps_a_keyframe_every_fragment_s(tmp_path, ext):
    """The keyframe interval was fps * fragment_s frames at the source's average rate: a stretch of
    one frame a second in a '30 fps' video had a keyframe (a fragment, what survives a crash) every
    60 s and counted one fragment in 130 s."""
    out = tmp_path / f"out{ext}"
    times = [i / 30 for i in range(30)] + [1.0 + i for i in range(1, 41)]  # 30 fps for 1 s, then 1 fps
    with open_sink(str(out), StreamOptions(fragment_s=2.0), fps=30.0) as sink:
        for i, t in enumerate(times):
            sink.write(numbered_frame(i % 2), FrameMeta(i, pts=t))
        w = sink._writer
    keys = keyframe_times(out)
    assert keys[0] == 0.0 and keys[-1] >= times[-1] - 2.0
    assert max(b - a for a, b in zip(keys, keys[1:])) <= 2.0 + 1e-3, keys
    assert w.fragments >= 18  # counted on video time: about one per 2 s of the 41 s
    got, _ = frame_times(out)
    assert [t for _, t in got] == pytest.approx(times, abs=1e-3)


def test_a_write_error_in_a_variable_frame_rate_video_says_what_is_kept(tmp_path, monkeypatch):
    """'about N s are kept' counted fragments of fps * fragment_s frames: at one frame a second in
    a '30 fps' video it said nothing playable was written while 20 s of frames were."""
    import av
    import numpy as np

    from edge_deblur.errors import SinkWriteError
    from edge_deblur.io import video_writer

    monkeypatch.setattr(video_writer, "_open_file", lambda p: FullDisk(p, 150_000))
    sink = open_sink(str(tmp_path / "out.mp4"), StreamOptions(fragment_s=2.0), fps=30.0)
    rng = np.random.default_rng(0)
    with pytest.raises(SinkWriteError) as e:
        for i in range(400):  # one frame a second
            sink.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), FrameMeta(i, pts=float(i)))
    msg = str(e.value)
    import re

    m = re.search(r"about (\S+) s\) are kept", msg)
    assert m, msg
    claimed = float(m.group(1))
    decoded = []
    try:
        with av.open(str(sink.tmp_path)) as c:
            for f in c.decode(video=0):
                decoded.append(float(f.pts * f.time_base))
    except av.error.FFmpegError:
        pass
    assert claimed >= 4 and decoded and max(decoded) >= claimed - 1.0, (msg, decoded[-3:])


def test_a_forward_jump_in_the_frame_times_is_a_discontinuity(tmp_path, caplog):
    """An MPEG-TS discontinuity or a stalled camera made one frame last the whole gap (here 100 s);
    the video goes on one median frame step later, with one warning."""
    import logging

    out = tmp_path / "out.mp4"
    times = [i / 10 for i in range(20)] + [101.9 + i / 10 for i in range(10)] + [500 + i / 10 for i in range(10)]
    with caplog.at_level(logging.DEBUG, logger="edge_deblur.io.video_writer"):
        with open_sink(str(out), StreamOptions(), fps=10.0) as sink:
            for i, t in enumerate(times):
                sink.write(numbered_frame(i % 32), FrameMeta(i, pts=t))
    got, duration = frame_times(out)
    assert [t for _, t in got] == pytest.approx([i / 10 for i in range(40)], abs=1e-3)
    assert duration == pytest.approx(4.0, abs=1e-3)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "jump" in r.getMessage()]
    assert len(warned) == 1 and "100.000 s" in warned[0].getMessage(), [r.getMessage() for r in caplog.records]


def test_a_variable_frame_rate_with_long_steps_is_kept(tmp_path):
    """Steps that vary 2-3x, above a second (a slow time lapse), are the source's timing, not jumps."""
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 9.0, 11.5, 12.5, 15.5, 16.5]
    out = tmp_path / "out.mkv"
    with open_sink(str(out), StreamOptions(), fps=1.0) as sink:
        for i, t in enumerate(times):
            sink.write(numbered_frame(i), FrameMeta(i, pts=t))
    got, _ = frame_times(out)
    assert [t for _, t in got] == pytest.approx(times, abs=1e-3)
