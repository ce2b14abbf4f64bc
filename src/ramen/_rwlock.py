"""A readers-writer lock: many searches at once, or one add/remove alone.

Built from three plain `threading.Lock`s (C locks, about a microsecond for a reader to pass when
nobody writes). A writer waiting for the readers to leave holds the turnstile, so new readers queue
behind it and a stream of searches cannot starve an add. Not reentrant: a holder must not take it
again (the index's public methods take it, their private helpers do not).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    """Shared (`read`) or exclusive (`write`) access; writers are preferred over new readers."""

    __slots__ = ("_turnstile", "_count", "_room", "_readers")

    def __init__(self) -> None:
        self._turnstile = threading.Lock()  # held by a writer from its arrival to its end; readers pass through
        self._count = threading.Lock()  # guards _readers
        self._room = threading.Lock()  # held by a writer, or by the readers as a group (first in, last out)
        self._readers = 0

    def acquire_read(self) -> None:
        """Waits for any writer, then joins the readers."""
        with self._turnstile:
            pass
        with self._count:
            self._readers += 1
            if self._readers == 1:
                self._room.acquire()

    def release_read(self) -> None:
        """Leaves the readers; the last one out lets a writer in."""
        with self._count:
            self._readers -= 1
            if self._readers == 0:
                self._room.release()

    def acquire_write(self) -> None:
        """Stops new readers, then waits for the current ones to finish."""
        self._turnstile.acquire()
        self._room.acquire()

    def release_write(self) -> None:
        self._room.release()
        self._turnstile.release()

    @contextmanager
    def read(self) -> Iterator[None]:
        """Shared access for the body."""
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Exclusive access for the body."""
        self.acquire_write()
        try:
            yield
        finally:
            self.release_write()
