"""The backend protocol: every backend (ONNX Runtime, PyTorch, TensorRT, torch-CUDA) takes a
batch of NCHW float32 RGB tensors in [0, 1] (H, W multiples of ``stride``) and returns the
same shape. Backends are context managers that own and free their resources."""
from __future__ import annotations

import abc

import numpy as np

from ...errors import InputError


class Backend(abc.ABC):
    name: str = "base"

    def __init__(self):
        self.stride: int = 1
        self.precision: str = "fp32"
        self.manifest: dict = {}
        self.selection: dict | None = None  # which file of a model folder was chosen, and why (runtime.select)
        self.max_batch: int | None = None   # most frames one infer() takes (None: any; a fixed-batch model: its batch)

    @abc.abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run one batch: (N, 3, H, W) float32 -> (N, 3, H, W) float32."""

    def check_input(self, x) -> None:
        """Raise InputError unless ``x`` is an (N, 3, H, W) array with H, W multiples of the stride."""
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"backend input must be (N, 3, H, W), got {getattr(x, 'shape', type(x).__name__)}")
        if x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise InputError(
                f"input {x.shape[3]}x{x.shape[2]} is not a multiple of the model's stride {self.stride}; "
                "pad frames with edge_deblur.runtime.preprocess.frame_to_tensor(frame, stride)"
            )

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
