"""Sinks: video files (finalized, atomic), image folders mirroring names, image files and
sequences, callbacks, null, display without a display, unwritable outputs."""
import os

import cv2
import numpy as np
import pytest

from edge_deblur.errors import SourceError
from edge_deblur.io import FrameMeta, StreamOptions, open_sink, open_source


def numbered_frame(i, w=64, h=48):
    return np.full((h, w, 3), (8 * i) % 256, np.uint8)


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.parametrize("name, fourcc", [("out.mp4", "h264"), ("out.avi", "mjpeg"), ("out.mkv", "h264")])
def test_video_sink_writes_to_a_temp_name_and_renames_at_close(tmp_path, name, fourcc):
    dst = tmp_path / "sub" / name  # parent folders are created
    sink = open_sink(str(dst), StreamOptions(), fps=12.0)
    assert sink.codec == fourcc and sink.fps == 12.0
    for i in range(7):
        sink.write(numbered_frame(i), FrameMeta(i))
    assert not dst.exists() and sink.tmp_path.exists()
    sink.close()
    assert dst.exists() and not sink.tmp_path.exists()
    assert count_frames(dst) == 7
    with open_source(str(dst)) as src:
        assert src.fps == pytest.approx(12.0)


def test_video_sink_keeps_an_old_file_until_the_new_one_is_final(tmp_path):
    dst = tmp_path / "out.avi"
    dst.write_bytes(b"previous good file")
    sink = open_sink(str(dst))
    sink.write(numbered_frame(1), FrameMeta(0))
    assert dst.read_bytes() == b"previous good file"
    sink.close()
    assert count_frames(dst) == 1


def test_video_sink_converts_and_resizes_frames(tmp_path):
    dst = tmp_path / "out.avi"
    with open_sink(str(dst)) as sink:
        sink.write(np.zeros((48, 64, 3), np.uint8), FrameMeta(0))
        sink.write(np.zeros((48, 64), np.uint8), FrameMeta(1))              # gray
        sink.write(np.zeros((48, 64, 4), np.uint8), FrameMeta(2))           # BGRA
        sink.write(np.zeros((48, 64, 3), np.uint16), FrameMeta(3))          # 16-bit
        sink.write(np.zeros((24, 32, 3), np.uint8), FrameMeta(4))           # other size
    assert count_frames(dst) == 5


def test_video_sink_without_frames_leaves_no_file(tmp_path):
    dst = tmp_path / "out.mp4"
    open_sink(str(dst)).close()
    assert not dst.exists() and not list(tmp_path.iterdir())


def test_folder_sink_mirrors_input_names_atomically(tmp_path):
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    names = ["frame_001.png", "frame_002.jpg", "frame_010.png"]
    for i, n in enumerate(names):
        cv2.imwrite(str(src_dir / n), numbered_frame(i + 1))
    out = tmp_path / "out"
    with open_source(str(src_dir)) as src, open_sink(str(out) + "/") as sink:
        for f, m in src:
            sink.write(f, m)
    assert sorted(os.listdir(out)) == sorted(names)  # no temp files left behind


def test_folder_sink_names_frames_without_names(tmp_path):
    with open_sink(str(tmp_path / "seq")) as sink:
        for i in range(3):
            sink.write(numbered_frame(i), FrameMeta(i))
    assert sorted(os.listdir(tmp_path / "seq")) == ["000000.png", "000001.png", "000002.png"]


def test_folder_sink_keeps_16_bit_png_and_rgb_order(tmp_path):
    img = np.zeros((8, 8, 3), np.uint16)
    img[..., 0] = 60000  # R in RGB order
    with open_sink(str(tmp_path / "o"), StreamOptions(rgb=True)) as sink:
        sink.write(img, FrameMeta(0, name="deep.png"))
    back = cv2.imread(str(tmp_path / "o" / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back[..., 2].max() == 60000 and back[..., 0].max() == 0


def test_image_file_and_pattern_sinks(tmp_path):
    single = open_sink(str(tmp_path / "one.png"))
    single.write(numbered_frame(3), FrameMeta(0))
    with pytest.raises(SourceError, match="single image"):
        single.write(numbered_frame(4), FrameMeta(1))
    assert (tmp_path / "one.png").exists()
    with open_sink(str(tmp_path / "seq" / "f_%03d.jpg")) as seq:
        for i in range(3):
            seq.write(numbered_frame(i), FrameMeta(i))
    assert sorted(os.listdir(tmp_path / "seq")) == ["f_000.jpg", "f_001.jpg", "f_002.jpg"]


def test_callback_and_null_sinks():
    seen = []
    sink = open_sink(lambda f, m: seen.append((m.index, f.shape)))
    assert sink.kind == "callback"
    sink.write(numbered_frame(1), FrameMeta(5))
    assert seen == [(5, (48, 64, 3))]
    stopper = open_sink(lambda f, m: False)
    stopper.write(numbered_frame(1), FrameMeta(0))
    assert stopper.wants_stop
    null = open_sink("null://")
    null.write(numbered_frame(1), FrameMeta(0))
    assert null.frames_written == 1
    assert open_sink(None).kind == "null"


def test_display_without_a_display_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("display detection by environment is Linux-only")
    with pytest.raises(SourceError, match="display"):
        open_sink("display://")


@pytest.mark.parametrize("name", ["x/out.mp4", "x/frames/", "x/one.png"])
def test_unwritable_outputs_fail_at_open(tmp_path, name):
    blocker = tmp_path / "x"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(SourceError, match="x"):
        open_sink(str(tmp_path / name))


def test_folder_sink_never_writes_over_a_frame_of_the_same_run(tmp_path):
    """Two frames with one name (a looped folder's next pass, or cam0/f.png and cam1/f.png from a
    glob): the second went over the first, while the stats counted both."""
    sink = open_sink(str(tmp_path / "out") + "/", StreamOptions())
    for i in range(3):
        sink.write(numbered_frame(i), FrameMeta(index=i, name="f.png"))
    sink.close()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f.png", "f_1.png", "f_2.png"]
    assert sink.frames_written == 3


def test_an_output_that_is_the_source_itself_is_refused(tmp_path):
    from edge_deblur.io.sinks import check_frames_fit

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), numbered_frame(i))
    src = open_source(str(folder), StreamOptions())
    with pytest.raises(SourceError, match="holds the source's images"):
        check_frames_fit([open_sink(str(folder) + "/", StreamOptions())], src)
    one = open_source(str(folder / "0.png"), StreamOptions())
    with pytest.raises(SourceError, match="is the source file"):
        check_frames_fit([open_sink(str(folder / "0.png"), StreamOptions())], one)
    check_frames_fit([open_sink(str(tmp_path / "elsewhere") + "/", StreamOptions())], src)  # fine
    src.close(), one.close()


def test_h264_in_avi_keeps_its_timestamps_in_order(tmp_path):
    """AVI cannot hold B-frame reordering: x264's B-frames there decoded at 0.033, 0.133, 0.1, ..."""
    av = pytest.importorskip("av")
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (24, 41, 3), dtype=np.uint8), (320, 180), interpolation=cv2.INTER_CUBIC)
    sink = open_sink(str(tmp_path / "o.avi"), StreamOptions(codec="h264"), fps=30.0)
    for i in range(24):  # a slow pan with a counter: content where x264 picks B-frames
        f = np.roll(base, 2 * i, axis=1).copy()
        cv2.putText(f, str(i), (10, 90), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        sink.write(f, FrameMeta(index=i))
    sink.close()
    with av.open(str(tmp_path / "o.avi")) as c:
        times = [float(f.time) for f in c.decode(c.streams.video[0])]
    assert len(times) == 24 and times == sorted(times)


def test_video_rate_is_honoured_across_its_range_and_refused_outside(tmp_path):
    """A rate of 0.0001 fps was rounded to 0 and FFmpeg wrote 24 fps in its place."""
    av = pytest.importorskip("av")
    from edge_deblur.errors import InputError

    for fps in (0.001, 1000.0):
        dst = tmp_path / f"r{fps:g}.mp4"
        with open_sink(str(dst), StreamOptions(fps=fps)) as sink:
            for i in range(3):
                sink.write(numbered_frame(i), FrameMeta(i))
        with av.open(str(dst)) as c:
            times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
        assert times == pytest.approx([0, 1 / fps, 2 / fps]), fps
    with pytest.raises(InputError, match=r"from 0.001 to 1000 frames per second .* got 0.0001"):
        open_sink(str(tmp_path / "slow.mp4"), StreamOptions(), fps=0.0001)
    with pytest.raises(InputError, match="got 0.0001"):
        StreamOptions(fps=0.0001).validate()


def test_a_rate_may_be_any_real_number(tmp_path):
    """StreamOptions(fps=np.float32(30)) (a rate read from a NumPy array or a config) was refused:
    check_fps took only int and float. Any real number is a rate; bools, NaN and out-of-range are not."""
    from fractions import Fraction

    from edge_deblur.errors import InputError
    from edge_deblur.io.options import check_fps

    for fps in (np.float32(30), np.float64(29.97), np.int64(25), np.uint8(10), Fraction(30000, 1001)):
        assert check_fps(fps) == pytest.approx(float(fps)) and type(check_fps(fps)) is float
        StreamOptions(fps=fps).validate()
    for bad in (True, np.bool_(True), np.float32("nan"), np.float32(1e6), np.float64(0.0), "30", None):
        with pytest.raises(InputError, match="frames per second"):
            check_fps(bad)
    dst = tmp_path / "o.mp4"
    with open_sink(str(dst), StreamOptions(fps=np.float32(20))) as sink:
        for i in range(3):
            sink.write(numbered_frame(i), FrameMeta(i))
    av = pytest.importorskip("av")
    with av.open(str(dst)) as c:
        assert [float(f.pts * f.time_base) for f in c.decode(video=0)] == pytest.approx([0, 0.05, 0.1])
