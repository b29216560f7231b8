"""Latency bookkeeping: per-stage samples in milliseconds, percentiles and FPS."""
from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np


class LatencyStats:
    def __init__(self):
        self._lock = threading.Lock()
        self._samples: dict[str, list[float]] = defaultdict(list)

    def add(self, stage: str, ms: float):
        with self._lock:
            self._samples[stage].append(float(ms))

    def stages(self):
        with self._lock:
            return list(self._samples)

    def percentiles(self, stage: str, qs=(50, 95, 99)) -> dict:
        with self._lock:
            s = np.asarray(self._samples.get(stage, []), dtype=np.float64)
        if s.size == 0:
            return {f"p{q}": None for q in qs} | {"count": 0, "mean": None}
        return {f"p{q}": float(np.percentile(s, q)) for q in qs} | {"count": int(s.size), "mean": float(s.mean())}

    def summary(self) -> dict:
        return {st: self.percentiles(st) for st in self.stages()}
