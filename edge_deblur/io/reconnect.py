"""Reconnecting live sources: an exponential backoff policy and the bookkeeping of attempts.

A live source (camera, V4L2, CSI, GStreamer, RTSP/HTTP stream) that stalls (no frame for
``read_timeout`` seconds) or fails is reopened after ``delay``, ``2 * delay``, ``4 * delay`` ...
seconds (at most ``max_delay``), up to ``attempts`` times (-1: forever). Every attempt is logged
and counted; when the attempts are spent the source raises ``SourceLostError`` and the stream
ends with ``stopped_by: source_lost`` and a non-zero exit.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, TypeVar

from ..errors import SourceLostError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ReconnectPolicy:
    attempts: int = 5            # -1: forever, 0: never reconnect
    delay: float = 0.5           # first wait (s)
    max_delay: float = 30.0      # cap on the wait (s)
    factor: float = 2.0

    @classmethod
    def from_options(cls, options) -> "ReconnectPolicy":
        return cls(options.reconnect, options.reconnect_delay, options.reconnect_max_delay)

    def delays(self) -> Iterator[float]:
        """The waits before each attempt."""
        d, n = self.delay, 0
        while self.attempts < 0 or n < self.attempts:
            yield min(d, self.max_delay)
            d *= self.factor
            n += 1


@dataclass
class ReconnectStats:
    stalls: int = 0               # times the source stopped delivering (or failed) while live
    attempts: int = 0             # reconnect attempts made
    reconnects: int = 0           # attempts that brought frames back
    last_error: Optional[str] = None
    events: list = field(default_factory=list)  # (time, 'stall'|'attempt'|'ok'|'failed', detail)

    def as_dict(self) -> dict:
        return {"stalls": self.stalls, "reconnect_attempts": self.attempts, "reconnects": self.reconnects}


def reconnect(what: str, why: str, policy: ReconnectPolicy, stats: ReconnectStats,
              attempt: Callable[[], Optional[T]], stop: threading.Event) -> Optional[T]:
    """Call ``attempt()`` after each backoff delay until it returns a value (the first frame of
    the reopened source). Returns None if ``stop`` is set while waiting; raises SourceLostError
    when the attempts are spent. ``attempt`` raises or returns None on failure."""
    stats.stalls += 1
    stats.last_error = why
    stats.events.append((time.time(), "stall", why))
    if policy.attempts == 0:
        raise SourceLostError(f"{what} {why}; reconnecting is off (--reconnect 0)")
    t0 = time.perf_counter()
    log.warning("%s %s; reconnecting (up to %s attempts)", what, why,
                "unlimited" if policy.attempts < 0 else policy.attempts)
    n = 0
    for delay in policy.delays():
        if stop.wait(delay):
            return None
        n += 1
        stats.attempts += 1
        try:
            value = attempt()
            err = None if value is not None else "no frame"
        except Exception as e:  # noqa: BLE001 - any failure to reopen is one failed attempt
            value, err = None, str(e)
        if value is not None:
            stats.reconnects += 1
            stats.events.append((time.time(), "ok", f"attempt {n}"))
            log.warning("%s: reconnected on attempt %d after %.1f s", what, n, time.perf_counter() - t0)
            return value
        stats.last_error = err
        stats.events.append((time.time(), "failed", f"attempt {n}: {err}"))
        log.warning("%s: reconnect attempt %d failed (%s)", what, n, err)
    raise SourceLostError(
        f"{what} {why} and {n} reconnect attempt{'s' * (n != 1)} over {time.perf_counter() - t0:.1f} s failed "
        f"(last: {stats.last_error}); check the camera/stream, or allow more with --reconnect N (-1: forever)"
    )
