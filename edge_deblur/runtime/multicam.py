"""Several cameras in one process: one model, one backend call per step for all cameras whose
frames have the same size.

::

    camera A: capture + preprocess --[queue]--\\
    camera B: capture + preprocess --[queue]---> step: group by size, one backend call per group
    camera C: capture + preprocess --[queue]--/          --> postprocess + write (per camera sinks)

* Each camera has its own capture thread (reading and preprocessing run in parallel and overlap
  with inference), queue and drop policy (live sources drop their oldest waiting frame when
  behind, files drop nothing), sinks, statistics and, for a recurrent model, hidden state (carried
  per camera, batched with the others', reset when that camera's frame size changes or its own
  scene-cut detector fires: ``Deblurrer(scene_cut=...)``, see ``runtime.stream_state``).
* A step takes the next frame of every camera (files: waits for each; live: takes what has
  arrived, waiting briefly for at least one), groups them by padded size and runs each group as
  one batch.
* A camera whose source fails (after whatever reconnect attempts the source makes) or whose sink
  fails is stopped and reported (``status: failed`` with the error); the others go on. The run
  ends when every camera has ended, failed, or reached ``max_frames``, or on ``stop()``.

>>> from edge_deblur import Deblurrer
>>> from edge_deblur.runtime.multicam import MultiCamera
>>> with Deblurrer.open() as d:
...     stats = MultiCamera(d, ["front.mp4", "rear.mp4"], ["front_out.mp4", "rear_out.mp4"]).run()
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional, Sequence

import numpy as np

from ..errors import InputError
from ..io.options import StreamOptions
from ..io.sinks import check_frames_fit, open_sink
from ..io.sources import Source, open_source
from ..metrics.latency import LatencyStats
from .pipeline import _END, _Channel
from .stream_state import RESET_REASONS

log = logging.getLogger(__name__)


def output_for(outputs, i: int, name: str):
    """The output of camera ``i``: ``outputs[i]`` when one per camera is given, or the single
    output with ``{i}``/``{name}`` filled in; ``None`` -> ``null://``."""
    if outputs is None or outputs == []:
        return "null://"
    if isinstance(outputs, (str, bytes)) or callable(outputs):
        outputs = [outputs]
    outputs = list(outputs)
    if _templated(outputs):
        return outputs[0].format(i=i, name=name)
    if len(outputs) == 1 and isinstance(outputs[0], str) and outputs[0].startswith("null://"):
        return outputs[0]  # one null:// for every camera (as _check_outputs allows)
    return outputs[i]


def _batches(groups: dict, max_batch):
    """(shape, members) of every backend call: each size group whole, or in runs of ``max_batch``
    for a backend whose model takes no more (an ONNX exported with a fixed batch of 1)."""
    for shape, members in groups.items():
        step = max_batch or len(members)
        for s in range(0, len(members), step):
            yield shape, members[s:s + step]


def _templated(lst) -> bool:
    return len(lst) == 1 and isinstance(lst[0], str) and ("{i}" in lst[0] or "{name}" in lst[0])


def _check_outputs(outputs, n: int, names=None):
    """One output per camera, or one template, or ``null://``; no two cameras writing one file, and
    no placeholder other than ``{i}`` and ``{name}``."""
    if outputs is None or outputs == []:
        return
    lst = [outputs] if isinstance(outputs, str) or callable(outputs) else list(outputs)
    if len(lst) == 1 and isinstance(lst[0], str) and lst[0].startswith("null://"):
        return
    if len(lst) != n and not _templated(lst):
        raise InputError(
            f"{n} cameras need {n} outputs (one per --source, in order) or one output with '{{i}}' or '{{name}}' "
            f"in it (e.g. 'out_{{i}}.mp4'); got {len(lst)}: {lst!r}"
        )
    names = list(names) if names else [f"cam{i}" for i in range(n)]
    specs = []
    for i in range(n):
        try:
            spec = output_for(lst, i, names[i])
        except (KeyError, IndexError, ValueError) as e:
            raise InputError(f"output {lst[0]!r} has a placeholder that cannot be filled ({type(e).__name__}: {e}); "
                             "use '{i}' (the camera's index) or '{name}' (its name), e.g. 'out_{i}.mp4'") from None
        specs.append(spec)
    files = [sp for sp in specs if isinstance(sp, str) and "://" not in sp]
    dup = sorted({f for f in files if files.count(f) > 1})
    if dup:
        raise InputError(f"several cameras would write the same file {dup[0]!r}; give one output per camera "
                         "or one with '{i}' or '{name}' in it (e.g. 'out_{i}.mp4')")


class _Camera:
    def __init__(self, i: int, name: str, source: Source, sinks: list, options: StreamOptions):
        self.i, self.name, self.source, self.sinks = i, name, source, sinks
        drop = options.drop if options.drop != "auto" else ("oldest" if source.live else "never")
        self.drop = drop
        self.queue: Optional[_Channel] = None
        self.thread: Optional[threading.Thread] = None
        self.status = "running"          # running | ended | failed | max_frames | stopped
        self.sink_failed = False         # its output failed: drop what is still queued
        self.model_failed = False        # its model output failed: run no more of it, write what was queued
        self._guard = None
        self.error: Optional[str] = None
        self.frames_in = self.frames_out = self.dropped = 0
        self.times = LatencyStats()
        self.state = None                # recurrent state (dict of (1, ...) arrays)
        self.cut = None                  # recurrent: this camera's SceneCutDetector
        self.resets = dict.fromkeys(RESET_REASONS, 0)  # recurrent state resets by reason (stream_state)
        self.state_key = None
        self.t_first: Optional[float] = None
        self.t_last: Optional[float] = None
        self.taken = 0

    def guard(self, deblurrer):
        """This camera's NaN/Inf output guard (``runtime.output_guard``, the Deblurrer's limit)."""
        if self._guard is None:
            from .output_guard import OutputGuard

            g = getattr(deblurrer, "guard", None)
            self._guard = OutputGuard(getattr(g, "max_bad_frames", 30), f"{getattr(g, 'name', 'model')} ({self.name})")
        return self._guard

    @property
    def active(self) -> bool:
        return self.status == "running"

    def summary(self, t_start: float) -> dict:
        lat = self.times.percentiles("latency")
        active = (self.t_last or t_start) - t_start
        return {
            "name": self.name, "source": self.source.uri, "status": self.status, "error": self.error,
            "frames_in": self.frames_in, "frames_out": self.frames_out, "dropped": self.dropped,
            "fps": round(self.frames_out / active, 3) if active > 0 and self.frames_out else 0.0,
            "latency_ms_p50": lat["p50"], "latency_ms_p99": lat["p99"],
            "size": f"{self.source.size[0]}x{self.source.size[1]}" if self.source.size else None,
            "state_resets": dict(self.resets) if self.state_key is not None else None,
            "model_output": self._guard.stats() if self._guard is not None else None,
            "outputs": [s.describe() for s in self.sinks],
            "stages": self.times.summary(order=("capture", "preprocess", "postprocess", "write", "latency")),
        }


class MultiCamera:
    """Deblur ``sources`` (URIs, paths, indices, or opened ``Source`` objects) with one
    ``deblurrer`` (a ``Deblurrer``), writing camera ``i`` to ``output_for(outputs, i)``.
    ``names`` label the cameras in the stats (default cam0, cam1, ...)."""

    def __init__(self, deblurrer, sources: Sequence, outputs=None, options: Optional[StreamOptions] = None,
                 names: Optional[Sequence[str]] = None, warmup: bool = True):
        sources = list(sources)
        if not sources:
            raise InputError("MultiCamera needs at least one source")
        for attr in ("preprocess", "postprocess", "backend"):
            if not hasattr(deblurrer, attr):
                raise InputError(f"MultiCamera needs a Deblurrer (preprocess/backend/postprocess), got {type(deblurrer).__name__}")
        self.options = (options or StreamOptions()).validate()
        self.d = deblurrer
        names = list(names) if names else [f"cam{i}" for i in range(len(sources))]
        if len(names) != len(sources) or len(set(names)) != len(names):
            raise InputError(f"need one distinct name per camera, got {names!r}")
        _check_outputs(outputs, len(sources), names)
        self.cams: list[_Camera] = []
        try:
            for i, (spec, name) in enumerate(zip(sources, names)):
                src = spec if isinstance(spec, Source) else open_source(spec, self.options)
                sinks = []
                self.cams.append(_Camera(i, name, src, sinks, self.options))
                sinks.append(open_sink(output_for(outputs, i, name), self.options, fps=src.fps))
                check_frames_fit(sinks, src, self.options)  # many frames into one image file: refused before any is written
        except BaseException:
            self._close_all()
            raise
        self._warmup = warmup
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._lock = threading.Lock()
        self.steps = 0
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.infer_times = LatencyStats()
        self._t_start = self._t_end = None
        self._out_q: Optional[_Channel] = None
        self.stopped_by: Optional[str] = None

    # ---- control -----------------------------------------------------------------------------
    def stop(self, drain: bool = True, reason: str = "stop"):
        if self.stopped_by is None:
            self.stopped_by = reason
        self._stop.set()
        if not drain:
            self._abort.set()

    def _fail(self, cam: _Camera, e: BaseException, where: str):
        if cam.status != "failed":  # an output failing after the source ended still fails the camera
            cam.status = "failed"
            cam.error = f"{where}: {e}"
            log.warning("camera %s (%s) stopped: %s: %s; the other cameras go on", cam.name, cam.source.uri, where, e)

    # ---- threads -----------------------------------------------------------------------------
    def _capture(self, cam: _Camera):
        pre = self.d.preprocess
        try:
            while not self._stop.is_set() and cam.active:
                try:
                    item = cam.source.read()
                except Exception as e:  # noqa: BLE001 - this camera stops, the others go on
                    self._fail(cam, e, "source")
                    break
                if item is None:
                    if cam.status == "running":
                        cam.status = "ended"
                    break
                frame, meta = item
                cam.times.add("capture", meta.capture_ms)
                t0 = time.perf_counter()
                x, ctx = pre(frame)
                cam.times.add("preprocess", (time.perf_counter() - t0) * 1e3)
                cam.frames_in += 1
                cam.dropped += cam.queue.put((meta, x, ctx))
        except BaseException as e:  # noqa: BLE001
            self._fail(cam, e, "preprocess")
        finally:
            cam.queue.close()

    def _gather(self, live_cams: list) -> list:
        """One item per camera for this step: ``[(cam, item)]``; cameras whose queue ended drop out."""
        got = []
        files = [c for c in live_cams if c.drop == "never"]
        lives = [c for c in live_cams if c.drop != "never"]
        for c in files:
            item = c.queue.get()
            if item is _END:
                c.queue = _ClosedQueue()
                continue
            got.append((c, item))
        if lives:
            deadline = time.perf_counter() + (0.0 if got else self.options.read_timeout + 1.0)
            while True:
                for c in lives:
                    if any(g[0] is c for g in got) or isinstance(c.queue, _ClosedQueue):
                        continue
                    if len(c.queue):
                        item = c.queue.get()
                        if item is _END:
                            c.queue = _ClosedQueue()
                        else:
                            got.append((c, item))
                    elif not c.thread.is_alive():
                        c.queue = _ClosedQueue()
                if got or time.perf_counter() > deadline or all(isinstance(c.queue, _ClosedQueue) for c in lives):
                    break
                time.sleep(0.001)
        return got

    def _step_loop(self):
        backend = self.d.backend
        recurrent = bool(getattr(self.d, "recurrent", False))
        tiled = getattr(self.d, "tile", None) is not None
        max_frames = self.options.max_frames
        try:
            while not self._abort.is_set():
                cams = [c for c in self.cams if not isinstance(c.queue, _ClosedQueue)]
                if not cams:
                    break
                got = [(c, it) for c, it in self._gather(cams)
                       if not (max_frames and c.taken >= max_frames) and not c.sink_failed and not c.model_failed]
                if not got:
                    continue
                groups: dict = {}
                for c, (meta, x, ctx) in got:
                    groups.setdefault(x.shape, []).append((c, meta, x, ctx))
                self.steps += 1
                for shape, members in _batches(groups, getattr(backend, "max_batch", None)):
                    x = np.concatenate([m[2] for m in members], axis=0) if len(members) > 1 else members[0][2]
                    t0 = time.perf_counter()
                    if recurrent:
                        y = self._infer_recurrent(backend, shape, members, x)
                    elif tiled:
                        y = self.d.infer_tensor(x)
                    else:
                        y = backend.infer(x)
                    self.infer_times.add("infer", (time.perf_counter() - t0) * 1e3)
                    self.calls += 1
                    self.batch_sizes.append(len(members))
                    for j, (c, meta, xj, ctx) in enumerate(members):
                        try:  # NaN/Inf: the camera's input passes through; too many in a row stop it alone
                            yj, ok = c.guard(self.d).check(xj, y[j:j + 1])
                        except Exception as e:  # noqa: BLE001
                            c.model_failed = True  # nothing more of this camera is run; what was queued is written
                            self._fail(c, e, "model output")
                            continue
                        if not ok and recurrent:
                            c.state = None  # its state is poisoned too
                        self._out_q.put((c, meta, yj, ctx))
                        c.taken += 1
                        if max_frames and c.taken >= max_frames and c.active:
                            c.status = "max_frames"
        except BaseException as e:  # noqa: BLE001 - a backend failure stops every camera
            for c in self.cams:
                self._fail(c, e, "inference")
            self._abort.set()
        finally:
            self._stop.set()
            self._out_q.close()

    def _infer_recurrent(self, backend, shape, members, x):
        from .stream_state import SceneCutDetector

        key = (1, shape[2], shape[3])
        for c, meta, xc, _ in members:
            if c.cut is None:
                c.cut = SceneCutDetector(getattr(self.d, "scene_cut", None))
            cut = c.cut(xc)  # each camera's own scene-cut detector, on its own frames
            reason = None
            if c.state is None:
                reason = "start"
            elif c.state_key != key:
                reason = "size"
            elif getattr(meta, "restart", False):  # a looped file or a reconnected camera started over
                reason = "restart"
            elif cut:
                reason = "scene_cut"
            if reason is not None:
                c.resets[reason] += 1
                c.state = backend.zero_state(*key)
                c.state_key = key
        state = {k: np.concatenate([c.state[k] for c, *_ in members], axis=0) for k in members[0][0].state}
        y, new = backend.infer_state(x, state)
        for j, (c, *_) in enumerate(members):
            c.state = {k: v[j:j + 1] for k, v in new.items()}
        return y

    def _write_loop(self):
        post = self.d.postprocess
        while True:
            item = self._out_q.get()
            if item is _END:
                return
            c, meta, y, ctx = item
            if c.sink_failed:  # frames captured before a source failure are still written
                continue
            try:
                t0 = time.perf_counter()
                frame = post(y, ctx)
                t1 = time.perf_counter()
                for s in c.sinks:
                    s.write(frame, meta)
                now = time.perf_counter()
            except Exception as e:  # noqa: BLE001 - this camera's sink failed; the others go on
                c.sink_failed = True
                self._fail(c, e, "output")
                continue
            c.times.add("postprocess", (t1 - t0) * 1e3)
            c.times.add("write", (now - t1) * 1e3)
            c.times.add("latency", (now - meta.timestamp) * 1e3)
            c.frames_out += 1
            if c.t_first is None:
                c.t_first = now
            c.t_last = now

    # ---- running -----------------------------------------------------------------------------
    def _do_warmup(self):
        sizes = {c.source.size for c in self.cams if c.source.size}
        for w, h in sizes:
            x, _ = self.d.preprocess(np.zeros((h, w, 3), np.uint8))
            n = sum(1 for c in self.cams if c.source.size == (w, h))
            n = min(n, getattr(self.d.backend, "max_batch", None) or n)
            xb = np.concatenate([x] * n, axis=0)
            if getattr(self.d, "recurrent", False):
                self.d.backend.infer_state(xb, self.d.backend.zero_state(n, x.shape[2], x.shape[3]))
            else:
                self.d.backend.infer(xb)

    def run(self) -> dict:
        """Run every camera to its end (or ``stop()``); return the stats. Sources and sinks are
        closed at the end."""
        try:
            if self._warmup:
                self._do_warmup()
            self._out_q = _Channel(2 * len(self.cams), "never", self._abort)
            self._t_start = time.perf_counter()
            for c in self.cams:
                c.queue = _Channel(self.options.queue_size, c.drop, self._abort)
                c.thread = threading.Thread(target=self._capture, args=(c,), name=f"edge-deblur-cam-{c.name}", daemon=True)
                c.thread.start()
            stepper = threading.Thread(target=self._step_loop, name="edge-deblur-multicam-step", daemon=True)
            stepper.start()
            try:
                self._write_loop()
            except BaseException:
                self.stop(drain=False, reason="interrupted")
                raise
            finally:
                self._stop.set()
                stepper.join(timeout=30)
                for c in self.cams:
                    c.thread.join(timeout=self.options.read_timeout + 1.0)
            self._t_end = time.perf_counter()
            for c in self.cams:
                if c.status == "running":
                    c.status = "stopped" if self.stopped_by else "ended"
            if self.stopped_by is None:
                self.stopped_by = "end"        # every camera ended or failed on its own (as run_stream says)
        finally:
            self._close_all()
        return self.stats()

    def _close_all(self):
        for c in self.cams:
            for s in c.sinks:
                try:
                    s.close()
                except Exception as e:  # noqa: BLE001
                    self._fail(c, e, "output close")
            if c.thread is None or not c.thread.is_alive():
                c.source.close()

    def stats(self) -> dict:
        t0 = self._t_start or time.perf_counter()
        end = self._t_end or time.perf_counter()
        total = sum(c.frames_out for c in self.cams)
        last = max((c.t_last for c in self.cams if c.t_last), default=end)
        inf = self.infer_times.percentiles("infer")
        return {
            "cameras": [c.summary(t0) for c in self.cams],
            "frames_out": total,
            "fps": round(total / (last - t0), 3) if total and last > t0 else 0.0,
            "elapsed_s": round(end - t0, 3),
            "steps": self.steps,
            "backend_calls": self.calls,
            "mean_batch": round(float(np.mean(self.batch_sizes)), 3) if self.batch_sizes else None,
            "infer_ms_p50": inf["p50"], "infer_ms_p99": inf["p99"],
            "failed": [c.name for c in self.cams if c.status == "failed"],
            "stopped_by": self.stopped_by,
            "state": self._state_summary(),
        }

    def _state_summary(self) -> dict:
        """As a single stream's ``state`` (``Deblurrer.state_stats``), summed over the cameras; each
        camera's own resets are in its ``state_resets``."""
        if getattr(self.d, "stream", None) is None:
            return {"kind": "image"}
        resets = dict.fromkeys(RESET_REASONS, 0)
        for c in self.cams:
            for r, n in c.resets.items():
                resets[r] += n
        return {"kind": "recurrent", "frames": sum(c.frames_out for c in self.cams), "resets": resets,
                "scene_cuts": resets["scene_cut"], "scene_cut_threshold": getattr(self.d, "scene_cut", None)}


class _ClosedQueue:
    """Marks a camera whose queue has delivered its end."""

    def __len__(self):
        return 0
