"""Double buffering: a two-slot schedule in which frame N+1 uploads and frame N-1 downloads
while frame N computes.

The schedule (:class:`SlotScheduler`) is backend-agnostic: it only decides the order in which a
:class:`SlotExecutor` is told to stage, upload, compute, download and collect each frame.
Executors supply the mechanism:

- :class:`CpuSlotExecutor` (here): one worker thread per slot stands in for a CUDA stream and
  futures stand in for events; it runs any :class:`~.backends.base.Backend` and is what the CPU
  tests exercise.
- ``TorchCudaSlotExecutor`` (backends/torch_cuda.py): torch streams, events, pinned tensors.
- ``TensorRTSlotExecutor`` (backends/tensorrt.py): cuda-python streams/events, pinned and device
  buffers, NVRTC pre/post-processing kernels.

Per frame i on slot s = i % slots, the scheduler issues, without waiting::

    stage(s, i, frame)      host: write the frame into slot s's pinned input buffer
    upload(s)               stream s: copy host -> device, preprocess on the device
    compute(s, after=p)     stream s: wait for slot p's compute (recurrent state), run the model
    download(s)             stream s: postprocess on the device, copy device -> host

and before reusing slot s it collects the frame that held it (i - slots), which is also the
oldest frame in flight, so results come out in input order. With two slots, while the device
computes frame N (slot B), slot A finishes downloading N-1 and uploads N+1.

Computes are chained in frame order (compute i waits for compute i-1's event), which is what
carries a recurrent model's state from frame to frame on the device; ``reset=True`` on a frame
(a scene cut) or a change of frame size zeroes the state before that frame's compute.
"""
from __future__ import annotations

import abc
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)


@dataclass
class StageTiming:
    """One stage of one frame on one slot, in milliseconds from the pipeline start."""

    index: int
    slot: int
    stage: str  # "upload" | "compute" | "download"
    start_ms: float
    end_ms: float


class SlotExecutor(abc.ABC):
    """What a device offers the scheduler. Every method except :meth:`collect` only enqueues
    work and returns at once; :meth:`stage` may block until the slot's previous upload has
    finished reading the host buffer it is about to overwrite."""

    slots: int = 2

    @abc.abstractmethod
    def stage(self, slot: int, index: int, frame: np.ndarray) -> None: ...

    @abc.abstractmethod
    def upload(self, slot: int) -> None: ...

    @abc.abstractmethod
    def compute(self, slot: int, after: int | None, reset: bool = False) -> None: ...

    @abc.abstractmethod
    def download(self, slot: int) -> None: ...

    @abc.abstractmethod
    def collect(self, slot: int) -> Any:
        """Block until the slot's download is done; return the output frame (owned by the caller)."""

    def finite(self, slot: int) -> bool | None:
        """Whether the float output of the frame :meth:`collect` just returned from ``slot`` was
        all finite (no NaN/Inf), checked before its conversion to uint8; None: this executor
        cannot tell. The scheduler reads it right after each collect (``last_finite``), and the
        stream feeds it to the Deblurrer's NaN/Inf guard."""
        return None

    def compute_ms(self, slot: int) -> float | None:
        """The model's own time (ms) on the frame :meth:`collect` just returned from ``slot``,
        without the upload, the download and the wait for the frames before it; None: this
        executor cannot measure it. The scheduler reads it right after each collect
        (``last_compute_ms``); the stream records it as its ``infer`` stage. The GPU executors
        read it from CUDA timing events recorded around the model run on the slot's stream, once
        the slot's download has been synchronized (no extra host wait)."""
        return None

    def _read_ms(self, read, errors, who: str) -> float | None:
        """``read()`` (the milliseconds between a slot's two compute events), called once the
        slot's download has been synchronized, so no host wait is added; an error of ``errors``
        (a failed CUDA read) costs the figure, never the frame, with one warning per executor."""
        try:
            return float(read())
        except errors as e:
            if not getattr(self, "_timing_warned", False):
                self._timing_warned = True
                log.warning("%s pipeline: the model's time per frame cannot be read (%s); "
                            "stages.infer leaves these frames out", who, e)
            return None

    def timeline(self) -> list[StageTiming]:
        return []

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def check_slots(slots) -> int:
    """The number of slots as an int; InputError below 1 (executors call it before they allocate)."""
    n = int(slots)
    if n < 1:
        raise InputError(f"a slot executor needs at least one slot, got slots={slots!r}; pass slots=2 "
                         "(double buffering) or slots=1 (one frame at a time)")
    return n


def schedule(executor: "SlotExecutor", scene_cut: float | None = None) -> "SlotScheduler":
    """A :class:`SlotScheduler` over ``executor``, which it then owns: when the scheduler cannot be
    made, the executor is closed here (its streams, buffers and execution context freed) and the
    error raised, since the caller never got an object to close."""
    try:
        return SlotScheduler(executor, scene_cut=scene_cut)
    except BaseException:
        executor.close()
        raise


class SlotScheduler:
    """Feeds frames through a :class:`SlotExecutor`; returns outputs in input order.

    Push style (live sources)::

        for frame in source:
            for out in sched.submit(frame):
                sink(out)
        for out in sched.flush():
            sink(out)

    or pull style: ``for out in sched.run(frames)``.

    For a recurrent model (the executor's backend has ``state_specs``) every frame is also checked
    for a scene cut on the host (``edge_deblur.runtime.stream_state.SceneCutDetector``, threshold
    ``scene_cut``; None or 0: off) and a cut resets the state as ``reset=True`` would;
    ``scene_cuts`` counts them."""

    def __init__(self, executor: SlotExecutor, scene_cut: float | None = None):
        from .stream_state import DEFAULT_SCENE_CUT, SceneCutDetector

        check_slots(executor.slots)
        self.recurrent = bool(getattr(getattr(executor, "backend", None), "state_specs", None))
        threshold = DEFAULT_SCENE_CUT if scene_cut is None else scene_cut
        self._cuts = SceneCutDetector(threshold) if self.recurrent and threshold else None
        self.scene_cuts = 0
        self.ex = executor
        self.slots = executor.slots
        self._pending: deque[tuple[int, int]] = deque()  # (frame index, slot), oldest first
        self._next = 0
        self._last_slot: int | None = None
        self.last_finite: bool | None = None  # the executor's finite() of the last frame collected
        self.last_compute_ms: float | None = None  # the executor's compute_ms() of the last frame collected

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def set_scene_cut(self, threshold: float | None) -> None:
        """Change the scene-cut threshold of a recurrent backend's detector (None or 0: off);
        ``backend.pipeline()`` makes the scheduler with the default one."""
        from .stream_state import SceneCutDetector

        self._cuts = SceneCutDetector(threshold) if self.recurrent and threshold else None

    @property
    def scene_cut(self) -> float | None:
        return self._cuts.threshold if self._cuts is not None else None

    @property
    def last_scene_score(self) -> float | None:
        """The histogram distance of the last frame submitted to the one before (None: none, or off)."""
        return self._cuts.last_score if self._cuts is not None else None

    def _collect_oldest(self):
        _, slot = self._pending.popleft()
        self.last_finite = self.last_compute_ms = None
        out = self.ex.collect(slot)
        finite = getattr(self.ex, "finite", None)
        self.last_finite = finite(slot) if finite is not None else None
        compute_ms = getattr(self.ex, "compute_ms", None)
        self.last_compute_ms = compute_ms(slot) if compute_ms is not None else None
        return out

    def collect_oldest(self):
        """Block until the oldest frame in flight is done and return its output (None when no
        frame is in flight). A live stream calls it when no new frame is waiting, so that an
        output is not held back until the next frame needs its slot."""
        return self._collect_oldest() if self._pending else None

    def submit(self, frame: np.ndarray, reset: bool = False) -> list:
        """Enqueue one frame; return the outputs that had to be collected to free its slot."""
        i = self._next
        slot = i % self.slots
        ready = []
        while len(self._pending) >= self.slots:
            ready.append(self._collect_oldest())
        if self._cuts is not None:
            if reset:
                self._cuts.clear()
            if self._cuts(frame) and not reset:
                reset = True
                self.scene_cuts += 1
        ex = self.ex
        ex.stage(slot, i, frame)
        ex.upload(slot)
        ex.compute(slot, self._last_slot, reset)
        ex.download(slot)
        self._last_slot = slot
        self._pending.append((i, slot))
        self._next += 1
        return ready

    def flush(self) -> list:
        out = []
        while self._pending:
            out.append(self._collect_oldest())
        return out

    def run(self, frames: Iterable[np.ndarray]) -> Iterator:
        for frame in frames:
            yield from self.submit(frame)
        yield from self.flush()


def run_sync(executor: SlotExecutor, frames: Iterable[np.ndarray]) -> Iterator:
    """The comparison schedule: one frame at a time, each collected before the next is staged."""
    last = None
    for i, frame in enumerate(frames):
        executor.stage(0, i, frame)
        executor.upload(0)
        executor.compute(0, last)
        executor.download(0)
        last = 0
        yield executor.collect(0)


# --------------------------------------------------------------------------------------------
# Recurrent state tensors
# --------------------------------------------------------------------------------------------


def pair_state_tensors(inputs: Sequence[str], outputs: Sequence[str]) -> dict[str, str]:
    """Map each recurrent state input to the output that carries it to the next frame.

    Conventions accepted (the export names them): ``state_x`` -> ``state_x_out`` /
    ``state_x.out`` / ``state_x_new`` / ``new_state_x``; ``state_in_x`` -> ``state_out_x``;
    otherwise state inputs and state outputs pair up in order when their counts match."""
    state_in = [n for n in inputs if n.startswith("state")]
    state_out = [n for n in outputs if n.startswith("state") or n.startswith("new_state")]
    pairs: dict[str, str] = {}
    for name in state_in:
        cands = [f"{name}_out", f"{name}.out", f"{name}_new", f"new_{name}"]
        if name.startswith("state_in"):
            cands.append("state_out" + name[len("state_in"):])
        hit = next((c for c in cands if c in state_out and c not in pairs.values()), None)
        if hit:
            pairs[name] = hit
    rest_in = [n for n in state_in if n not in pairs]
    rest_out = [n for n in state_out if n not in pairs.values()]
    if rest_in:
        if len(rest_in) != len(rest_out):
            raise InputError(
                f"cannot pair recurrent state inputs {rest_in} with state outputs {rest_out}; "
                "name each output after its input (state_x -> state_x_out)"
            )
        pairs.update(zip(rest_in, rest_out))
    return pairs


# --------------------------------------------------------------------------------------------
# CPU executor: threads stand in for streams, futures for events
# --------------------------------------------------------------------------------------------


@dataclass
class _CpuSlot:
    stream: ThreadPoolExecutor
    frame: np.ndarray | None = None
    index: int = -1
    tensor: np.ndarray | None = None
    info: Any = None
    output: np.ndarray | None = None
    result: Any = None
    uploaded: Future | None = None
    computed: Future | None = None
    downloaded: Future | None = None
    finite: bool | None = None
    compute_ms: float | None = None
    events: list = field(default_factory=list)


class CpuSlotExecutor(SlotExecutor):
    """Runs the slot schedule on the CPU around any Backend (ONNX Runtime, torch on CPU).

    Upload = ``frame_to_tensor`` (preprocess), compute = ``backend.infer``, download =
    ``tensor_to_frame`` (postprocess), each on the slot's worker thread; the download checks the
    float output for NaN/Inf first (:meth:`finite`). Pre/post-processing of
    neighbouring frames overlaps the model run of the current one. ``hook(stage, phase, index,
    slot)`` is called at the start and end of every stage (tests use it to observe overlap)."""

    def __init__(self, backend, slots: int = 2, rgb: bool = False,
                 hook: Callable[[str, str, int, int], None] | None = None):
        from .preprocess import frame_to_tensor, tensor_to_frame

        self.backend = backend
        self.slots = int(slots)
        self.rgb = rgb
        self.hook = hook
        self._pre, self._post = frame_to_tensor, tensor_to_frame
        self._slots = [_CpuSlot(ThreadPoolExecutor(1, thread_name_prefix=f"slot{s}")) for s in range(self.slots)]
        self._lock = threading.Lock()
        self._timeline: list[StageTiming] = []
        self._t0 = time.perf_counter()
        # recurrent models (state_specs + infer_state/zero_state): the state is carried here, in frame order
        self._stateful = bool(getattr(backend, "state_specs", None)) and hasattr(backend, "infer_state")
        self._state = None
        self._state_shape = None
        self._closed = False

    def _timed(self, stage: str, slot: int, index: int, fn):
        def run():
            if self.hook:
                self.hook(stage, "start", index, slot)
            t = time.perf_counter()
            try:
                return fn()
            finally:
                e = time.perf_counter()
                with self._lock:
                    self._timeline.append(StageTiming(index, slot, stage, (t - self._t0) * 1e3, (e - self._t0) * 1e3))
                if self.hook:
                    self.hook(stage, "end", index, slot)

        return run

    def stage(self, slot, index, frame):
        sl = self._slots[slot]
        if sl.uploaded is not None:
            sl.uploaded.result()  # the slot's previous upload has read its input
        sl.frame, sl.index = frame, index

    def upload(self, slot):
        sl = self._slots[slot]
        stride = int(getattr(self.backend, "stride", 1) or 1)

        def work():
            sl.tensor, sl.info = self._pre(sl.frame, stride, self.rgb)
            sl.frame = None

        sl.uploaded = sl.stream.submit(self._timed("upload", slot, sl.index, work))

    def compute(self, slot, after, reset=False):
        sl = self._slots[slot]
        prev = self._slots[after].computed if after is not None else None  # the event as recorded now
        up = sl.uploaded

        def wait():  # cudaStreamWaitEvent: not part of the compute's own interval
            up.result()  # same thread, already done: re-raises a failed upload
            if prev is not None:
                prev.result()  # the previous frame's compute (and the state it wrote) is done

        def work():
            sl.compute_ms = None
            shape = sl.tensor.shape
            t = time.perf_counter()
            if self._stateful:
                if reset or self._state is None or shape != self._state_shape:
                    self._state = self.backend.zero_state(shape[0], shape[2], shape[3])
                    self._state_shape = shape
                sl.output, self._state = self.backend.infer_state(sl.tensor, self._state)
            else:
                sl.output = self.backend.infer(sl.tensor)
            sl.compute_ms = (time.perf_counter() - t) * 1e3  # the backend call only

        timed = self._timed("compute", slot, sl.index, work)

        def run():
            wait()
            return timed()

        sl.computed = sl.stream.submit(run)

    def download(self, slot):
        sl = self._slots[slot]
        comp = sl.computed

        def work():
            comp.result()  # re-raises a failed compute
            sl.finite = bool(np.isfinite(sl.output).all())  # before the uint8 conversion hides NaN/Inf
            sl.result = self._post(sl.output, sl.info)
            sl.output = sl.tensor = None
            return sl.result

        sl.downloaded = sl.stream.submit(self._timed("download", slot, sl.index, work))

    def collect(self, slot):
        sl = self._slots[slot]
        out = sl.downloaded.result()  # re-raises the stage's exception, if any
        sl.result = None
        return out

    def finite(self, slot):
        return self._slots[slot].finite

    def compute_ms(self, slot):
        return self._slots[slot].compute_ms

    def timeline(self):
        with self._lock:
            return list(self._timeline)

    def close(self):
        if not self._closed:
            self._closed = True
            for sl in self._slots:
                sl.stream.shutdown(wait=True)
