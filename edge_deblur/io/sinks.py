"""Frame sinks: display window, video file, image folder / file / sequence, GStreamer pipeline,
null, and Python callbacks.

Sinks that write files check at open that the place is writable, so a bad output path fails
before any frame is processed. Files appear atomically: images are written to a hidden temp name,
fsync-ed and renamed; a video is written crash-safe (fragmented) to a hidden
``.<name>.<pid>-<random>.partial<ext>`` of its own (a rerun or a second process never touches
another run's partial file) and renamed to its final name once ``close()`` has finalized and
verified it, so a half-written file never replaces a good one, a killed process leaves the partial
file playable to its last fragment, and a stream stopped by Ctrl-C/SIGTERM (which closes the
sinks) leaves a playable file.
"""
from __future__ import annotations

import glob
import logging
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from ..errors import SourceError
from .options import StreamOptions
from .sources import FrameMeta, opencv_has_gstreamer
from .redact import redact
from .uri import Target, parse_sink
from .video_writer import SinkWriteError, VideoWriter, count_video_frames, resolve_codec

log = logging.getLogger(__name__)

_HIGH_DEPTH_EXTS = (".png", ".tif", ".tiff", ".pgm", ".ppm", ".pnm", ".jp2")


def to_bgr8(frame: np.ndarray, rgb: bool = False) -> np.ndarray:
    """Any supported frame (gray, BGR(A)/RGB(A), uint8/uint16/float) -> 3-channel BGR uint8."""
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        frame = np.clip(frame.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_RGBA2BGR if rgb else cv2.COLOR_BGRA2BGR)
    return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if rgb else frame


def _for_image_file(frame: np.ndarray, ext: str, rgb: bool) -> np.ndarray:
    """Keep 16-bit depth and alpha where the format can hold them."""
    if frame.dtype == np.uint16 and ext not in _HIGH_DEPTH_EXTS:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype not in (np.uint8, np.uint16) and ext not in (".exr", ".tif", ".tiff"):
        frame = np.clip(frame.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rgb and frame.ndim == 3 and frame.shape[2] in (3, 4):
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR if frame.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    return frame


def _first_existing(d: Path) -> Path:
    p = Path(os.path.abspath(d))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _why_unwritable(folder: Path, e: OSError) -> str:
    """The reason a user can act on, not just the errno text of the probe."""
    import errno

    if e.errno == errno.EROFS:
        return "it is on a read-only file system"
    if e.errno in (errno.EACCES, errno.EPERM) or not os.access(folder, os.W_OK):
        return "you have no permission to write there"
    if e.errno == errno.ENOSPC:
        return "the disk is full"
    # /proc, /sys and similar virtual file systems exist but refuse new files (ENOENT, EINVAL)
    return f"the folder refuses new files, as virtual file systems like /proc and /sys do ({e.strerror or e})"


def ensure_writable_dir(d: Path, what: str):
    """Create folder ``d`` (and its parents) and probe it with a temp file; SourceError naming the
    real reason (a file in the way, no permission, read-only or virtual file system) otherwise."""
    d = Path(d)
    way_out = "choose an output in a folder you can write to"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        base = _first_existing(d)
        if not base.is_dir():
            why = f"{str(base)!r} is a file, not a folder"
        else:
            why = f"cannot create folders in {str(base)!r}: {_why_unwritable(base, e)}"
        raise SourceError(f"cannot create output folder {str(d)!r} for {what}: {why}; {way_out}") from e
    if not d.is_dir():
        raise SourceError(f"output folder {str(d)!r} for {what} is not a folder; {way_out}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edge-deblur-probe-", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SourceError(f"cannot write into the output folder {str(d)!r} for {what}: "
                          f"{_why_unwritable(d, e)}; {way_out}") from e


def atomic_write_bytes(path, data) -> None:
    """``runtime.manifest.atomic_write_bytes`` (temp file, fsync, rename), its I/O failures as
    ``SinkWriteError`` naming the file."""
    from ..runtime.manifest import atomic_write_bytes as write

    try:
        write(path, data)
    except OSError as e:
        raise SinkWriteError(f"cannot write {str(path)!r}: {e.strerror or e}; the previous file, if any, is unchanged") from e


def atomic_imwrite(path: Path, frame: np.ndarray):
    """Encode then write atomically (``atomic_write_bytes``) to ``path``."""
    path = Path(path)
    ext = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, frame, params)
    if not ok:
        raise SourceError(f"OpenCV cannot encode a {frame.dtype} {frame.shape} frame as {ext!r} ({path})")
    atomic_write_bytes(path, buf.tobytes())


class Sink:
    """Base class: ``write(frame, meta)`` then ``close()``; ``wants_stop`` asks the pipeline to end."""

    kind = "sink"

    def __init__(self, uri: str, options: StreamOptions):
        self.uri = redact(uri)  # for messages, logs and stats
        self.options = options
        self.frames_written = 0
        self.wants_stop = False
        self._closed = False

    def write(self, frame: np.ndarray, meta: FrameMeta):
        self._write(frame, meta)
        self.frames_written += 1

    def close(self):
        if not self._closed:
            self._closed = True
            self._close()

    def _write(self, frame, meta):  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self):
        pass

    def describe(self) -> dict:
        return {"uri": self.uri, "kind": self.kind, "frames_written": self.frames_written}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class NullSink(Sink):
    kind = "null"

    def _write(self, frame, meta):
        pass


class CallbackSink(Sink):
    """Calls ``fn(frame, meta)`` for each frame (frames in the stream's colour order)."""

    kind = "callback"

    def __init__(self, fn: Callable, options: StreamOptions):
        super().__init__(getattr(fn, "__name__", "<callback>"), options)
        self.fn = fn

    def _write(self, frame, meta):
        if self.fn(frame, meta) is False:
            self.wants_stop = True


def display_available() -> tuple[bool, str]:
    """Whether cv2.imshow can work here, and why not."""
    gui = "NONE"
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip()
            break
    if gui.upper() in ("NONE", ""):
        return False, (
            "this OpenCV build has no GUI support (opencv-python-headless?); install opencv-python, "
            "or write to a file instead of display://"
        )
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, (
            "no display is available (DISPLAY and WAYLAND_DISPLAY are unset; e.g. an SSH session "
            "without X forwarding); write to a file (--output out.mp4) instead of --display/display://"
        )
    return True, ""


class DisplaySink(Sink):
    """An OpenCV window; 'q' or Esc, or closing the window, asks the pipeline to stop."""

    kind = "display"

    def __init__(self, target: Target, options: StreamOptions, title: str = "edge-deblur"):
        super().__init__(target.uri, options)
        ok, why = display_available()
        if not ok:
            raise SourceError(why)
        self.title = title if not target.index else f"{title} [{target.index}]"
        self._shown = False

    def _write(self, frame, meta):
        cv2.imshow(self.title, to_bgr8(frame, self.options.rgb))
        self._shown = True
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            self.wants_stop = True
        elif cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.wants_stop = True

    def _close(self):
        if self._shown:
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass


class VideoSink(Sink):
    """A crash-safe video file through PyAV (``edge_deblur.io.video_writer``): fragmented MP4/MOV,
    Matroska clusters or MJPEG AVI; H.264 by default (``options.codec`` / ``options.quality``).
    Opens on the first frame (its size fixes the video's); frames of another size are resized to
    it. Written to ``.<name>.<pid>-<random>.partial<ext>`` (``tmp_path``; unique to this sink, created
    exclusively, so partial files of earlier crashed runs and of other processes writing the same
    output are never overwritten); ``close()`` finishes the file, verifies it by demuxing every
    frame written, and only then renames it over the final name, so a good existing file is never
    replaced by a broken one. After a write error (disk full) nothing is renamed: the partial file
    keeps the frames up to its last fragment and the error names it."""

    kind = "video"

    def __init__(self, target: Target, options: StreamOptions, fps: Optional[float] = None):
        super().__init__(target.uri, options)
        self.path = Path(target.location).expanduser()
        ext = self.path.suffix.lower()
        self._codec = resolve_codec(options.codec, ext)
        self.codec = self._codec.name
        self.fps = float(options.fps or fps or 30.0)
        if self.path.is_dir():
            raise SourceError(f"output {str(self.path)!r} is a folder; give a file name such as out.mp4")
        ensure_writable_dir(self.path.parent, f"video {self.path.name!r}")
        self.tmp_path = partial_path(self.path)
        kept = sorted(self.path.parent.glob(f".{glob.escape(self.path.stem)}.*.partial{glob.escape(self.path.suffix)}"))
        if kept:
            log.info("partial video(s) of earlier runs of %s are kept as they are: %s", self.path.name,
                     ", ".join(q.name for q in kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else ""))
        self._writer = VideoWriter(self.tmp_path, ext, self._codec, self.fps, quality=options.quality,
                                   fragment_s=options.fragment_s)
        self._opened = False
        self._failed = False
        self._warned_resize = False
        self.published = False

    def _write(self, frame, meta):
        if self._failed:
            raise SinkWriteError(f"video {str(self.path)!r} failed earlier; no more frames are written to it")
        img = to_bgr8(frame, self.options.rgb)
        h, w = img.shape[:2]
        try:
            if not self._opened:
                # frames from a video file carry its timestamps: the output keeps its timing (a
                # variable frame rate stays variable) unless --fps asks for a constant rate
                self._writer.open(w, h, timed=meta.pts is not None and self.options.fps is None)
                self._opened = True
            elif (w, h) != self._writer.size:
                if not self._warned_resize:
                    log.warning("frame size %dx%d differs from the video's %dx%d; resizing", w, h, *self._writer.size)
                    self._warned_resize = True
                img = cv2.resize(img, self._writer.size, interpolation=cv2.INTER_AREA)
            self._writer.write(img, meta.pts)
        except BaseException:
            self._failed = True
            raise

    def abandon(self, why: str = "the run was interrupted"):
        """Finish the partial file (playable) but leave it under its hidden name: used when the
        output would be incomplete, so it must not take the final name."""
        if self._closed:
            return
        self._closed = True
        if not self._opened or self._failed:
            return
        self._writer.finish()
        log.warning("%s: kept the %d frames written so far in %s (not renamed to %s)",
                    why, self.frames_written, self.tmp_path, self.path.name)

    def _close(self):
        if not self._opened:
            if self.path.exists():
                log.warning("no frames were written; %s was left as it was", self.path)
            else:
                log.warning("no frames were written; %s was not created", self.path)
            return
        if self._failed:
            return  # the write error already said what is kept
        self._writer.finish()
        try:
            n = count_video_frames(self.tmp_path)
        except SourceError as e:
            raise SinkWriteError(f"the finished video {str(self.tmp_path)!r} does not read back ({e}); "
                                 f"{str(self.path)!r} was left as it was") from e
        if n != self.frames_written:
            raise SinkWriteError(
                f"the finished video {str(self.tmp_path)!r} holds {n} frames but {self.frames_written} were "
                f"written; {str(self.path)!r} was left as it was"
            )
        try:
            os.replace(self.tmp_path, self.path)
            _fsync_dir(self.path.parent)
        except OSError as e:
            raise SinkWriteError(f"cannot move the finished video to {str(self.path)!r}: {e.strerror or e}; "
                                 f"it is kept as {str(self.tmp_path)!r}") from e
        self.published = True

    def describe(self) -> dict:
        return super().describe() | {"path": str(self.path), "codec": self.codec, "fps": self.fps,
                                     "timing": "source" if self._writer.timed else "constant",
                                     "quality": self._writer.quality, "fragments": self._writer.fragments}


def partial_path(path) -> Path:
    """A hidden temp name next to ``path`` (same folder, so the final rename is atomic) that no
    other writer uses: ``.<stem>.<pid>-<random>.partial<ext>``."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:6]}.partial{path.suffix}")


def _fsync_dir(d: Path):
    try:
        fd = os.open(str(d), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class GStreamerSink(Sink):
    """A GStreamer pipeline beginning with ``appsrc`` (e.g. hardware encoding or RTSP out on Jetson)."""

    kind = "gstreamer"

    def __init__(self, target: Target, options: StreamOptions, fps: Optional[float] = None):
        super().__init__(target.uri, options)
        if not opencv_has_gstreamer():
            raise SourceError(
                f"output pipeline {target.location!r} needs OpenCV built with GStreamer, but this OpenCV "
                f"({cv2.__version__}) reports 'GStreamer: NO'; write to a file instead"
            )
        self.pipeline = target.location
        self.fps = float(options.fps or fps or 30.0)
        self._writer = None

    def _write(self, frame, meta):
        img = to_bgr8(frame, self.options.rgb)
        if self._writer is None:
            h, w = img.shape[:2]
            self._writer = cv2.VideoWriter(self.pipeline, cv2.CAP_GSTREAMER, 0, self.fps, (w, h))
            if not self._writer.isOpened():
                raise SourceError(f"GStreamer could not start output pipeline {self.pipeline!r}")
        self._writer.write(img)

    def _close(self):
        if self._writer is not None:
            self._writer.release()


class ImageFolderSink(Sink):
    """One image per frame in a folder. Frames from image sources keep their file names (a folder
    of frames maps to a folder of frames); others are named ``000000.png``, ``000001.png``..."""

    kind = "images"

    def __init__(self, target: Target, options: StreamOptions, ext: str = ".png"):
        super().__init__(target.uri, options)
        self.folder = Path(target.location).expanduser()
        if self.folder.exists() and not self.folder.is_dir():
            raise SourceError(f"output {str(self.folder)!r} exists and is not a folder")
        ensure_writable_dir(self.folder, "images")
        self.ext = ext
        self._written: set = set()

    def _write(self, frame, meta):
        name = Path(meta.name).name if meta.name else f"{meta.index:06d}{self.ext}"
        if name in self._written:
            # a looped folder's next pass, or one name in several folders of a glob: written beside
            # as name_1, name_2, ... rather than over the frame this run already wrote
            stem, suffix = os.path.splitext(name)
            k = 1
            while f"{stem}_{k}{suffix}" in self._written:
                k += 1
            name = f"{stem}_{k}{suffix}"
        self._written.add(name)
        path = self.folder / name
        atomic_imwrite(path, _for_image_file(frame, path.suffix.lower(), self.options.rgb))

    def describe(self) -> dict:
        return super().describe() | {"path": str(self.folder)}


class ImageFileSink(Sink):
    """One image file, or a numbered sequence when the name holds a ``%`` pattern (``out/%06d.png``)."""

    kind = "image"

    def __init__(self, target: Target, options: StreamOptions):
        super().__init__(target.uri, options)
        self.path = Path(target.location).expanduser()
        self.pattern = bool(target.extra.get("pattern"))
        if self.pattern:
            try:
                self.path.name % 0
            except (TypeError, ValueError) as e:
                raise SourceError(
                    f"output pattern {self.path.name!r} must hold one integer field such as %06d ({e})"
                ) from e
        ensure_writable_dir(self.path.parent, f"image {self.path.name!r}")

    def _write(self, frame, meta):
        if self.pattern:
            path = self.path.with_name(self.path.name % meta.index)
        else:
            if self.frames_written:
                raise SourceError(
                    f"output {str(self.path)!r} is a single image but the source gave more than one frame; "
                    "write to a folder, a video or a pattern such as out/%06d.png"
                )
            path = self.path
        atomic_imwrite(path, _for_image_file(frame, path.suffix.lower(), self.options.rgb))


def check_not_input(sinks, source) -> None:
    """Refuse an output that is the source's own file (a video, an image) or its images' folder:
    the input would be overwritten while it is read."""
    paths = [str(p) for p in (getattr(source, "paths", None) or [])]
    loc = getattr(getattr(source, "target", None), "location", None)
    if not paths and isinstance(loc, str) and os.path.isfile(loc):
        paths = [loc]
    if not paths:
        return

    def same(a, b) -> bool:
        try:
            return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
        except OSError:
            return False

    for s in sinks:
        if isinstance(s, ImageFolderSink):
            folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
            if any(same(f, s.folder) for f in folders):
                raise SourceError(f"output folder {str(s.folder)!r} holds the source's images, which would be "
                                  "overwritten as they are read; write to another folder")
        elif isinstance(s, (VideoSink, ImageFileSink)) and not getattr(s, "pattern", False):
            if any(same(p, s.path) for p in paths):
                raise SourceError(f"output {str(s.path)!r} is the source file, which would be overwritten as it "
                                  "is read; pass another output")


def check_frames_fit(sinks, source, options: Optional[StreamOptions] = None) -> None:
    """Refuse, before anything is written, an output that is the source itself (check_not_input)
    and a single-image output (a file name without a ``%`` pattern) for a source known at open to
    give more than one frame (its frame count, times the
    ``loop`` passes, capped by ``max_frames``). Sources of unknown length (cameras, streams) pass;
    the image sink refuses their second frame as before."""
    check_not_input(sinks, source)
    opts = options or getattr(source, "options", None) or StreamOptions()
    n = getattr(source, "frame_count", None)
    if not n:
        return
    total = float("inf") if opts.loop < 0 else n * (opts.loop + 1)
    if opts.max_frames:
        total = min(total, opts.max_frames)
    if total <= 1:
        return
    if total == float("inf"):
        many = "endless frames (--loop -1)"
    elif total < n * (opts.loop + 1):
        many = f"{int(total)} frames (--max-frames {opts.max_frames})"
    elif opts.loop:
        many = f"{int(total)} frames ({n} x {opts.loop + 1} passes, --loop {opts.loop})"
    else:
        many = f"{n} frames"
    for s in sinks:
        if isinstance(s, ImageFileSink) and not s.pattern:
            p = s.path
            raise SourceError(
                f"output {str(p)!r} is a single image but the source {source.uri} gives {many}; "
                f"write them to a folder (-o {str(p.with_suffix(''))}/), a video (-o {str(p.with_suffix('.mp4'))}) "
                f"or a numbered sequence (-o {str(p.with_name(p.stem + '_%06d' + p.suffix))}), "
                "or add --max-frames 1 to keep only the first frame"
            )


def open_sink(output=None, options: Optional[StreamOptions] = None, fps: Optional[float] = None) -> Sink:
    """Open a sink by URI or wrap a callable. ``fps`` is the source's rate (for video files)."""
    opts = options or StreamOptions()
    if output is None:
        output = opts.output
    if isinstance(output, Sink):
        return output
    if output is None:
        return NullSink("null://", opts)
    if callable(output) and not isinstance(output, (str, os.PathLike)):
        return CallbackSink(output, opts)
    target = parse_sink(output)
    if target.kind == "null":
        return NullSink(target.uri, opts)
    if target.kind == "display":
        return DisplaySink(target, opts)
    if target.kind == "video":
        return VideoSink(target, opts, fps=fps)
    if target.kind == "images":
        return ImageFolderSink(target, opts)
    if target.kind == "image":
        return ImageFileSink(target, opts)
    if target.kind == "gstreamer":
        return GStreamerSink(target, opts, fps=fps)
    raise SourceError(f"unsupported output {output!r}")  # pragma: no cover - parse_sink covers all kinds
