"""Thin owning wrappers over NVIDIA's cuda-python runtime API (``cuda.bindings.runtime``).

Used by the TensorRT backend and the engine builder; never by code that must run without a GPU.
Importing this module imports nothing from CUDA: :func:`load` does, on first use, and raises
:class:`DependencyError` naming the pip extra when cuda-python is missing.

Every object that owns CUDA memory or a CUDA handle (:class:`PinnedBuffer`,
:class:`DeviceBuffer`, :class:`Stream`, :class:`Event`) frees it in ``close()``, is a context
manager, and does nothing in ``__del__``: owners free them deterministically (usually through a
``contextlib.ExitStack``), in reverse order of creation.

Untested here: this project's CI machine has no GPU. The calls follow cuda-python's documented
runtime API as used by TensorRT's ``samples/python/common_runtime.py``; see docs/JETSON.md for the
one-line GPU checks.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from ..errors import BackendError, DependencyError

_cudart = None

NO_GPU_HINT = (
    "run on a machine with an NVIDIA GPU and a working driver (check `nvidia-smi`), "
    "or use --backend onnxruntime (CPU)"
)


def load():
    """Import cuda-python's runtime module (new ``cuda.bindings`` layout first, then the
    pre-12.6 ``cuda.cudart`` layout)."""
    global _cudart
    if _cudart is not None:
        return _cudart
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 / 13
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]  # cuda-python 12.x before 12.6
        except ImportError as e:
            raise DependencyError(
                f"NVIDIA cuda-python is not installed ({e}); install it with: "
                "pip install 'edge-deblur[tensorrt]', or use --backend onnxruntime"
            ) from e
    _cudart = cudart
    return cudart


def _error_text(cudart, err) -> str:
    try:
        name = cudart.cudaGetErrorName(err)[1]
        text = cudart.cudaGetErrorString(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        text = text.decode() if isinstance(text, bytes) else str(text)
        return f"{name}: {text}"
    except Exception:  # pragma: no cover - only when the error API itself fails
        return str(err)


def check(result, what: str):
    """Unpack a cuda-python result tuple ``(err, *values)``; raise BackendError on failure."""
    cudart = load()
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != cudart.cudaError_t.cudaSuccess:
        raise BackendError(f"CUDA call {what} failed ({_error_text(cudart, err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


# the pip extra whose TensorRT and cuda-python match a driver's CUDA major
TRT_EXTRA_FOR_CUDA = {12: "tensorrt", 13: "tensorrt-cu13"}


def driver_problem(cudart, err) -> str | None:
    """A sentence for cudaErrorInsufficientDriver: no NVIDIA driver at all, or one older than the
    CUDA runtime of the installed cuda-python (cuda-python 13 needs a CUDA 13 driver, 580.65+).
    None for any other error."""
    if err != getattr(cudart.cudaError_t, "cudaErrorInsufficientDriver", object()):
        return None
    try:
        drv = int(check(cudart.cudaDriverGetVersion(), "cudaDriverGetVersion"))
        rt = int(check(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
    except (BackendError, TypeError, ValueError):  # pragma: no cover - these queries need no driver
        drv = rt = -1
    if drv == 0:
        return ("no NVIDIA driver is loaded (cudaDriverGetVersion reports none); install the NVIDIA driver and "
                "check `nvidia-smi`, or use --backend onnxruntime (CPU)")
    if drv < 0 or rt < 0:
        return (f"the NVIDIA driver is too old for the installed cuda-python ({_error_text(cudart, err)}); update "
                "the driver, or use --backend onnxruntime (CPU)")
    extra = TRT_EXTRA_FOR_CUDA.get(drv // 1000)
    match = (f" or install the TensorRT and cuda-python built for CUDA {drv // 1000}: "
             f"pip install 'edge-deblur[{extra}]'," if extra and drv // 1000 < rt // 1000 else "")
    return (f"the NVIDIA driver is too old: it supports CUDA {_cuda_version(drv)}, the installed cuda-python needs "
            f"CUDA {_cuda_version(rt)}; update the driver (CUDA 13 needs 580.65 or newer),{match} "
            "or use --backend onnxruntime (CPU)")


def device_count() -> tuple[int, str]:
    """(number of CUDA devices, reason when 0). Never raises for a missing GPU or driver."""
    cudart = load()
    err, n = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess:
        return 0, driver_problem(cudart, err) or _error_text(cudart, err)
    return int(n), "" if n else "cudaGetDeviceCount returned 0 devices"


def require_gpu(device: int = 0) -> None:
    cudart = load()
    err, n = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess:
        raise BackendError(driver_problem(cudart, err)
                           or f"no CUDA GPU is available ({_error_text(cudart, err)}); {NO_GPU_HINT}")
    n = int(n)
    if n == 0:
        raise BackendError(f"no CUDA GPU is available (cudaGetDeviceCount returned 0 devices); {NO_GPU_HINT}")
    if not 0 <= device < n:
        raise BackendError(f"CUDA device {device} does not exist (this machine has {n}); pick --device 0..{n - 1}")
    check(load().cudaSetDevice(device), f"cudaSetDevice({device})")


def set_device(device: int) -> None:
    """Make ``device`` current on the calling thread (cudaSetDevice). CUDA's current device is per
    host thread and a new thread starts on device 0, so code that runs CUDA work (copies, TensorRT,
    driver-API kernel launches) on a worker thread calls this first; it is cheap."""
    check(load().cudaSetDevice(int(device)), f"cudaSetDevice({device})")


@dataclass(frozen=True)
class GpuInfo:
    name: str
    major: int
    minor: int
    total_memory: int = 0
    multiprocessors: int = 0  # SM count: tells Jetson Orin modules apart (all named "Orin", all sm 8.7)
    board: str = ""  # integrated GPUs (Jetson): the module/carrier model from the device tree

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"


def gpu_info(device: int = 0) -> GpuInfo:
    cudart = load()
    require_gpu(device)
    prop = check(cudart.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})")
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return GpuInfo(str(name).strip(), int(prop.major), int(prop.minor), int(getattr(prop, "totalGlobalMem", 0)),
                   int(getattr(prop, "multiProcessorCount", 0) or 0),
                   jetson_board() if getattr(prop, "integrated", 0) else "")


def jetson_board(path: str = "/proc/device-tree/model") -> str:
    """The device-tree model of a Jetson ('NVIDIA Jetson AGX Orin Developer Kit'), '' elsewhere:
    every Orin module reports the GPU name 'Orin' and sm 8.7, so engines are keyed by this too."""
    try:
        with open(path, "rb") as f:
            return f.read().split(b"\0", 1)[0].decode(errors="replace").strip()
    except OSError:
        return ""


class _Owned:
    """Base for objects that own one CUDA resource and free it in close()."""

    _closed = False

    def close(self):
        if not self._closed:
            self._closed = True
            self._free()

    def _free(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class PinnedBuffer(_Owned):
    """Page-locked host memory (cudaMallocHost) seen as a numpy array of ``shape``/``dtype``.

    The array is a view of memory this object owns: it is invalid after close()."""

    def __init__(self, shape, dtype=np.float32):
        cudart = load()
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.ptr = int(check(cudart.cudaMallocHost(max(self.nbytes, 1)), f"cudaMallocHost({self.nbytes})"))
        try:
            raw = (ctypes.c_uint8 * max(self.nbytes, 1)).from_address(self.ptr)
            self._array = np.frombuffer(raw, dtype=np.uint8, count=self.nbytes).view(self.dtype).reshape(self.shape)
        except BaseException:  # the caller gets no object to close: free the memory here
            self.close()
            raise

    @property
    def array(self) -> np.ndarray:
        if self._closed:
            raise BackendError("pinned buffer used after close()")
        return self._array

    def _free(self):
        self._array = None
        check(load().cudaFreeHost(self.ptr), "cudaFreeHost")


class DeviceBuffer(_Owned):
    """Device memory (cudaMalloc) of ``nbytes``; ``ptr`` is the device address as an int."""

    def __init__(self, nbytes: int):
        cudart = load()
        self.nbytes = int(nbytes)
        self.ptr = int(check(cudart.cudaMalloc(max(self.nbytes, 1)), f"cudaMalloc({self.nbytes})"))

    def zero_async(self, stream: "Stream"):
        check(load().cudaMemsetAsync(self.ptr, 0, self.nbytes, stream.handle), "cudaMemsetAsync")

    def _free(self):
        check(load().cudaFree(self.ptr), "cudaFree")


class Stream(_Owned):
    def __init__(self, non_blocking: bool = True):
        cudart = load()
        if non_blocking:
            self.handle = check(
                cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
            )
        else:
            self.handle = check(cudart.cudaStreamCreate(), "cudaStreamCreate")

    def synchronize(self):
        check(load().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def wait(self, event: "Event"):
        """Later work on this stream waits for ``event``'s latest record (cudaStreamWaitEvent)."""
        check(load().cudaStreamWaitEvent(self.handle, event.handle, 0), "cudaStreamWaitEvent")

    def _free(self):
        check(load().cudaStreamDestroy(self.handle), "cudaStreamDestroy")


class Event(_Owned):
    def __init__(self, timing: bool = False):
        cudart = load()
        flags = cudart.cudaEventDefault if timing else cudart.cudaEventDisableTiming
        self.timing = timing
        self.recorded = False
        self.handle = check(cudart.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags")

    def record(self, stream: Stream):
        check(load().cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")
        self.recorded = True

    def synchronize(self):
        if self.recorded:
            check(load().cudaEventSynchronize(self.handle), "cudaEventSynchronize")

    def elapsed_ms(self, since: "Event") -> float:
        """Milliseconds from ``since`` to this event (both recorded with timing=True)."""
        return float(check(load().cudaEventElapsedTime(since.handle, self.handle), "cudaEventElapsedTime"))

    def _free(self):
        check(load().cudaEventDestroy(self.handle), "cudaEventDestroy")


def memcpy_htod_async(dst: DeviceBuffer, src_ptr: int, nbytes: int, stream: Stream):
    cudart = load()
    if nbytes > dst.nbytes:
        raise BackendError(f"host-to-device copy of {nbytes} bytes into a {dst.nbytes}-byte buffer")
    check(cudart.cudaMemcpyAsync(dst.ptr, src_ptr, nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                 stream.handle), "cudaMemcpyAsync(HtoD)")


def memcpy_dtoh_async(dst_ptr: int, src: DeviceBuffer, nbytes: int, stream: Stream):
    cudart = load()
    if nbytes > src.nbytes:
        raise BackendError(f"device-to-host copy of {nbytes} bytes from a {src.nbytes}-byte buffer")
    check(cudart.cudaMemcpyAsync(dst_ptr, src.ptr, nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                 stream.handle), "cudaMemcpyAsync(DtoH)")


def memcpy_dtod_async(dst: DeviceBuffer, src: DeviceBuffer, nbytes: int, stream: Stream):
    cudart = load()
    check(cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                                 stream.handle), "cudaMemcpyAsync(DtoD)")


# --------------------------------------------------------------------------------------------
# Frame pre/post-processing kernels (uint8 HWC <-> float32 NCHW), compiled once with NVRTC.
# They reproduce runtime.preprocess.frame_to_tensor / tensor_to_frame for 3-channel uint8
# frames bit for bit: scale by float32(1/255), BGR->RGB, pad bottom/right with reflect-101
# (replicate when the pad is not smaller than the frame, as preprocess does), and back with
# clip(x * 255 + 0.5, 0, 255) truncated to uint8. The postprocess kernel also reports NaN/Inf:
# it runs over the whole padded output (as the host check np.isfinite(y).all() does) and sets
# ``*bad`` (a device int the caller zeroes on the same stream before the launch) when any value
# is not finite, so the uint8 conversion (NaN -> 0, +/-Inf -> 255/0) no longer hides it.
# --------------------------------------------------------------------------------------------

FRAME_KERNELS = r"""
extern "C" __global__ void u8hwc_to_f32nchw(const unsigned char* __restrict__ src, float* __restrict__ dst,
                                            int h, int w, int hp, int wp, int swap_rb, int reflect, float s)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= wp || y >= hp) return;
    int sx = x, sy = y;
    if (reflect) {
        if (sx >= w) sx = 2 * (w - 1) - sx;
        if (sy >= h) sy = 2 * (h - 1) - sy;
    } else {
        if (sx >= w) sx = w - 1;
        if (sy >= h) sy = h - 1;
    }
    const unsigned char* p = src + ((size_t)sy * w + sx) * 3;
    float c0 = __fmul_rn((float)p[0], s), c1 = __fmul_rn((float)p[1], s), c2 = __fmul_rn((float)p[2], s);
    if (swap_rb) { float t = c0; c0 = c2; c2 = t; }
    size_t plane = (size_t)hp * wp, i = (size_t)y * wp + x;
    dst[i] = c0; dst[plane + i] = c1; dst[2 * plane + i] = c2;
}

extern "C" __global__ void f32nchw_to_u8hwc(const float* __restrict__ src, unsigned char* __restrict__ dst,
                                            int* __restrict__ bad, int h, int w, int hp, int wp, int swap_rb)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= wp || y >= hp) return;
    size_t plane = (size_t)hp * wp, i = (size_t)y * wp + x;
    float c[3] = {src[i], src[plane + i], src[2 * plane + i]};
    int nonfinite = 0;  /* exponent bits all ones: NaN or +/-Inf */
    for (int k = 0; k < 3; ++k)
        nonfinite |= (__float_as_int(c[k]) & 0x7f800000) == 0x7f800000;
    if (nonfinite) atomicOr(bad, 1);
    if (x >= w || y >= h) return;  /* the padding: checked above, not part of the frame */
    if (swap_rb) { float t = c[0]; c[0] = c[2]; c[2] = t; }
    unsigned char* q = dst + ((size_t)y * w + x) * 3;
    for (int k = 0; k < 3; ++k) {
        float v = __fadd_rn(__fmul_rn(c[k], 255.0f), 0.5f);
        v = fminf(fmaxf(v, 0.0f), 255.0f);
        q[k] = (unsigned char)v;
    }
}
"""


NVRTC_HINT = (
    "install it with pip install 'edge-deblur[tensorrt]' (it brings nvidia-cuda-nvrtc-cu12; "
    "'edge-deblur[tensorrt-cu13]' the CUDA 13 one; on Jetson it comes with JetPack's CUDA toolkit), "
    "or run with gpu_preprocess=False (pre/post-processing on the CPU)"
)


def _driver_and_nvrtc():
    try:
        from cuda.bindings import driver, nvrtc
    except ImportError:
        try:
            from cuda import cuda as driver, nvrtc  # type: ignore[no-redef]
        except ImportError as e:
            raise DependencyError(f"cuda-python's driver/NVRTC bindings are missing ({e}); {NVRTC_HINT}") from e
    return driver, nvrtc


def require_nvrtc(nvrtc=None) -> tuple[int, int]:
    """NVRTC's (major, minor), or DependencyError when libnvrtc cannot be loaded.

    cuda-python loads libnvrtc on the first NVRTC call, and ``cuda-python`` alone does not install
    it; the failure is cuda.pathfinder's DynamicLibNotFoundError (a RuntimeError, not an
    ImportError) in cuda-bindings 12.9/13, another RuntimeError in older ones."""
    if nvrtc is None:
        nvrtc = _driver_and_nvrtc()[1]
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except Exception as e:  # whatever the loader raises: DynamicLibNotFoundError, RuntimeError, OSError
        raise DependencyError(
            f"NVRTC (libnvrtc, which compiles the GPU frame kernels) could not be loaded "
            f"({type(e).__name__}: {str(e).strip()}); {NVRTC_HINT}"
        ) from e
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise DependencyError(f"NVRTC does not work here (nvrtcVersion returned {err}); {NVRTC_HINT}")
    return int(major), int(minor)


def nvrtc_target(nvrtc, major: int, minor: int) -> tuple[str, bool]:
    """(--gpu-architecture value, is PTX): ``sm_XY`` (a CUBIN) where this NVRTC supports the GPU;
    for a GPU newer than NVRTC, ``compute_XY`` of the newest architecture it supports below the
    GPU's, as PTX that the driver compiles for the GPU when the module is loaded."""
    want = major * 10 + minor
    try:
        err, archs = nvrtc.nvrtcGetSupportedArchs()
        archs = [int(a) for a in archs] if err == nvrtc.nvrtcResult.NVRTC_SUCCESS else []
    except Exception:  # an NVRTC or cuda-python without the query: compile for the GPU and let NVRTC say
        archs = []
    older = [a for a in archs if a <= want]
    if not archs or want in archs or not older:
        return f"sm_{want}", False
    return f"compute_{max(older)}", True


def nvrtc_available() -> str | None:
    """None when NVRTC loads, else why not (tests skip on it)."""
    try:
        require_nvrtc()
    except DependencyError as e:
        return str(e)
    return None


class FrameKernels:
    """The two frame kernels, compiled with NVRTC for this GPU (PTX for the newest architecture
    NVRTC knows where the GPU is newer) and loaded with the driver API. :meth:`postprocess` also
    sets a device int flag when the float output holds NaN/Inf (see ``FRAME_KERNELS``)."""

    BLOCK = (32, 8)

    def __init__(self, device: int = 0):
        driver, nvrtc = _driver_and_nvrtc()
        require_nvrtc(nvrtc)  # DependencyError when libnvrtc is not installed
        self._driver = driver
        self._closed = True  # until the module is loaded: close() has nothing to unload
        info = gpu_info(device)
        check(load().cudaFree(0), "cudaFree(0)")  # make the primary context current for the driver API
        image = self._compile(nvrtc, info)
        self._module = self._drv(driver.cuModuleLoadData(image), "cuModuleLoadData")
        self._closed = False
        try:  # a failure from here on unloads the module (the caller gets no object to close)
            self._pre = self._drv(driver.cuModuleGetFunction(self._module, b"u8hwc_to_f32nchw"), "cuModuleGetFunction")
            self._post = self._drv(driver.cuModuleGetFunction(self._module, b"f32nchw_to_u8hwc"), "cuModuleGetFunction")
        except BaseException:
            self.close()
            raise

    def _compile(self, nvrtc, info: GpuInfo) -> bytes:
        """The kernels as a CUBIN for this GPU, or PTX for a GPU newer than NVRTC; the NVRTC
        program is destroyed on every path, failures included."""
        err, prog = nvrtc.nvrtcCreateProgram(FRAME_KERNELS.encode(), b"edge_deblur_frames.cu", 0, [], [])
        self._nvrtc_check(nvrtc, err, "nvrtcCreateProgram")
        try:
            arch, ptx = nvrtc_target(nvrtc, info.major, info.minor)
            opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++11"]
            (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
            if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
                _, n = nvrtc.nvrtcGetProgramLogSize(prog)
                log = b" " * n
                nvrtc.nvrtcGetProgramLog(prog, log)
                gpu = f" (GPU sm_{info.major}{info.minor})" if ptx else ""
                raise BackendError(f"NVRTC could not compile the frame kernels for {arch}{gpu} ({err}): "
                                   f"{log.decode(errors='replace').strip(chr(0) + ' ') or 'no log'}; "
                                   "run with gpu_preprocess=False")
            kind = "PTX" if ptx else "CUBIN"  # PTX (NUL-terminated) is compiled for this GPU by the driver at load
            err, size = getattr(nvrtc, f"nvrtcGet{kind}Size")(prog)
            self._nvrtc_check(nvrtc, err, f"nvrtcGet{kind}Size")
            image = b" " * size
            (err,) = getattr(nvrtc, f"nvrtcGet{kind}")(prog, image)
            self._nvrtc_check(nvrtc, err, f"nvrtcGet{kind}")
            return image
        finally:
            nvrtc.nvrtcDestroyProgram(prog)

    @staticmethod
    def _nvrtc_check(nvrtc, err, what):
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise BackendError(f"{what} failed ({err})")

    def _drv(self, result, what):
        err, values = result[0], result[1:]
        if err != self._driver.CUresult.CUDA_SUCCESS:
            raise BackendError(f"CUDA driver call {what} failed ({err})")
        return values[0] if len(values) == 1 else values

    def _launch(self, fn, w, h, args, types, stream: Stream):
        bx, by = self.BLOCK
        grid = ((w + bx - 1) // bx, (h + by - 1) // by, 1)
        self._drv(self._driver.cuLaunchKernel(fn, *grid, bx, by, 1, 0, self._driver.CUstream(int(stream.handle)),
                                              (args, types), 0), "cuLaunchKernel")

    def preprocess(self, src: DeviceBuffer, dst: DeviceBuffer, h, w, hp, wp, rgb: bool, stream: Stream):
        reflect = int(h > hp - h and w > wp - w)  # same rule as preprocess.frame_to_tensor
        scale = float(np.float32(1.0 / 255.0))  # the very float32 constant preprocess multiplies by
        c = ctypes
        self._launch(self._pre, wp, hp, (src.ptr, dst.ptr, h, w, hp, wp, int(not rgb), reflect, scale),
                     (c.c_void_p, c.c_void_p, c.c_int, c.c_int, c.c_int, c.c_int, c.c_int, c.c_int, c.c_float),
                     stream)

    def postprocess(self, src: DeviceBuffer, dst: DeviceBuffer, bad: DeviceBuffer, h, w, hp, wp, rgb: bool,
                    stream: Stream):
        """``src`` (1x3xhpxwp float32) -> ``dst`` (hxwx3 uint8), and ``bad`` (a device int) set to
        1 where any value of ``src``, padding included, is NaN or +/-Inf. The kernel only sets
        ``bad``: the caller zeroes it on ``stream`` before the launch (``bad.zero_async``)."""
        if bad.nbytes < 4:
            raise BackendError(f"the NaN/Inf flag needs a 4-byte device buffer, got {bad.nbytes} bytes")
        c = ctypes
        self._launch(self._post, wp, hp, (src.ptr, dst.ptr, bad.ptr, h, w, hp, wp, int(not rgb)),
                     (c.c_void_p, c.c_void_p, c.c_void_p, c.c_int, c.c_int, c.c_int, c.c_int, c.c_int), stream)

    def close(self):
        if not self._closed:
            self._closed = True
            self._drv(self._driver.cuModuleUnload(self._module), "cuModuleUnload")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
