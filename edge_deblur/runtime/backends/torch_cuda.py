"""PyTorch CUDA backend (``--backend torch-cuda``): a ``.safetensors`` checkpoint in its deploy
form on a CUDA GPU, with the same two-slot double-buffered schedule as the TensorRT backend,
built from torch streams, events and pinned tensors (optionally CUDA graphs). It verifies the
double buffering on any CUDA machine, TensorRT or not.

- :meth:`TorchCudaBackend.infer` / ``infer_state``: the Backend protocol, synchronous.
- :meth:`TorchCudaBackend.pipeline`: the two-slot schedule (uint8 frames uploaded as is,
  converted, normalized and padded on the GPU; recurrent state kept on the GPU).
- :meth:`TorchCudaBackend.sync_executor`: the comparison, one frame at a time with synchronous
  (pageable) copies and the same GPU pre/post-processing; run it with
  ``gpu_pipeline.run_sync``.

torch is imported when a backend is opened, never at module import. Untested on this project's
CI machine (no GPU); tests/test_gpu_*.py and benchmarks/gpu_overlap.py run it on a CUDA machine.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ...errors import BackendError, DependencyError, InputError, ModelError
from ..gpu_pipeline import SlotExecutor, SlotScheduler, StageTiming, check_slots, schedule
from .base import Backend

log = logging.getLogger(__name__)


def import_torch():
    try:
        import torch
    except ImportError as e:
        raise DependencyError(
            f"the torch-cuda backend needs PyTorch with CUDA ({e}); install a CUDA build of torch and "
            "pip install 'edge-deblur[train]', or use --backend onnxruntime"
        ) from e
    return torch


def cuda_device(torch, device):
    if not torch.cuda.is_available():
        build = getattr(torch.version, "cuda", None)
        why = (f"torch {torch.__version__} is a CPU-only build" if not build
               else f"torch {torch.__version__} (CUDA {build}) sees no CUDA device")
        raise BackendError(f"the torch-cuda backend needs a CUDA GPU: {why}; "
                           "use --backend torch (CPU) or --backend onnxruntime")
    d = str(device or "cuda").lower()
    if d in ("gpu", "tensorrt"):
        d = "cuda"
    if d.isdigit():
        d = f"cuda:{d}"
    if not d.startswith("cuda"):
        raise BackendError(f"the torch-cuda backend runs on a CUDA device; got device={device!r} (use 'cuda' or 'cuda:N')")
    dev = torch.device(d)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise BackendError(f"CUDA device {dev.index} does not exist (torch sees {torch.cuda.device_count()})")
    return dev


class TorchCudaBackend(Backend):
    name = "torch-cuda"

    def __init__(self, path=None, device=None, half: bool = False, precision: str | None = None,
                 model=None, **_ignored):
        super().__init__()
        torch = import_torch()
        self._torch = torch
        self.device = cuda_device(torch, device)
        if model is None:
            from ...models.checkpoint import load_model, sha256_file

            p = Path(path) if path is not None else None
            if p is None or not p.is_file():
                raise ModelError(f"checkpoint not found: {str(p)!r}; pass a .safetensors file written by edge-deblur train")
            model = load_model(p, deploy=True)
            self.path = p
            self.manifest = {"arch": getattr(model, "spec", {}), "checkpoint": {"file": p.name, "sha256": sha256_file(p)}}
        else:
            self.path = Path(path) if path is not None else None
            self.manifest = {"arch": getattr(model, "spec", {})}
        precision = (precision or ("fp16" if half else "fp32")).lower()
        if precision not in ("fp32", "fp16"):
            raise BackendError(f"the torch-cuda backend runs fp32 or fp16, not {precision!r}")
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.stride = int(getattr(model, "stride", 1))
        self.model = model.to(self.device, self.dtype).eval()
        self.recurrent = bool(getattr(model, "recurrent", False))
        self.state_specs = []
        if self.recurrent:
            self.state_specs = [{"input": "state_in", "output": "state_out", "channels": int(model.state_channels),
                                 "scale": int(getattr(model, "state_scale", self.stride)), "rank": 4, "dtype": np.float32}]
        self.manifest["stride"] = self.stride

    # -- GPU pre/post-processing, shared by every schedule ----------------------------------------
    def gpu_preprocess(self, u8, rgb: bool = False):
        """(H, W, 3) uint8 CUDA tensor -> (1, 3, Hp, Wp) float32 RGB in [0, 1], padded like
        preprocess.frame_to_tensor (reflect-101, replicate when the pad is not smaller than the frame)."""
        torch = self._torch
        h, w = u8.shape[:2]
        x = u8.permute(2, 0, 1).unsqueeze(0)
        if not rgb:
            x = x.flip(1)
        x = x.to(torch.float32).mul_(float(np.float32(1.0 / 255.0)))
        s = self.stride
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            mode = "reflect" if (h > ph and w > pw) else "replicate"
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
        return x

    def gpu_postprocess(self, y, h: int, w: int, rgb: bool = False):
        """(1, 3, Hp, Wp) model output -> (H, W, 3) uint8 CUDA tensor, as preprocess.tensor_to_frame."""
        torch = self._torch
        y = y[0, :, :h, :w].to(torch.float32)
        if not rgb:
            y = y.flip(0)
        y = y.permute(1, 2, 0)
        return y.mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8).contiguous()

    def forward(self, x, state=None):
        """Model call on device tensors (float32 in and out, model dtype inside)."""
        xm = x.to(self.dtype)
        if self.recurrent:
            y, new_state = self.model(xm, state.to(self.dtype))
            return y.to(self._torch.float32), new_state.to(self._torch.float32)
        return self.model(xm).to(self._torch.float32), None

    def zero_state_device(self, n, h, w):
        return self._torch.zeros(self.model.state_shape(h, w, n), device=self.device, dtype=self._torch.float32)

    # -- the Backend protocol (synchronous) --------------------------------------------------------
    def _check(self, x):
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"backend input must be (N, 3, H, W), got {getattr(x, 'shape', type(x).__name__)}")
        if x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise InputError(f"input {x.shape[3]}x{x.shape[2]} is not a multiple of the model's stride {self.stride}; "
                             "pad frames with edge_deblur.runtime.preprocess.frame_to_tensor(frame, stride)")

    def infer_state(self, x: np.ndarray, state: dict | None):
        torch = self._torch
        self._check(x)
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        st = None
        if self.recurrent:
            n, _, h, w = x.shape
            v = (state or {}).get("state_in")
            if v is None:
                st = self.zero_state_device(n, h, w)
            elif isinstance(v, torch.Tensor):  # carried from the previous frame: already on the device
                st = v.to(self.device, torch.float32)
            else:
                st = torch.from_numpy(np.ascontiguousarray(v, np.float32)).to(self.device)
            if tuple(st.shape) != tuple(self.model.state_shape(h, w, n)):
                raise InputError(f"recurrent state 'state_in' has shape {tuple(st.shape)}, expected "
                                 f"{tuple(self.model.state_shape(h, w, n))} for a {w}x{h} batch of {n}; "
                                 "pass the state the previous frame of the same size returned, or reset()")
        try:
            with torch.inference_mode():
                y, new = self.forward(t, st)
        except RuntimeError as e:
            raise BackendError(f"PyTorch CUDA failed on a {tuple(x.shape)} batch: {e}") from e
        # the next state stays on the device (a torch tensor); the runtime hands it back next frame
        return y.cpu().numpy(), ({"state_in": new} if new is not None else {})

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.infer_state(x, None)[0]

    def zero_state(self, n: int, h: int, w: int) -> dict:
        if not self.recurrent:
            return {}
        return {"state_in": np.zeros(self.model.state_shape(h, w, n), np.float32)}

    # -- schedules ----------------------------------------------------------------------------------
    def pipeline(self, slots: int = 2, rgb: bool = False, timeline: bool = False,
                 cuda_graphs: bool = False) -> SlotScheduler:
        return schedule(TorchCudaSlotExecutor(self, slots=slots, rgb=rgb, timeline=timeline, cuda_graphs=cuda_graphs))

    def sync_executor(self, rgb: bool = False, timeline: bool = False,
                      cuda_graphs: bool = False) -> "TorchCudaSlotExecutor":
        """One slot, pageable memory, blocking copies: the baseline for the overlap benchmark
        (with ``cuda_graphs`` the same graph replay as the two-slot pipeline, so the two differ
        only in the schedule)."""
        return TorchCudaSlotExecutor(self, slots=1, rgb=rgb, timeline=timeline, synchronous=True,
                                     cuda_graphs=cuda_graphs)

    def describe(self) -> dict:
        torch = self._torch
        return {"backend": self.name, "device": str(self.device), "gpu": torch.cuda.get_device_name(self.device),
                "torch": torch.__version__, "precision": self.precision, "stride": self.stride}

    def close(self):
        if getattr(self, "model", None) is not None:
            self.model = None
            self._torch.cuda.empty_cache()


class _Slot:
    def __init__(self, torch, device, timeline):
        self.stream = torch.cuda.Stream(device=device)
        self.uploaded = torch.cuda.Event()
        self.computed = torch.cuda.Event()
        self.downloaded = torch.cuda.Event()
        # the model's own time (compute_ms), on every frame: two timing events around the model
        # call, read at collect once the download (recorded after them on this stream) is done
        self.compute0 = torch.cuda.Event(enable_timing=True)
        self.compute1 = torch.cuda.Event(enable_timing=True)
        self.marks = None
        if timeline:  # the timeline's compute pair is the one above
            self.marks = {k: torch.cuda.Event(enable_timing=True)
                          for k in ("upload0", "upload1", "download0", "download1")}
            self.marks.update(compute0=self.compute0, compute1=self.compute1)
        self.used = False
        self.key = None
        self.index = -1
        self.host_in = self.host_out = None
        self.dev_u8 = self.x = self.y = self.out_u8 = None
        self.frame = None
        self.graph = None
        self.static_in = self.static_out = None
        self.finite = None   # device bool tensor of the frame in the slot: its float output was finite
        self.checked = None  # that flag read at collect (None: not checked)
        self.compute_ms = None  # the model's time on the last collected frame (None: not measured)


class TorchCudaSlotExecutor(SlotExecutor):
    """Slot executor on torch.cuda streams/events with pinned host tensors.

    ``synchronous=True`` (the baseline): pageable host memory and blocking copies, one slot.
    ``cuda_graphs=True``: the model call of each slot is captured once per frame size and
    replayed (stateless models only)."""

    def __init__(self, backend: TorchCudaBackend, slots: int = 2, rgb: bool = False, timeline: bool = False,
                 cuda_graphs: bool = False, synchronous: bool = False):
        torch = backend._torch
        self.b, self.torch = backend, torch
        self.backend = backend  # SlotScheduler reads it: a recurrent backend turns on its scene-cut detector
        self.slots = 1 if synchronous else check_slots(slots)
        self.rgb = rgb
        self.synchronous = synchronous
        self.cuda_graphs = bool(cuda_graphs) and not backend.recurrent
        if cuda_graphs and backend.recurrent:
            log.warning("CUDA graphs are off for recurrent models (their state moves between slots)")
        dev = backend.device
        self._slots = [_Slot(torch, dev, timeline) for _ in range(self.slots)]
        self._state = None
        self._state_key = None
        self._timeline: list[StageTiming] = []
        self._timing_warned = False
        self._t0 = None
        if timeline:
            self._t0 = torch.cuda.Event(enable_timing=True)
            self._t0.record(self._slots[0].stream)
            self._t0.synchronize()

    def _mark(self, sl, name):
        if sl.marks is not None:
            sl.marks[name].record(sl.stream)

    def stage(self, slot, index, frame):
        from ..preprocess import check_frame

        torch = self.torch
        sl = self._slots[slot]
        frame = check_frame(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"the torch-cuda pipeline takes H x W x 3 uint8 frames, got {frame.dtype} {frame.shape}; "
                             "use Deblurrer (any dtype/layout) or convert the frames")
        sl.index = index
        if self.synchronous:
            sl.frame = frame
            return
        if sl.used:
            sl.uploaded.synchronize()  # the previous upload has read host_in
        key = frame.shape
        if sl.key != key:
            sl.host_in = torch.empty(frame.shape, dtype=torch.uint8, pin_memory=True)
            sl.host_out = torch.empty(frame.shape, dtype=torch.uint8, pin_memory=True)
            sl.graph = None
            sl.key = key
        sl.host_in.numpy()[...] = frame

    def upload(self, slot):
        torch = self.torch
        sl = self._slots[slot]
        with torch.cuda.stream(sl.stream):
            self._mark(sl, "upload0")
            if self.synchronous:
                u8 = torch.from_numpy(np.ascontiguousarray(sl.frame)).to(self.b.device)  # pageable, blocking
                sl.frame = None
            else:
                u8 = sl.host_in.to(self.b.device, non_blocking=True)
            sl.x = self.b.gpu_preprocess(u8, self.rgb)
            sl.hw = u8.shape[:2]
            self._mark(sl, "upload1")
            sl.uploaded.record(sl.stream)
        sl.used = True

    def _graph_forward(self, sl):
        torch = self.torch
        if sl.graph is None or sl.static_in.shape != sl.x.shape:
            sl.static_in = torch.empty_like(sl.x)
            sl.static_in.copy_(sl.x)
            side = torch.cuda.Stream(device=self.b.device)
            side.wait_stream(sl.stream)
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(3):  # warm-up outside the capture (cuDNN autotuning, allocator)
                    self.b.forward(sl.static_in)
            sl.stream.wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(g, stream=side):
                sl.static_out, _ = self.b.forward(sl.static_in)
            sl.stream.wait_stream(side)
            sl.graph = g
        sl.static_in.copy_(sl.x)
        sl.graph.replay()
        return sl.static_out

    def compute(self, slot, after, reset=False):
        torch = self.torch
        sl = self._slots[slot]
        with torch.cuda.stream(sl.stream), torch.inference_mode():
            if after is not None and after != slot:
                sl.stream.wait_event(self._slots[after].computed)  # frame order and the recurrent state
            sl.compute0.record(sl.stream)  # after the wait for the previous compute: the model's time only
            if self.b.recurrent:
                n, _, hp, wp = sl.x.shape
                key = (n, hp, wp)
                if reset or self._state is None or self._state_key != key:
                    self._state = self.b.zero_state_device(n, hp, wp)
                    self._state_key = key
                self._state.record_stream(sl.stream)  # made on another slot's stream, read here
                sl.y, self._state = self.b.forward(sl.x, self._state)
            elif self.cuda_graphs:
                sl.y = self._graph_forward(sl)
            else:
                sl.y, _ = self.b.forward(sl.x)
            sl.compute1.record(sl.stream)
            sl.computed.record(sl.stream)

    def download(self, slot):
        torch = self.torch
        sl = self._slots[slot]
        with torch.cuda.stream(sl.stream):
            self._mark(sl, "download0")
            h, w = sl.hw
            sl.finite = torch.isfinite(sl.y).all()  # on the device, before the uint8 conversion; read at collect
            sl.out_u8 = self.b.gpu_postprocess(sl.y, h, w, self.rgb)
            if self.synchronous:
                sl.result = sl.out_u8.cpu()  # pageable, blocking
            else:
                sl.host_out.copy_(sl.out_u8, non_blocking=True)
            sl.x = None
            self._mark(sl, "download1")
            sl.downloaded.record(sl.stream)

    def collect(self, slot):
        sl = self._slots[slot]
        sl.compute_ms = None
        sl.downloaded.synchronize()  # and with it the compute events, recorded before it on this stream
        sl.compute_ms = self._compute_time(sl)
        if sl.marks is not None:
            t = {k: self._t0.elapsed_time(e) for k, e in sl.marks.items()}
            for stage in ("upload", "compute", "download"):
                self._timeline.append(StageTiming(sl.index, slot, stage, t[stage + "0"], t[stage + "1"]))
        sl.y = sl.out_u8 = None
        flag, sl.finite = sl.finite, None
        sl.checked = None if flag is None else bool(flag.item())  # one byte; the download is done
        if self.synchronous:
            out, sl.result = sl.result.numpy(), None
            return out
        return sl.host_out.numpy().copy()

    def finite(self, slot):
        """The frame's float output was finite (``torch.isfinite(y).all()`` on the device before
        the uint8 conversion, read at collect)."""
        return self._slots[slot].checked

    def _compute_time(self, sl) -> float | None:
        """Milliseconds between the slot's compute events."""
        return self._read_ms(lambda: sl.compute0.elapsed_time(sl.compute1), RuntimeError, "torch-cuda")

    def compute_ms(self, slot):
        """The model call's own time on the frame just collected from ``slot`` (CUDA events
        recorded around it on the slot's stream, after its wait for the previous frame's compute;
        read at collect, after the download has been synchronized). With ``cuda_graphs`` the first
        frame of a size includes the graph's capture."""
        return self._slots[slot].compute_ms

    def timeline(self):
        return list(self._timeline)

    def close(self):
        for sl in self._slots:
            sl.stream.synchronize()
            sl.graph = sl.static_in = sl.static_out = None
            sl.host_in = sl.host_out = sl.x = sl.y = sl.out_u8 = sl.finite = None
        self._state = None
