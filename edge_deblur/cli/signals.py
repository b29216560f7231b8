"""SIGINT/SIGTERM handling shared by ``stream`` and ``deblur``: the first signal stops the running
pipeline and lets the frames in flight finish (``pipeline.stop()``), a second one discards them.
Between pipelines (``deblur`` over images) the signal is remembered and the command stops at the
next file. While the command is still opening (source, sinks, model), the first signal is
remembered too and acted on at the next step (``check()``, or the pipeline stopped as soon as it
exists): raised from the handler, it used to land inside an import (onnxruntime then reported
itself missing), a library that swallowed it, or a wait on a thread still inside FFmpeg (the
process then aborted, "terminate called without an active exception"). A second signal while
opening ends the command at once. The exit status is 128 + the first signal (130 for SIGINT, 143
for SIGTERM)."""
from __future__ import annotations

import signal
import sys
import threading


class Interrupted(KeyboardInterrupt):
    """A signal that came while the command was still opening; ``exit_code`` is 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + int(signum)


class Signals:
    """Context manager installing the handlers in the main thread; restores the old ones."""

    def __init__(self, raise_while_idle: bool = True):
        self._pipeline = None
        self.received: list[int] = []
        self.raise_while_idle = raise_while_idle
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    @property
    def pipeline(self):
        return self._pipeline

    @pipeline.setter
    def pipeline(self, pipe):
        """The running pipeline; one that comes after a signal is stopped at once."""
        self._pipeline = pipe
        if pipe is not None and self.received:
            pipe.stop(drain=len(self.received) == 1, reason=_name(self.received[0]))

    def _handle(self, signum, frame):
        self.received.append(signum)
        if self._pipeline is None:
            if self.raise_while_idle and len(self.received) > 1:
                raise Interrupted(self.received[0])  # a second signal while opening: at once
            if self.raise_while_idle:   # opening: the command calls check() between its steps
                sys.stderr.write(f"{_name(signum)}: stopping once the current step of opening ends "
                                 "(again to stop at once)\n")
                sys.stderr.flush()
            return  # (deblur: between files)
        drain = len(self.received) == 1
        self._pipeline.stop(drain=drain, reason=_name(signum))

    def check(self):
        """Between the steps of opening: end the command (Interrupted, exit status 128 + signal)
        if a signal came meanwhile."""
        if self.received and self.raise_while_idle and self._pipeline is None:
            raise Interrupted(self.received[0])

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


def _name(signum: int) -> str:
    return "SIGINT" if signum == signal.SIGINT else "SIGTERM"
