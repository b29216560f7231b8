"""One flat option set for sources, sinks and the streaming pipeline, shared by the CLI
(``edge-deblur stream``) and the Python API (``edge_deblur.io.open_source`` /
``edge_deblur.runtime.pipeline.run_stream``), in the spirit of jetson-utils'
videoSource/videoOutput."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from ..errors import InputError

DROP_POLICIES = ("auto", "oldest", "newest", "never")


@dataclass
class StreamOptions:
    """Everything a stream needs besides the model.

    ``source``: camera index (int or ``"0"``), ``camera://N``, ``/dev/videoN``, ``csi://N``,
    a GStreamer pipeline (contains ``!``), ``rtsp://``/``http(s)://`` URL, a video file, an image
    file, a folder of images or a glob. ``output``: ``display://``, ``null://``, a video file
    (``.mp4``/``.avi``/``.mkv``), an image folder, an image file (``%`` pattern for sequences), a
    GStreamer pipeline, or a Python callable ``fn(frame, meta)``; ``None`` means ``null://``
    (plus a window when ``display`` is set).
    """

    source: Union[str, int, None] = None
    output: Union[str, Callable, None] = None
    display: bool = False                 # also show frames in a window
    width: Optional[int] = None           # requested capture size (cameras); other sources are resized
    height: Optional[int] = None
    fps: Optional[float] = None           # requested camera rate; pace of a file forced live; output video rate
    loop: int = 0                         # file sources: play this many extra times (-1: forever)
    live: Optional[bool] = None           # None: by source type (camera/RTSP/GStreamer live, files not)
    rgb: bool = False                     # frames handed to/accepted from Python are RGB (else BGR)
    queue_size: int = 2                   # captured frames waiting for inference
    drop: str = "auto"                    # auto (live: oldest, files: never) | oldest | newest | never
    codec: Optional[str] = None           # FourCC of the output video (default by extension: mp4v / MJPG)
    stats_every: int = 0                  # report stats every N output frames (0: only at the end)
    max_frames: int = 0                   # stop after this many frames through the model (0: no limit)
    open_timeout: float = 10.0            # seconds to open a source and get its first frame
    read_timeout: float = 5.0             # live sources: end the stream after this long without a frame

    def validate(self) -> "StreamOptions":
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if (self.width is None) != (self.height is None):
            raise InputError(
                f"give both width and height or neither (got width={self.width}, height={self.height})"
            )
        if self.fps is not None and not self.fps > 0:
            raise InputError(f"fps must be > 0, got {self.fps!r}")
        if not isinstance(self.loop, int) or self.loop < -1:
            raise InputError(f"loop must be -1 (forever), 0 or a positive count, got {self.loop!r}")
        if not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise InputError(f"queue_size must be an integer >= 1, got {self.queue_size!r}")
        if self.drop not in DROP_POLICIES:
            raise InputError(f"drop policy {self.drop!r} is not one of {', '.join(DROP_POLICIES)}")
        if self.codec is not None and len(self.codec) != 4:
            raise InputError(f"codec must be a 4-character FourCC such as 'mp4v' or 'MJPG', got {self.codec!r}")
        for name in ("stats_every", "max_frames"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise InputError(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("open_timeout", "read_timeout"):
            v = getattr(self, name)
            if not v > 0:
                raise InputError(f"{name} must be > 0 seconds, got {v!r}")
        return self

    def replace(self, **changes: Any) -> "StreamOptions":
        return dataclasses.replace(self, **changes)

    # ---- CLI glue: the same fields as flags -------------------------------------------------
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, source: bool = True, output: bool = True):
        """Add the option set as flags (``--width``, ``--queue-size`` ...) to an argparse parser."""
        if source:
            g = parser.add_mutually_exclusive_group()
            g.add_argument("--camera", metavar="N", help="camera index (same as --source camera://N)")
            g.add_argument(
                "--source", "-i", metavar="URI",
                help="camera://N, /dev/videoN, csi://N, rtsp://..., http(s)://..., a GStreamer pipeline "
                "(with '!'), a video file, an image file, a folder of images or a glob",
            )
        if output:
            parser.add_argument(
                "--output", "-o", metavar="URI",
                help="display://, null://, a video file (.mp4/.avi/.mkv), an image folder, an image file "
                "('%%06d' pattern for sequences) or a GStreamer pipeline (default: null://)",
            )
            parser.add_argument("--display", action="store_true", help="also show the output in a window")
            parser.add_argument("--codec", metavar="FOURCC", help="output video FourCC (default: mp4v for .mp4, MJPG for .avi)")
        parser.add_argument("--width", type=int, help="requested capture width (cameras; other sources are resized)")
        parser.add_argument("--height", type=int, help="requested capture height")
        parser.add_argument("--fps", type=float, help="requested camera rate; playback rate of a file with --live; output video rate")
        parser.add_argument("--loop", type=int, default=0, help="play a file this many extra times (-1: forever)")
        live = parser.add_mutually_exclusive_group()
        live.add_argument("--live", dest="live", action="store_true", default=None,
                          help="treat the source as live: pace files at --fps and drop frames when behind")
        live.add_argument("--no-live", dest="live", action="store_false",
                          help="never drop frames, even from a camera")
        parser.add_argument("--queue-size", type=int, default=2, help="captured frames waiting for inference (default 2)")
        parser.add_argument("--drop", choices=DROP_POLICIES, default="auto",
                            help="when inference falls behind: drop the oldest or newest waiting frame, or never "
                            "(auto: oldest for live sources, never for files)")
        parser.add_argument("--stats-every", type=int, default=0, metavar="N", help="report stats every N output frames")
        parser.add_argument("--max-frames", type=int, default=0, metavar="N", help="stop after N frames (0: no limit)")
        parser.add_argument("--open-timeout", type=float, default=10.0, metavar="S",
                            help="seconds to open the source and read its first frame (default 10)")
        parser.add_argument("--read-timeout", type=float, default=5.0, metavar="S",
                            help="live sources: stop after this long without a frame (default 5)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "StreamOptions":
        kw = {}
        for f in dataclasses.fields(cls):
            if hasattr(args, f.name):
                kw[f.name] = getattr(args, f.name)
        camera = getattr(args, "camera", None)
        if camera is not None:
            camera = str(camera).strip()
            kw["source"] = f"camera://{camera}" if camera.isdigit() else camera  # also /dev/videoN, csi://N
        return cls(**kw).validate()
