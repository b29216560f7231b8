"""Classify source and sink URIs without opening anything.

Sources: ``N`` / ``camera://N`` (OpenCV camera index), ``/dev/videoN`` or ``v4l2:///dev/videoN``
(V4L2), ``csi://N`` (Jetson CSI camera via nvarguscamerasrc), a GStreamer pipeline (contains
``!``) or ``gst://<pipeline>``, ``rtsp://`` / ``rtmp://`` / ``udp://`` / ``http(s)://`` streams,
``file://path`` or a plain path to a video, an image, a folder of images, or a glob.

Sinks: ``display://[N]``, ``null://``, a video file, an image file (a ``%`` pattern such as
``out/%06d.png`` for sequences), a folder (existing, or a path without extension), or a GStreamer
pipeline.
"""
from __future__ import annotations

import glob as _glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SourceError
from .redact import redact

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".h264", ".h265", ".hevc", ".y4m")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".exr", ".jp2")
# file extensions a video sink can write (container chosen by OpenCV/FFmpeg from the extension)
VIDEO_SINK_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".m4v")

SOURCE_SCHEMES = ("camera", "v4l2", "csi", "gst", "file", "rtsp", "rtsps", "rtmp", "udp", "http", "https")
SINK_SCHEMES = ("display", "null", "file", "gst")
_NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "udp", "http", "https")

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)


@dataclass
class Target:
    """A classified URI. ``kind`` is one of: camera, v4l2, csi, gstreamer, network, video, image,
    images (folder or glob) for sources; display, null, video, image, images, gstreamer for sinks."""

    kind: str
    uri: str                       # what the user gave
    location: str = ""             # path, URL, pipeline or device
    index: int | None = None       # camera / CSI sensor / display index
    extra: dict = field(default_factory=dict)


def _split_scheme(uri: str):
    m = _SCHEME_RE.match(uri)
    if m:
        return m.group(1).lower(), m.group(2)
    return None, uri


def _int_or_none(s: str):
    s = s.strip()
    if re.fullmatch(r"\d+", s):
        return int(s)
    return None


def _unknown(scheme: str, uri: str, valid) -> SourceError:
    return SourceError(
        f"unknown URI scheme {scheme + '://'!r} in {uri!r}; valid schemes: "
        + ", ".join(s + "://" for s in valid)
        + " (or a plain path, camera index or GStreamer pipeline)"
    )


def is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def parse_source(uri) -> Target:
    """Classify a source URI (str, int or os.PathLike)."""
    if isinstance(uri, bool):
        raise SourceError(f"source must be a URI, path or camera index, got {uri!r}")
    if isinstance(uri, int):
        if uri < 0:
            raise SourceError(f"camera index must be >= 0, got {uri}")
        return Target("camera", str(uri), str(uri), index=uri)
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri.strip():
        raise SourceError(f"source must be a non-empty URI, path or camera index, got {uri!r}")
    raw = uri
    uri = uri.strip()
    scheme, rest = _split_scheme(uri)
    if scheme is None:
        if "!" in uri and not os.path.exists(uri):  # an existing file named 'take!.avi' is a file
            return Target("gstreamer", raw, uri)
        idx = _int_or_none(uri)
        if idx is not None:
            return Target("camera", raw, uri, index=idx)
        if re.fullmatch(r"/dev/video\d+", uri):
            return Target("v4l2", raw, uri, index=int(uri[len("/dev/video"):]))
        return _classify_path(raw, uri)
    if scheme == "camera":
        idx = _int_or_none(rest or "0")
        if idx is None:
            raise SourceError(f"camera URI {raw!r} needs a numeric index, e.g. camera://0")
        return Target("camera", raw, rest or "0", index=idx)
    if scheme == "csi":
        idx = _int_or_none(rest or "0")
        if idx is None:
            raise SourceError(f"CSI URI {raw!r} needs a numeric sensor id, e.g. csi://0")
        return Target("csi", raw, rest or "0", index=idx)
    if scheme == "v4l2":
        dev = rest if rest.startswith("/") else "/" + rest
        m = re.fullmatch(r"/dev/video(\d+)", dev)
        return Target("v4l2", raw, dev, index=int(m.group(1)) if m else None)
    if scheme == "gst":
        if not rest.strip():
            raise SourceError(f"gst:// URI {raw!r} holds no pipeline")
        return Target("gstreamer", raw, rest)
    if scheme in _NETWORK_SCHEMES:
        netloc = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
        host = netloc[1:netloc.find("]")] if netloc.startswith("[") else netloc.split(":", 1)[0]
        if scheme != "udp" and not host:  # udp://@:5000 listens on every interface
            raise SourceError(f"{scheme}:// URI {redact(raw)!r} names no host; give the camera's address, "
                              f"e.g. {scheme}://192.168.1.20/stream")
        path = rest.split("?", 1)[0].lower()
        # a plain video file served over HTTP is a file, not a live stream
        live = not (scheme in ("http", "https") and path.endswith(VIDEO_EXTS))
        return Target("network", raw, uri, extra={"live": live, "scheme": scheme})
    if scheme == "file":
        return _classify_path(raw, rest)
    raise _unknown(scheme, raw, SOURCE_SCHEMES)


def _classify_path(raw: str, path: str) -> Target:
    if is_glob(path) and not os.path.exists(path):
        return Target("images", raw, path, extra={"glob": True})
    p = Path(path).expanduser()
    if p.is_dir():
        return Target("images", raw, str(p), extra={"glob": False})
    ext = p.suffix.lower()
    if not p.exists():
        raise SourceError(
            f"source {raw!r} does not exist; give an existing video, image, folder or glob, "
            "a camera index (0, camera://0, /dev/video0), csi://N, rtsp://... or a GStreamer pipeline"
        )
    if ext in IMAGE_EXTS:
        return Target("image", raw, str(p))
    # videos, and anything else OpenCV/FFmpeg may be able to decode
    return Target("video", raw, str(p))


def parse_sink(uri) -> Target:
    """Classify a sink URI (str or os.PathLike). Callables are handled by ``open_sink``."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri.strip():
        raise SourceError(f"output must be a non-empty URI or path, got {uri!r}")
    raw = uri
    uri = uri.strip()
    scheme, rest = _split_scheme(uri)
    if scheme is None:
        # a pipeline links elements with ' ! ' (or starts at appsrc); 'run!1.mp4' is a file name
        if " ! " in uri or (uri.startswith("appsrc") and "!" in uri):
            return Target("gstreamer", raw, uri)
        return _classify_sink_path(raw, uri)
    if scheme == "display":
        idx = _int_or_none(rest or "0")
        if idx is None:
            raise SourceError(f"display URI {raw!r} takes an optional numeric index, e.g. display://0")
        return Target("display", raw, rest, index=idx)
    if scheme == "null":
        return Target("null", raw, "")
    if scheme == "gst":
        return Target("gstreamer", raw, rest)
    if scheme == "file":
        return _classify_sink_path(raw, rest)
    raise _unknown(scheme, raw, SINK_SCHEMES)


def _classify_sink_path(raw: str, path: str) -> Target:
    p = Path(path).expanduser()
    ext = p.suffix.lower()
    trailing_sep = path.endswith(("/", os.sep))
    if p.is_dir() or trailing_sep:
        return Target("images", raw, str(p))
    if ext in VIDEO_SINK_EXTS:
        return Target("video", raw, str(p))
    if ext in IMAGE_EXTS:
        return Target("image", raw, str(p), extra={"pattern": "%" in p.name})
    if ext in VIDEO_EXTS:
        raise SourceError(
            f"cannot write video container {ext!r} ({raw!r}); write one of {', '.join(VIDEO_SINK_EXTS)}"
        )
    if ext == "":
        return Target("images", raw, str(p))
    raise SourceError(
        f"output {raw!r}: unknown file type {ext!r}; write a video ({', '.join(VIDEO_SINK_EXTS)}), "
        f"an image ({', '.join(IMAGE_EXTS[:5])}, ...), a folder, display:// or null://"
    )


def natural_key(s: str):
    """Sort key that orders frame_2 before frame_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def list_images(target: Target) -> list[str]:
    """Sorted (natural order) image paths of a folder or glob target."""
    if target.extra.get("glob"):
        paths = [q for q in _glob.glob(os.path.expanduser(target.location)) if os.path.isfile(q)]
    else:
        paths = [str(q) for q in Path(target.location).iterdir() if q.is_file()]
    paths = [q for q in paths if Path(q).suffix.lower() in IMAGE_EXTS and not Path(q).name.startswith(".")]
    return sorted(paths, key=natural_key)
