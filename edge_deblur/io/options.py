"""One flat option set for sources, sinks and the streaming pipeline, shared by the CLI
(``edge-deblur stream``) and the Python API (``edge_deblur.io.open_source`` /
``edge_deblur.runtime.pipeline.run_stream``), in the spirit of jetson-utils'
videoSource/videoOutput."""
from __future__ import annotations

import argparse
import dataclasses
import numbers
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from ..errors import InputError

DROP_POLICIES = ("auto", "oldest", "newest", "never")
# --fps: one frame every 1000 s (a time lapse) up to a high-speed camera's 1000 frames per second.
# The video writer keeps rates in this range to 0.1 % or better (video_writer._rate); further out
# a rate was rounded to 0 and FFmpeg wrote 24 fps in its place.
FPS_RANGE = (0.001, 1000.0)
# frames in flight through the model where the backend has a slot pipeline (TensorRT, torch-cuda):
# 2 = double buffering. The runtime profiles' pipeline.slots defaults to the same value.
DEFAULT_SLOTS = 2


def check_slots_option(slots) -> Optional[int]:
    """``slots`` (None: the default) as given, or InputError naming the value and the way out."""
    if slots is None:
        return None
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise InputError(
            f"slots must be a whole number >= 1 (frames in flight through the model), got {slots!r}; use --slots 2 "
            "(double buffering on the TensorRT and torch-cuda backends, the default) or --slots 1 (one frame at a time)"
        )
    return slots


def check_fps(fps, what: str = "fps") -> float:
    """``fps`` as a float, or InputError naming the value and the accepted range. Any real number
    is a rate (int, float, NumPy scalars such as ``np.float32(30)``, Fraction); bools are not."""
    lo, hi = FPS_RANGE
    ok = isinstance(fps, numbers.Real) and not isinstance(fps, bool) and lo <= fps <= hi  # NaN fails too
    if not ok:
        raise InputError(
            f"{what} must be a finite number from {lo:g} to {hi:g} frames per second (e.g. 30), got {fps!r}; "
            "leave it out to keep the source's own rate and timing"
        )
    return float(fps)


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
    codec: Optional[str] = None           # output video codec: h264 (default; .avi: mjpeg), h264-420, hevc, mpeg4, mjpeg, ffv1
    quality: Optional[int] = None         # output video quality: CRF for h264/hevc (0 lossless..51), quantizer for mpeg4/mjpeg
    fragment_s: float = 2.0               # output video: a fragment (what survives a crash) at least every this many seconds
    stats_every: int = 0                  # report stats every N output frames (0: only at the end)
    max_frames: int = 0                   # stop after this many frames through the model (0: no limit)
    slots: Optional[int] = None           # frames in flight on a backend with a slot pipeline (TensorRT, torch-cuda);
                                          # None: DEFAULT_SLOTS (2, double buffering); 1: one frame at a time.
                                          # Other backends (ONNX Runtime, torch on the CPU) always run one at a time
    gpu_preprocess: Optional[bool] = None  # slot pipeline, tensorrt: convert/normalize/pad frames on the GPU. None: the
                                          # backend's default (GPU where NVRTC compiles the kernels, else the CPU with a
                                          # warning); True: the GPU kernels are required; False: on the CPU
    cuda_graphs: Optional[bool] = None    # slot pipeline, torch-cuda: replay the model call as a CUDA graph (stateless
                                          # models). None: the backend's default (off). Backends whose pipeline()
                                          # takes no such keyword ignore these two
    open_timeout: float = 10.0            # seconds to open a source and get its first frame
    read_timeout: float = 5.0             # live sources: a stall after this long without a frame (then reconnect)
    reconnect: int = 5                    # live sources: reconnect attempts after a stall or error (0: none, -1: forever)
    reconnect_delay: float = 0.5          # first wait before reconnecting; doubles after each failed attempt
    reconnect_max_delay: float = 30.0     # the longest wait between attempts

    def validate(self) -> "StreamOptions":
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise InputError(f"{_opt(name)} must be a positive integer, got {v!r}")
        if (self.width is None) != (self.height is None):
            raise InputError(
                f"give both width and height (--width, --height) or neither (got width={self.width}, height={self.height})"
            )
        if self.fps is not None:
            check_fps(self.fps)
        if not isinstance(self.loop, int) or self.loop < -1:
            raise InputError(f"{_opt('loop')} must be -1 (forever), 0 or a positive count, got {self.loop!r}")
        if not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise InputError(f"{_opt('queue_size')} must be an integer >= 1, got {self.queue_size!r}")
        if self.drop not in DROP_POLICIES:
            raise InputError(f"drop policy {self.drop!r} is not one of {', '.join(DROP_POLICIES)}")
        if self.codec is not None:
            from .video_writer import CODECS, ALIASES

            if str(self.codec).strip().lower() not in set(CODECS) | set(ALIASES):
                raise InputError(f"unknown video codec {self.codec!r}; use one of {', '.join(CODECS)} "
                                 "(FourCCs such as avc1, mp4v, MJPG are accepted too)")
        if self.quality is not None and (not isinstance(self.quality, int) or not 0 <= self.quality <= 51):
            raise InputError(f"{_opt('quality')} must be an integer from 0 (best) to 51, got {self.quality!r}")
        if not (isinstance(self.reconnect, int) and self.reconnect >= -1):
            raise InputError(f"{_opt('reconnect')} must be -1 (forever), 0 (never) or a count of attempts, got {self.reconnect!r}")
        for name in ("fragment_s", "reconnect_delay", "reconnect_max_delay"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and v < float("inf")):
                raise InputError(f"{_opt(name)} must be a finite number > 0 seconds, got {v!r}")
        for name in ("stats_every", "max_frames"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise InputError(f"{_opt(name)} must be an integer >= 0, got {v!r}")
        check_slots_option(self.slots)
        for name in ("gpu_preprocess", "cuda_graphs"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, bool):
                raise InputError(f"{name} must be true, false or None (the backend's default), got {v!r}")
        for name in ("open_timeout", "read_timeout"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v < float("inf")):
                raise InputError(f"{_opt(name)} must be a finite number > 0 seconds, got {v!r}")
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
                "--source", "-i", metavar="URI", action="append",
                help="camera://N, /dev/videoN, csi://N, rtsp://..., http(s)://..., a GStreamer pipeline "
                "(with '!'), a video file, an image file, a folder of images or a glob; repeat for several "
                "cameras in one process (batched through one model)",
            )
        if output:
            parser.add_argument(
                "--output", "-o", metavar="URI", action="append",
                help="display://, null://, a video file (.mp4/.avi/.mkv), an image folder, an image file "
                "('%%06d' pattern for sequences) or a GStreamer pipeline (default: null://); with several "
                "--source: one --output per source, or one with {i} or {name} in it",
            )
            parser.add_argument("--display", action="store_true", help="also show the output in a window")
            parser.add_argument("--codec", metavar="NAME",
                                help="output video codec: h264 (default; 4:4:4), h264-420 (plays everywhere), hevc, "
                                "mpeg4, mjpeg (default for .avi), ffv1 (lossless, .mkv/.avi); FourCCs such as avc1/mp4v work too")
            parser.add_argument("--quality", type=int, metavar="CRF",
                                help="output video quality: x264/x265 CRF, 0 = lossless in YUV (default 6 for h264), "
                                "or the quantizer for mpeg4/mjpeg (default 2)")
            parser.add_argument("--fragment-s", type=float, default=2.0, metavar="S",
                                help="output video: start a new fragment at least every S seconds; a crash keeps "
                                "everything up to the last fragment (default 2)")
        parser.add_argument("--width", type=int, help="requested capture width (cameras; other sources are resized)")
        parser.add_argument("--height", type=int, help="requested capture height")
        parser.add_argument("--fps", type=float, help="requested camera rate; playback rate of a file with --live; output video rate "
                            "(0.001 to 1000; without it a video keeps its source's frame times)")
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
        parser.add_argument("--slots", type=int, default=None, metavar="N",
                            help="frames in flight through the model on the TensorRT and torch-cuda backends (default "
                            f"{DEFAULT_SLOTS}: double buffering, upload/download of neighbouring frames overlap the model; "
                            "1: one frame at a time); other backends run one frame at a time")
        parser.add_argument("--open-timeout", type=float, default=10.0, metavar="S",
                            help="seconds to open the source and read its first frame (default 10)")
        parser.add_argument("--read-timeout", type=float, default=5.0, metavar="S",
                            help="live sources: a stall after this long without a frame (default 5); then reconnect")
        parser.add_argument("--reconnect", type=int, default=5, metavar="N",
                            help="live sources: reconnect attempts after a stall or error before giving up "
                            "(exit 4, stopped_by source_lost); 0: none, -1: forever (default 5)")
        parser.add_argument("--reconnect-delay", type=float, default=0.5, metavar="S",
                            help="first wait before reconnecting, doubled after each failure (default 0.5)")
        parser.add_argument("--reconnect-max-delay", type=float, default=30.0, metavar="S",
                            help="longest wait between reconnect attempts (default 30)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "StreamOptions":
        kw = {}
        for f in dataclasses.fields(cls):
            if hasattr(args, f.name):
                kw[f.name] = getattr(args, f.name)
        for name in ("source", "output"):  # repeated flags: a list; one flag: the value
            v = kw.get(name)
            if isinstance(v, list):
                kw[name] = v[0] if len(v) == 1 else v
        camera = getattr(args, "camera", None)
        if camera is not None:
            camera = str(camera).strip()
            number = re.fullmatch(r"[+-]?\d+", camera) is not None
            if number and int(camera) < 0:
                from .sources import cameras_hint

                raise InputError(
                    f"--camera {camera} is not a camera index: indexes count from 0 (the first camera); "
                    f"{cameras_hint()}; list the devices with `v4l2-ctl --list-devices` (or ls /dev/video*), "
                    "or give another source with --source URI (/dev/videoN, csi://N, rtsp://..., a file)"
                )
            # an index as a number ('+1' is camera 1, '-0' camera 0), else as given (/dev/videoN, csi://N)
            kw["source"] = f"camera://{int(camera)}" if number else camera
        return cls(**kw).validate()


def _opt(name: str) -> str:
    """An option as the API and the CLI both call it: ``queue_size (--queue-size)``."""
    return f"{name} (--{name.replace('_', '-')})"
