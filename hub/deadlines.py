"""Deadlines on a stream's wait for data, as plain loop timers.

``asyncio.timeout`` costs ~4 µs per use (a Python context manager, moving a timer and
cancelling the task), and the MLLP paths wait for data once or twice per message. Here
the deadline instead ends the wait by failing the stream reader with ``TimeoutError``:
one C-level timer per exchange, or, for idle connections, one per idle period.

A reader that timed out stays failed: its connection is out of step and must be closed.
"""

from __future__ import annotations

import asyncio

__all__ = ["IdleDeadline", "fail_reads"]


def fail_reads(reader: asyncio.StreamReader) -> None:
    """Make the reader's pending and later reads raise TimeoutError (a timer callback)."""
    reader.set_exception(TimeoutError())


class IdleDeadline:
    """Fails ``reader`` once it has waited ``seconds`` for data in one wait.

    Call :meth:`waiting` before each read and :meth:`received` after it: time spent
    handling what was read does not count. The timer is armed at most once per
    ``seconds`` and re-armed from the last wait when it fires early, instead of being
    moved at every read.
    """

    __slots__ = ("_handle", "_loop", "_reader", "_seconds", "_since")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, reader: asyncio.StreamReader, seconds: float
    ) -> None:
        self._loop = loop
        self._reader = reader
        self._seconds = seconds
        self._since: float | None = None  # loop time the current wait began
        self._handle: asyncio.TimerHandle | None = None

    def waiting(self) -> None:
        self._since = now = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_at(now + self._seconds, self._check)

    def received(self) -> None:
        self._since = None

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        since = self._since
        if since is None:
            return  # handling data; the next wait arms the timer again
        due = since + self._seconds
        if self._loop.time() >= due:
            fail_reads(self._reader)
        else:
            self._handle = self._loop.call_at(due, self._check)
