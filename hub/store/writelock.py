"""SQLite's one writer, taken in turn by the threads and processes of one hub.

SQLite lets one connection write at a time; a connection that finds the database locked
sleeps in its busy handler (1 ms growing to 100 ms) and polls. Under steady ingest that
let one writer, committing back to back, starve another for seconds, and a separate
worker process saw 10 ms waits. Writers therefore queue here first: a thread lock inside
the process and an ``flock`` on ``<database>-hub.lock`` across processes. A waiter
sleeps in the kernel and is woken at the holder's release, so SQLite itself never finds
the database locked by another hub writer.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType

__all__ = ["WriteLock"]


class WriteLock:
    """A re-usable context manager; ``database`` None (in-memory) locks threads only."""

    def __init__(self, database: Path | None) -> None:
        self._threads = threading.Lock()
        self.path = None if database is None else database.with_name(database.name + "-hub.lock")
        self._fd: int | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __enter__(self) -> None:
        self._threads.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
