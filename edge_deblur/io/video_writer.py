"""Crash-safe video files through PyAV (its wheels bundle FFmpeg with libx264).

* Containers are written so that a killed process (SIGKILL, power loss) leaves a playable file up to
  the last completed fragment: MP4/MOV/M4V are *fragmented* (``movflags=frag_keyframe+
  delay_moov+default_base_moof``; a keyframe, hence a new fragment, at least every ``fragment_s``
  seconds of video time, also when the frame rate varies: frames timed by the source get an I-frame
  forced once ``fragment_s`` has passed since the last one, not every ``fps * fragment_s`` frames
  (FFV1 excepted: its encoder ignores forced frame types); the ``moov`` is written with the first
  fragment, so it holds the edit list that starts the video at its first frame: with ``empty_moov``
  it had none, and every video began H.264's B-frame delay, 2 frames, late), Matroska closes a
  cluster at least every ``fragment_s`` seconds, and the I/O buffer is flushed to the file after
  every packet, and ``fsync``-ed at every fragment start (at most one a ``fragment_s``, counted in
  video time).
* Every write error (a full disk, a vanished mount) is raised as ``SinkWriteError`` naming the
  file, the frame and what is safe on disk; nothing is ignored.
* Frames are timed by the source's presentation timestamps when it has them (``write(frame, t)``;
  MP4/MOV/Matroska; a variable frame rate video keeps its timing and duration), else at ``fps``.
  A forward jump in those times far above the recent frame step (more than ``DISCONTINUITY_RATIO``
  times the median of the last steps and more than ``DISCONTINUITY_MIN_S``, with the step after
  it back within that ratio: an MPEG-TS discontinuity, a camera that stalled) is taken as a break
  in the source's clock, not as one frame shown for the whole gap: it is logged (a warning the first
  time) and the video goes on one median step after the frame before. A timed frame is encoded
  when the next one arrives, to see that step. Frame steps that vary a few times over and changes
  of rate (30 fps, then one frame a second) are kept; a pause longer than both limits between
  frames at the usual rate (a screen recording that sat still for seconds) is shortened too.
* The default codec is H.264 (``libx264``) at a CRF where the encoder keeps the model's output
  (see docs/RELIABILITY.md for the measured PSNR against the model's own frames).

The writer does not rename anything: ``VideoSink`` writes to a hidden temp name of its own
(``.<name>.<pid>-<random>.partial<ext>``), verifies the finished file by demuxing it, and only then
renames it over the final name. The writer creates its file exclusively: it never truncates an
existing file (a crashed run's recoverable partial video, another process's file in progress).
"""
from __future__ import annotations

import errno
import logging
import os
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import DependencyError, SinkWriteError, SourceError
from .options import check_fps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Codec:
    name: str            # what users write (--codec)
    encoder: str         # FFmpeg encoder
    pix_fmt: str         # pixel format handed to the encoder
    quality_opt: str     # 'crf' (x264/x265: 0 lossless .. 51) or 'qscale' (mpeg4/mjpeg: 1 best .. 31)
    default_quality: int


# x264 at CRF 6 with 4:4:4 chroma keeps >= 45 dB against the model's frames (docs/RELIABILITY.md);
# 'h264-420' is the 4:2:0 variant every browser and phone plays (chroma subsampling caps it near 40 dB).
CODECS = {
    "h264": Codec("h264", "libx264", "yuv444p", "crf", 6),
    "h264-420": Codec("h264-420", "libx264", "yuv420p", "crf", 12),
    "hevc": Codec("hevc", "libx265", "yuv444p", "crf", 6),
    "mpeg4": Codec("mpeg4", "mpeg4", "yuv420p", "qscale", 2),
    "mjpeg": Codec("mjpeg", "mjpeg", "yuvj444p", "qscale", 2),
    "ffv1": Codec("ffv1", "ffv1", "bgr0", "", 0),
}
# x264/x265 speed preset. Measured (benchmarks/video_encode.py, docs/RELIABILITY.md): 'superfast'
# saves about a fifth of the CPU time of 'veryfast' at the same CRF but writes files 1.5x larger
X264_PRESET = "veryfast"
# FourCCs and other spellings people use for the same codecs
ALIASES = {
    "avc1": "h264", "h.264": "h264", "x264": "h264", "264": "h264", "avc": "h264",
    "h265": "hevc", "hvc1": "hevc", "hev1": "hevc", "x265": "hevc",
    "mp4v": "mpeg4", "fmp4": "mpeg4", "xvid": "mpeg4", "divx": "mpeg4",
    "mjpg": "mjpeg", "jpeg": "mjpeg",
}
DEFAULT_CODEC = {".mp4": "h264", ".m4v": "h264", ".mov": "h264", ".mkv": "h264", ".avi": "mjpeg"}
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
# containers that hold a time per frame (AVI has a frame rate only: it stays at the constant rate)
_TIMED_FORMATS = ("mp4", "mov", "matroska")
# the encoder's clock for frames timed by the source: fine enough for any source clock (a frame time
# is off by 1/120000 s at most, never accumulated), and within MPEG-4 Part 2's limit of 65535
TIMED_TIME_BASE = (1, 60000)
# a step between two timed frames above both of these (times the median of the last DISCONTINUITY_WINDOW
# steps, and seconds), with the step after it back under the ratio, is a discontinuity in the source's
# clock, not a frame that lasts the whole gap (steps that stay long are a change of frame rate)
DISCONTINUITY_RATIO = 10.0
DISCONTINUITY_MIN_S = 1.0
DISCONTINUITY_WINDOW = 31
DISCONTINUITY_MIN_STEPS = 4   # steps seen before a jump can be judged
# frames timed by the source: keyframes are forced by time (every fragment_s), the encoder's own GOP
# is this many times longer, a backstop that never comes first at the source's average rate
TIMED_GOP_FACTOR = 10
# encoders that make a frame handed to them as an I-frame a keyframe. FFV1 does not (its keyframes,
# where its context models restart, come every gop_size frames): it keeps the GOP of fps * fragment_s
# frames at the source's average rate, also for a timed video
_FORCES_KEYFRAMES = ("libx264", "libx265", "mpeg4", "mjpeg")
# libx265 (the build in PyAV's wheels) corrupts its heap on narrow frames and aborts the process.
# Measured through this writer (noise frames, yuv444p, preset veryfast, CRF 6): with glibc's malloc
# checks every width up to 48 aborts (16x16, 34x18, 40x24, 48x16, 48x48, 32x96, 48x96), every width
# from 49 up passes (49x49, 50x16, 56x16, 62x16, 64x16, 66x16, 96x54, 160x18); valgrind shows
# invalid writes in x265's lookahead (Lookahead::cuTree) at 48x96 and none at 50x16, 64x16 or
# 72x16. Frames under 16 rows are refused by x265 itself (EINVAL at open). The floor is one x265
# CTU wide, a margin above the last crashing width.
HEVC_MIN_SIZE = (64, 16)
# codecs each container can hold
_CONTAINER_CODECS = {
    "mp4": {"h264", "h264-420", "hevc", "mpeg4", "mjpeg"},
    "mov": {"h264", "h264-420", "hevc", "mpeg4", "mjpeg"},
    "matroska": set(CODECS),
    "avi": {"mjpeg", "mpeg4", "h264", "h264-420", "ffv1"},
}


def resolve_codec(name: Optional[str], ext: str) -> Codec:
    """A codec by name, FourCC or alias (case-insensitive), or the container's default."""
    if name is None:
        return CODECS[DEFAULT_CODEC.get(ext, "h264")]
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in CODECS:
        raise SourceError(
            f"unknown video codec {name!r}; use one of {', '.join(CODECS)} "
            f"(FourCCs such as avc1, mp4v, MJPG are accepted too)"
        )
    return CODECS[key]


def check_codec_name(name: Optional[str]) -> None:
    """Validate a codec name without a container (StreamOptions.validate)."""
    if name is not None:
        resolve_codec(name, ".mp4")


def _av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - a base dependency
        raise DependencyError(f"PyAV is not installed ({e}); pip install av") from e
    return av


def check_video_settings(ext: str, codec: Codec, quality: Optional[int] = None) -> tuple[str, int]:
    """``(container format, quality)`` for writing ``codec`` into a ``ext`` file; SourceError when
    the container cannot be written, cannot hold the codec, or the quality is out of the codec's
    range. Needs no frame (commands call it before a model loads)."""
    fmt = _FORMATS.get(ext)
    if fmt is None:
        raise SourceError(f"cannot write video container {ext!r}; write one of {', '.join(_FORMATS)}")
    if codec.name not in _CONTAINER_CODECS[fmt]:
        raise SourceError(
            f"a {ext} file cannot hold codec {codec.name!r}; use one of "
            f"{', '.join(sorted(_CONTAINER_CODECS[fmt]))} or another container"
        )
    q = codec.default_quality if quality is None else int(quality)
    if codec.quality_opt == "qscale" and not 1 <= q <= 31:
        raise SourceError(f"codec {codec.name!r} takes a quantizer from 1 (best) to 31 as quality, got {q}")
    return fmt, q


def check_frame_size(codec: Codec, w: int, h: int) -> None:
    """SourceError when ``codec`` cannot (or must not) encode ``w`` x ``h`` frames."""
    if codec.pix_fmt.startswith("yuv420") and (w % 2 or h % 2):
        raise SourceError(f"codec {codec.name!r} needs an even frame size, got {w}x{h}; use --codec h264")
    if codec.encoder == "libx265" and (w < HEVC_MIN_SIZE[0] or h < HEVC_MIN_SIZE[1]):
        raise SourceError(
            f"codec {codec.name!r} cannot encode {w}x{h} frames: libx265 crashes the process on frames "
            f"narrower than {HEVC_MIN_SIZE[0]} or shorter than {HEVC_MIN_SIZE[1]} pixels (an upstream bug); "
            f"use --codec h264 for frames this small, or a frame size of at least "
            f"{HEVC_MIN_SIZE[0]}x{HEVC_MIN_SIZE[1]}"
        )


def _open_file(path: Path):
    """The file object the container writes into (tests replace it to inject faults). Created
    exclusively: an existing file (a partial video kept from a crash) is never truncated."""
    return open(path, "xb")


def _describe_oserror(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "no space left on device"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


class VideoWriter:
    """Encode BGR uint8 frames into ``path`` (the temp file; the caller renames it)."""

    def __init__(self, path: Path, ext: str, codec: Codec, fps: float, quality: Optional[int] = None,
                 fragment_s: float = 2.0, opener: Optional[Callable] = None):
        self.path = Path(path)
        self.format, self.quality = check_video_settings(ext, codec, quality)
        self.codec = codec
        self.fps = check_fps(fps)
        self.fragment_s = float(fragment_s)
        self._opener = opener or _open_file
        self._file = None
        self._container = None
        self._stream = None
        self.size: Optional[tuple[int, int]] = None
        self.frames_encoded = 0
        self.packets_muxed = 0
        self.fragments = 0
        self._synced_at = 0
        self._synced_t = 0.0          # video time (s) of the keyframe at the last counted fragment
        self.kept_s = 0.0             # video time up to which complete fragments were written (the time
                                      # of the last keyframe muxed: the muxer wrote what came before it)
        self._gop = max(1, int(self.fps * self.fragment_s))
        self._force_keys = False      # timed: keyframes forced every fragment_s (open)
        self._key_pts: Optional[int] = None  # pts of the last I-frame forced
        self._steps: deque = deque(maxlen=DISCONTINUITY_WINDOW)  # recent frame steps, ticks
        self._skipped = 0             # ticks of source-clock discontinuities left out of the timeline
        self.discontinuities = 0
        self._pending: Optional[tuple] = None  # timed: (frame, t) waiting for the next frame's time
        self.timed = False            # frames timed by the source's timestamps (open(..., timed=True))
        self._tick = Fraction(1, 1)   # the encoder's time base, seconds per tick
        self._t0: Optional[float] = None
        self._last_pts: Optional[int] = None
        self._last_step: Optional[int] = None  # ticks between the last two frames
        self._durations: dict = {}    # pts -> ticks to the next frame, set when that frame arrives
        self._held: deque = deque()   # packets waiting for their frame's duration (the next frame's pts)

    # ---- opening -----------------------------------------------------------------------------
    def open(self, w: int, h: int, timed: bool = False):
        """Start the file for ``w`` x ``h`` frames. ``timed``: frames carry the source's timestamps
        (``write(frame, t)``), kept where the container holds them (MP4/MOV/Matroska, not AVI)."""
        av = _av()
        check_frame_size(self.codec, w, h)  # before the file exists: a refused size leaves nothing behind
        opts = {"flush_packets": "1"}
        if self.format in ("mp4", "mov"):
            opts["movflags"] = "frag_keyframe+delay_moov+default_base_moof"
            opts["frag_duration"] = str(int(self.fragment_s * 1e6))
        elif self.format == "matroska":
            opts["cluster_time_limit"] = str(int(self.fragment_s * 1000))
        try:
            self._file = self._opener(self.path)
        except FileExistsError as e:
            raise SinkWriteError(f"cannot create {str(self.path)!r}: a file of that name exists and is left "
                                 "as it is (it may hold a partial video of another run); run again") from e
        except OSError as e:
            raise SinkWriteError(f"cannot create {str(self.path)!r}: {_describe_oserror(e)}") from e
        try:
            self._container = av.open(self._file, "w", format=self.format, options=opts)
            rate = _rate(self.fps)
            s = self._container.add_stream(self.codec.encoder, rate=rate)
            s.width, s.height = w, h
            self.timed = bool(timed) and self.format in _TIMED_FORMATS
            # the encoder's clock: fine for the source's times, else one tick a frame (PyAV's default)
            self._tick = Fraction(*TIMED_TIME_BASE) if self.timed else 1 / rate
            s.codec_context.time_base = self._tick
            s.pix_fmt = self.codec.pix_fmt
            self._force_keys = self.timed and self.codec.encoder in _FORCES_KEYFRAMES
            gop = self._gop * TIMED_GOP_FACTOR if self._force_keys else self._gop
            s.codec_context.gop_size = gop
            copts = {}
            if self.codec.quality_opt == "crf":
                copts = {"crf": str(self.quality), "preset": X264_PRESET}
                if self.codec.encoder == "libx264":
                    # AVI cannot hold B-frame reordering: its timestamps came out of order
                    bframes = ":bframes=0" if self.format == "avi" else ""
                    copts["x264-params"] = f"keyint={gop}:min-keyint=1{bframes}"
                else:
                    copts["x265-params"] = f"keyint={gop}:log-level=error"
                copts["forced-idr"] = "1"  # a forced I-frame is an IDR: a fragment starts there
            elif self.codec.quality_opt == "qscale":
                copts = {"qmin": str(self.quality), "qmax": str(self.quality)}  # a fixed quantizer
            s.options = copts
            self._stream = s
        except SinkWriteError:
            raise
        except BaseException as e:
            self._abandon()
            raise SinkWriteError(
                f"cannot start a {self.codec.name} {self.format} video at {w}x{h} in {str(self.path)!r}: "
                f"{_describe_oserror(e)}"
            ) from e
        self.size = (w, h)

    # ---- writing -----------------------------------------------------------------------------
    def write(self, bgr: np.ndarray, t: Optional[float] = None):
        """Encode one frame; ``t``: its presentation time in seconds on the source's clock (used
        when the writer was opened ``timed``; the first frame is the video's start). A timed frame
        is encoded when the next one arrives (or at ``finish``): a jump in the times is told from a
        change of frame rate by the step after it."""
        av = _av()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        if not self.timed:
            self._encode(frame, t, None)
            return
        held, self._pending = self._pending, (frame, t)
        if held is not None:
            self._encode(held[0], held[1], t)

    def _encode(self, frame, t: Optional[float], t_next: Optional[float]):
        frame.pts = pts = self._next_pts(t, t_next)
        if self._force_keys and (self._key_pts is None
                           or (pts - self._key_pts) * self._tick >= self.fragment_s - float(self._tick) / 2):
            # a keyframe (a new fragment) at least every fragment_s of video time, whatever the rate
            frame.pict_type = _av().video.frame.PictureType.I
            self._key_pts = pts
        if self._last_pts is not None:
            self._durations[self._last_pts] = self._last_step = pts - self._last_pts
        self._last_pts = pts
        try:
            packets = self._stream.encode(frame)
            self._mux(packets)
        except BaseException as e:
            raise self._write_error(e, "writing frame %d" % self.frames_encoded) from e
        self.frames_encoded += 1

    def _step(self) -> int:
        """One frame at ``fps``, in encoder ticks."""
        return max(1, round(1 / (self.fps * self._tick)))

    def _next_pts(self, t: Optional[float], t_next: Optional[float] = None) -> int:
        """The frame's pts in encoder ticks: its time since the first frame (timed), else its
        index at ``fps``; always after the previous frame's. ``t_next``: the next frame's time (a
        discontinuity is a jump after which the frames come at the old rate again)."""
        step = self._step()
        if self._last_pts is None:
            self._t0 = t
            return 0
        if not self.timed:
            return self._last_pts + step
        if t is None or self._t0 is None:  # a frame without a time: one nominal frame on
            return self._last_pts + step
        pts = round((t - self._t0) / self._tick) - self._skipped
        gap = pts - self._last_pts
        if len(self._steps) >= DISCONTINUITY_MIN_STEPS and t_next is not None:
            median = int(np.median(self._steps))
            limit = DISCONTINUITY_RATIO * median
            next_gap = round((t_next - t) / self._tick)
            if (median > 0 and gap > limit and gap * self._tick > DISCONTINUITY_MIN_S
                    and 0 < next_gap <= limit):
                self._discontinuity(t, gap, median)
                self._skipped += gap - median
                pts = self._last_pts + median
                gap = median
        pts = max(self._last_pts + 1, pts)
        self._steps.append(max(1, gap))
        return pts

    def _discontinuity(self, t: float, gap: int, median: int):
        self.discontinuities += 1
        at = float(self._last_pts * self._tick)
        log.log(
            logging.WARNING if self.discontinuities == 1 else logging.DEBUG,
            "%s: the source's frame times jump by %.3f s after %.3f s of video (%.0fx the recent frame step of "
            "%.4f s; a stream discontinuity or a stalled source); the video goes on one frame step later instead "
            "of showing one frame for the whole gap%s", str(self.path), float(gap * self._tick), at,
            gap / median, float(median * self._tick),
            "" if self.discontinuities == 1 else " (jump %d)" % self.discontinuities,
        )

    def _mux(self, packets, last_duration: Optional[int] = None):
        """Mux encoded packets in order, each with its frame's duration (up to the next frame):
        a packet waits until that frame is known; ``last_duration`` ends the video (finish)."""
        self._held.extend(packets)
        while self._held:
            p = self._held[0]
            d = self._durations.pop(p.pts, last_duration) if p.pts is not None else 0
            if d is None:
                return
            if d:
                p.duration = d
            self._mux_packet(self._held.popleft())

    def _mux_packet(self, p):
        key_t = self._packet_time(p) if p.is_keyframe else None
        if key_t is not None and self.packets_muxed and self._fragment_due(key_t):
            self._sync()  # the previous fragment is complete: make it durable
            self._synced_at = self.packets_muxed
            self._synced_t = key_t
            self.fragments += 1
        self._container.mux(p)  # a keyframe ends the fragment before it: the muxer writes that out
        self.packets_muxed += 1
        if key_t is not None:
            self.kept_s = key_t

    def _packet_time(self, p) -> float:
        """A packet's presentation time in s from the video's start (its pts in encoder ticks)."""
        return float(p.pts * self._tick) if p.pts is not None else self.frames_encoded / self.fps

    def _fragment_due(self, key_t: float) -> bool:
        """A keyframe at ``key_t`` s starts a fragment to count (and fsync before): ``fragment_s`` of
        video time after the last counted one (timed), or ``fps * fragment_s`` packets (constant rate)."""
        if self.timed:
            return key_t - self._synced_t >= self.fragment_s - float(self._tick) / 2
        return self.packets_muxed - self._synced_at >= self._gop

    def _sync(self):
        f = self._file
        flush = getattr(f, "flush", None)
        if flush is not None:
            flush()
        fileno = getattr(f, "fileno", None)
        if fileno is not None:
            try:
                os.fsync(fileno())
            except (OSError, ValueError):
                pass

    def _write_error(self, e: BaseException, when: str) -> SinkWriteError:
        self._abandon()
        kept = (
            f"the frames up to the last fragment (about {round(self.kept_s, 1):g} s) are kept "
            f"in {str(self.path)!r}" if self.kept_s > 0 else f"nothing playable was written to {str(self.path)!r}"
        )
        return SinkWriteError(
            f"video write failed while {when}: {_describe_oserror(e)}; {kept}; "
            "free space or choose another --output and run again"
        )

    def finish(self):
        """Flush the encoder, close the container, fsync and close the file."""
        if self._container is None:
            return
        if self._pending is not None:
            frame, t = self._pending
            self._pending = None
            self._encode(frame, t, None)
        try:
            self._mux(self._stream.encode(None), last_duration=self._last_duration())
            self._container.close()
            self._container = None
            self._sync()
            self._file.close()
            self._file = None
        except BaseException as e:
            raise self._write_error(e, "finishing the file") from e

    def _last_duration(self) -> int:
        """The last frame lasts as long as the one before it (a timed video ends one frame
        interval after its last frame, as its source does), or one frame at ``fps``."""
        if self.timed and self._last_step:
            return self._last_step
        return self._step()

    def _abandon(self):
        """Drop the container without more writes (after an error); the file keeps what it has."""
        self._pending = None
        c, f = self._container, self._file
        self._container = self._file = None
        if c is not None:
            try:
                c.close()
            except BaseException:  # noqa: BLE001 - already failing; the first error is reported
                pass
        if f is not None:
            try:
                f.close()
            except BaseException:  # noqa: BLE001
                pass

    def abandon(self):
        self._abandon()


def _rate(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


def count_video_frames(path, decode: bool = False) -> int:
    """Frames in a video file: video packets when demuxing (fast), decoded frames with ``decode``.
    A file cut short (a crash, a full disk) counts up to its first damaged packet. Raises
    SourceError when the file cannot be opened as a video at all."""
    av = _av()
    try:
        c = av.open(str(path))
    except BaseException as e:  # noqa: BLE001 - av.error.* and OSError
        raise SourceError(f"{str(path)!r} is not a readable video: {e}") from e
    n = 0
    with c:
        if not c.streams.video:
            raise SourceError(f"{str(path)!r} holds no video stream")
        try:
            for packet in c.demux(video=0):
                if decode:
                    n += len(packet.decode())  # the final (empty) packet flushes the decoder
                elif packet.size:
                    n += 1
        except av.error.FFmpegError:
            pass  # damaged tail: what came before counts
    return n
