"""The hidden state of one stream for a recurrent (video) model, and the scene-cut detector that
decides when that state no longer describes the frames coming in.

A recurrent model takes ``(frame, state)`` and returns ``(deblurred frame, next state)``. One
:class:`StreamState` holds the state of one stream (one camera, one video, one ``Deblurrer``) and
zeroes it when what it remembers is about another picture:

* ``start``     the first frame, or the first after :meth:`StreamState.clear`;
* ``size``      the (padded) frame size or batch changed;
* ``restart``   the source started over or reconnected (a looped file, an RTSP reconnect);
* ``scene_cut`` this frame's colour histogram is far from the previous frame's
  (:class:`SceneCutDetector`; threshold ``scene_cut``, ``None`` or 0 turns it off);
* ``manual``    the caller said so (``Deblurrer.reset()``, a new video, a new scene in ``eval``).

Every reset is counted by reason (:meth:`StreamState.stats`). No torch here: the state is whatever
the backend's ``zero_state``/``infer_state`` use (numpy arrays on the CPU backends, device tensors
in the GPU backends' own pipelines).
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Optional

import cv2
import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

# Histogram distance (total variation, in [0, 1]) between consecutive frames above which the
# state is reset. Measured on real footage (REDS_320x180 blurred frames, the Udacity dash-cam
# and highway clips), consecutive frames and frames two apart (a dropped frame) stay at or below
# 0.129 and frames of different scenes at or above 0.197: see docs/RECURRENT.md.
DEFAULT_SCENE_CUT = 0.16
RESET_REASONS = ("start", "size", "restart", "scene_cut", "manual", "bad_output")  # bad_output: NaN/Inf (output_guard)

_THUMB = (32, 18)  # (width, height) of the thumbnail whose histogram is compared
_BINS = 16


class SceneCutDetector:
    """Cheap cut detection from frame statistics: each frame is area-averaged to a 32x18
    thumbnail per channel, a 16-bin histogram per channel is taken, and the score of a frame is
    the total-variation distance between its histograms and the previous frame's (0: the same
    colour distribution, 1: disjoint). Camera motion moves content around without changing its
    colour distribution much; a cut changes it. Costs under 0.5 ms of CPU a frame at any size, under 1%
    of the bundled model
    (``benchmarks/scene_cut_stats.py --time``)."""

    def __init__(self, threshold: Optional[float] = DEFAULT_SCENE_CUT):
        self.threshold = check_threshold(threshold)
        self._prev: Optional[np.ndarray] = None
        self.last_score: Optional[float] = None

    @staticmethod
    def features(x: np.ndarray) -> np.ndarray:
        """Normalized per-channel histograms of one frame: ``x`` is a (1, C, H, W) or (C, H, W)
        float tensor in [0, 1] (the runtime's pre-processed input) or an HxWxC / HxW image
        (uint8, uint16 or float in [0, 1])."""
        a = np.asarray(x)
        if a.ndim == 4:
            a = a[0]
        if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
            a = np.stack([_thumb(p) for p in a[:3]], axis=-1)  # planar: one contiguous plane at a time
        elif a.ndim == 3:
            a = _thumb(a[..., :3] if a.shape[-1] > 3 else a)
        elif a.ndim == 2:
            a = _thumb(a)
        else:
            raise InputError(f"scene-cut detection needs an image or a (N, C, H, W) tensor, got shape {np.asarray(x).shape}")
        scale = 1.0 / 255.0 if a.dtype == np.uint8 else 1.0 / 65535.0 if a.dtype == np.uint16 else 1.0
        t = a.reshape(_THUMB[0] * _THUMB[1], -1).astype(np.float32) * np.float32(scale * _BINS)
        idx = np.clip(t, 0, _BINS - 1).astype(np.int64) + np.arange(t.shape[1]) * _BINS
        f = np.bincount(idx.ravel(), minlength=_BINS * t.shape[1]).astype(np.float32)
        return f / float(_THUMB[0] * _THUMB[1])

    def score(self, x: np.ndarray) -> Optional[float]:
        """Distance of this frame to the previous one (None for the first frame); remembers it."""
        f = self.features(x)
        prev, self._prev = self._prev, f
        if prev is None or prev.shape != f.shape:
            self.last_score = None
            return None
        n = f.size // _BINS
        self.last_score = float(0.5 * np.abs(f - prev).sum() / n)
        return self.last_score

    def __call__(self, x: np.ndarray) -> bool:
        """True when ``x`` starts a new scene (always False with the detector off)."""
        if not self.threshold:
            return False
        s = self.score(x)
        return s is not None and s > self.threshold

    def clear(self):
        self._prev = None
        self.last_score = None


def _thumb(img: np.ndarray) -> np.ndarray:
    """Area-averaged 32x18 thumbnail (an 8x8 grid of samples per thumbnail pixel first: an area
    filter over a whole 720p frame costs milliseconds, the sampled one microseconds)."""
    h, w = img.shape[:2]
    sy, sx = max(1, h // (8 * _THUMB[1])), max(1, w // (8 * _THUMB[0]))
    img = np.ascontiguousarray(img[::sy, ::sx])  # a strided view: no pass over the whole frame
    if img.dtype == np.float64:
        img = img.astype(np.float32)
    return cv2.resize(img, _THUMB, interpolation=cv2.INTER_AREA)


def check_threshold(threshold) -> Optional[float]:
    if threshold is None:
        return None
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"scene_cut must be a number in [0, 1] (0 or None: off), got {threshold!r}") from None
    if not 0.0 <= t <= 1.0 or t != t:
        raise InputError(
            f"scene_cut must be in [0, 1] (a histogram distance; 0 or None: off; default {DEFAULT_SCENE_CUT}), got {threshold!r}"
        )
    return t or None


def check_state(expected: dict, state, where: str = "the model") -> dict:
    """Raise InputError unless ``state`` has exactly the tensors of ``expected`` (a backend's
    ``zero_state`` for this frame size, or its ``state_shapes``: name -> shape) with the same shapes."""
    if not isinstance(state, dict):
        raise InputError(f"a recurrent state is a dict {{name: array}} like {sorted(expected)}, got {type(state).__name__}")
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise InputError(
            f"recurrent state for {where} has tensors {sorted(state)}, expected {sorted(expected)}; "
            "pass the state the previous frame returned, or reset()"
        )
    for k, ref in expected.items():
        got = tuple(getattr(state[k], "shape", ()))
        want = tuple(getattr(ref, "shape", ref))
        if got != want:
            raise InputError(
                f"recurrent state {k!r} for {where} has shape {got}, expected {want} for this frame "
                "size; pass the state the previous frame of the same size returned, or reset()"
            )
        dtype = str(getattr(state[k], "dtype", type(state[k]).__name__))
        if isinstance(state[k], np.ndarray) and dtype != "float32":
            raise InputError(
                f"recurrent state {k!r} for {where} is {dtype}, expected float32; pass the state the "
                f"previous frame returned, or convert it with .astype(np.float32)"
            )
    return state


class StreamState:
    """One stream's recurrent state over ``backend`` (``zero_state(n, h, w)``,
    ``infer_state(x, state) -> (y, state)``), reset as described in the module docstring."""

    def __init__(self, backend, scene_cut: Optional[float] = DEFAULT_SCENE_CUT):
        self.backend = backend
        self.detector = SceneCutDetector(scene_cut)
        self.state: Optional[dict] = None
        self.key: Optional[tuple] = None
        self._pending: Optional[str] = None
        self.resets: Counter = Counter()
        self.frames = 0

    @property
    def scene_cut(self) -> Optional[float]:
        return self.detector.threshold

    def reset(self, reason: str = "manual"):
        """Zero the state before the next frame (counted under ``reason``)."""
        if reason not in RESET_REASONS:
            raise InputError(f"unknown reset reason {reason!r}; use one of {', '.join(RESET_REASONS)}")
        self.state, self._pending = None, reason  # `state` shows zeros from now on, as the next frame will get
        self.detector.clear()

    def clear(self):
        """Forget everything without counting a reset (after a warm-up pass)."""
        self.state, self.key, self._pending = None, None, None
        self.detector.clear()

    def set(self, state: dict):
        """Use ``state`` (e.g. saved from another run) for the next frame; its shapes are checked
        against the next frame's size when that frame comes."""
        if not isinstance(state, dict):
            raise InputError(f"a recurrent state is a dict {{name: array}}, got {type(state).__name__}")
        self.state, self.key, self._pending = dict(state), None, None
        # the next frame has nothing to compare with, so it is never a scene cut: the given state is
        # used (and its shapes checked), not silently replaced by zeros
        self.detector.clear()

    def step(self, x: np.ndarray) -> np.ndarray:
        """Run one (N, C, H, W) tensor with the carried state; return the output tensor."""
        key = (int(x.shape[0]), int(x.shape[2]), int(x.shape[3]))
        cut = self.detector(x)  # always look, so that the next frame compares with this one
        reason = None
        if self._pending is not None:
            reason = self._pending
        elif self.state is None:
            reason = "start"
        elif self.key is not None and key != self.key:
            reason = "size"
        elif cut:
            reason = "scene_cut"
        if reason is not None:
            if reason == "scene_cut":
                log.debug("scene cut (histogram distance %.3f > %.3f): recurrent state reset",
                          self.detector.last_score, self.detector.threshold)
            elif reason == "size" and self.key is not None:
                log.debug("frame size changed from %s to %s: recurrent state reset", self.key, key)
            self.state = self.backend.zero_state(*key)
            self.resets[reason] += 1
            self._pending = None
        elif self.key is None:  # a state given with set(): check it against this frame
            check_state(self.backend.zero_state(*key), self.state, getattr(self.backend, "path", "the model"))
        self.key = key
        y, self.state = self.backend.infer_state(x, self.state)
        self.frames += 1
        return y

    def stats(self) -> dict:
        return {
            "frames": self.frames,
            "resets": {r: int(self.resets.get(r, 0)) for r in RESET_REASONS},
            "scene_cuts": int(self.resets.get("scene_cut", 0)),
            "scene_cut_threshold": self.scene_cut,
            "last_scene_score": self.detector.last_score,
        }
