"""Video outputs keep the input's timing: a variable frame rate video stays variable (frame times
and duration), and a fragmented MP4 (no edit list: its first frame is shown after x264's B-frame
delay) comes out starting at 0 with every frame."""
import pytest

from edge_deblur.cli import main
from edge_deblur.io import FrameMeta, StreamOptions, open_sink, open_source

from test_cli_stream import tiny_onnx  # noqa: F401  (fixture)
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
