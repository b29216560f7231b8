"""The backend protocol: every backend (ONNX Runtime, PyTorch, TensorRT, torch-CUDA) takes a
batch of NCHW float32 RGB tensors in [0, 1] (H, W multiples of ``stride``) and returns the
same shape. Backends are context managers that own and free their resources."""
from __future__ import annotations

import abc

import numpy as np


class Backend(abc.ABC):
    name: str = "base"

    def __init__(self):
        self.stride: int = 1
        self.precision: str = "fp32"
        self.manifest: dict = {}

    @abc.abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run one batch: (N, 3, H, W) float32 -> (N, 3, H, W) float32."""

    def warmup(self, height: int, width: int, runs: int = 2):
        x = np.zeros((1, 3, height, width), np.float32)
        for _ in range(runs):
            self.infer(x)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
