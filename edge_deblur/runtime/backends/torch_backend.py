"""PyTorch backend: runs a ``.safetensors`` checkpoint in its deploy (re-parameterized) form on
the CPU or a CUDA device. torch and the model code are imported only when one is opened."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import BackendError, DependencyError, ModelError
from .base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path, device: str | None = None, threads: int | None = None, half: bool = False, **_ignored):
        super().__init__()
        try:
            import torch
        except ImportError as e:
            raise DependencyError(
                f"the torch backend needs PyTorch ({e}); pip install 'edge-deblur[train]', or export the "
                "checkpoint to ONNX (edge-deblur export) and use the onnxruntime backend"
            ) from e
        from ...models.checkpoint import load_model, sha256_file
        from ...models.profile import REFERENCE_SIZE, count_macs, count_params

        p = Path(path)
        if not p.is_file():
            raise ModelError(f"checkpoint not found: {str(p)!r}; pass a .safetensors file written by edge-deblur train")
        device = (device or "cpu").lower()
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError("the torch backend was asked for CUDA but torch sees no CUDA device; use device='cpu'")
        if device != "cpu" and not device.startswith("cuda"):
            raise BackendError(f"unknown torch device {device!r}; use 'cpu' or 'cuda[:N]'")
        if threads:
            from .onnxruntime import bounded_threads

            torch.set_num_threads(bounded_threads(threads))
        self._torch = torch
        self.device = torch.device(device)
        self.half = bool(half) and self.device.type == "cuda"
        model = load_model(p, deploy=True)
        self.stride = int(getattr(model, "stride", 1))
        self.recurrent = bool(getattr(model, "recurrent", False))
        w, h = REFERENCE_SIZE
        hp, wp = -(-h // self.stride) * self.stride, -(-w // self.stride) * self.stride
        try:
            self.macs_per_pixel = count_macs(model, REFERENCE_SIZE) / (hp * wp)
        except TypeError:  # a recurrent model's forward needs its state: unknown here
            self.macs_per_pixel = None
        self.model = model.to(self.device).eval()
        if self.half:
            self.model = self.model.half()
        self.precision = "fp16" if self.half else "fp32"
        self.threads = torch.get_num_threads()
        self.path = p
        self.state_specs = []
        if self.recurrent:
            self.state_specs = [{"input": "state_in", "output": "state_out", "channels": int(model.state_channels),
                                 "scale": int(getattr(model, "state_scale", self.stride)), "rank": 4, "dtype": np.float32}]
        self.kind = "recurrent" if self.recurrent else "image"
        self.manifest = {
            "kind": self.kind,
            "arch": getattr(model, "spec", {}),
            "stride": self.stride,
            "macs_per_pixel": self.macs_per_pixel,
            "params": count_params(model),
            "checkpoint": {"file": p.name, "sha256": sha256_file(p)},
            "model_meta": getattr(model, "meta", {}),
        }

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.recurrent:
            return self.infer_state(x, self.zero_state(x.shape[0], x.shape[2], x.shape[3]))[0]
        return self._forward(x)[0]

    def zero_state(self, n: int, h: int, w: int) -> dict:
        s = self.state_specs[0]
        return {"state_in": np.zeros((n, s["channels"], h // s["scale"], w // s["scale"]), np.float32)}

    def infer_state(self, x: np.ndarray, state: dict) -> tuple[np.ndarray, dict]:
        from ..stream_state import check_state

        check_state(self.zero_state(x.shape[0], x.shape[2], x.shape[3]), state, self.path.name)
        y, new = self._forward(x, state["state_in"])
        return y, {"state_in": new}

    def _forward(self, x: np.ndarray, state: np.ndarray | None = None):
        torch = self._torch
        self.check_input(x)
        args = [x] if state is None else [x, state]
        ts = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device) for a in args]
        if self.half:
            ts = [t.half() for t in ts]
        try:
            with torch.inference_mode():
                out = self.model(*ts)
        except RuntimeError as e:
            raise BackendError(f"PyTorch failed on a {tuple(x.shape)} batch: {e}") from e
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().cpu().numpy() for o in out]

    def describe(self) -> dict:
        return {"backend": self.name, "device": str(self.device), "threads": self.threads,
                "precision": self.precision, "stride": self.stride}

    def close(self):
        self.model = None
