"""CPU stand-ins for TensorRT and cuda-python, for tests of the code around them.

- :class:`FakeCuda` replaces the wrappers of ``edge_deblur.runtime.cudart`` (streams, events,
  pinned and device buffers, copies) with host memory addressed by integer "device pointers".
  Work runs at once, in call order, and every event record/wait/synchronize is logged, so a
  test can check what the host waited for before it did what. Every buffer, stream and event is
  kept in ``made`` (``open_objects()``: those not closed), and ``fail(kind, size)`` makes a
  creation fail as CUDA would, to test what error paths free. The current device is per thread
  (0 on a new thread, as in CUDA); copies and runs record the device they ran on. A fake device
  clock (``clock``, ms) advances by ``copy_ms`` per copy, ``kernel_ms`` per kernel launch and the
  engine's ``run_ms`` per run; an event records the clock, and ``elapsed_ms`` (logged as
  ``("elapsed", start id, end id)``) is the difference, refused, as CUDA does, for an event
  made without timing or never recorded.
- :func:`fake_trt` is a ``tensorrt`` module with a runtime whose engine computes
  ``output = 1 - input (+ state)`` on the bound buffers, and a builder that records what it was
  asked for. Both fail the way TensorRT does: ``set_tensor_address`` returns False for an unknown
  name, ``execute_async_v3`` returns False when an I/O tensor has no address; ``nptype`` raises
  TypeError for BF16 as TensorRT's does.
- :class:`FakeNvrtc` / :class:`FakeDriver`: the NVRTC and driver calls of ``cudart.FrameKernels``,
  for an NVRTC that supports a given list of GPU architectures (or fails to compile). Given a
  FakeCuda, the driver runs the two frame kernels' launches with numpy over the fake memory, as
  the CUDA C of ``cudart.FRAME_KERNELS`` does, over the grid launched (:func:`emulated_kernels`).
"""
from __future__ import annotations

import itertools
import threading
import types

import numpy as np

from edge_deblur.errors import BackendError
from edge_deblur.runtime.cudart import GpuInfo

# --------------------------------------------------------------------------------------------
# cuda-python
# --------------------------------------------------------------------------------------------


class FakeCuda:
    """Host memory behind integer pointers, and the cudart wrapper classes over it."""

    def __init__(self):
        self.blocks: dict[int, np.ndarray] = {}
        self._next = 0x10000
        self.log: list[tuple] = []
        self._ids = itertools.count()
        self._current = threading.local()
        self.work_devices: list[tuple[str, int]] = []  # (copy or run, the calling thread's device)
        self.made: list = []  # every DeviceBuffer, PinnedBuffer, Stream and Event, in creation order
        self.fail = None  # fail(kind, size) -> True: that creation raises, as cudaMalloc & co. do
        self.clock = 0.0  # the fake device's time (ms): what timing events record
        self.copy_ms, self.kernel_ms = 0.25, 0.125  # what a copy and a kernel launch take on it
        cuda = self

        class _Owned:
            closed = False

            def close(self):
                self.closed = True

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.close()
                return False

        class DeviceBuffer(_Owned):
            def __init__(self, nbytes):
                cuda.make(self, "DeviceBuffer", int(nbytes))
                self.nbytes = int(nbytes)
                self.ptr = cuda.alloc(self.nbytes)

            def zero_async(self, stream):
                cuda.mem(self.ptr, self.nbytes)[:] = 0
                cuda.log.append(("memset", self.ptr, stream.handle))

        class PinnedBuffer(_Owned):
            def __init__(self, shape, dtype=np.float32):
                self.dtype = np.dtype(dtype)
                self.shape = tuple(int(s) for s in shape)
                self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
                cuda.make(self, "PinnedBuffer", self.nbytes)
                self.ptr = cuda.alloc(self.nbytes)
                self.array = cuda.mem(self.ptr, self.nbytes).view(self.dtype).reshape(self.shape)

        class Stream(_Owned):
            def __init__(self, non_blocking=True):
                cuda.make(self, "Stream")
                self.handle = 0x5000 + next(cuda._ids)

            def synchronize(self):
                cuda.log.append(("stream_sync", self.handle))

            def wait(self, event):
                cuda.log.append(("stream_wait", self.handle, event.id))

        class Event(_Owned):
            def __init__(self, timing=False):
                cuda.make(self, "Event")
                self.id = next(cuda._ids)
                self.timing = timing
                self.recorded = False
                self.t = None

            def record(self, stream):
                self.recorded = True
                self.t = cuda.clock
                cuda.log.append(("record", self.id))

            def synchronize(self):
                cuda.log.append(("event_sync", self.id))

            def elapsed_ms(self, since):
                cuda.log.append(("elapsed", since.id, self.id))
                for e in (since, self):
                    if not e.timing or not e.recorded:  # cudaEventElapsedTime refuses these
                        raise BackendError("CUDA call cudaEventElapsedTime failed (cudaErrorInvalidResourceHandle: "
                                           f"event {e.id} {'has timing disabled' if not e.timing else 'not recorded'})")
                return self.t - since.t

        self.DeviceBuffer, self.PinnedBuffer, self.Stream, self.Event = DeviceBuffer, PinnedBuffer, Stream, Event

    def make(self, obj, kind: str, size: int | None = None):
        """Record a new CUDA object, or raise as the CUDA call would when ``fail`` says so."""
        if self.fail is not None and self.fail(kind, size):
            raise BackendError(f"CUDA call create {kind}({size}) failed (cudaErrorMemoryAllocation: out of memory)")
        self.made.append(obj)

    def open_objects(self) -> list:
        """The buffers, streams and events made and not closed (a leak once their owner closed)."""
        return [o for o in self.made if not o.closed]

    def current_device(self) -> int:
        """The calling thread's current device: 0 until cudaSetDevice on this thread, as in CUDA."""
        return getattr(self._current, "device", 0)

    def set_device(self, device: int):
        self._current.device = int(device)
        return (0,)

    def runtime(self):
        """The few ``cuda.bindings.runtime`` calls left to the real cudart wrappers (set_device, and
        FrameKernels' cudaFree(0)), over this fake's per-thread device."""
        return types.SimpleNamespace(cudaError_t=types.SimpleNamespace(cudaSuccess=0),
                                     cudaSetDevice=self.set_device, cudaFree=lambda ptr: (0,))

    def alloc(self, nbytes: int) -> int:
        ptr = self._next
        self.blocks[ptr] = np.zeros(max(int(nbytes), 1), np.uint8)
        self._next += -(-max(int(nbytes), 1) // 256) * 256 + 256
        return ptr

    def mem(self, ptr: int, nbytes: int) -> np.ndarray:
        for base, block in self.blocks.items():
            if base <= ptr and ptr + nbytes <= base + block.size:
                return block[ptr - base: ptr - base + nbytes]
        raise AssertionError(f"no buffer holds {nbytes} bytes at {ptr:#x}")

    def tensor(self, ptr, shape, dtype=np.float32) -> np.ndarray:
        dtype = np.dtype(dtype)
        return self.mem(ptr, int(np.prod(shape)) * dtype.itemsize).view(dtype).reshape(shape)

    def install(self, monkeypatch, frame_kernels=None):
        """Replace the cudart wrappers (and gpu_info/load) with these."""
        from edge_deblur.runtime import cudart

        def htod(dst, src_ptr, nbytes, stream):
            self.work_devices.append(("copy", self.current_device()))
            self.mem(dst.ptr, nbytes)[:] = self.mem(src_ptr, nbytes)
            self.clock += self.copy_ms

        def dtoh(dst_ptr, src, nbytes, stream):
            self.work_devices.append(("copy", self.current_device()))
            self.mem(dst_ptr, nbytes)[:] = self.mem(src.ptr, nbytes)
            self.clock += self.copy_ms

        def gpu_info(device=0):
            self.set_device(device)  # as the real one does (require_gpu), on the calling thread only
            return GpuInfo("Fake GPU", 8, 7)

        rt = self.runtime()
        for name, value in {
            "load": lambda: rt, "gpu_info": gpu_info,
            "DeviceBuffer": self.DeviceBuffer, "PinnedBuffer": self.PinnedBuffer, "Stream": self.Stream,
            "Event": self.Event, "memcpy_htod_async": htod, "memcpy_dtoh_async": dtoh,
        }.items():
            monkeypatch.setattr(cudart, name, value)
        if frame_kernels is not None:
            monkeypatch.setattr(cudart, "FrameKernels", frame_kernels)
        return self


# --------------------------------------------------------------------------------------------
# TensorRT runtime
# --------------------------------------------------------------------------------------------


class FakeEngine:
    """Inputs ``input`` (+ ``state_in``), outputs ``output`` (+ ``state_out``) and ``extra``
    outputs; ``data_dependent`` outputs report -1 dimensions, as TensorRT does for shapes it
    learns only while running."""

    def __init__(self, cuda: FakeCuda, state=False, extra=(), data_dependent=(), profile=None, dtypes=None,
                 profiles=1, profile_list=None, run_ms=2.5):
        self.cuda = cuda
        self.run_ms = run_ms  # the fake device time of a run (ms), or run_ms(k) for a context's k-th run (from 0)
        self.num_optimization_profiles = profiles  # all of them ``profile``, or profile_list[i]
        self.profile_list = list(profile_list) if profile_list else None
        self.dtypes = dict(dtypes or {})  # name -> TensorRT dtype; float32 otherwise
        self.profile = profile or ((1, 3, 4, 4), (1, 3, 32, 32), (1, 3, 128, 128))
        self.modes = {"input": "in", "output": "out"}
        if state:
            self.modes.update({"state_in": "in", "state_out": "out"})
        for n in extra:
            self.modes[n] = "out"
        self.data_dependent = set(data_dependent)
        self.names = list(self.modes)
        self.contexts = []

    @property
    def num_io_tensors(self):
        return len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return FakeTrt.TensorIOMode.INPUT if self.modes[name] == "in" else FakeTrt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return self.dtypes.get(name, np.float32)

    def get_tensor_profile_shape(self, name, index):
        profile = self.profile_list[index] if self.profile_list else self.profile
        if name == "state_in":
            return [(n, 2, h // 4, w // 4) for n, _, h, w in profile]
        return list(profile)

    def create_execution_context(self):
        ctx = FakeContext(self)
        self.contexts.append(ctx)
        return ctx


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine, self.cuda = engine, engine.cuda
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.runs = 0
        self.profile_index = 0  # TensorRT: a new context is on profile 0

    def set_optimization_profile_async(self, index, stream):
        if not 0 <= index < self.engine.num_optimization_profiles:
            return False
        self.profile_index = index
        return True

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.get_tensor_profile_shape(name, self.profile_index)
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        n, c, h, w = self.shapes["input"]
        if name in self.engine.data_dependent:
            return (-1, c, -1, -1)
        if name in ("state_in", "state_out"):
            return (n, 2, h // 4, w // 4)
        return (n, c, h, w)

    def set_tensor_address(self, name, ptr):
        if name not in self.engine.modes:
            return False
        self.addresses[name] = int(ptr)
        self.cuda.log.append(("bind", name, int(ptr)))
        return True

    def execute_async_v3(self, stream):
        if set(self.addresses) != set(self.engine.names):
            return False  # TensorRT: "address is not set for ..." and the run fails
        shape = self.get_tensor_shape("input")
        x = self.cuda.tensor(self.addresses["input"], shape)
        y = 1.0 - x
        if "state_in" in self.engine.modes:
            sshape = self.get_tensor_shape("state_in")
            s = self.cuda.tensor(self.addresses["state_in"], sshape)
            self.cuda.tensor(self.addresses["state_out"], sshape)[:] = s + 1.0
            y = y + s.mean() / 255.0  # frame k sees state k: the output shows the state carried
        self.cuda.tensor(self.addresses["output"], shape)[:] = y
        for n in self.engine.modes:
            if n not in ("input", "output", "state_in", "state_out"):
                self.cuda.tensor(self.addresses[n], shape)[:] = 7.0  # a scratch output: written, never read
        run_ms = self.engine.run_ms
        self.cuda.clock += run_ms(self.runs) if callable(run_ms) else run_ms
        self.runs += 1
        self.cuda.log.append(("execute", stream))
        self.cuda.work_devices.append(("execute", self.cuda.current_device()))
        return True


class FakeTrt:
    """The parts of the ``tensorrt`` module the runtime and the builder use."""

    class TensorIOMode:
        INPUT, OUTPUT = "INPUT", "OUTPUT"

    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self):
            pass

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 1

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"

    class DeviceType:
        GPU, DLA = "GPU", "DLA"

    class BuilderFlag:
        GPU_FALLBACK, TF32, FP16, INT8 = "GPU_FALLBACK", "TF32", "FP16", "INT8"

    class OnnxParserFlag:
        NATIVE_INSTANCENORM = 0

    class ProfilingVerbosity:
        LAYER_NAMES_ONLY, NONE, DETAILED = "LAYER_NAMES_ONLY", "NONE", "DETAILED"

    bfloat16 = "DataType.BF16"

    @staticmethod
    def nptype(dt):
        if dt == FakeTrt.bfloat16:  # tensorrt.nptype maps only the types numpy has (not BF16/FP8/FP4/INT4)
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return dt


def fake_trt(engine: FakeEngine | None = None, version="10.3.0", *, adjust_for_dla=False, num_dla=0,
             profile_index=0, reject_set_shape=None, unreadable_timing_cache=False):
    """A fake ``tensorrt``: ``Runtime`` deserializes to ``engine``; ``Builder`` records into
    ``trt.built`` (the network's creation flags, the config's flags, the parser's flags, the
    profiles' shapes, the timing caches set). ``unreadable_timing_cache``: ``create_timing_cache``
    gives None for a non-empty blob."""
    trt = types.SimpleNamespace(**{k: v for k, v in vars(FakeTrt).items() if not k.startswith("__")})
    trt.__version__ = version
    trt.OnnxParserFlag = types.SimpleNamespace(NATIVE_INSTANCENORM=0, **({"ADJUST_FOR_DLA": 4} if adjust_for_dla else {}))
    trt.built = built = {"profiles": [], "parser_flags": set(), "flags": {"TF32": True}}

    class Runtime:
        def __init__(self, logger):
            self.DLA_core = -1
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            return engine

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape, self.dtype = name, shape, "DataType.FLOAT"

    class Network:
        num_layers = 0
        inputs = [Tensor("input", (-1, 3, -1, -1)), Tensor("state_in", (-1, 2, -1, -1))]
        outputs = [Tensor("output", (-1, 3, -1, -1)), Tensor("state_out", (-1, 2, -1, -1))]

        @property
        def num_inputs(self):
            return len(self.inputs)

        @property
        def num_outputs(self):
            return len(self.outputs)

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def set_flag(self, flag):
            built["parser_flags"].add(flag)

        def parse_from_file(self, path):
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            if name == reject_set_shape:
                raise RuntimeError("IOptimizationProfile::setDimensions: Error Code 3: API Usage Error")
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Cache:
        def serialize(self):
            return b"timing"

    class Config:
        def __init__(self):
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1
            self.profiling_verbosity = FakeTrt.ProfilingVerbosity.LAYER_NAMES_ONLY  # TensorRT's default

        def set_memory_pool_limit(self, pool, size):
            built["workspace"] = size

        def set_flag(self, flag):
            built["flags"][flag] = True

        def clear_flag(self, flag):
            built["flags"][flag] = False

        def get_flag(self, flag):
            return built["flags"].get(flag, False)

        def add_optimization_profile(self, p):
            built["profiles"].append(p.shapes)
            return profile_index

        def create_timing_cache(self, data):
            return None if (unreadable_timing_cache and data) else Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            if cache is None:
                raise TypeError("set_timing_cache(): incompatible function arguments")  # what pybind11 says to None
            built.setdefault("timing_caches", []).append(ignore_mismatch)
            return True

        def get_timing_cache(self):
            return Cache()

    class Builder:
        def __init__(self, logger):
            self.num_DLA_cores = num_dla
            built["logger"] = logger

        def create_network(self, flags):
            built["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            built["config"] = c = Config()
            return c

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            built["device"] = config.default_device_type
            return b"serialized engine"

    trt.Runtime, trt.Builder, trt.OnnxParser = Runtime, Builder, Parser
    return trt


def open_fake_backend(monkeypatch, tmp_path, engine: FakeEngine, frame_kernels=None, device=None):
    """A TensorRTBackend over ``engine`` with the fake TensorRT and cuda-python installed."""
    from edge_deblur.export import trt_build
    from edge_deblur.runtime.backends.tensorrt import TensorRTBackend

    engine.cuda.install(monkeypatch, frame_kernels)
    trt = fake_trt(engine)
    monkeypatch.setattr(trt_build, "import_tensorrt", lambda: trt)
    path = tmp_path / "fake.engine"
    path.write_bytes(b"fake engine")
    return TensorRTBackend(path, device=device)


def no_kernels(device=0):
    raise BackendError("the test asked for CPU pre/post-processing only")


# --------------------------------------------------------------------------------------------
# NVRTC and the driver API (cudart.FrameKernels)
# --------------------------------------------------------------------------------------------


class FakeNvrtc:
    """``cuda.bindings.nvrtc`` as FrameKernels calls it: an NVRTC that compiles for ``archs``
    (``--gpu-architecture`` outside them fails, as the real one does for a GPU newer than itself),
    or fails every compile with ``fail``. ``options`` records each compile's options."""

    class nvrtcResult:
        NVRTC_SUCCESS, NVRTC_ERROR_INVALID_OPTION, NVRTC_ERROR_COMPILATION = 0, 5, 6

    def __init__(self, archs=(75, 80, 86, 87, 89, 90), fail=False):
        self.archs, self.fail = list(archs), fail
        self.options: list[list[str]] = []

    def nvrtcVersion(self):
        return 0, 12, 4

    def nvrtcGetSupportedArchs(self):
        return 0, list(self.archs)

    def nvrtcCreateProgram(self, src, name, n, headers, include_names):
        return 0, "program"

    def nvrtcCompileProgram(self, prog, n, opts):
        opts = [o.decode() for o in opts]
        self.options.append(opts)
        arch = next(o.split("=", 1)[1] for o in opts if o.startswith("--gpu-architecture="))
        if self.fail:
            return (self.nvrtcResult.NVRTC_ERROR_COMPILATION,)
        if int(arch.split("_")[1]) not in self.archs:
            return (self.nvrtcResult.NVRTC_ERROR_INVALID_OPTION,)  # "invalid value for --gpu-architecture"
        return (0,)

    def nvrtcGetProgramLogSize(self, prog):
        return 0, 1

    def nvrtcGetProgramLog(self, prog, buf):
        return (0,)

    def nvrtcGetPTXSize(self, prog):
        return 0, 16

    def nvrtcGetPTX(self, prog, buf):
        return (0,)

    nvrtcGetCUBINSize, nvrtcGetCUBIN = nvrtcGetPTXSize, nvrtcGetPTX

    def nvrtcDestroyProgram(self, prog):
        return (0,)


class FakeDriver:
    """``cuda.bindings.driver``: modules load; given ``cuda`` (a FakeCuda) kernel launches run the
    frame kernels of ``cudart.FRAME_KERNELS`` with numpy over its memory, else they do nothing."""

    class CUresult:
        CUDA_SUCCESS = 0

    cuda = None  # (subclasses that do not call __init__ launch nothing)

    def __init__(self, cuda: FakeCuda | None = None):
        self.cuda = cuda
        self.launches: list[tuple] = []  # (kernel name, grid, block, args)

    @staticmethod
    def CUstream(handle):
        return int(handle)

    def cuModuleLoadData(self, image):
        return 0, "module"

    def cuModuleGetFunction(self, module, name):
        return 0, name

    def cuModuleUnload(self, module):
        return (0,)

    def cuLaunchKernel(self, fn, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        args, types_ = params
        assert len(args) == len(types_), (fn, args, types_)
        name = fn.decode() if isinstance(fn, bytes) else str(fn)
        self.launches.append((name, (gx, gy, gz), (bx, by, bz), tuple(args)))
        cuda = self.cuda
        if cuda is None:
            return (0,)
        cuda.log.append(("launch", name, stream))
        cuda.work_devices.append(("kernel", cuda.current_device()))
        cuda.clock += cuda.kernel_ms
        {"u8hwc_to_f32nchw": self._pre, "f32nchw_to_u8hwc": self._post}[name](gx * bx, gy * by, *args)
        return (0,)

    def _pre(self, gw, gh, src, dst, h, w, hp, wp, swap_rb, reflect, s):
        """u8hwc_to_f32nchw over the threads launched (x < gw, y < gh) that fall inside hp x wp."""
        cuda = self.cuda
        xs, ys = np.arange(min(gw, wp)), np.arange(min(gh, hp))
        sx = np.where(xs < w, xs, (2 * (w - 1) - xs) if reflect else w - 1)
        sy = np.where(ys < h, ys, (2 * (h - 1) - ys) if reflect else h - 1)
        frame = cuda.tensor(src, (h, w, 3), np.uint8)
        c = frame[sy][:, sx].astype(np.float32) * np.float32(s)  # (y, x, 3), as __fmul_rn in float32
        if swap_rb:
            c = c[..., ::-1]
        cuda.tensor(dst, (3, hp, wp))[:, : len(ys), : len(xs)] = c.transpose(2, 0, 1)

    def _post(self, gw, gh, src, dst, bad, h, w, hp, wp, swap_rb):
        """f32nchw_to_u8hwc: ``*bad`` |= 1 where a value the threads launched read (x < gw and
        y < gh, inside hp x wp) is NaN or +/-Inf; the frame (x < w, y < h) written as uint8."""
        cuda = self.cuda
        y = cuda.tensor(src, (3, hp, wp))
        seen = y[:, : min(gh, hp), : min(gw, wp)]
        if not np.isfinite(seen).all():
            cuda.tensor(bad, (1,), np.int32)[0] |= 1  # atomicOr: the kernel never clears the flag
        c = y[:, : min(gh, h), : min(gw, w)].transpose(1, 2, 0)
        if swap_rb:
            c = c[..., ::-1]
        v = c * np.float32(255.0) + np.float32(0.5)
        v = np.fmin(np.fmax(v, np.float32(0.0)), np.float32(255.0))  # fmaxf(NaN, 0) is 0, as in CUDA
        cuda.tensor(dst, (h, w, 3), np.uint8)[: v.shape[0], : v.shape[1]] = v.astype(np.uint8)


def emulated_kernels(monkeypatch, cuda: FakeCuda) -> FakeDriver:
    """Make ``cudart.FrameKernels`` (the real class) compile over :class:`FakeNvrtc` and launch
    over a :class:`FakeDriver` that runs the kernels on ``cuda``'s memory; returns the driver."""
    from edge_deblur.runtime import cudart

    driver = FakeDriver(cuda)
    monkeypatch.setattr(cudart, "_driver_and_nvrtc", lambda: (driver, FakeNvrtc()))
    return driver


def write_relu_onnx(path):
    """A one-Relu ONNX graph with dynamic NCHW input/output named like the models' (for builder tests)."""
    import onnx
    from onnx import TensorProto as T, helper as h

    g = h.make_graph([h.make_node("Relu", ["input"], ["output"])], "g",
                     [h.make_tensor_value_info("input", T.FLOAT, [-1, 3, -1, -1])],
                     [h.make_tensor_value_info("output", T.FLOAT, [-1, 3, -1, -1])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path
