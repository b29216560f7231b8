"""Frame sources: cameras, V4L2 devices, CSI cameras, GStreamer pipelines, network streams,
video files, images, folders/globs of images and in-memory iterables.

Every source opens eagerly and reads its first frame within ``open_timeout`` seconds, so a
missing camera, an unreachable stream or an undecodable file fails at ``open_source`` with a
``SourceError`` instead of hanging or failing later. ``read()`` returns ``(frame, FrameMeta)`` or
``None`` at the end of the stream. ``live`` tells the pipeline whether it may drop frames.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import cv2
import numpy as np

from ..errors import SourceError, SourceLostError
from .options import FPS_RANGE, StreamOptions
from .reconnect import ReconnectPolicy, ReconnectStats, reconnect
from .redact import redact
from .uri import IMAGE_EXTS, Target, list_images, parse_source

log = logging.getLogger(__name__)


@dataclass
class FrameMeta:
    """What travels with a frame through the pipeline."""

    index: int                     # position in the stream (0-based, counts every frame read)
    name: Optional[str] = None     # file name for image sources; sinks that write files mirror it
    timestamp: float = 0.0         # time.perf_counter() when the frame left the source
    capture_ms: float = 0.0        # time spent reading/decoding it
    restart: bool = False          # first frame after the source started over (a loop, a reconnect)
    pts: Optional[float] = None    # presentation time in s on the source's clock (video files); video
                                   # outputs keep it (a variable frame rate stays variable); None: unknown


def call_with_timeout(fn: Callable, timeout: float, what: str):
    """Run ``fn()`` in a daemon thread; raise SourceError if it does not return in ``timeout`` s.

    OpenCV calls cannot be interrupted; a call that times out is abandoned in its thread."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name=f"open:{what}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise SourceError(
            f"{what} did not respond within {timeout:g} s; check that it exists and delivers frames "
            "(or raise the limit with --open-timeout)"
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


@functools.lru_cache(maxsize=1)
def opencv_has_gstreamer() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: float = 30, flip: int = 0) -> str:
    """GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc), ending in BGR frames."""
    rate = max(1, int(round(fps)))
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, framerate=(fraction){rate}/1, format=(string)NV12 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw, width=(int){width}, height=(int){height}, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def list_cameras() -> list[str]:
    """V4L2 devices present (Linux); empty elsewhere."""
    if not sys.platform.startswith("linux"):
        return []
    import glob

    return sorted(glob.glob("/dev/video*"), key=lambda p: int(p[len("/dev/video"):]) if p[len("/dev/video"):].isdigit() else 0)


def cameras_hint() -> str:
    """The cameras present, for messages about a camera that cannot be opened."""
    cams = list_cameras()
    if sys.platform.startswith("linux"):
        return f"cameras present: {', '.join(cams)}" if cams else "no /dev/video* devices are present"
    return "check the camera index and that no other program holds the camera"


class Source:
    """Base class. Subclasses implement ``_read() -> np.ndarray | None`` and ``_close()``."""

    kind = "source"
    _restarted = False  # subclasses set it when the stream starts over; the next frame's meta says so
    bgr = True          # frames arrive in BGR (OpenCV's order) and are swapped with ``rgb=True``

    def __init__(self, uri: str, options: StreamOptions, live: bool):
        self.uri = redact(uri)  # for messages, logs and stats; credentials never leave the source
        self.options = options
        self.live = live if options.live is None else bool(options.live)
        self.fps: Optional[float] = None          # native rate when known
        self.frame_count: Optional[int] = None    # frames announced by a file, when known
        self.frames_read = 0
        self._pending: Optional[tuple[np.ndarray, Optional[str], float, Optional[float]]] = None
        self._closed = False
        self._pace_t0: Optional[float] = None
        self._current_name: Optional[str] = None
        self._current_pts: Optional[float] = None  # subclasses that know the frame's time set it in _read
        self._stop = threading.Event()  # set by interrupt()/close(): stop waiting (reconnect backoff, reads)

    # ---- public -------------------------------------------------------------------------
    @property
    def size(self) -> Optional[tuple[int, int]]:
        """(width, height) of the first frame."""
        return getattr(self, "_size", None)

    def read(self):
        """Next ``(frame, FrameMeta)``, or ``None`` at the end of the stream."""
        if self._closed:
            return None
        t0 = time.perf_counter()
        if self._pending is not None:
            frame, name, ms, pts = self._pending
            self._pending = None
        else:
            self._pace()
            frame = self._read()
            if frame is None:
                return None
            name, pts = self._current_name, self._current_pts
            ms = (time.perf_counter() - t0) * 1e3
        frame = self._finish(frame)
        meta = FrameMeta(index=self.frames_read, name=name, timestamp=time.perf_counter(), capture_ms=ms,
                         restart=self._restarted, pts=pts)
        self._restarted = False
        self.frames_read += 1
        return frame, meta

    def __iter__(self) -> Iterator:
        while True:
            item = self.read()
            if item is None:
                return
            yield item

    def close(self):
        self._stop.set()
        if not self._closed:
            self._closed = True
            self._close()

    def interrupt(self):
        """Ask a read that waits (for a stalled source, between reconnect attempts) to give up
        soon; safe from any thread. The pipeline calls it when the stream stops."""
        self._stop.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def describe(self) -> dict:
        w_h = self.size
        return {
            "uri": self.uri, "kind": self.kind, "live": self.live, "fps": self.fps,
            "frame_count": self.frame_count, "size": f"{w_h[0]}x{w_h[1]}" if w_h else None,
        }

    # ---- helpers ------------------------------------------------------------------------
    def _prime(self, what: str):
        """Read the first frame now (under the open timeout) so errors surface at open."""
        opts = self.options
        t0 = time.perf_counter()
        frame = self._read_first(what)
        if frame is None:
            raise SourceError(self._no_frames_message())
        self._pending = (frame, self._current_name, (time.perf_counter() - t0) * 1e3, self._current_pts)
        out = self._finish(frame)
        self._size = (out.shape[1], out.shape[0])

    def _read_first(self, what: str):
        """The first frame, within ``open_timeout`` (in a helper thread: OpenCV calls block)."""
        return call_with_timeout(self._read, self.options.open_timeout, what)

    def _no_frames_message(self) -> str:
        return f"source {self.uri!r} delivered no frames"

    def _finish(self, frame: np.ndarray) -> np.ndarray:
        opts = self.options
        if opts.width and opts.height and (frame.shape[1], frame.shape[0]) != (opts.width, opts.height):
            frame = cv2.resize(frame, (opts.width, opts.height), interpolation=cv2.INTER_AREA)
        if opts.rgb and self.bgr and frame.ndim == 3 and frame.shape[2] in (3, 4):
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB if frame.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
        return frame

    def _pace(self):
        """A file source forced live plays at its frame rate, like a camera."""
        if not self.live or not self._paceable:
            return
        rate = self.options.fps or self.fps or 30.0
        now = time.perf_counter()
        if self._pace_t0 is None:
            self._pace_t0 = now - self.frames_read / rate
        due = self._pace_t0 + self.frames_read / rate
        if due > now:
            time.sleep(due - now)
        elif now - due > 1.0:  # far behind (e.g. after a stall): re-anchor instead of bursting
            self._pace_t0 = now - self.frames_read / rate

    _paceable = False

    def _read(self) -> Optional[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self):
        pass


class CaptureSource(Source):
    """Anything OpenCV's VideoCapture opens: cameras, V4L2, CSI/GStreamer, network streams, files."""

    def __init__(self, target: Target, options: StreamOptions):
        kind = target.kind
        live = kind in ("camera", "v4l2", "csi", "gstreamer") or (kind == "network" and target.extra.get("live", True))
        super().__init__(target.uri, options, live)
        self.kind = kind
        self.target = target
        self._paceable = kind == "video" or (kind == "network" and not target.extra.get("live", True))
        self._loops_left = options.loop
        self._decoded_this_pass = 0
        self._cap = None
        self._pts_offset = 0.0                # a looped file's time runs on from the pass before
        self._last_pts: Optional[float] = None
        self._pts_step: Optional[float] = None  # the time between the last two frames
        self._container_info: Optional[tuple] = None  # (frames, start s, duration s) by PyAV, when needed
        self.policy = ReconnectPolicy.from_options(options)
        self.reconnect_stats = ReconnectStats()
        what = self._what()
        if kind == "network":
            # FFmpeg's own open/read timeouts (CAP_PROP_*_TIMEOUT_MSEC) bound these calls: no helper
            # thread is left behind in native code (one abandoned there aborts the process at exit)
            self._cap = self._open_capture()
        else:
            self._cap = call_with_timeout(self._open_capture, options.open_timeout, what)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(self._open_failed_message())
        # a file's frame times: OpenCV's FFmpeg backend gives the decoded frame's presentation
        # timestamp (best effort pts x time_base, from the stream's start) as CAP_PROP_POS_MSEC
        self._timestamps = kind == "video" and _backend(self._cap) == "FFMPEG"
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and FPS_RANGE[0] <= fps <= FPS_RANGE[1] else None
        if kind in ("video", "network"):
            n = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
            self.frame_count = int(n) if n and 0 < n < 1e9 else None
        try:
            self._prime(what)
        except SourceError:
            self._cap.release()
            raise

    def _what(self) -> str:
        t = self.target
        return {
            "camera": f"camera {t.index}", "v4l2": f"V4L2 device {t.location}", "csi": f"CSI camera {t.index}",
            "gstreamer": "GStreamer pipeline", "network": f"stream {redact(t.location)}", "video": f"video {t.location!r}",
        }.get(t.kind, self.uri)

    def _read_first(self, what: str):
        if self.kind == "network":
            return self._read()  # bounded by FFmpeg's read timeout
        return super()._read_first(what)

    def _open_capture(self):
        t, o = self.target, self.options
        if t.kind in ("camera", "v4l2"):
            api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
            if t.kind == "v4l2" and not os.path.exists(t.location):
                raise SourceError(f"V4L2 device {t.location} does not exist; {cameras_hint()}")
            cap = cv2.VideoCapture(t.index if t.index is not None else t.location, api)
            if cap.isOpened():
                if o.width and o.height:
                    cap.set(cv2.CAP_PROP_FRAME_WIDTH, o.width)
                    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, o.height)
                if o.fps:
                    cap.set(cv2.CAP_PROP_FPS, o.fps)
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver from queueing stale frames
            return cap
        if t.kind in ("gstreamer", "csi"):
            if not opencv_has_gstreamer():
                raise SourceError(
                    f"{self._what()} needs OpenCV built with GStreamer, but this OpenCV ({cv2.__version__}) "
                    "reports 'GStreamer: NO' in cv2.getBuildInformation(); use the system OpenCV "
                    "(e.g. JetPack's python3-opencv) or a camera index / V4L2 device instead"
                )
            pipeline = t.location
            if t.kind == "csi":
                pipeline = csi_pipeline(t.index or 0, o.width or 1280, o.height or 720, o.fps or 30)
            return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        if t.kind == "network":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(o.open_timeout * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(o.read_timeout * 1000)]
            return cv2.VideoCapture(t.location, cv2.CAP_FFMPEG, params)
        # video file
        return cv2.VideoCapture(t.location, cv2.CAP_FFMPEG) if _has_ffmpeg() else cv2.VideoCapture(t.location)

    def _open_failed_message(self) -> str:
        t = self.target
        if t.kind == "camera":
            return f"cannot open camera {t.index}; {cameras_hint()}"
        if t.kind == "v4l2":
            return f"cannot open V4L2 device {t.location} (busy, or not a capture device?); {cameras_hint()}"
        if t.kind in ("gstreamer", "csi"):
            return f"GStreamer could not start the pipeline for {self._what()}; test it with gst-launch-1.0"
        if t.kind == "network":
            return (f"cannot open stream {redact(t.location)!r} within {self.options.open_timeout:g} s: unreachable, "
                    "silent, wrong URL or unsupported protocol (raise the limit with --open-timeout)")
        return (
            f"cannot decode video {t.location!r}: not a video OpenCV/FFmpeg can read, or a file that was cut "
            "short before its index (an .mp4 interrupted while writing has no 'moov' atom)"
        )

    def _no_frames_message(self) -> str:
        t = self.target
        if t.kind == "video":
            return f"video {t.location!r} opened but no frame could be decoded (empty, corrupt or truncated file)"
        if t.kind in ("camera", "v4l2", "csi"):
            return f"{self._what()} opened but delivered no frame; is it in use by another program? {cameras_hint()}"
        return f"{self._what()} opened but delivered no frame"

    def _read(self):
        while True:
            ok, frame = self._cap.read()
            if ok and frame is not None:
                self._decoded_this_pass += 1
                self._current_pts = self._frame_pts()
                return frame
            if self.kind == "video" or (self.kind == "network" and self._paceable):
                self._check_truncated()
                if self._loops_left != 0 and self._decoded_this_pass > 0:
                    self._loops_left -= 1 if self._loops_left > 0 else 0
                    if self._last_pts is not None:  # the next pass starts a frame after this one's last
                        self._pts_offset = self._last_pts + (self._pts_step or 1.0 / (self.fps or 30.0))
                    self._cap.release()
                    self._cap = self._open_capture()
                    self._decoded_this_pass = 0
                    self._restarted = True
                    continue
                return None
            # live: a stall is read_timeout without a frame; then reconnect with backoff
            frame = self._read_live()
            if frame is not None:
                return frame
            if self._closed or self._stop.is_set() or not self.frames_read:
                return None  # stopping, or still opening (the open reports the failure)
            frame = reconnect(self._what(), f"delivered no frame for {self.options.read_timeout:g} s",
                              self.policy, self.reconnect_stats, self._reopen, self._stop)
            if frame is not None:
                self._restarted = True  # a recurrent model's state belongs to the stream before the gap
            return frame

    def _frame_pts(self) -> Optional[float]:
        """The frame just decoded's presentation time in seconds, or None when unknown: not a file
        read through FFmpeg, or times that stop increasing (a stream without timestamps reads as
        0 for every frame), from then on; video outputs then go on at the frame rate."""
        if not self._timestamps:
            return None
        t = self._pts_offset + self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if not np.isfinite(t) or (self._last_pts is not None and t <= self._last_pts):
            log.debug("video %r: frame %d has no usable timestamp (%s s after %s s); the rest is timed by "
                      "the frame rate", self.target.location, self.frames_read, t, self._last_pts)
            self._timestamps = False
            return None
        if self._last_pts is not None:
            self._pts_step = t - self._last_pts
        self._last_pts = t
        return t

    def _read_live(self):
        """A frame, or None when ``read_timeout`` passes without one (the network reads are bounded
        by FFmpeg's read timeout; a camera read by the driver's)."""
        deadline = time.perf_counter() + self.options.read_timeout
        while not self._closed and not self._stop.is_set():
            ok, frame = self._cap.read()
            if ok and frame is not None:
                return frame
            if time.perf_counter() >= deadline:
                return None
            time.sleep(0.01)
        return None

    def _reopen(self):
        """One reconnect attempt: release, open again, read a first frame. A camera's open and first
        read are bounded as its first open was (a driver can block in either); network calls are
        bounded by FFmpeg's own timeouts."""
        if self._cap is not None:
            self._cap.release()
        if self.kind == "network":
            self._cap = self._open_capture()
        else:
            self._cap = call_with_timeout(self._open_capture, self.options.open_timeout, self._what())
        if not self._cap.isOpened():
            raise SourceError(self._open_failed_message())
        if self.kind == "network":
            return self._read_live()
        return call_with_timeout(self._read_live, self.options.read_timeout + 1.0, self._what())

    def describe(self) -> dict:
        d = super().describe()
        if self.kind in ("camera", "v4l2", "csi", "gstreamer", "network"):  # the sources that reconnect,
            d.update(self.reconnect_stats.as_dict())                         # --no-live or not
        return d

    def _check_truncated(self):
        """Warn when a pass over a file ended before its last frame. OpenCV's frame count is the
        container's own count where it has one (MP4, AVI), else its duration x the average rate
        (Matroska, WebM, MPEG-TS): a variable frame rate or a start offset made that estimate too
        high, so then the last frame's time is compared with the container's duration instead."""
        n, expected = self._decoded_this_pass, self.frame_count
        if not (expected and 0 < n < expected):
            return
        short = self._ends_short_of_duration(n)
        if short is False:
            return
        log.warning(
            "video %r: decoding stopped at frame %d of the %d its container announces%s; the file is "
            "truncated or damaged, the stream ends at the last good frame", self.target.location, n, expected,
            short or "",
        )

    def _ends_short_of_duration(self, n: int):
        """False when the frames read reach the end of the file (its frame count, or its duration
        where it announces no count), else a phrase saying where the pass stopped; None when it
        cannot be told (no frame times, a file PyAV cannot open): the frame count decides."""
        if self.kind != "video":
            return None
        if self._container_info is None:
            self._container_info = _container_info(self.target.location)
        frames, start, duration = self._container_info
        if frames:  # the container counts its frames: that count, not an estimate
            return False if n >= frames else None
        if not duration or self._last_pts is None or not self._timestamps:
            return None
        step = self._pts_step or (1.0 / self.fps if self.fps else 0.0)
        end = self._last_pts - self._pts_offset + step  # the pass's end, from the stream's first frame
        tol = max(2.0 * step, TRUNCATION_TOLERANCE_S)   # the last frame's own duration is a guess
        # a duration is counted from the stream's start (MPEG-TS) or from 0 (Matroska: its end time)
        if end >= duration - tol or abs(start + end - duration) <= tol:
            return False
        return f" (its frames end at {end:.3f} s of the {duration:.3f} s it lasts)"

    def _close(self):
        if self._cap is not None:
            self._cap.release()


# a file's last frame may end this much before the duration its container announces without a
# frame missing (the last frame's duration is not known; containers round their durations)
TRUNCATION_TOLERANCE_S = 0.25


def _container_info(path: str) -> tuple:
    """``(frames, start s, duration s)`` of a file's first video stream as its container announces
    them (0 where it does not), read by PyAV from the header; ``(0, 0, 0)`` when it cannot be read."""
    try:
        import av

        with av.open(str(path)) as c:
            s = c.streams.video[0]
            start = c.start_time / 1e6 if c.start_time is not None else 0.0
            if s.start_time is not None and s.time_base:
                start = float(s.start_time * s.time_base)
            duration = c.duration / 1e6 if c.duration else 0.0
            return int(s.frames or 0), start, duration
    except Exception:  # noqa: BLE001 - PyAV missing, an unreadable or damaged file: no opinion
        return 0, 0.0, 0.0


def _backend(cap) -> Optional[str]:
    try:
        return cap.getBackendName()
    except cv2.error:
        return None


@functools.lru_cache(maxsize=1)
def _has_ffmpeg() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("FFMPEG:"):
            return "YES" in line.split(":", 1)[1]
    return False


def imread(path: str) -> Optional[np.ndarray]:
    """cv2.imread that keeps bit depth and alpha and accepts any path (via imdecode). A JPEG is
    turned upright by its EXIF orientation, as viewers show it (IMREAD_UNCHANGED ignores the tag,
    so a phone or drone photo came out rotated; a JPEG has no alpha or 16-bit samples to keep)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    if data.size > 3 and data[0] == 0xFF and data[1] == 0xD8 and data[2] == 0xFF:  # JPEG
        return cv2.imdecode(data, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


class ImageSource(Source):
    """One image, a folder of images (natural sort: frame_2 before frame_10) or a glob.
    Frames carry their file names so folder sinks can mirror them. Unreadable files are
    skipped with a warning; a source where the first file cannot be read fails at open."""

    def __init__(self, target: Target, options: StreamOptions):
        super().__init__(target.uri, options, live=False)
        self.kind = target.kind
        self.target = target
        self._paceable = True
        if target.kind == "image":
            self.paths = [target.location]
        else:
            self.paths = list_images(target)
            if not self.paths:
                where = "glob" if target.extra.get("glob") else "folder"
                raise SourceError(
                    f"{where} {target.location!r} holds no images (looked for {', '.join(IMAGE_EXTS)})"
                )
        self.frame_count = len(self.paths)
        self.skipped: list[str] = []
        self._i = 0
        self._good_this_pass = 0
        self._loops_left = options.loop
        self._prime(f"image {self.paths[0]!r}" if len(self.paths) == 1 else f"images in {target.location!r}")

    def _no_frames_message(self) -> str:
        if len(self.paths) == 1:
            return f"cannot read image {self.paths[0]!r} (not an image OpenCV can decode, or damaged)"
        return (
            f"none of the {len(self.paths)} images in {self.target.location!r} could be read "
            f"(first: {self.paths[0]!r})"
        )

    def _read(self):
        while True:
            if self._i >= len(self.paths):
                if self._loops_left == 0 or self._good_this_pass == 0:
                    return None
                self._loops_left -= 1 if self._loops_left > 0 else 0
                self._i = 0
                self._good_this_pass = 0
                self._restarted = True
            path = self.paths[self._i]
            self._i += 1
            img = imread(path)
            if img is None:
                if len(self.paths) > 1:
                    log.warning("skipping unreadable image %r", path)
                if path not in self.skipped:
                    self.skipped.append(path)
                continue
            self._good_this_pass += 1
            self._current_name = Path(path).name
            return img

    def describe(self) -> dict:
        d = super().describe()
        if self.skipped:  # unreadable files are skipped with a warning; the stats say which
            d["skipped"] = {"count": len(self.skipped), "first": self.skipped[:5]}
        return d


class IterableSource(Source):
    """Frames from any Python iterable of HxWxC arrays (or ``(frame, name)`` pairs).

    A list or tuple is read directly. Any other iterable (a generator reading a camera SDK, a
    socket...) is pumped by a helper thread, so a source that blocks is detected: no frame within
    ``open_timeout`` at open is a SourceError, none within ``read_timeout`` later a
    SourceLostError (a Python iterable cannot be reopened)."""

    def __init__(self, frames: Iterable, options: StreamOptions, live: bool = False, fps: Optional[float] = None):
        super().__init__("<python>", options, live=live)
        self.kind = "python"
        self.bgr = False  # the caller's channel order already (BGR, or RGB with rgb=True): never swapped
        self.fps = fps
        self._it = iter(frames)
        self._pump: Optional[_Pump] = None if isinstance(frames, (list, tuple)) else _Pump(self._it)
        try:
            self.frame_count = len(frames)  # type: ignore[arg-type]
        except TypeError:
            self.frame_count = None
        try:
            self._prime("python iterable")
        except BaseException:
            self.close()           # the pump's thread ends and a generator is closed
            raise

    def _no_frames_message(self) -> str:
        return "the frame iterable is empty"

    def _close(self):
        if self._pump is not None:
            self._pump.close()

    def _read_first(self, what: str):
        return self._next_item(self.options.open_timeout, first=True)

    def _read(self):
        return self._next_item(self.options.read_timeout)

    def _next_item(self, timeout: float, first: bool = False):
        if self._pump is None:
            try:
                item = next(self._it)
            except StopIteration:
                return None
        else:
            item = self._pump.get(timeout, self._stop)
            if item is _Pump.TIMEOUT:
                if self._stop.is_set():
                    return None
                if first:
                    raise SourceError(f"the Python frame source delivered no frame within {timeout:g} s (open_timeout)")
                raise SourceLostError(
                    f"the Python frame source delivered no frame for {timeout:g} s (read_timeout); "
                    "it cannot be reopened, so the stream ends here"
                )
            if item is _Pump.END:
                return None
        name = None
        if isinstance(item, tuple):
            item, name = item
        if not isinstance(item, np.ndarray):
            raise SourceError(f"frames must be numpy arrays, got {type(item).__name__}")
        self._current_name = name
        return item


class _Pump:
    """Runs ``next(it)`` in a daemon thread, one item ahead; ``get(timeout)`` waits for it.
    ``close()`` ends the thread and closes a generator (its ``finally:`` runs: a camera SDK's
    release), at once, or as soon as a ``next()`` that is blocked returns."""

    END = object()
    TIMEOUT = object()

    def __init__(self, it: Iterator):
        import queue

        self._it = it
        self._q: "queue.Queue" = queue.Queue(maxsize=1)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-deblur-python-source", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Hand ``item`` to the reader; False once the source is closed (the item is dropped)."""
        import queue

        while not self._closed.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self):
        try:
            while not self._closed.is_set():
                try:
                    item = next(self._it)
                except StopIteration:
                    self._put(self.END)
                    return
                except BaseException as e:  # noqa: BLE001 - handed to the reader
                    self._put(e)
                    return
                if not self._put(item):
                    return
        finally:
            if self._closed.is_set():
                close = getattr(self._it, "close", None)   # a generator: runs its finally/with blocks
                if close is not None:
                    try:
                        close()
                    except Exception as e:  # noqa: BLE001 - the stream is over; say it, do not raise in a thread
                        log.warning("closing the Python frame source raised %s: %s", type(e).__name__, e)

    def close(self):
        self._closed.set()
        self._thread.join(timeout=0.5)   # a next() blocked in the caller's code ends the thread later

    def get(self, timeout: float, stop: threading.Event):
        import queue

        deadline = time.perf_counter() + timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or stop.is_set():
                return self.TIMEOUT
            try:
                item = self._q.get(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            if item is self.END:
                self._q.put(self.END)  # later reads see the end too
            return item


def open_source(source=None, options: Optional[StreamOptions] = None, **overrides) -> Source:
    """Open a source by URI (or from ``options.source``); see ``StreamOptions`` for the URIs.

    >>> with open_source("clip.mp4") as src:
    ...     for frame, meta in src: ...
    """
    opts = (options or StreamOptions())
    if overrides:
        opts = opts.replace(**overrides)
    if source is None:
        source = opts.source
    opts.validate()
    if isinstance(source, Source):
        return source
    if source is None:
        raise SourceError("no source given; pass a URI, path or camera index (e.g. --camera 0 or --source clip.mp4)")
    if not isinstance(source, (str, int, os.PathLike)) and hasattr(source, "__iter__"):
        return IterableSource(source, opts)
    target = parse_source(source)
    if target.kind in ("image", "images"):
        return ImageSource(target, opts)
    return CaptureSource(target, opts)
