"""Interrupts that land between training steps: Ctrl-C and SIGTERM (a scheduler's stop) raise
KeyboardInterrupt at once, except inside a step, where they are held until the step is done.

A step moves the weights, the optimizer, the RNG (dropout) and the run's progress together; an
interrupt in its middle would leave a checkpoint whose RNG state holds half a step's draws. Held
to the step's end, every checkpoint written on an interrupt is at a step boundary, so a resumed run
continues exactly, dropout on. A KeyboardInterrupt that code raises inside a step (not a signal)
cannot be held: `cut_step` says so, and the run keeps its last checkpoint instead of writing one.

Under torchrun a signal may reach one rank only, or each at another moment; a rank that stopped
alone would leave the others waiting in a collective, and rank 0 would write no checkpoint. There
every signal is held, and at the end of each step the ranks ask each other (`sync`) whether any
holds one: then all stop at that same step boundary (torchrun's agent forwards its own signal
too, so a rank may get two; it kills the workers 30 s later).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """Installs the handlers for its `with` block (main thread only: elsewhere it does nothing)."""

    def __init__(self, sync: Callable[[bool], bool] | None = None) -> None:
        self.sync = sync  # under torchrun: whether any rank holds a signal (every rank calls it at a step's end)
        self.pending: int | None = None  # a signal held during the current step
        self.cut_step = False  # an exception (not a held signal) left a step halfway
        self._in_step = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                previous = signal.getsignal(sig)
                self._previous[sig] = signal.SIG_DFL if previous is None else previous  # None: set outside Python
                signal.signal(sig, self._handle)
            if _dropped:  # a Ctrl-C `remembering` saw in the set-up, dropped: raised at the first step
                self.pending = _dropped[-1]
                _dropped.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.pending = signum  # kept where raised too: Python drops a KeyboardInterrupt raised inside a __del__
        if self._in_step or self.sync is not None:
            return
        raise KeyboardInterrupt(_describe(signum))

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """A block that an interrupt does not cut: one arriving inside is raised when it ends (one that
        arrived before it and was dropped, by a finaliser it landed in, is raised before it starts)."""
        if self.sync is None and self.pending is not None:
            self.raise_held()
        self._in_step = True
        try:
            yield
        except BaseException:
            self.cut_step = True
            raise
        finally:
            self._in_step = False
        self.raise_held()

    def raise_held(self) -> None:
        """Raises a held signal (under torchrun: one any rank holds, on every rank together)."""
        stop = self.sync(self.pending is not None) if self.sync is not None else self.pending is not None
        if stop:
            signum, self.pending = self.pending, None
            raise KeyboardInterrupt(_describe(signum) + ", held until the step was done" if signum is not None
                                    else "another rank was interrupted: every rank stops after this step")


def _describe(signum: int) -> str:
    return f"signal {signum} ({signal.Signals(signum).name})"


_dropped: list[int] = []  # Ctrl-Cs seen inside `remembering` and not yet raised through it


@contextlib.contextmanager
def remembering() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt in this block as Python's own handler does, and is remembered
    until the block ends: Python drops one that lands while a finaliser (`__del__`) runs, printing
    "Exception ignored", and `raise_dropped` raises it again (main thread, default handler only)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        _dropped.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _dropped.clear()


def raise_dropped() -> None:
    """Raises KeyboardInterrupt if a Ctrl-C that `remembering` saw may have been dropped: called where
    a run is about to replace what an earlier one left, so a single Ctrl-C before it always stops it."""
    if _dropped:
        _dropped.clear()
        raise KeyboardInterrupt(_describe(signal.SIGINT))
