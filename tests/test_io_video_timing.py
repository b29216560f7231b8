"""Video outputs keep the input's timing: a fragmented MP4 (no edit list: its first frame is
shown after x264's B-frame delay) comes out starting at 0 with every frame."""
import pytest

from edge_deblur.cli import main

from test_cli_stream import tiny_onnx  # noqa: F401  (fixture)
from video_helpers import frame_times, make_timed_video

pytest.importorskip("av")


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

