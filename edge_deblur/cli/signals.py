"""SIGINT/SIGTERM handling shared by ``stream`` and ``deblur``: the first signal stops the running
pipeline and lets the frames in flight finish (``pipeline.stop()``), a second one discards them.
Between pipelines (``deblur`` over images) the signal is remembered and the command stops at the
next file. The exit status is 128 + the first signal (130 for SIGINT, 143 for SIGTERM)."""
from __future__ import annotations

import signal
import threading


class Interrupted(KeyboardInterrupt):
    """A signal that came while the command was still opening; ``exit_code`` is 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + int(signum)


class Signals:
    """Context manager installing the handlers in the main thread; restores the old ones."""

    def __init__(self, raise_while_idle: bool = True):
        self.pipeline = None
        self.received: list[int] = []
        self.raise_while_idle = raise_while_idle
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received.append(signum)
        if self.pipeline is None:
            if self.raise_while_idle:
                # still opening: behave like the default (the command ends, exit status 128 + signal)
                raise Interrupted(signum)
            return  # the command checks ``stopped`` between files
        drain = len(self.received) == 1
        self.pipeline.stop(drain=drain, reason="SIGINT" if signum == signal.SIGINT else "SIGTERM")

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    @property
    def stopped(self) -> bool:
        return bool(self.received)

    @property
    def exit_code(self) -> int:
        if not self.received:
            return 0
        return 128 + int(self.received[0])
