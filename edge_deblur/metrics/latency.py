"""Latency bookkeeping: per-stage samples in milliseconds, percentiles and means.

Bounded: the last ``window`` samples per stage are kept, so a stream can run for days;
percentiles are over that window, counts and means over all samples."""
from __future__ import annotations

import threading

import numpy as np


class LatencyStats:
    """Per-stage latency samples in ms, bounded (the last ``window`` samples per stage) so that a
    stream can run for days; percentiles are over that window, counts and means over all."""

    def __init__(self, window: int = 65536):
        self.window = int(window)
        self._lock = threading.Lock()
        self._buf: dict[str, np.ndarray] = {}
        self._count: dict[str, int] = {}
        self._sum: dict[str, float] = {}

    def add(self, stage: str, ms: float):
        with self._lock:
            buf = self._buf.get(stage)
            if buf is None:
                buf = self._buf[stage] = np.empty(self.window, np.float64)
                self._count[stage] = 0
                self._sum[stage] = 0.0
            n = self._count[stage]
            buf[n % self.window] = ms
            self._count[stage] = n + 1
            self._sum[stage] += ms

    def percentiles(self, stage: str, qs=(50, 95, 99)) -> dict:
        with self._lock:
            n = self._count.get(stage, 0)
            if not n:
                return {f"p{q}": None for q in qs} | {"mean": None, "count": 0}
            s = self._buf[stage][: min(n, self.window)].copy()
            mean = self._sum[stage] / n
        vals = np.percentile(s, qs)
        return {f"p{q}": round(float(v), 3) for q, v in zip(qs, vals)} | {"mean": round(mean, 3), "count": n}

    def total_ms(self, stage: str) -> float:
        with self._lock:
            return float(self._sum.get(stage, 0.0))

    def summary(self, order=()) -> dict:
        """Percentiles of every stage: those named in ``order`` first, the rest as first seen."""
        with self._lock:
            names = [s for s in order if s in self._count] + [s for s in self._count if s not in order]
        return {s: self.percentiles(s) for s in names}
