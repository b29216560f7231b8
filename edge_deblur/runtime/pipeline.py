"""The streaming pipeline: capture thread -> bounded queue -> preprocess -> inference -> 
postprocess + write, each stage in its own thread so that decoding, pre/post-processing and
writing overlap with inference (ONNX Runtime and OpenCV release the GIL).

::

    capture --[queue_size, drop policy]--> preprocess --[1 slot]--> infer --[2]--> postprocess + sinks

* Live sources (cameras, RTSP, GStreamer): when inference falls behind, the oldest waiting frame
  is dropped (latest-frame wins) and counted; the preprocess stage takes a new frame only once the
  model is free, so the frame that enters the model is the freshest one. Files: nothing is
  dropped, capture blocks, and the next frame is prepared while the current one is in the model.
* Output order is the capture order (every stage is a single FIFO worker).
* ``stop()`` ends capture and lets the frames already in flight finish (``stop(drain=False)``
  discards them); the sinks are always closed, so a video file is finalized. Signal handlers are
  the caller's business (the CLI installs them); the library only exposes ``stop()``.
* A source, model or output error ends the stream the same way: the frames already read are
  still deblurred and written (to the outputs that still work), then the error is raised; a live
  source that is lost ends with ``stopped_by: source_lost``. ``stats()`` carries the error.

Double buffering: when the processor's backend offers a slot pipeline (``backend.pipeline(slots=,
rgb=)``: TensorRT, torch-cuda; plus ``options.gpu_preprocess`` / ``options.cuda_graphs`` where
its ``pipeline()`` takes them), ``options.slots`` >= 2 (the default, 2) and no tiling is asked
for, the inference stage runs the backend's :class:`~.gpu_pipeline.SlotScheduler`: the infer
thread submits the raw uint8 frames, up to ``slots`` of them are in flight (frame N+1 uploads and
N-1 downloads while N computes), pre/post-processing happen inside the executor (on the GPU) and
the CPU preprocess/postprocess stages pass those frames through. Outputs come back in capture
order, each with its frame's metadata (a FIFO beside the scheduler); the frames in flight are
flushed at the end of the stream and on ``stop()``; each output is handed on as it is
collected, so a frame the executor refuses (the error) loses none of the frames before it. A
live stream takes a new frame whenever a slot is free (up to ``slots`` in flight, the freshest
capture each time) and collects the oldest in-flight frame when no frame is staged and none is
about to come (the capture queue is empty, or nothing arrived within about one frame interval),
so no output waits for the next capture. The executor reports whether each float output was
finite (``SlotExecutor.finite``: the CPU executor and TensorRT with CPU conversion on the host,
torch-cuda on the device, TensorRT's GPU conversion by a flag its NVRTC postprocess kernel sets)
and the Deblurrer's NaN/Inf guard counts it as on the
synchronous path (the input passes through; ``--max-bad-frames``; a recurrent state is reset);
outputs an executor cannot check are ``model_output.unchecked_frames``. A refused optimization
profile (TensorRT, ``ProfileInUseError``) is an error, not a fall back to one frame at a time, and so is
any error that is not an ``EdgeDeblurError`` (a CUDA out of memory): the outputs and the source are closed.
With ``options.gpu_preprocess=True`` (the GPU kernels are required) a slot pipeline the backend
refuses is an error too, naming the way out (None or False). A recurrent
model's state stays on the device; the first frame after a restart (a looped file, a reconnect)
resets it, and the scheduler's scene-cut detector uses the Deblurrer's threshold. A frame the
executor cannot take (not HxWx3 uint8) runs the synchronous stages after the frames in flight;
neither path's recurrent state carries across frames of the other (each starts afresh, ``size``).
Other backends (ONNX Runtime, torch on the CPU) and ``slots=1`` run one frame at a time as
below. ``stats()["schedule"]`` says which ran (``"slots"`` / ``"sync"``), ``["slots"]`` how many
slots the schedule has (1 for ``"sync"``) and ``["peak_in_flight"]`` how many frames were in
flight at most. Stage times on the slot schedule: ``stages.in_flight`` is each frame's time from
its submit to its collect (about ``slots`` model times when the slots are full: not the model's
time); ``stages.infer`` is the model's own time where the executor measures it
(``SlotExecutor.compute_ms``: the CPU executor times the backend call, TensorRT and torch-cuda
read a pair of CUDA timing events recorded around the model run on the slot's stream once the
frame's download is done; an executor without it leaves its slot frames out of ``infer``) plus
the frames that ran the synchronous stages.

The processor is a ``Deblurrer`` or any callable ``frame -> frame``. When it exposes the stages
separately (``preprocess(frame) -> (x, ctx)``, ``infer_tensor(x) -> y`` (or ``infer``),
``postprocess(y, ctx) -> frame``, as ``Deblurrer`` does)
they run in separate threads; otherwise the whole call counts as the ``infer`` stage.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Optional

import numpy as np

from ..metrics.latency import LatencyStats
from ..errors import EdgeDeblurError, InputError, ProfileInUseError, SourceLostError
from ..io.options import DEFAULT_SLOTS, StreamOptions
from ..io.redact import redact
from ..io.sinks import Sink, check_frames_fit, open_sink
from ..io.sources import Source, open_source

log = logging.getLogger(__name__)

STAGES = ("capture", "preprocess", "infer", "in_flight", "postprocess", "write", "latency")
_END = object()
_FINAL = object()  # the ctx of an output that is already a frame (the slot schedule post-processed it)


class StageTimes(LatencyStats):
    """Per-stage times of the pipeline, reported in pipeline order."""

    def summary(self) -> dict:
        return super().summary(order=STAGES)


class _Channel:
    """A bounded FIFO between two threads with a drop policy: 'never' (put blocks), 'oldest'
    (evict the oldest waiting item) or 'newest' (discard the incoming item). ``put`` returns how
    many items were dropped. ``close()`` appends the end marker regardless of capacity."""

    def __init__(self, maxsize: int, policy: str, abort: threading.Event, stop: Optional[threading.Event] = None):
        self.maxsize = maxsize
        self.policy = policy
        self._abort = abort
        self._stop = stop  # (the capture queue) set and empty: the end, even while a read still blocks
        self._q: deque = deque()
        self._cv = threading.Condition()

    def put(self, item) -> int:
        with self._cv:
            dropped = 0
            if len(self._q) >= self.maxsize:
                if self.policy == "never":
                    while len(self._q) >= self.maxsize and not self._abort.is_set():
                        self._cv.wait(0.1)
                    if self._abort.is_set():
                        return 0
                elif self.policy == "oldest":
                    self._q.popleft()
                    dropped = 1
                else:  # newest
                    return 1
            self._q.append(item)
            self._cv.notify_all()
            return dropped

    def close(self):
        with self._cv:
            self._q.append(_END)
            self._cv.notify_all()

    def get(self):
        with self._cv:
            while not self._q:
                if self._abort.is_set() or (self._stop is not None and self._stop.is_set()):
                    return _END
                self._cv.wait(0.1)
            if self._abort.is_set():
                return _END
            item = self._q.popleft()
            self._cv.notify_all()
            return item

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for an item; True when one is waiting (the end marker counts)."""
        deadline = time.perf_counter() + timeout
        with self._cv:
            while not self._q and not self._abort.is_set():
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cv.wait(left)
            return bool(self._q)

    def wake(self):
        with self._cv:
            self._cv.notify_all()

    def __len__(self):
        return len(self._q)


def _stage_api(proc) -> Optional[tuple[Callable, Callable, Callable]]:
    """``(preprocess, infer, postprocess)`` when the processor exposes its stages (a Deblurrer:
    ``preprocess``, ``infer_tensor``, ``postprocess``; or ``infer`` in place of ``infer_tensor``)."""
    pre, post = getattr(proc, "preprocess", None), getattr(proc, "postprocess", None)
    inf = getattr(proc, "infer_tensor", None) or getattr(proc, "infer", None)
    if callable(pre) and callable(inf) and callable(post):
        return pre, inf, post
    return None


def count_frame(processor) -> None:
    """``Deblurrer.frames``: one more frame through the model where the pipeline ran its stages
    (its own ``__call__`` counts there)."""
    if isinstance(getattr(processor, "frames", None), int):
        processor.frames += 1


def plan_schedule(processor, slots: Optional[int] = None) -> tuple[str, int, Optional[str]]:
    """``("slots", n, None)`` when ``processor`` (a Deblurrer) can run through its backend's slot
    pipeline with ``slots`` (None: the default, 2) frames in flight; otherwise ``("sync", 1, why)``."""
    n = DEFAULT_SLOTS if slots is None else int(slots)
    backend = getattr(processor, "backend", None)
    name = getattr(backend, "name", None) or type(backend).__name__
    if n < 2:
        return "sync", 1, f"slots={n}: one frame at a time"
    if backend is None or _stage_api(processor) is None:
        return "sync", 1, "the processor has no backend to double-buffer (not a Deblurrer)"
    if not callable(getattr(backend, "pipeline", None)):
        return "sync", 1, (f"the {name} backend has no slot pipeline (the tensorrt and torch-cuda backends have one); "
                           "it runs one frame at a time")
    if getattr(processor, "tile", None) is not None:
        return "sync", 1, "tiled frames (--tile) run one frame at a time"
    return "slots", n, None


SLOT_PIPELINE_OPTIONS = ("gpu_preprocess", "cuda_graphs")  # StreamOptions fields a backend's pipeline() may take


def slot_pipeline_options(backend, options: Optional[StreamOptions]) -> dict:
    """The keywords of ``options`` (``gpu_preprocess``, ``cuda_graphs``; None: left out, the
    backend's default) that ``backend.pipeline()`` accepts: the TensorRT backend takes
    ``gpu_preprocess``, torch-cuda ``cuda_graphs``; a pipeline() without them gets neither."""
    import inspect

    if options is None:
        return {}
    try:
        params = inspect.signature(backend.pipeline).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature: only slots and rgb
        return {}
    any_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kw = {}
    for name in SLOT_PIPELINE_OPTIONS:
        v = getattr(options, name, None)
        if v is None:
            continue
        if name in params or any_kw:
            kw[name] = v
        else:
            log.debug("%s=%s: the %s backend's slot pipeline has no such option", name, v,
                      getattr(backend, "name", type(backend).__name__))
    return kw


class _SlotRun:
    """The inference stage on the backend's slot scheduler (see the module docstring): raw frames
    in, output frames out, oldest first, each paired with its frame's metadata; the reasons the
    recurrent state was reset are counted as ``StreamState`` counts them. ``options`` (a
    StreamOptions) gives the pipeline's ``gpu_preprocess`` / ``cuda_graphs`` where the backend takes them."""

    def __init__(self, processor, slots: int, options: Optional[StreamOptions] = None):
        self.processor = processor
        backend = processor.backend
        self.sched = backend.pipeline(slots=slots, rgb=bool(getattr(processor, "rgb", False)),
                                      **slot_pipeline_options(backend, options))
        try:
            if hasattr(processor, "scene_cut"):  # the Deblurrer's threshold (None: off), not the scheduler's default
                self.sched.set_scene_cut(processor.scene_cut)
            self.slots = self.sched.slots
        except BaseException:  # the executor holds device resources (a TensorRT profile): free them
            try:
                self.sched.ex.close()
            except Exception as e:  # noqa: BLE001 - the first error is the one to report
                log.warning("closing the slot executor failed: %s", e)
            raise
        self.stride = int(getattr(processor, "stride", 1) or 1)
        self.meta: deque = deque()  # (meta, submit time, input frame) of the frames in flight, oldest first
        self.frames = 0
        self.unchecked = 0  # outputs collected whose finiteness the executor could not report
        self.peak_in_flight = 0  # the most frames in flight after a submit
        self._guard_failed = False  # the guard raised (max_bad_frames): the stream is ending
        self.resets: Counter = Counter()
        self._key = None
        self._fresh: Optional[str] = "start"  # the next frame starts a new state, counted under this reason

    @property
    def in_flight(self) -> int:
        return self.sched.in_flight

    @staticmethod
    def accepts(frame) -> bool:
        return isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3

    def warmup(self, height: int, width: int):
        """One black frame through the slots (allocations, kernels); the next frame starts afresh."""
        self.sched.submit(np.zeros((height, width, 3), np.uint8), reset=True)
        self.sched.flush()
        self._fresh, self._key = "start", None

    def fresh(self, reason: str):
        self._fresh = reason

    @property
    def full(self) -> bool:
        """Every slot holds a frame: collect the oldest before the next submit."""
        return self.sched.in_flight >= self.sched.slots

    def submit(self, frame: np.ndarray, meta) -> None:
        """Enqueue ``frame``. The caller frees a slot first (:meth:`collect` while :attr:`full`)
        and hands each output on as it comes, so a submit that fails loses no finished output."""
        if self.full:
            raise RuntimeError("no free slot: collect the oldest frame first")
        h, w = frame.shape[:2]
        key = (-(-h // self.stride), -(-w // self.stride))
        reason = ("restart" if getattr(meta, "restart", False) else self._fresh
                  or ("size" if self._key is not None and key != self._key else None))
        ready = self.sched.submit(frame, reset=reason is not None)
        if ready:  # cannot happen with a free slot; never drop an output silently
            raise RuntimeError(f"the slot scheduler collected {len(ready)} output(s) on a submit with a free slot")
        self.meta.append((meta, time.perf_counter(), frame))
        self._key, self._fresh = key, None
        self.frames += 1
        self.peak_in_flight = max(self.peak_in_flight, self.sched.in_flight)
        if reason is not None:
            self.resets[reason] += 1

    def collect(self):
        """``(meta, output, in-flight ms, compute ms)`` of the oldest frame in flight (its
        exception, if it failed): in flight from its submit to its collect (about ``slots`` model
        times when the slots are full), compute the model's own time where the executor measures it
        (``SlotExecutor.compute_ms``; None: it cannot). The output goes through the Deblurrer's NaN/Inf guard where the executor says
        whether the frame's float output was finite (``SlotScheduler.last_finite``): a bad output
        is counted, replaced by the input frame, resets a recurrent state before the next frame
        submitted, and fails the run (ModelError) after ``max_bad_frames`` in a row, as
        ``Deblurrer.infer_tensor`` does; an output the executor could not check is counted in
        :attr:`unchecked`."""
        meta, t0, frame = self.meta.popleft()  # with the frame: a failed frame takes its metadata along
        y = self.sched.collect_oldest()
        ms = (time.perf_counter() - t0) * 1e3
        compute_ms = getattr(self.sched, "last_compute_ms", None)
        finite = getattr(self.sched, "last_finite", None)
        record = getattr(getattr(self.processor, "guard", None), "record", None)
        if finite is None or record is None:
            self.unchecked += 1
        elif self._guard_failed:  # the frames still in flight after the run of bad outputs that ended it
            if not finite:
                y = frame  # not counted again: the error is already on its way
        else:
            try:
                ok = record(bool(finite))
            except BaseException:
                self._guard_failed = True
                raise
            finally:
                if not finite and self.sched.recurrent:
                    self.fresh("bad_output")  # the state on the device is poisoned too
            if not ok:
                y = frame  # the input passes through, as the synchronous path does
        count_frame(self.processor)
        return meta, y, ms, compute_ms

    def state_stats(self, sync: Optional[dict] = None) -> dict:
        """As ``Deblurrer.state_stats()``, for the frames that ran here plus ``sync`` (the
        Deblurrer's own, for frames that ran its synchronous stages)."""
        if not self.sched.recurrent:
            return sync or {"kind": "image"}
        from .stream_state import RESET_REASONS

        resets = Counter(self.resets)
        resets["scene_cut"] += self.sched.scene_cuts
        frames = self.frames
        if sync and sync.get("kind") == "recurrent":
            frames += int(sync.get("frames") or 0)
            resets.update({k: int(v) for k, v in (sync.get("resets") or {}).items()})
        return {"kind": "recurrent", "frames": frames, "resets": {r: int(resets.get(r, 0)) for r in RESET_REASONS},
                "scene_cuts": int(resets.get("scene_cut", 0)), "scene_cut_threshold": self.sched.scene_cut,
                "last_scene_score": self.sched.last_scene_score}

    def close(self):
        self.sched.ex.close()


class Pipeline:
    """Run ``processor`` over ``source`` into ``sinks`` with overlapped stages.

    ``source``: a ``Source`` or anything ``open_source`` takes (URI, path, camera index, iterable
    of frames). ``sinks``: a ``Sink``, URI, callable ``fn(frame, meta)``, or a list of them; ``None``
    takes ``options.output`` (plus a window when ``options.display``). ``on_stats(dict)`` is called
    every ``options.stats_every`` output frames; ``on_frame(frame, meta)`` after each write.

    >>> stats = Pipeline(deblurrer, "clip.mp4", "out.mp4").run()
    """

    def __init__(self, processor, source=None, sinks=None, options: Optional[StreamOptions] = None, *,
                 on_stats: Optional[Callable[[dict], Any]] = None,
                 on_frame: Optional[Callable[[np.ndarray, Any], Any]] = None,
                 warmup: bool = True, publish_incomplete: bool = True):
        if not callable(processor) and _stage_api(processor) is None:
            raise InputError(
                f"processor must be a Deblurrer or a callable frame -> frame, got {type(processor).__name__}"
            )
        self.options = (options or StreamOptions()).validate()
        self.processor = processor
        self._stages = _stage_api(processor)
        self._reset = getattr(processor, "reset", None) if callable(getattr(processor, "state_stats", None)) else None
        self.on_stats = on_stats
        self.on_frame = on_frame
        self.schedule, self.slots, self.schedule_reason = plan_schedule(processor, self.options.slots)
        if self.schedule == "sync" and (self.options.slots or 0) >= 2:  # asked for explicitly: say why not
            log.info("slots=%d: %s", self.options.slots, self.schedule_reason)
        self._slot_run: Optional[_SlotRun] = None
        self._infer_busy_ms = 0.0  # slot schedule: time the infer thread waited on the device
        self._do_warmup = warmup
        # False: a run that ends early (signal, error) leaves video outputs under their hidden
        # partial name instead of publishing a truncated file under the final name (deblur of files)
        self.publish_incomplete = publish_incomplete
        self._own_source = not isinstance(source, Source)
        self.source: Source = open_source(source if source is not None else self.options.source, self.options)
        self.sinks: list[Sink] = []
        try:
            for spec in self._sink_specs(sinks):
                self.sinks.append(open_sink(spec, self.options, fps=self.source.fps))
            check_frames_fit(self.sinks, self.source, self.options)  # many frames into one image: refused first
        except BaseException:
            for s in self.sinks:
                s.close()
            if self._own_source:
                self.source.close()
            raise
        self.live = self.source.live
        drop = self.options.drop
        if drop == "auto":
            drop = "oldest" if self.live else "never"
        self.drop_policy = drop
        self.times = StageTimes()
        self._abort = threading.Event()       # discard everything in flight and exit
        self._stop_capture = threading.Event()  # end capture; in-flight frames finish
        self._lock = threading.Lock()
        self._error: Optional[BaseException] = None
        self._threads: list[threading.Thread] = []
        self._frames_in = 0       # captured, including frames read ahead and never used
        self._taken = 0           # taken from the capture queue into the model's sequence
        self._processed = 0       # through the model
        self._frames_out = 0
        self._dropped = 0
        self._t_start: Optional[float] = None
        self._t_first_out: Optional[float] = None
        self._t_last_out: Optional[float] = None
        self._t_end: Optional[float] = None
        self._last_report = (0, 0.0)
        self.stopped_by: Optional[str] = None
        self._writer_thread: Optional[threading.Thread] = None
        self._failed_sinks: list[Sink] = []
        self._result: Optional[dict] = None
        self._started = False
        self._torn_down = False  # _launch failed and closed the sinks and source (_close_unstarted)
        self.announce_schedule = False  # log the schedule at INFO once it is built (the stream CLI sets it)

    def _sink_specs(self, sinks) -> list:
        if sinks is None:
            specs = [self.options.output] if self.options.output is not None else []
            if self.options.display:
                specs.append("display://")
            return specs or ["null://"]
        if isinstance(sinks, (list, tuple)):
            return list(sinks)
        return [sinks]

    # ---- control -----------------------------------------------------------------------------
    def stop(self, drain: bool = True, reason: str = "stop"):
        """End the stream: capture stops; with ``drain`` the frames in flight are finished,
        without it they are discarded. Safe to call from a signal handler or another thread."""
        if self.stopped_by is None:
            self.stopped_by = reason
        self._stop_capture.set()
        self.source.interrupt()
        if not drain:
            self._abort.set()

    def _fail(self, e: BaseException, drain: bool = False):
        """Record the first error and end the stream; with ``drain`` the frames already read are
        still deblurred and written (a source that failed, a model that failed on one frame)."""
        with self._lock:
            if self._error is None:
                self._error = e
        if self.stopped_by is None:
            self.stopped_by = "source_lost" if isinstance(e, SourceLostError) else "error"
        self._stop_capture.set()
        if not drain:
            self._abort.set()

    # ---- threads -----------------------------------------------------------------------------
    def _capture_loop(self):
        try:
            while not self._stop_capture.is_set():
                item = self.source.read()
                if item is None:
                    if self.stopped_by is None:
                        self.stopped_by = "end"
                    break
                frame, meta = item
                self.times.add("capture", meta.capture_ms)
                with self._lock:
                    self._frames_in += 1
                d = self._cap_q.put(item)
                if d:
                    with self._lock:
                        self._dropped += d
        except BaseException as e:  # noqa: BLE001
            self._fail(e, drain=True)  # the frames already read are still written
        finally:
            self._cap_q.close()

    def _pre_loop(self):
        taken = 0
        max_frames = self.options.max_frames
        try:
            while True:
                while not self._slot.acquire(timeout=0.1):
                    if self._abort.is_set():
                        return
                item = self._cap_q.get()
                if item is _END or self._abort.is_set():
                    return
                frame, meta = item
                with self._lock:
                    self._taken += 1
                if self._stages is not None and self._slot_run is None:
                    t0 = time.perf_counter()
                    x, ctx = self._stages[0](frame)
                    self.times.add("preprocess", (time.perf_counter() - t0) * 1e3)
                    self._infer_q.put((meta, x, ctx))
                else:
                    self._infer_q.put((meta, frame, None))
                taken += 1
                if max_frames and taken >= max_frames:
                    if self.stopped_by is None:
                        self.stopped_by = "max_frames"
                    self._stop_capture.set()
                    return
        except BaseException as e:  # noqa: BLE001
            self._fail(e)
        finally:
            self._infer_q.close()

    def _infer_loop(self):
        try:
            while True:
                item = self._infer_q.get()
                if not self.live:
                    self._slot.release()  # files: prepare the next frame while this one computes
                if item is _END or self._abort.is_set():
                    return
                meta, x, ctx = item
                if getattr(meta, "restart", False) and self._reset is not None:
                    self._reset("restart")  # a recurrent model's state belongs to the previous pass
                t0 = time.perf_counter()
                y = self._stages[1](x) if self._stages is not None else self.processor(x)
                self.times.add("infer", (time.perf_counter() - t0) * 1e3)
                if self._stages is not None:
                    count_frame(self.processor)
                with self._lock:
                    self._processed += 1
                if self.live:
                    self._slot.release()  # live: the next frame is picked once the model is free
                self._out_q.put((meta, y, ctx))
        except BaseException as e:  # noqa: BLE001
            self._fail(e, drain=True)  # frames the model already finished are still written
        finally:
            self._slot.release()
            self._out_q.close()

    def _emit(self, meta, frame, infer_ms: Optional[float] = None, in_flight_ms: Optional[float] = None):
        """Hand a finished output frame (slot schedule) to the writer: ``infer_ms`` the model's
        time where it was measured, ``in_flight_ms`` a slot frame's time from submit to collect."""
        if infer_ms is not None:
            self.times.add("infer", infer_ms)
        if in_flight_ms is not None:
            self.times.add("in_flight", in_flight_ms)
        with self._lock:
            self._processed += 1
        self._out_q.put((meta, frame, _FINAL))

    def _slot_collect(self, run: "_SlotRun"):
        t0 = time.perf_counter()
        try:
            meta, y, in_flight_ms, compute_ms = run.collect()
        finally:
            self._infer_busy_ms += (time.perf_counter() - t0) * 1e3
            if self.live:
                self._slot.release()  # live: a slot is free, the preprocess stage may take the freshest frame
        self._emit(meta, y, compute_ms, in_flight_ms)

    def _next_frame_soon(self) -> bool:
        """Live slot schedule, no frame staged: True when one arrives within about one frame
        interval (the capture queue holds one, so the preprocess stage is moving it on)."""
        if not len(self._cap_q):
            return False  # none captured: the next comes at the camera's pace, hand the oldest output on now
        fps = getattr(self.source, "fps", None)
        wait = 1.0 / fps if isinstance(fps, (int, float)) and fps > 0 else 0.02
        return self._infer_q.wait(min(0.05, max(0.002, wait)))

    def _infer_loop_slots(self):
        """The infer stage on the backend's slot scheduler (see the module docstring)."""
        run = self._slot_run
        slot_frames_at_sync = 0  # run.frames at the last frame that ran the synchronous stages
        try:
            while True:
                if self.live and run.in_flight and not len(self._infer_q) and not self._abort.is_set():
                    # no frame staged: collect the oldest now unless the next frame is about to come
                    # (then it is submitted first, and uploads while the frames in flight compute)
                    if run.full or not self._next_frame_soon():
                        self._slot_collect(run)  # an output is not held back until the next capture
                        continue
                item = self._infer_q.get()
                if not self.live:
                    self._slot.release()  # files: the next frame is fetched while these are in flight
                if item is _END or self._abort.is_set():
                    return
                meta, frame, _ = item
                if run.accepts(frame):
                    while run.full:  # free a slot, each output handed on as it comes: a failing submit loses none
                        self._slot_collect(run)
                    t0 = time.perf_counter()
                    try:
                        run.submit(frame, meta)
                    except BaseException:
                        if self.live:
                            self._slot.release()  # the frame failed: it holds no slot
                        raise
                    finally:
                        self._infer_busy_ms += (time.perf_counter() - t0) * 1e3
                else:  # a frame the executor does not take (uint16, gray, BGRA): the synchronous stages, in order
                    while run.in_flight:
                        self._slot_collect(run)
                    if run.frames != slot_frames_at_sync and self._reset is not None:
                        # slot frames ran since this path's last frame: its state belongs to an older frame
                        self._reset("size")
                    slot_frames_at_sync = run.frames
                    if getattr(meta, "restart", False) and self._reset is not None:
                        self._reset("restart")
                    pre, inf, post = self._stages
                    t0 = time.perf_counter()
                    try:
                        x, ctx = pre(frame)
                        t1 = time.perf_counter()
                        y = inf(x)
                    finally:
                        if self.live:
                            self._slot.release()
                    t2 = time.perf_counter()
                    self.times.add("preprocess", (t1 - t0) * 1e3)
                    self._infer_busy_ms += (t2 - t0) * 1e3
                    count_frame(self.processor)
                    frame_out = post(y, ctx)
                    self.times.add("postprocess", (time.perf_counter() - t2) * 1e3)
                    self._emit(meta, frame_out, (t2 - t1) * 1e3)
                    run.fresh("size")  # the state on the device does not carry across the other path
        except BaseException as e:  # noqa: BLE001
            self._fail(e, drain=True)  # frames the model already finished are still written
        finally:
            try:
                while run.in_flight and not self._abort.is_set():  # the end, stop() or an error: flush
                    try:
                        self._slot_collect(run)
                    except BaseException as e:  # noqa: BLE001 - that frame is lost; the others still come
                        self._fail(e, drain=True)
            finally:
                try:
                    run.close()
                except BaseException as e:  # noqa: BLE001
                    self._fail(e, drain=True)
                self._slot.release()
                self._out_q.close()

    def _write_loop(self):
        every = self.options.stats_every
        try:
            while True:
                item = self._out_q.get()
                if item is _END or self._abort.is_set():
                    break
                meta, y, ctx = item
                if ctx is _FINAL:
                    frame = y
                elif self._stages is not None:
                    t0 = time.perf_counter()
                    frame = self._stages[2](y, ctx)
                    self.times.add("postprocess", (time.perf_counter() - t0) * 1e3)
                else:
                    frame = y
                t0 = time.perf_counter()
                if not self._write_sinks(frame, meta):
                    break
                now = time.perf_counter()
                self.times.add("write", (now - t0) * 1e3)
                self.times.add("latency", (now - meta.timestamp) * 1e3)
                with self._lock:
                    self._frames_out += 1
                    n = self._frames_out
                    if self._t_first_out is None:
                        self._t_first_out = now
                    self._t_last_out = now
                if self.on_frame is not None:
                    self.on_frame(frame, meta)
                if any(s.wants_stop for s in self.sinks):
                    self.stop(reason="sink")
                if every and n % every == 0 and self.on_stats is not None:
                    self.on_stats(self._interval_stats(n, now))
        except BaseException as e:  # noqa: BLE001
            self._fail(e)

    def _write_sinks(self, frame, meta) -> bool:
        """Write to every sink that has not failed. A failing sink is dropped and the stream ends
        (its error is raised at the end); the frames in flight still go to the other sinks.
        False when no sink is left."""
        for sink in self.sinks:
            if sink in self._failed_sinks:
                continue
            try:
                sink.write(frame, meta)
            except Exception as e:  # noqa: BLE001 - KeyboardInterrupt etc. end the loop
                self._failed_sinks.append(sink)
                log.error("output %s failed: %s", sink.uri, e)
                self._fail(e, drain=True)
        return len(self._failed_sinks) < len(self.sinks)

    # ---- running -----------------------------------------------------------------------------
    def _warmup(self):
        """One untimed pass at the source's frame size, so that the first timed frame does not pay
        for the backend's allocations; a recurrent processor's state is reset afterwards."""
        if not self._do_warmup or self.source.size is None:
            return
        w, h = self.source.size
        if self._slot_run is not None:
            self._slot_run.warmup(h, w)  # the slots' own buffers and context; the sync path is not used
            return
        fn = getattr(self.processor, "warmup", None)
        if callable(fn):
            fn(h, w)
            return
        frame = np.zeros((h, w, 3), np.uint8)
        if self._stages is not None:
            x, ctx = self._stages[0](frame)
            self._stages[2](self._stages[1](x), ctx)
        else:
            self.processor(frame)
        reset = getattr(self.processor, "reset", None)
        if callable(reset):
            reset()

    def _launch(self):
        if self._started:
            raise RuntimeError("a Pipeline runs once; make a new one")
        self._started = True
        if self.schedule == "slots":
            try:
                self._slot_run = _SlotRun(self.processor, self.slots, self.options)
            except ProfileInUseError:
                # the synchronous path runs the backend's own context on profile 0, which an open
                # pipeline of the backend holds: no fall back, the error names the way out
                self._close_unstarted()
                raise
            except EdgeDeblurError as e:
                if self.options.gpu_preprocess is True and "gpu_preprocess" in slot_pipeline_options(
                        getattr(self.processor, "backend", None), self.options):
                    # True: the GPU kernels are required; one frame at a time would convert on the CPU
                    self._close_unstarted()
                    raise type(e)(f"{e}; gpu_preprocess=True requires the slot pipeline's GPU kernels: use "
                                  "gpu_preprocess=None (the GPU where they build, else the CPU) or False "
                                  "(the CPU)") from e
                self.schedule, self.slots = "sync", 1
                self.schedule_reason = f"the slot pipeline could not be made ({e}); one frame at a time"
                log.warning("%s", self.schedule_reason)
            except BaseException:  # not a refusal (a CUDA out of memory, a bug): no fall back, nothing left open
                self._close_unstarted()
                raise
        if self.announce_schedule:  # the schedule that runs (after a fall back), not the one planned
            log.info("%s", f"schedule slots: {self.slots} frames in flight (double buffering)" if self.schedule == "slots"
                     else "schedule sync: one frame at a time")
        try:
            self._warmup()
        except BaseException:
            if self._slot_run is not None:
                self._slot_run.close()
            self._close_unstarted()
            raise
        self._cap_q = _Channel(self.options.queue_size, self.drop_policy, self._abort, stop=self._stop_capture)
        self._infer_q = _Channel(1, "never", self._abort)
        self._out_q = _Channel(2, "never", self._abort)
        # frames the preprocess stage may take ahead of the model: files one (the next frame is ready
        # when the model takes it); live one per slot of the slot schedule (a frame is taken when a
        # slot is free, so the freshest one enters the model), one frame at a time otherwise
        self._slot = threading.Semaphore(self._slot_run.slots if self.live and self._slot_run is not None else 1)
        self._t_start = time.perf_counter()
        infer = self._infer_loop_slots if self._slot_run is not None else self._infer_loop
        for name, fn in (("capture", self._capture_loop), ("preprocess", self._pre_loop), ("infer", infer)):
            t = threading.Thread(target=fn, name=f"edge-deblur-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _close_unstarted(self):
        """The run failed before its threads started: close the sinks (a video under its partial
        name where incomplete runs are not published) and a source opened here."""
        self._torn_down = True
        if self.stopped_by is None:
            self.stopped_by = "error"
        for s in self.sinks:
            try:
                if not self.publish_incomplete and hasattr(s, "abandon"):
                    s.abandon("the run failed before its first frame")
                else:
                    s.close()
            except Exception as e:  # noqa: BLE001 - the launch error is the one to report
                log.warning("closing output %s failed: %s", s.uri, e)
        if self._own_source:
            self.source.close()

    def _finish(self) -> dict:
        # capture may sit in a blocking read (a camera between frames): give it a bounded wait
        self._stop_capture.set()
        self._abort.set()  # the writer is done: nothing in flight is wanted any more
        self.source.interrupt()
        for ch in (self._cap_q, self._infer_q, self._out_q):
            ch.wake()
        cap, others = self._threads[0], self._threads[1:]
        for t in others:
            t.join(timeout=30)
        cap.join(timeout=self.options.read_timeout + 1.0)
        errors = []
        complete = self.stopped_by in ("end", "max_frames", "sink")
        for s in self.sinks:
            try:
                if not complete and not self.publish_incomplete and hasattr(s, "abandon"):
                    s.abandon(f"the run ended early ({self.stopped_by})")
                else:
                    s.close()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
        if self._own_source:
            if cap.is_alive():
                log.warning("the source is still blocked in a read; leaving it to the process exit")
            else:
                self.source.close()
        self._t_end = time.perf_counter()
        self._result = self.stats()
        if self._error is not None:
            raise self._error
        if errors:
            raise errors[0]
        return self._result

    def run(self) -> dict:
        """Run to the end (or ``stop()``) in the calling thread (the writer stage runs here, so a
        display window lives in the main thread); return the final stats."""
        self._launch()
        try:
            self._write_loop()
        except BaseException as e:  # KeyboardInterrupt without the CLI's handlers
            self._fail(e)
        return self._finish()

    def start(self) -> "Pipeline":
        """Run in the background; ``join()`` waits and returns the stats."""
        self._launch()
        self._writer_thread = threading.Thread(target=self._write_loop, name="edge-deblur-write", daemon=True)
        self._writer_thread.start()
        return self

    def join(self, timeout: Optional[float] = None) -> Optional[dict]:
        if self._writer_thread is None:
            raise RuntimeError("join() needs start()")
        self._writer_thread.join(timeout)
        if self._writer_thread.is_alive():
            return None
        if self._result is None:
            return self._finish()
        return self._result

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self._started:
            for s in self.sinks:
                s.close()
            if self._own_source:
                self.source.close()
        elif self._result is None and not self._torn_down:
            self.stop(drain=False)
            if self._writer_thread is not None:
                self.join()
        return False

    # ---- stats -------------------------------------------------------------------------------
    def stats(self) -> dict:
        """A snapshot: counts, FPS, end-to-end latency percentiles and per-stage percentiles (ms)."""
        with self._lock:
            # read = frames the stream used or dropped; frames the capture thread read ahead
            # and left unused when the stream stopped (--max-frames, Ctrl-C) are not counted
            fout, dropped, processed = self._frames_out, self._dropped, self._processed
            fin = self._taken + dropped
            t_first, t_last = self._t_first_out, self._t_last_out
        now = self._t_end or time.perf_counter()
        elapsed = (now - self._t_start) if self._t_start else 0.0
        active = ((t_last or now) - self._t_start) if self._t_start else 0.0
        stages = self.times.summary()
        run = self._slot_run
        lat = stages.get("latency", self.times.percentiles("latency"))
        size = self.source.size
        out = {
            "fps": round(fout / active, 3) if active > 0 and fout else 0.0,
            "fps_steady": round((fout - 1) / (t_last - t_first), 3) if fout > 1 and t_last > t_first else None,
            "frames_in": fin,          # = read
            "frames_processed": processed,
            "frames_out": fout,        # = written
            "dropped": dropped,
            "elapsed_s": round(elapsed, 3),
            # share of the streaming time the model was busy: < 1 means inference waited for frames
            # (slot schedule: the time the infer thread waited on the device)
            "infer_utilization": round(min(1.0, (self._infer_busy_ms if self._slot_run is not None
                                                 else self.times.total_ms("infer")) / (active * 1e3)), 3)
            if active > 0 else None,
            "latency_ms_p50": lat["p50"],
            "latency_ms_p95": lat["p95"],
            "latency_ms_p99": lat["p99"],
            "stages": {k: v for k, v in stages.items() if k != "latency"},
            "live": self.live,
            "drop_policy": self.drop_policy,
            "schedule": self.schedule,  # "slots": the backend's double-buffered slot pipeline; "sync": one at a time
            "slots": self.slots,        # the schedule's slots (the count configured; 1 for "sync")
            # frames in flight through the model at most (a live source slower than the model keeps fewer)
            "peak_in_flight": max(run.peak_in_flight if run is not None else 0, 1 if processed else 0),
            "schedule_reason": self.schedule_reason,  # why "sync" (None for "slots")
            "size": f"{size[0]}x{size[1]}" if size else None,
            "source": self.source.describe(),
            "outputs": [s.describe() for s in self.sinks],
            "stopped_by": self.stopped_by,
            "error": redact(str(self._error)) if self._error is not None else None,
        }
        state_stats = getattr(self.processor, "state_stats", None)
        if callable(state_stats):  # image or recurrent model; resets of the state by reason, scene cuts
            out["state"] = state_stats() if run is None else run.state_stats(state_stats())
        elif run is not None:
            out["state"] = run.state_stats()
        guard = getattr(self.processor, "guard_stats", None)
        if callable(guard):
            out["model_output"] = guard()
            if run is not None:  # outputs of the slot pipeline whose executor could not report NaN/Inf
                out["model_output"]["unchecked_frames"] = run.unchecked
        return out

    def _interval_stats(self, n: int, now: float) -> dict:
        s = self.stats()
        n0, t0 = self._last_report
        t0 = t0 or self._t_start
        s["interval_fps"] = round((n - n0) / (now - t0), 3) if now > t0 else None
        self._last_report = (n, now)
        return s


def format_stats(s: dict) -> str:
    """One human-readable line of a stats dict."""
    def ms(v):
        return "-" if v is None else f"{v:.1f}"

    parts = [
        f"frames read {s['frames_in']} processed {s.get('frames_processed', s['frames_out'])} "
        f"dropped {s['dropped']} written {s['frames_out']}",
        f"fps {s.get('interval_fps') or s['fps']:.2f}",
        f"latency p50 {ms(s['latency_ms_p50'])} p99 {ms(s['latency_ms_p99'])} ms",
    ]
    st = s.get("stages", {})
    stage_txt = " ".join(f"{k} {ms(v['p50'])}" for k, v in st.items() if v.get("count"))
    if stage_txt:
        parts.append(f"stage p50 ms: {stage_txt}")
    return " | ".join(parts)


def open_processor(model=None, backend=None, rgb: bool = False, **kwargs):
    """The default processor: ``Deblurrer.open(model, backend=..., rgb=...)``."""
    from .deblurrer import Deblurrer  # no torch on this path

    return Deblurrer.open(model, backend=backend, rgb=rgb, **kwargs)


def _frame_list(x) -> bool:
    """A list/tuple of frames (arrays or (array, name) pairs): one Python source, not several cameras."""
    first = x[0] if len(x) else None
    return isinstance(first, np.ndarray) or (isinstance(first, tuple) and len(first) == 2
                                             and isinstance(first[0], np.ndarray))


def run_stream(options: StreamOptions, processor=None, *, source: Optional[Source] = None,
               sinks: Optional[list] = None, on_stats=None, on_frame=None, model=None, backend=None,
               pipeline_hook: Optional[Callable[["Pipeline"], Any]] = None) -> dict:
    """Open ``options.source`` and ``options.output`` (+ a window with ``options.display``), run
    to the end, close everything, return the final stats.

    Without ``processor`` the bundled model (or ``model``) is opened with ``Deblurrer.open`` after
    the source and sinks, so a bad URI or output path fails before a model loads (and closed at
    the end). ``source``/``sinks`` may be passed already opened. ``pipeline_hook(pipeline)`` runs
    before the stream starts (the CLI uses it to route SIGINT/SIGTERM to ``pipeline.stop()``)."""
    options.validate()
    if isinstance(options.source, (list, tuple)) and source is None and not _frame_list(options.source):
        shown = ", ".join(repr(x) if isinstance(x, (str, int)) else type(x).__name__ for x in options.source[:4])
        raise InputError(
            f"run_stream runs one source, got {len(options.source)}: [{shown}{', ...' if len(options.source) > 4 else ''}]; "
            "for several cameras use edge_deblur.MultiCamera(deblurrer, sources, outputs).run() "
            "(CLI: --source A --source B)")
    if processor is not None and getattr(processor, "rgb", options.rgb) != options.rgb:
        for opened_already in [source, *(sinks or [])]:   # as every other failure here: nothing left open
            if opened_already is not None and hasattr(opened_already, "close"):
                opened_already.close()
        raise InputError(
            f"StreamOptions(rgb={options.rgb}) but the processor was opened with rgb={processor.rgb}: the frames would "
            f"reach the model with their channels swapped; open it with Deblurrer.open(..., rgb={options.rgb}), or set "
            f"StreamOptions(rgb={processor.rgb})")
    own_processor = processor is None
    opened: list[Sink] = []
    try:
        if source is None:
            source = open_source(options.source, options)
        if sinks is None:
            specs = [options.output] if options.output is not None else []
            if options.display:
                specs.append("display://")
            for spec in specs or ["null://"]:
                opened.append(open_sink(spec, options, fps=source.fps))
            sinks = opened
        if own_processor:
            processor = open_processor(model, backend, options.rgb)
        pipe = Pipeline(processor, source, list(sinks), options, on_stats=on_stats, on_frame=on_frame)
    except BaseException:
        for s in (sinks or []):
            s.close()
        if source is not None:
            source.close()
        if own_processor and processor is not None and hasattr(processor, "close"):
            processor.close()
        raise
    pipe._own_source = True
    if pipeline_hook is not None:
        pipeline_hook(pipe)
    try:
        with pipe:
            return pipe.run()
    finally:
        if own_processor and hasattr(processor, "close"):
            processor.close()


def deblur_video(deblurrer, src_path, dst_path, *, options: Optional[StreamOptions] = None,
                 progress: bool = False, on_stats=None,
                 pipeline_hook: Optional[Callable[["Pipeline"], Any]] = None) -> dict:
    """Deblur one video file into another (or into an image folder / any sink URI) through the
    streaming pipeline: nothing is dropped, order is kept. A run that ends early (Ctrl-C,
    SIGTERM, an error) does not publish a truncated video under ``dst_path``: what was written
    stays playable under the hidden partial name, which the log names. Returns the stats dict (frames_in/out, fps, latency and per-stage percentiles)."""
    opts = (options or StreamOptions()).replace(source=src_path, output=dst_path, live=False)
    source = open_source(src_path, opts)
    bar = None
    on_frame = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=source.frame_count, unit="frame", desc=str(src_path), leave=False)

        def on_frame(frame, meta):
            bar.update(1)
    try:
        pipe = Pipeline(deblurrer, source, dst_path, opts, on_stats=on_stats, on_frame=on_frame,
                        publish_incomplete=False)
    except BaseException:
        source.close()
        if bar is not None:
            bar.close()
        raise
    pipe._own_source = True
    if pipeline_hook is not None:
        pipeline_hook(pipe)
    try:
        with pipe:
            return pipe.run()
    finally:
        if bar is not None:
            bar.close()
