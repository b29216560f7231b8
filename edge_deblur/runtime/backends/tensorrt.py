"""TensorRT backend (TensorRT 10 and 11) with NVIDIA cuda-python for memory, streams and events.

- Opens a ``.engine`` (checked against its manifest: GPU model and TensorRT version) or an
  ``.onnx`` file (built once through the engine cache, then reused).
- I/O is bound by name (``set_input_shape`` / ``set_tensor_address``, both checked) and run
  with ``execute_async_v3``; every I/O tensor is bound, outputs the runtime does not use to
  scratch buffers. Buffers own their memory (pinned host, device) and are freed in ``close()``
  through an ExitStack, never in ``__del__``.
- Shapes outside the engine's optimization profile raise BackendError saying how to widen it.
- :meth:`TensorRTBackend.pipeline` returns the two-slot double-buffered schedule
  (:class:`TensorRTSlotExecutor`): uint8 frames are uploaded as they are and converted,
  normalized and padded on the GPU by two small NVRTC kernels (on the CPU, with a warning, where
  NVRTC is not installed or cannot compile them), the one back to uint8 also flagging a NaN/Inf
  output for the NaN/Inf guard; a recurrent model's state stays in device buffers from frame to
  frame, and each frame's engine run is timed with CUDA events (``compute_ms``).
- CUDA's current device is per host thread: every method that does CUDA work first makes the
  backend's device current (``cudart.set_device``), so ``--device cuda:N`` holds on worker threads.

Untested on this project's CI machine (no GPU, no TensorRT); the code follows TensorRT's
documented Python API and ``samples/python/common_runtime.py``. docs/JETSON.md lists the
one-line checks to run on a GPU machine.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import numpy as np

from ...errors import BackendError, DependencyError, InputError, ModelError, ProfileInUseError
from ..gpu_pipeline import SlotExecutor, SlotScheduler, StageTiming, check_slots, pair_state_tensors, schedule
from .base import Backend

log = logging.getLogger(__name__)

WIDEN_HINT = ("rebuild the engine with a wider profile (edge-deblur build MODEL.onnx --shapes MIN:OPT:MAX, "
              "e.g. --shapes 1x3x256x256:1x3x736x1280:1x3x{h}x{w}) or use --backend onnxruntime")


def parse_device(device) -> int:
    if device is None or device == "":
        return 0
    if isinstance(device, int):
        return device
    d = str(device).lower()
    if d in ("cuda", "gpu", "tensorrt"):
        return 0
    for prefix in ("cuda:", "gpu:"):
        if d.startswith(prefix) and d[len(prefix):].isdigit():
            return int(d[len(prefix):])
    if d.isdigit():
        return int(d)
    raise BackendError(f"the tensorrt backend runs on a CUDA device; got device={device!r} (use 'cuda' or 'cuda:N')")


def profile_error(shape, lo, hi, name="input") -> str:
    n, _, h, w = shape
    return (f"{name} of shape {list(shape)} (frame {w}x{h} padded, batch {n}) is outside the TensorRT engine's "
            f"optimization profile {list(lo)} .. {list(hi)}; "
            + WIDEN_HINT.format(h=max(h, hi[2]), w=max(w, hi[3])))


def check_in_profile(shape, lo, hi, name="input"):
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
        raise BackendError(profile_error(shape, lo, hi, name))


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path, device=None, shapes: str | None = None, rebuild: bool = True, cache_dir=None,
                 workspace_mb: int | None = None, dla_core: int | None = None, timing_cache=None,
                 verbose: bool = False, opt_level: int | None = None, gpu_fallback: bool = True, **_ignored):
        super().__init__()
        from ...export.engine_cache import BuildEnv, check_engine, ensure_engine
        from ...export.trt_build import _Logger, import_tensorrt, trt_version
        from .. import cudart

        trt = import_tensorrt()  # DependencyError: names the extra and --backend onnxruntime
        cudart.load()
        self.device = parse_device(device)
        gpu = cudart.gpu_info(self.device)  # BackendError without a GPU
        env = BuildEnv.from_gpu(gpu, trt_version(trt))
        p = Path(path)
        if not p.is_file():
            raise ModelError(f"model file not found: {str(p)!r}; pass an .engine (edge-deblur build) or an .onnx file")
        if p.suffix.lower() == ".onnx":
            p = ensure_engine(p, shapes=shapes, rebuild=rebuild, cache_dir=cache_dir, workspace_mb=workspace_mb,
                              dla_core=dla_core, timing_cache=timing_cache, env=env, device=self.device,
                              opt_level=opt_level, gpu_fallback=gpu_fallback)
        manifest = check_engine(p, env) or {}
        self._trt, self._cudart = trt, cudart
        self.path = p
        self.manifest = manifest
        self.precision = str(manifest.get("precision") or "fp32")
        self.stride = int(manifest.get("stride") or 1)
        self.gpu = gpu
        self._stack = contextlib.ExitStack()
        try:
            self._open(p, _Logger.make(trt, verbose))
        except BaseException:
            self._stack.close()
            raise

    # -- engine and I/O description -------------------------------------------------------------
    def _open(self, path: Path, logger):
        trt, cudart = self._trt, self._cudart
        self._logger = logger
        self._runtime = trt.Runtime(logger)
        if self.manifest.get("build", {}).get("dla_core") is not None:
            self._runtime.DLA_core = int(self.manifest["build"]["dla_core"])
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(
                f"TensorRT {self._trt.__version__} could not deserialize {str(path)!r} (built by another TensorRT "
                "version, for another GPU, or corrupt; see the TensorRT error above); rebuild it with: "
                "edge-deblur build MODEL.onnx -o ENGINE, or use --backend onnxruntime"
            )
        self.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: self._np_dtype(path, n) for n in names}
        image_in = [n for n in self.inputs if not n.startswith("state")]
        image_out = [n for n in self.outputs if not n.startswith("state") and not n.startswith("new_state")]
        if len(image_in) != 1 or not image_out:
            raise ModelError(f"{str(path)!r} has inputs {self.inputs} and outputs {self.outputs}; an edge-deblur engine "
                             "has one image input (plus optional state_* inputs) and an image output")
        self.input_name = image_in[0]
        self.output_name = "output" if "output" in image_out else image_out[0]
        self.state_pairs = pair_state_tensors(self.inputs, self.outputs)
        used = {self.output_name, *self.state_pairs.values()}
        self.extra_outputs = [n for n in self.outputs if n not in used]
        if self.extra_outputs:
            log.warning("engine %s has outputs the runtime does not use: %s; they are computed into scratch "
                        "buffers (re-export the model without them to save the work)", path.name, self.extra_outputs)
        lo, opt, hi = self._profile_of(self.input_name)
        self.profile = (lo, opt, hi)
        # the most frames one synchronous call takes: callers that batch (several cameras,
        # Deblurrer.run_batch) split their batches to it instead of failing outside the profile
        self.max_batch = int(hi[0]) if hi and int(hi[0]) > 0 else None
        self.state_specs = []
        for sin, sout in self.state_pairs.items():
            _, s_opt, _ = self._profile_of(sin)
            scale = max(1, opt[2] // max(1, s_opt[2]))
            self.state_specs.append({"input": sin, "output": sout, "channels": s_opt[1], "scale": scale,
                                     "rank": len(s_opt), "dtype": self.dtypes[sin]})
        self.stream = self._stack.enter_context(cudart.Stream())
        self._own_ctx = None  # made on first use: a pipeline-only user never pays for its activation memory
        self._sync_lock = threading.RLock()  # the synchronous path's context and buffers: one run at a time
        self._profiles_in_use: set[int] = set()  # held by open slot executors (see claim_profile)
        self._bufs: dict[str, object] = {}
        self._buf_stack: contextlib.ExitStack | None = None
        self._buf_shape = None

    def _np_dtype(self, path: Path, name: str) -> np.dtype:
        """``trt.nptype`` of a tensor's dtype; it raises a bare TypeError for the types numpy has no
        equivalent of (BF16, FP8, FP4, INT4)."""
        dt = self.engine.get_tensor_dtype(name)
        try:
            return np.dtype(self._trt.nptype(dt))
        except TypeError as e:
            raise BackendError(
                f"{str(path)!r}: I/O tensor {name!r} has dtype {dt}, which the runtime cannot feed or read (no numpy "
                "equivalent); re-export the model with float32 or float16 inputs and outputs (e.g. ModelOpt AutoCast "
                "with keep_io_types) and rebuild the engine"
            ) from e

    def _profile_of(self, name, index: int = 0):
        """(min, opt, max) of an input in optimization profile ``index``, or its fixed shape in an
        engine without profiles."""
        if int(getattr(self.engine, "num_optimization_profiles", 1) or 0) == 0:
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
            return shape, shape, shape
        return tuple(tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(name, index))

    def profile_shapes(self, index: int = 0):
        """(min, opt, max) of the image input in optimization profile ``index`` (``self.profile``
        is profile 0's, the one the synchronous ``infer`` runs on)."""
        return self.profile if index == 0 else self._profile_of(self.input_name, index)

    def _new_context(self):
        """A new execution context of the engine. Each user (this backend's synchronous ``infer``,
        each slot executor) owns one: a context holds the input shapes and tensor addresses of its
        runs, and TensorRT contexts must not be used from two streams at once. It is freed when its
        owner drops it (TensorRT's Python API frees a context with its last reference). The
        synchronous one is made on first use and dropped when a slot executor opens (each context
        holds its own activation memory; see :meth:`drop_sync_context`)."""
        if self.engine is None:
            raise BackendError(f"the TensorRT backend for {str(self.path)!r} is closed; open a new one")
        ctx = self.engine.create_execution_context()
        if ctx is None:
            raise BackendError("TensorRT could not create an execution context (out of GPU memory?); close other "
                               "pipelines of this engine, or use a smaller --shapes profile")
        return ctx

    def claim_profile(self) -> int:
        """The lowest optimization profile no open slot executor holds. TensorRT requires every
        execution context in concurrent use to run on its own profile, and engines from
        ``edge-deblur build`` have one: one pipeline at a time per backend."""
        n = max(1, int(getattr(self.engine, "num_optimization_profiles", 1) or 0))
        free = [i for i in range(n) if i not in self._profiles_in_use]
        if not free:
            raise ProfileInUseError(
                f"{str(self.path)!r} has {n} optimization profile(s), all in use by open pipelines of this backend; "
                "TensorRT runs each concurrent execution context on its own profile: close the other pipeline first "
                "(sched.ex.close()), or open a second TensorRTBackend on the engine for the second stream")
        self._profiles_in_use.add(free[0])
        return free[0]

    def release_profile(self, index: int) -> None:
        self._profiles_in_use.discard(index)

    @property
    def _ctx(self):
        """The context of the synchronous ``infer`` path (its own: never a pipeline's), made on
        first use (again after :meth:`drop_sync_context`)."""
        if self._own_ctx is None:
            self._own_ctx = self._new_context()
        return self._own_ctx

    def drop_sync_context(self) -> None:
        """Free the synchronous ``infer`` path's context and buffers (made by the open probe, or an
        ``infer``): a slot executor that opens calls it, so a stream holds one context's activation
        memory, not two. The next ``infer`` makes them again."""
        with self._sync_lock:  # not in the middle of an infer on another thread
            if self._own_ctx is None and self._buf_stack is None:
                return
            self._cudart.set_device(self.device)
            self.stream.synchronize()  # no run of the synchronous path is still using them
            self._own_ctx = None  # the last reference: TensorRT frees the context
            self._buf_shape = None
            self._bufs = {}
            if self._buf_stack is not None:
                stack, self._buf_stack = self._buf_stack, None
                stack.close()

    def _check(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"backend input must be (N, 3, H, W), got {getattr(x, 'shape', type(x).__name__)}")
        if self.stride > 1 and (x.shape[2] % self.stride or x.shape[3] % self.stride):
            raise InputError(f"input {x.shape[3]}x{x.shape[2]} is not a multiple of the model's stride {self.stride}; "
                             "pad frames with edge_deblur.runtime.preprocess.frame_to_tensor(frame, stride)")
        check_in_profile(x.shape, self.profile[0], self.profile[2], self.input_name)
        return x

    def state_shape(self, spec, n, h, w):
        return (n, spec["channels"], h // spec["scale"], w // spec["scale"])[: spec["rank"]]

    def set_shapes(self, ctx, shape, profile: int = 0) -> dict:
        """Set the input shapes on ``ctx`` (on optimization profile ``profile``: its min/max are
        the ones a refused shape is reported against); return every I/O tensor's shape for this input."""
        n, _, h, w = shape
        if not ctx.set_input_shape(self.input_name, tuple(shape)):
            lo, _, hi = self.profile_shapes(profile)
            raise BackendError(profile_error(shape, lo, hi, self.input_name))
        for spec in self.state_specs:
            if not ctx.set_input_shape(spec["input"], self.state_shape(spec, n, h, w)):
                raise BackendError(f"state {spec['input']} shape {self.state_shape(spec, n, h, w)} rejected by the "
                                   "engine's profile; " + WIDEN_HINT.format(h=h, w=w))
        shapes = {name: tuple(int(d) for d in ctx.get_tensor_shape(name)) for name in self.inputs + self.outputs}
        unknown = {name: s for name, s in shapes.items() if any(d < 0 for d in s)}
        if unknown:
            raise BackendError(
                f"{str(self.path)!r}: the shape of {sorted(unknown)} is unknown before the run ({unknown}, data-dependent); "
                "edge-deblur binds a buffer of known size to every I/O tensor: re-export the model without that "
                "output (edge-deblur export), or run the ONNX with --backend onnxruntime"
            )
        return shapes

    @staticmethod
    def bind(ctx, name: str, ptr: int) -> None:
        """``set_tensor_address``, checked: TensorRT returns False for an unknown name or a
        misaligned address instead of raising."""
        if not ctx.set_tensor_address(name, int(ptr)):
            raise BackendError(f"TensorRT refused the device address {int(ptr):#x} for tensor {name!r} (unknown name "
                               "or misaligned buffer; see the TensorRT error above)")

    # -- synchronous inference (the Backend protocol) --------------------------------------------
    def _ensure_buffers(self, shapes: dict):
        key = tuple(sorted(shapes.items()))
        if self._buf_shape == key:
            return
        cudart = self._cudart
        # forget the old size first: an allocation that fails below must not leave the old key
        # pointing at freed or half-made buffers (the next call of the old size would use them)
        self._buf_shape = None
        self._bufs = {}
        if self._buf_stack is not None:
            self.stream.synchronize()
            self._buf_stack.close()
        self._buf_stack = stack = contextlib.ExitStack()
        for name, shape in shapes.items():
            dt = self.dtypes[name]
            self._bufs[name] = (stack.enter_context(cudart.PinnedBuffer(shape, dt)),
                                stack.enter_context(cudart.DeviceBuffer(int(np.prod(shape)) * dt.itemsize)))
        self._buf_shape = key

    def _run(self, x: np.ndarray, state: dict | None) -> tuple[np.ndarray, dict]:
        with self._sync_lock:
            return self._run_locked(x, state)

    def _run_locked(self, x: np.ndarray, state: dict | None) -> tuple[np.ndarray, dict]:
        cudart = self._cudart
        cudart.set_device(self.device)  # the calling thread may be a worker (pipeline, multicam)
        x = self._check(x)
        shapes = self.set_shapes(self._ctx, x.shape)
        self._ensure_buffers(shapes)
        feeds = {self.input_name: x}
        for spec in self.state_specs:
            v = (state or {}).get(spec["input"])
            feeds[spec["input"]] = v if v is not None else np.zeros(shapes[spec["input"]], spec["dtype"])
        for name in self.inputs:
            host, dev = self._bufs[name]
            v = feeds[name]
            if tuple(v.shape) != shapes[name]:
                raise InputError(f"{name} has shape {tuple(v.shape)}, the engine expects {shapes[name]}")
            np.copyto(host.array, v, casting="same_kind")
            cudart.memcpy_htod_async(dev, host.ptr, host.nbytes, self.stream)
        for name in self.inputs + self.outputs:
            self.bind(self._ctx, name, self._bufs[name][1].ptr)
        if not self._ctx.execute_async_v3(int(self.stream.handle)):
            raise BackendError(f"TensorRT execute_async_v3 failed on a {tuple(x.shape)} input (see the TensorRT error above)")
        for name in self.outputs:
            host, dev = self._bufs[name]
            cudart.memcpy_dtoh_async(host.ptr, dev, host.nbytes, self.stream)
        self.stream.synchronize()
        y = self._bufs[self.output_name][0].array.astype(np.float32, copy=True)
        new_state = {spec["input"]: self._bufs[spec["output"]][0].array.copy() for spec in self.state_specs}
        return y, new_state

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self._run(x, None)[0]

    def zero_state(self, n: int, h: int, w: int) -> dict:
        return {s["input"]: np.zeros(self.state_shape(s, n, h, w), s["dtype"]) for s in self.state_specs}

    def infer_state(self, x: np.ndarray, state: dict) -> tuple[np.ndarray, dict]:
        """Host-side state API (as the ONNX Runtime backend); the slot pipeline keeps it on the GPU."""
        return self._run(x, state)

    def pipeline(self, slots: int = 2, rgb: bool = False, gpu_preprocess: bool | None = None,
                 timeline: bool = False) -> SlotScheduler:
        """The double-buffered schedule over this engine; close the returned scheduler's
        executor (``sched.ex.close()``, or ``with sched.ex:``) when done.

        ``gpu_preprocess``: None (default) converts frames on the GPU where NVRTC loads and compiles
        the kernels for this GPU, and on the CPU, with a warning, where it does not; True requires the
        GPU kernels; False never uses them."""
        return schedule(TensorRTSlotExecutor(self, slots=slots, rgb=rgb, gpu_preprocess=gpu_preprocess,
                                             timeline=timeline))

    def describe(self) -> dict:
        return {"backend": self.name, "device": f"cuda:{self.device}", "gpu": self.gpu.name,
                "tensorrt": self._trt.__version__, "precision": self.precision, "stride": self.stride,
                "profile": [list(s) for s in self.profile], "engine": str(self.path)}

    def close(self):
        stack, self._stack = getattr(self, "_stack", None), None
        if stack is None:
            return
        try:
            self._cudart.set_device(self.device)
            self.stream.synchronize()
        finally:
            if self._buf_stack is not None:
                self._buf_stack.close()
                self._buf_stack = None
            self._own_ctx = None
            self.engine = None
            stack.close()


# --------------------------------------------------------------------------------------------
# Two-slot executor
# --------------------------------------------------------------------------------------------


class _TrtSlot:
    def __init__(self, cudart, timeline: bool):
        self.stack = contextlib.ExitStack()
        try:  # a stream or event that fails frees the ones made before it
            self.stream = self.stack.enter_context(cudart.Stream())
            self.uploaded = self.stack.enter_context(cudart.Event())
            self.computed = self.stack.enter_context(cudart.Event())
            self.downloaded = self.stack.enter_context(cudart.Event())
            # the model's own time (compute_ms), on every frame: two timing events around the run,
            # read at collect once the download (recorded after them on this stream) is done
            self.compute0 = self.stack.enter_context(cudart.Event(timing=True))
            self.compute1 = self.stack.enter_context(cudart.Event(timing=True))
            self.marks = None
            if timeline:  # the timeline's compute pair is the one above
                self.marks = {k: self.stack.enter_context(cudart.Event(timing=True))
                              for k in ("upload0", "upload1", "download0", "download1")}
                self.marks.update(compute0=self.compute0, compute1=self.compute1)
        except BaseException:
            self.stack.close()
            raise
        self.bufs = None  # ExitStack of the per-size buffers
        self.key = None
        self.index = -1
        self.info = None
        self.gpu = False
        self.finite = None  # the last collected output was finite (None: not checked)
        self.compute_ms = None  # the model's time on the last collected frame (None: not measured)

    def close(self):
        if self.bufs is not None:
            self.bufs.close()
            self.bufs = None
        self.stack.close()


class TensorRTSlotExecutor(SlotExecutor):
    """Slot executor on cuda-python streams/events (see gpu_pipeline for the schedule).

    The executor owns one execution context (made here, freed in :meth:`close`), shared by its
    slots and by no one else: ``backend.infer`` and other pipelines of the same backend have their
    own, so they can neither change its input shape nor run on it from another stream. Opening it
    frees the backend's synchronous context (``drop_sync_context``: the one ``Deblurrer.open``'s
    probe made, with its own activation memory); a later ``backend.infer`` makes it again. It also
    holds an optimization profile of its own until closed (TensorRT runs concurrent contexts on
    separate profiles): a second open pipeline of a one-profile engine is refused with the way
    out. ``backend.infer``'s context runs on profile 0: do not call it while a pipeline on that
    profile has frames in flight (flush it first). Its slots'
    computes are chained by events so they never run together, and before a compute rebinds the
    context's tensor addresses the host waits for the previous run on it to finish (TensorRT does
    not document rebinding while a run is in flight). Uploads and downloads of the neighbouring
    frames still overlap each compute."""

    def __init__(self, backend: TensorRTBackend, slots: int = 2, rgb: bool = False,
                 gpu_preprocess: bool | None = None, timeline: bool = False):
        cudart = backend._cudart
        self.b, self.cudart = backend, cudart
        self.backend = backend  # SlotScheduler reads it: a recurrent backend turns on its scene-cut detector
        self.slots = check_slots(slots)
        self.rgb = rgb
        self._stack = contextlib.ExitStack()
        cudart.set_device(backend.device)
        f32 = np.dtype(np.float32)
        self.gpu_preprocess = gpu_preprocess is not False and backend.dtypes[backend.input_name] == f32 \
            and backend.dtypes[backend.output_name] == f32
        self.preprocess_note = None
        try:
            self.kernels = None
            if self.gpu_preprocess:
                try:
                    self.kernels = self._stack.enter_context(cudart.FrameKernels(backend.device))
                except (DependencyError, BackendError) as e:  # no NVRTC, or it cannot compile/load the kernels
                    if gpu_preprocess:
                        raise
                    self.gpu_preprocess = False
                    self.preprocess_note = f"frames are converted on the CPU: {e}"
                    log.warning("TensorRT pipeline: %s", self.preprocess_note)
            self._slots = []
            self.profile_index = backend.claim_profile()
            self._stack.callback(backend.release_profile, self.profile_index)
            backend.drop_sync_context()  # the probe's context: one context's activation memory per stream, not two
            self.ctx = backend._new_context()  # this executor's own (see the class docstring)
            self._stack.callback(self._drop_context)  # after the slots are closed (the stack runs in reverse)
            self._ctx_shape = None
            self._last_compute: int | None = None  # the slot whose compute was enqueued last
            self._timing_warned = False
            for _ in range(self.slots):
                sl = _TrtSlot(cudart, timeline)
                self._stack.callback(sl.close)
                self._slots.append(sl)
            self._select_profile()
            self._state_stack = contextlib.ExitStack()
            self._stack.callback(lambda: self._state_stack.close())
            self._state = None  # {input name: [DeviceBuffer, DeviceBuffer]}
            self._state_key = None
            self._turn = 0
            self._timeline: list[StageTiming] = []
            if timeline:
                self._t0 = self._stack.enter_context(cudart.Event(timing=True))
                self._t0.record(self._slots[0].stream)
                self._t0.synchronize()
        except BaseException:
            self._stack.close()
            raise

    def _select_profile(self):
        """Put the context on this executor's profile (a new context starts on profile 0)."""
        if self.profile_index == 0:
            return
        stream = self._slots[0].stream
        if not self.ctx.set_optimization_profile_async(self.profile_index, int(stream.handle)):
            raise BackendError(f"TensorRT refused optimization profile {self.profile_index} of {str(self.b.path)!r} "
                               "(see the TensorRT error above); close other pipelines of this backend")
        stream.synchronize()

    def _drop_context(self):
        self.ctx = None  # the last reference: TensorRT frees the context and its activation memory
        self._ctx_shape = None

    # per-slot buffers for one frame size
    def _buffers(self, sl: _TrtSlot, frame: np.ndarray):
        cudart, b = self.cudart, self.b
        gpu = self.gpu_preprocess and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        h, w = frame.shape[:2]
        s = b.stride
        hp, wp = -(-h // s) * s, -(-w // s) * s
        key = (gpu, h, w)
        if sl.key == key:
            return
        in_shape = (1, 3, hp, wp)
        for other in self._slots:  # the shared context is about to be reshaped: no run may be in flight on it
            other.computed.synchronize()
        # first the shape (a frame outside the profile raises here, with this slot's buffers intact:
        # freeing them first left the slot keyed to freed memory, and every later frame failed)
        shapes = b.set_shapes(self.ctx, in_shape, self.profile_index)
        self._ctx_shape = in_shape
        sl.key = None  # until the new buffers exist
        if sl.bufs is not None:
            sl.bufs.close()  # the slot was collected: nothing in flight uses them
        sl.bufs = st = contextlib.ExitStack()
        sl.in_shape = in_shape
        sl.shapes = shapes
        # the image input and output, and a scratch buffer for each output the runtime does not use
        sl.dev = {n: st.enter_context(cudart.DeviceBuffer(int(np.prod(shapes[n])) * b.dtypes[n].itemsize))
                  for n in (b.input_name, b.output_name, *b.extra_outputs)}
        # state outputs of this slot's compute are written straight into the shared ping-pong buffers
        if gpu:
            sl.host_in = st.enter_context(cudart.PinnedBuffer((h, w, 3), np.uint8))
            sl.host_out = st.enter_context(cudart.PinnedBuffer((h, w, 3), np.uint8))
            sl.dev_u8_in = st.enter_context(cudart.DeviceBuffer(h * w * 3))
            sl.dev_u8_out = st.enter_context(cudart.DeviceBuffer(h * w * 3))
            # the postprocess kernel's NaN/Inf flag (an int, zeroed before each launch) and its host copy
            sl.dev_bad = st.enter_context(cudart.DeviceBuffer(4))
            sl.host_bad = st.enter_context(cudart.PinnedBuffer((1,), np.int32))
        else:
            sl.host_in = st.enter_context(cudart.PinnedBuffer(shapes[b.input_name], b.dtypes[b.input_name]))
            sl.host_out = st.enter_context(cudart.PinnedBuffer(shapes[b.output_name], b.dtypes[b.output_name]))
        sl.gpu, sl.hw, sl.hwp = gpu, (h, w), (hp, wp)
        sl.key = key

    def _mark(self, sl, name):
        if sl.marks is not None:
            sl.marks[name].record(sl.stream)

    def stage(self, slot, index, frame):
        from ..preprocess import check_frame, frame_to_tensor

        self.cudart.set_device(self.b.device)  # each stage method may run on a worker thread
        sl = self._slots[slot]
        sl.uploaded.synchronize()  # the previous upload has read host_in
        frame = check_frame(frame)
        self._buffers(sl, frame)
        sl.index = index
        if sl.gpu:
            np.copyto(sl.host_in.array, frame)
            sl.info = None
        else:
            x, sl.info = frame_to_tensor(frame, self.b.stride, self.rgb)
            np.copyto(sl.host_in.array, x, casting="same_kind")

    def upload(self, slot):
        sl, cudart = self._slots[slot], self.cudart
        cudart.set_device(self.b.device)
        self._mark(sl, "upload0")
        if sl.gpu:
            cudart.memcpy_htod_async(sl.dev_u8_in, sl.host_in.ptr, sl.host_in.nbytes, sl.stream)
            (h, w), (hp, wp) = sl.hw, sl.hwp
            self.kernels.preprocess(sl.dev_u8_in, sl.dev[self.b.input_name], h, w, hp, wp, self.rgb, sl.stream)
        else:
            cudart.memcpy_htod_async(sl.dev[self.b.input_name], sl.host_in.ptr, sl.host_in.nbytes, sl.stream)
        self._mark(sl, "upload1")
        sl.uploaded.record(sl.stream)

    def _ensure_state(self, sl, after, reset):
        b, cudart = self.b, self.cudart
        if not b.state_specs:
            return None
        key = tuple(sl.shapes[s["input"]] for s in b.state_specs)
        if self._state is None or key != self._state_key:
            if after is not None:
                self._slots[after].computed.synchronize()  # nothing may still read the old buffers
            # forget the old buffers first: an allocation that fails below must not leave the old
            # key naming freed or half-made buffers (the next frame of the old size would use them)
            self._state, self._state_key = None, None
            self._state_stack.close()
            self._state_stack = contextlib.ExitStack()
            state = {}
            for s in b.state_specs:
                nbytes = int(np.prod(sl.shapes[s["input"]])) * s["dtype"].itemsize
                state[s["input"]] = [self._state_stack.enter_context(cudart.DeviceBuffer(nbytes)) for _ in range(2)]
            self._state, self._state_key = state, key
            reset = True
        if reset:
            for pair in self._state.values():
                pair[self._turn].zero_async(sl.stream)
        return self._turn

    def compute(self, slot, after, reset=False):
        sl, b = self._slots[slot], self.b
        self.cudart.set_device(b.device)
        if after is not None and after != slot:
            sl.stream.wait(self._slots[after].computed)  # frame order, and the state written by the last compute
        turn = self._ensure_state(sl, after, reset)
        ctx = self.ctx
        if self._last_compute is not None:  # the shared context's previous run must end before it is rebound
            self._slots[self._last_compute].computed.synchronize()
        if self._ctx_shape != sl.in_shape:  # a size change
            b.set_shapes(ctx, sl.in_shape, self.profile_index)
            self._ctx_shape = sl.in_shape
        sl.compute0.record(sl.stream)  # after the wait for the previous compute: the model's time only
        for name in (b.input_name, b.output_name, *b.extra_outputs):
            b.bind(ctx, name, sl.dev[name].ptr)
        for s in b.state_specs:
            bufs = self._state[s["input"]]
            b.bind(ctx, s["input"], bufs[turn].ptr)
            b.bind(ctx, s["output"], bufs[1 - turn].ptr)
        if not ctx.execute_async_v3(int(sl.stream.handle)):
            raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT error above)")
        self._last_compute = slot
        if turn is not None:
            self._turn = 1 - turn
        sl.compute1.record(sl.stream)
        sl.computed.record(sl.stream)

    def download(self, slot):
        sl, cudart = self._slots[slot], self.cudart
        cudart.set_device(self.b.device)
        self._mark(sl, "download0")
        out = sl.dev[self.b.output_name]
        if sl.gpu:
            (h, w), (hp, wp) = sl.hw, sl.hwp
            sl.dev_bad.zero_async(sl.stream)  # the kernel only sets the flag
            self.kernels.postprocess(out, sl.dev_u8_out, sl.dev_bad, h, w, hp, wp, self.rgb, sl.stream)
            cudart.memcpy_dtoh_async(sl.host_out.ptr, sl.dev_u8_out, sl.host_out.nbytes, sl.stream)
            cudart.memcpy_dtoh_async(sl.host_bad.ptr, sl.dev_bad, sl.host_bad.nbytes, sl.stream)
        else:
            cudart.memcpy_dtoh_async(sl.host_out.ptr, out, sl.host_out.nbytes, sl.stream)
        self._mark(sl, "download1")
        sl.downloaded.record(sl.stream)

    def collect(self, slot):
        from ..preprocess import tensor_to_frame

        self.cudart.set_device(self.b.device)
        sl = self._slots[slot]
        sl.finite = sl.compute_ms = None
        sl.downloaded.synchronize()  # and with it the compute events, recorded before it on this stream
        sl.compute_ms = self._compute_time(sl)
        if sl.marks is not None:
            t = {k: e.elapsed_ms(self._t0) for k, e in sl.marks.items()}
            for stage in ("upload", "compute", "download"):
                self._timeline.append(StageTiming(sl.index, slot, stage, t[stage + "0"], t[stage + "1"]))
        if sl.gpu:
            sl.finite = not bool(sl.host_bad.array[0])  # the postprocess kernel's NaN/Inf flag
            return sl.host_out.array.copy()
        y = sl.host_out.array.astype(np.float32)
        sl.finite = bool(np.isfinite(y).all())
        return tensor_to_frame(y, sl.info)

    def _compute_time(self, sl) -> float | None:
        """Milliseconds between the slot's compute events (the engine run alone)."""
        return self._read_ms(lambda: sl.compute1.elapsed_ms(sl.compute0), BackendError, "TensorRT")

    def finite(self, slot):
        """The frame's float output was finite (no NaN/Inf). Where frames are converted on the CPU
        (``gpu_preprocess`` off, or no NVRTC) the float output comes back and is checked on the
        host; with the GPU kernels the postprocess kernel checks every value of the output
        (padding included) before its uint8 conversion and sets a per-slot device flag, zeroed
        before the launch and downloaded with the frame."""
        return self._slots[slot].finite

    def compute_ms(self, slot):
        """The engine run's own time on the frame just collected from ``slot`` (CUDA events
        recorded around ``execute_async_v3`` on the slot's stream, after its wait for the previous
        frame's compute; read at collect, after the download has been synchronized)."""
        return self._slots[slot].compute_ms

    def timeline(self):
        return list(self._timeline)

    def close(self):
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            self.cudart.set_device(self.b.device)
            for sl in self._slots:
                sl.stream.synchronize()
        finally:
            stack.close()


__all__ = ["TensorRTBackend", "TensorRTSlotExecutor", "check_in_profile", "parse_device", "DependencyError"]
