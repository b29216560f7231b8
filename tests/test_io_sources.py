"""Sources: video files, truncated and corrupt videos, cameras that are not there, image
folders and globs, options (resize, RGB, loop, live pacing), in-memory frames."""
import logging
import time

import cv2
import numpy as np
import pytest

from edge_deblur.errors import SourceError
from edge_deblur.io import StreamOptions, open_source
from edge_deblur.io.sources import opencv_has_gstreamer

from video_helpers import frame_index, make_video, numbered_frame


def test_video_file_reads_every_frame_in_order(tmp_path):
    p = make_video(tmp_path / "clip.avi", n=12)
    with open_source(str(p)) as src:
        assert not src.live and src.kind == "video"
        assert src.frame_count == 12 and src.fps == pytest.approx(10.0) and src.size == (64, 48)
        got = [(meta.index, frame_index(f)) for f, meta in src]
    assert got == [(i, i) for i in range(12)]


def test_mp4_source(tmp_path):
    p = make_video(tmp_path / "clip.mp4", n=5, fourcc="mp4v")
    with open_source(str(p)) as src:
        assert sum(1 for _ in src) == 5


def test_truncated_video_stops_at_last_good_frame_with_a_warning(tmp_path, caplog):
    p = make_video(tmp_path / "clip.avi", n=20)
    data = p.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.75)])  # AVI: the header is a large share of a tiny file
    with caplog.at_level(logging.WARNING), open_source(str(cut)) as src:
        frames = [f for f, _ in src]
    assert 0 < len(frames) < 20
    # frames come in order; FFmpeg may hand back the cut frame itself partly decoded
    assert [frame_index(f) for f in frames[:-1]] == list(range(len(frames) - 1))
    assert any("truncated" in r.getMessage() for r in caplog.records)



@pytest.mark.parametrize("name, times", [
    ("vfr.mkv", [0.0, 0.1, 0.2, 0.5, 0.6, 1.2, 1.3, 1.4, 2.0, 2.1, 2.2, 2.3]),  # OpenCV estimates 24 frames
    ("offset.mkv", [5 + i / 10 for i in range(12)]),                            # ... and 62 here
    ("offset_vfr.mkv", [3 + t for t in (0.0, 0.04, 0.08, 0.2, 0.24, 0.5, 0.54, 0.58, 0.9, 0.94)]),
])
def test_a_complete_variable_rate_or_offset_matroska_is_not_called_truncated(tmp_path, caplog, name, times):
    """Matroska announces no frame count: OpenCV's (duration x average rate) was above the frames of
    every variable frame rate or offset file, and each was reported 'truncated or damaged'."""
    pytest.importorskip("av")
    from video_helpers import make_timed_video

    p = make_timed_video(tmp_path / name, times)
    with caplog.at_level(logging.WARNING), open_source(str(p), loop=1) as src:
        n = sum(1 for _ in src)
    assert n == 2 * len(times)
    assert not [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]


def test_a_truncated_matroska_is_still_reported(tmp_path, caplog):
    pytest.importorskip("av")
    from video_helpers import make_timed_video

    p = make_timed_video(tmp_path / "clip.mkv", [5 + i / 10 for i in range(60)])
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(p.read_bytes()[: int(p.stat().st_size * 0.6)])
    with caplog.at_level(logging.WARNING), open_source(str(cut)) as src:
        n = sum(1 for _ in src)
    assert 0 < n < 60
    assert any("truncated" in r.getMessage() for r in caplog.records)


def test_mp4_cut_before_its_index_is_a_clear_error(tmp_path):
    p = make_video(tmp_path / "clip.mp4", n=20, fourcc="mp4v")
    data = p.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    with pytest.raises(SourceError, match="cannot decode video .*cut.mp4"):
        open_source(str(cut))


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, bytes(range(256)) * 40])
def test_corrupt_video_is_a_clear_error(tmp_path, content):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    t = time.monotonic()
    with pytest.raises(SourceError, match="bad.mp4"):
        open_source(str(p))
    assert time.monotonic() - t < 5


@pytest.mark.parametrize("uri", [99, "99", "camera://99", "/dev/video99"])
def test_missing_camera_fails_fast(uri):
    t = time.monotonic()
    with pytest.raises(SourceError, match="99"):
        open_source(uri, StreamOptions(open_timeout=5.0))
    assert time.monotonic() - t < 5


def test_open_timeout_turns_a_hang_into_an_error():
    from edge_deblur.io.sources import call_with_timeout

    t = time.monotonic()
    with pytest.raises(SourceError, match="within 0.2 s"):
        call_with_timeout(lambda: time.sleep(5), 0.2, "a stuck camera")
    assert time.monotonic() - t < 2


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer")
@pytest.mark.parametrize("uri", ["videotestsrc ! appsink", "csi://0"])
def test_gstreamer_without_support_says_so(uri):
    with pytest.raises(SourceError, match="GStreamer"):
        open_source(uri)


def test_csi_pipeline_text():
    from edge_deblur.io import csi_pipeline

    p = csi_pipeline(1, 1920, 1080, 30)
    assert "nvarguscamerasrc sensor-id=1" in p and "width=(int)1920" in p and p.endswith("sync=false")


def write_images(folder, names, size=(48, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        cv2.imwrite(str(folder / n), numbered_frame(i + 1, size[1], size[0]))


def test_folder_source_natural_order_and_names(tmp_path):
    names = ["f10.png", "f2.png", "f1.png", "notes.txt", ".hidden.png"]
    write_images(tmp_path / "in", [n for n in names if n.endswith(".png")])
    (tmp_path / "in" / "notes.txt").write_text("x")
    with open_source(str(tmp_path / "in")) as src:
        assert not src.live and src.frame_count == 3
        got = [meta.name for _, meta in src]
    assert got == ["f1.png", "f2.png", "f10.png"]


def test_glob_source(tmp_path):
    write_images(tmp_path, ["a_1.png", "a_2.png", "b_1.png"])
    with open_source(str(tmp_path / "a_*.png")) as src:
        assert [m.name for _, m in src] == ["a_1.png", "a_2.png"]


def test_unreadable_image_in_a_folder_is_skipped(tmp_path, caplog):
    write_images(tmp_path, ["1.png", "3.png"])
    (tmp_path / "2.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING), open_source(str(tmp_path)) as src:
        assert [m.name for _, m in src] == ["1.png", "3.png"]
        assert src.skipped == [str(tmp_path / "2.png")]
    assert any("2.png" in r.getMessage() for r in caplog.records)


def test_empty_or_unreadable_image_sources_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(SourceError, match="cannot read image"):
        open_source(str(tmp_path / "bad.png"))
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path / "*.tif"))


def test_image_file_keeps_16_bit_depth(tmp_path):
    img = (np.arange(48 * 64 * 3, dtype=np.uint32) * 37 % 65536).astype(np.uint16).reshape(48, 64, 3)
    cv2.imwrite(str(tmp_path / "deep.png"), img)
    with open_source(str(tmp_path / "deep.png")) as src:
        (frame, meta), = list(src)
    assert frame.dtype == np.uint16 and meta.name == "deep.png"
    np.testing.assert_array_equal(frame, img)


def test_options_resize_rgb_and_loop(tmp_path):
    img = np.zeros((48, 64, 3), np.uint8)
    img[..., 0] = 200  # blue in BGR
    cv2.imwrite(str(tmp_path / "x.png"), img)
    opts = StreamOptions(width=32, height=16, rgb=True, loop=2)
    with open_source(str(tmp_path / "x.png"), opts) as src:
        frames = [f for f, _ in src]
    assert len(frames) == 3
    assert frames[0].shape == (16, 32, 3)
    assert frames[0][..., 2].mean() == 200 and frames[0][..., 0].mean() == 0  # RGB order


def test_video_loop(tmp_path):
    p = make_video(tmp_path / "clip.avi", n=4)
    with open_source(str(p), StreamOptions(loop=1)) as src:
        assert [frame_index(f) for f, _ in src] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_file_forced_live_is_paced(tmp_path):
    p = make_video(tmp_path / "clip.avi", n=6)
    with open_source(str(p), StreamOptions(live=True, fps=50.0)) as src:
        assert src.live
        t = time.monotonic()
        assert sum(1 for _ in src) == 6
        assert time.monotonic() - t >= 5 / 50.0 * 0.9


def test_iterable_source():
    frames = [numbered_frame(i) for i in range(3)]
    with open_source(frames) as src:
        assert src.kind == "python" and src.frame_count == 3 and not src.live
        assert [(m.index, frame_index(f)) for f, m in src] == [(0, 0), (1, 1), (2, 2)]
    named = ((numbered_frame(i), f"n{i}.png") for i in range(2))
    with open_source(named) as src:
        assert [m.name for _, m in src] == ["n0.png", "n1.png"]
    with pytest.raises(SourceError, match="empty"):
        open_source([])


def test_no_source():
    with pytest.raises(SourceError, match="no source"):
        open_source(None)


@pytest.mark.parametrize("bad", [dict(queue_size=0), dict(drop="latest"), dict(width=10), dict(codec="h264x"),
                                 dict(loop=-2), dict(fps=0), dict(open_timeout=0)])
def test_option_validation(bad):
    from edge_deblur.errors import InputError

    with pytest.raises(InputError):
        StreamOptions(**bad).validate()


def test_a_jpeg_is_read_upright_by_its_exif_orientation(tmp_path):
    """A phone or drone JPEG with EXIF Orientation 6 (rotate 90 clockwise to view): it was read as
    stored, so its output displayed rotated against its input."""
    import struct

    from edge_deblur.io.sources import imread

    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :20] = 255  # white on the left as stored: at the top once turned 90 clockwise
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) \
        + struct.pack("<I", 0)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\x00\x00" + tiff
    data = jpg.tobytes()
    (tmp_path / "r.jpg").write_bytes(data[:2] + app1 + data[2:])
    up = imread(str(tmp_path / "r.jpg"))
    assert up.shape == (60, 40, 3)
    assert up[:15].mean() > 200 and up[-30:].mean() < 50
    cv2.imwrite(str(tmp_path / "g.jpg"), img[..., 0])
    assert imread(str(tmp_path / "g.jpg")).ndim == 2  # a gray JPEG stays gray


def test_a_python_source_that_fails_to_open_closes_its_generator():
    """The pump thread of a generator whose first item is bad (or that is empty) stayed alive,
    retrying forever, and the generator's finally never ran."""
    import threading
    import time

    from edge_deblur.io import open_source

    released = []

    def bad():
        try:
            yield "not a frame"
        finally:
            released.append(1)

    with pytest.raises(SourceError, match="numpy arrays"):
        open_source(bad())
    t0 = time.time()
    while not released and time.time() - t0 < 5:
        time.sleep(0.05)
    assert released == [1]
    assert not [t for t in threading.enumerate() if t.name == "edge-deblur-python-source" and t.is_alive()]
