"""Source and sink URIs are classified without opening anything."""
import cv2
import numpy as np
import pytest

from edge_deblur.errors import SourceError
from edge_deblur.io.uri import SINK_SCHEMES, SOURCE_SCHEMES, natural_key, parse_sink, parse_source


@pytest.fixture()
def media(tmp_path):
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "still.jpg"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "clip.mp4").write_bytes(b"not really a video, but classified by its name")
    (tmp_path / "clip.bin").write_bytes(b"?")
    return tmp_path


@pytest.mark.parametrize("uri, kind, index", [
    (0, "camera", 0),
    (3, "camera", 3),
    ("0", "camera", 0),
    ("12", "camera", 12),
    ("camera://2", "camera", 2),
    ("CAMERA://1", "camera", 1),
    ("camera://", "camera", 0),
    ("/dev/video4", "v4l2", 4),
    ("v4l2:///dev/video1", "v4l2", 1),
    ("csi://0", "csi", 0),
    ("csi://1", "csi", 1),
])
def test_camera_like_sources(uri, kind, index):
    t = parse_source(uri)
    assert (t.kind, t.index) == (kind, index)


def test_gstreamer_sources():
    pipe = "videotestsrc ! videoconvert ! appsink"
    assert parse_source(pipe).kind == "gstreamer"
    assert parse_source(pipe).location == pipe
    assert parse_source("gst://" + pipe).location == pipe


@pytest.mark.parametrize("uri, live", [
    ("rtsp://192.168.1.10:8554/cam", True),
    ("rtsps://host/stream", True),
    ("rtmp://host/live", True),
    ("udp://@:5000", True),
    ("http://host:8080/video.mjpg", True),
    ("https://example.org/clip.mp4", False),  # a file over HTTP is not live
])
def test_network_sources(uri, live):
    t = parse_source(uri)
    assert t.kind == "network" and t.location == uri and t.extra["live"] is live


def test_file_sources(media):
    assert parse_source(str(media / "clip.mp4")).kind == "video"
    assert parse_source("file://" + str(media / "clip.mp4")).kind == "video"
    assert parse_source(media / "clip.mp4").kind == "video"  # PathLike
    assert parse_source(str(media / "clip.bin")).kind == "video"  # unknown suffix: let FFmpeg try
    assert parse_source(str(media / "still.jpg")).kind == "image"
    t = parse_source(str(media / "frames"))
    assert t.kind == "images" and not t.extra["glob"]
    t = parse_source(str(media / "frames" / "*.png"))
    assert t.kind == "images" and t.extra["glob"]


def test_missing_file_names_it(tmp_path):
    with pytest.raises(SourceError, match="nope.mp4.*does not exist"):
        parse_source(str(tmp_path / "nope.mp4"))


@pytest.mark.parametrize("uri", ["foo://bar", "s3://bucket/clip.mp4", "ftp://host/x.avi"])
def test_unknown_source_scheme_lists_valid_ones(uri):
    with pytest.raises(SourceError) as e:
        parse_source(uri)
    msg = str(e.value)
    assert uri.split("://")[0] + "://" in msg
    for s in SOURCE_SCHEMES:
        assert s + "://" in msg


@pytest.mark.parametrize("bad", ["", "   ", None, True, -1, "camera://x", "csi://left"])
def test_bad_sources(bad):
    with pytest.raises(SourceError):
        parse_source(bad)


@pytest.mark.parametrize("uri, kind", [
    ("display://", "display"),
    ("display://1", "display"),
    ("null://", "null"),
    ("out.mp4", "video"),
    ("out.avi", "video"),
    ("out.mkv", "video"),
    ("file://out.mov", "video"),
    ("out.png", "image"),
    ("frames/%06d.jpg", "image"),
    ("outdir/", "images"),
    ("outdir", "images"),
    ("appsrc ! videoconvert ! x264enc ! mp4mux ! filesink location=a.mp4", "gstreamer"),
])
def test_sinks(uri, kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = parse_sink(uri)
    assert t.kind == kind
    if uri.startswith("frames/%"):
        assert t.extra["pattern"]


def test_existing_folder_is_an_image_folder_sink(tmp_path):
    assert parse_sink(str(tmp_path)).kind == "images"


@pytest.mark.parametrize("uri", ["rtsp://host/out", "foo://x", "camera://0"])
def test_unknown_sink_scheme_lists_valid_ones(uri):
    with pytest.raises(SourceError) as e:
        parse_sink(uri)
    for s in SINK_SCHEMES:
        assert s + "://" in str(e.value)


@pytest.mark.parametrize("uri", ["out.webm", "out.xyz"])
def test_unwritable_sink_types(uri):
    with pytest.raises(SourceError, match="out"):
        parse_sink(uri)


def test_natural_sort():
    names = ["f10.png", "f2.png", "f1.png", "F3.png"]
    assert sorted(names, key=natural_key) == ["f1.png", "f2.png", "F3.png", "f10.png"]


@pytest.mark.parametrize("uri", ["rtsp://", "rtsp:///stream", "rtsp://user:secret@/stream", "http://", "rtsp://:554/x"])
def test_network_uri_without_a_host_is_refused_at_once(uri):
    """No host: refused when parsed (not after the reconnect timeout), secrets redacted."""
    with pytest.raises(SourceError, match="names no host") as e:
        parse_source(uri)
    assert "secret" not in str(e.value)


@pytest.mark.parametrize("uri", ["udp://@:5000", "rtsp://[::1]:8554/cam", "rtsp://user:pw@cam.local/s"])
def test_network_uris_with_a_host_or_a_udp_listener_pass(uri):
    assert parse_source(uri).kind == "network"
