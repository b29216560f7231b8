"""Distrust what a model returns.

* ``probe_model``: when a model is opened, one small probe frame goes through it and the output
  must have the input's shape (N, 3, H, W) and be finite; a model for another task (a classifier,
  a 1-channel depth net, a 2x upscaler) or a broken export fails at open with a ModelError that
  names the shapes, instead of a traceback (or black frames) in the middle of a stream.
* ``OutputGuard``: every output is checked for NaN/Inf (one pass over the output, small next to
  the model). A bad output is counted, the input frame is passed through instead, a warning is
  logged once, and after ``max_bad_frames`` bad outputs in a row the run fails with ModelError.
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError, ModelError

log = logging.getLogger(__name__)


def probe_shape(backend, stride: int, size: int = 32) -> tuple[int, int, int]:
    """(n, h, w) of the probe: 32 x (32 + stride) rounded to the stride (not square, so a transposed
    output is caught too), or the smallest shape of an engine's optimization profile (a TensorRT
    engine accepts nothing outside it)."""
    profile = getattr(backend, "profile", None)
    if profile:
        lo = tuple(int(v) for v in profile[0])
        return max(1, lo[0]), lo[2], lo[3]
    s = max(stride, -(-size // stride) * stride)
    return 1, s, s + stride


def probe_model(infer, stride: int, name: str, size: int = 32, shape: tuple[int, int, int] | None = None) -> None:
    """Run ``infer`` ((n, 3, h, w) float32 -> array) on a probe frame and check what comes back."""
    if shape is None:
        s = max(stride, -(-size // stride) * stride)
        shape = (1, s, s + stride)
    n, h, w = shape
    rng = np.random.default_rng(0)
    x = (0.25 + 0.5 * rng.random((n, 3, h, w))).astype(np.float32)
    try:
        y = infer(x)
    except (MemoryError, KeyboardInterrupt):
        raise
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure on a valid frame is the model's
        raise ModelError(f"model {name!r} fails on a {w}x{h} probe frame: {str(e).strip()[:300]}") from e
    check_output_shape(x, y, name)
    if not np.isfinite(y).all():
        raise ModelError(
            f"model {name!r} returns NaN/Inf for a plain {w}x{h} probe frame; the file is broken "
            "(e.g. an FP16 overflow or a bad export): re-export it or use the fp32 model"
        )


def check_output_shape(x: np.ndarray, y, name: str) -> None:
    shape = getattr(y, "shape", None)
    if shape is None or tuple(shape) != tuple(x.shape):
        what = "channels" if shape is not None and len(shape) == 4 and shape[1] != x.shape[1] else "shape"
        raise ModelError(
            f"model {name!r} returns {tuple(shape) if shape is not None else type(y).__name__} for input "
            f"{tuple(x.shape)} (wrong {what}); a deblurring model must return an image of its input's "
            "shape (N, 3, H, W): is this the right model file?"
        )


class OutputGuard:
    """Per-frame NaN/Inf check with pass-through and a limit on consecutive bad frames."""

    def __init__(self, max_bad_frames: int = 30, name: str = "model"):
        if not isinstance(max_bad_frames, (int, np.integer)) or max_bad_frames < 1:
            raise InputError(f"max_bad_frames must be an integer >= 1, got {max_bad_frames!r}")
        self.max_bad_frames = int(max_bad_frames)
        self.name = name
        self.bad_frames = 0       # outputs replaced by their input
        self.run = 0              # current run of bad outputs
        self.longest_run = 0
        self._warned = False

    def check(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, bool]:
        """``(output to use, ok)``: ``y`` when finite, else ``x`` (the input passes through)."""
        check_output_shape(x, y, self.name)
        ok = self.record(bool(np.isfinite(y).all()))
        return (y, True) if ok else (x, False)

    def record(self, finite: bool) -> bool:
        """Count one output that was (``finite``) or was not all finite, already checked (the slot
        pipeline's executors check on the device, before the uint8 conversion); returns ``finite``.
        The caller passes the input through for a bad output. ModelError after ``max_bad_frames``
        bad outputs in a row."""
        if finite:
            self.run = 0
            return True
        self.bad_frames += 1
        self.run += 1
        self.longest_run = max(self.longest_run, self.run)
        if not self._warned:
            self._warned = True
            log.warning("model %s returned NaN/Inf; passing the input frame through (counted in the stats as "
                        "model_output.bad_frames; the run fails after %d in a row)", self.name, self.max_bad_frames)
        if self.run >= self.max_bad_frames:
            raise ModelError(
                f"model {self.name!r} returned NaN/Inf for {self.run} frames in a row ({self.bad_frames} in all); "
                "stopping: check the model file (FP16 overflow? re-export) or raise --max-bad-frames"
            )
        return False

    def stats(self) -> dict:
        return {"bad_frames": self.bad_frames, "longest_bad_run": self.longest_run}
