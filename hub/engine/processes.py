"""Delivery in worker processes beside ``hub run``.

One Python process holds one GIL: in a hub that receives and delivers in one process,
mapping and sending every message competed with receiving the next, which both slowed
receipt and made its latency erratic. ``hub run`` therefore starts ``worker.processes``
``hub worker`` children on the same hub.yaml. Each child is linked to the hub by a
socket pair (SOCK_SEQPACKET: every message arrives whole or not at all):

- hub → child: a byte means "deliveries were committed, claim now" (the hub writes one
  after every ingest commit, so delivery starts at once instead of at the next poll);
  end of file means the hub is gone, and the child drains and exits;
- child → hub: ``ready`` once its connectors have started (the hub is ready, and
  answers ``/readyz``, only when every child is), then reports of recorded attempts
  (destination, status, creation time; one line each, the attempts of one loop turn in
  one message), so the hub's ``/metrics`` counts deliveries as before. A report the hub
  cannot take at once is dropped: metrics are not worth blocking a delivery for.

A child that dies is started again (after 1 s, doubling to 30 s while it keeps dying),
and its claims are returned to the queue at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.engine.metrics import DeliveryObserver
from hub.engine.worker import worker_id
from hub.store.records import DeliveryStatus
from hub.store.store import Store

__all__ = ["ChildLink", "WorkerProcesses"]

log = logging.getLogger("hub.processes")

_WAKE = b"\x00"
_READY = b"ready"
_START_TIMEOUT = 60.0  # seconds a child may take to report ready
_RESTART_FIRST, _RESTART_MAX = 1.0, 30.0
_REPORTS_PER_MESSAGE = 32  # lines of at most ~100 bytes: well inside a socket's buffer
_STEADY = 60.0  # a child that lived this long is healthy again: restart delay resets


@dataclass(eq=False)
class _Child:
    index: int
    name: str
    process: asyncio.subprocess.Process
    link: socket.socket
    started: float
    ready: asyncio.Future[None]


class WorkerProcesses:
    """Starts, wakes, restarts and stops the ``hub worker`` children of one hub."""

    def __init__(
        self,
        count: int,
        *,
        config: Path | None,
        store: Store,
        observer: DeliveryObserver,
        grace: float,
    ) -> None:
        self.count = count
        self.config = config
        self.store = store
        self.observer = observer
        self.grace = grace
        self._children: dict[int, _Child] = {}
        self._delays: dict[int, float] = {}
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start every child and wait until each has reported ready; raise if one fails."""
        for index in range(self.count):
            self._children[index] = await self._spawn(index)
        try:
            for child in self._children.values():
                await self._until_ready(child)
        except BaseException:
            await self.stop()
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name="hub-worker-processes")

    async def _until_ready(self, child: _Child) -> None:
        exited: asyncio.Future[int] = asyncio.ensure_future(child.process.wait())
        waiters: list[asyncio.Future[Any]] = [child.ready, exited]
        try:
            await asyncio.wait(waiters, timeout=_START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if not child.ready.done():
            code = child.process.returncode
            why = "did not report ready" if code is None else f"exited with {code}"
            raise RuntimeError(f"worker process {child.name} {why}")

    def wake(self) -> None:
        """Tell every child to claim now; safe from any thread, never blocks."""
        for child in list(self._children.values()):
            with contextlib.suppress(OSError):  # full (a wake is pending anyway) or closed
                child.link.send(_WAKE)

    async def stop(self) -> None:
        """SIGTERM every child (each drains what it holds), then wait ``grace`` seconds."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        children, self._children = list(self._children.values()), {}
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.process.terminate()
        for child in children:
            try:
                await asyncio.wait_for(child.process.wait(), timeout=self.grace + 5)
            except TimeoutError:
                log.warning("worker process %s did not stop; killed", child.name)
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()
            self._close(child)

    async def _spawn(self, index: int) -> _Child:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        name = f"{worker_id()}-w{index}"
        command = [sys.executable, "-m", "hub.cli"]
        if self.config is not None:
            command += ["--config", str(self.config)]
        command += ["worker", "--name", name, "--link-fd", str(theirs.fileno())]
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(),)
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ready = asyncio.get_running_loop().create_future()
        child = _Child(index, name, process, ours, time.monotonic(), ready)
        asyncio.get_running_loop().add_reader(ours.fileno(), self._read, child)
        return child

    def _read(self, child: _Child) -> None:
        for message in _drain(child.link):
            if not message:  # the child closed its end: it is exiting; _supervise restarts it
                asyncio.get_running_loop().remove_reader(child.link.fileno())
                return
            if message == _READY:
                if not child.ready.done():
                    child.ready.set_result(None)
                continue
            for line in message.split(b"\n"):
                try:
                    destination, status, created_at = line.decode().split("\t")
                    self.observer.observe(destination, DeliveryStatus(status), float(created_at))
                except ValueError:
                    log.warning("worker process %s sent an unreadable report", child.name)

    async def _supervise(self) -> None:
        waits = {
            asyncio.ensure_future(child.process.wait()): child for child in self._children.values()
        }
        try:
            while waits:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    child = waits.pop(finished)
                    replacement = await self._restart(child)
                    waits[asyncio.ensure_future(replacement.process.wait())] = replacement
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _restart(self, child: _Child) -> _Child:
        self._close(child)
        log.warning(
            "worker process %s exited with %s; starting it again",
            child.name,
            child.process.returncode,
        )
        returned = await asyncio.to_thread(self.store.recover, child.name)
        if returned:
            log.warning("returned %d claims of %s to the queue", returned, child.name)
        lived = time.monotonic() - child.started
        delay = _RESTART_FIRST if lived > _STEADY else self._delays.get(child.index, 0.0)
        delay = min(max(delay, _RESTART_FIRST), _RESTART_MAX)
        self._delays[child.index] = delay * 2
        await asyncio.sleep(delay)
        replacement = await self._spawn(child.index)
        self._children[child.index] = replacement
        return replacement

    def _close(self, child: _Child) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(child.link.fileno())
        child.link.close()


class ChildLink:
    """The worker-process end of the link: wake-ups in, attempt reports out."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self._reports: list[str] = []  # sent together at the end of the loop turn

    def listen(self, wake: Callable[[], None], stop: asyncio.Event) -> None:
        """Call ``wake`` when the hub says so; set ``stop`` when the hub is gone."""
        loop = asyncio.get_running_loop()

        def readable() -> None:
            for message in _drain(self.sock):
                if not message:
                    loop.remove_reader(self.sock.fileno())
                    stop.set()
                    return
            wake()

        loop.add_reader(self.sock.fileno(), readable)

    def ready(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(_READY)

    def observe(self, destination: str, status: DeliveryStatus, created_at: float) -> None:
        """Report an attempt. A worker records attempts in batches: their reports go in
        one message, which wakes the hub once instead of once per attempt."""
        if not self._reports:
            asyncio.get_running_loop().call_soon(self._send_reports)
        self._reports.append(f"{destination}\t{status.value}\t{created_at!r}")

    def _send_reports(self) -> None:
        reports, self._reports = self._reports, []
        for start in range(0, len(reports), _REPORTS_PER_MESSAGE):
            message = "\n".join(reports[start : start + _REPORTS_PER_MESSAGE]).encode()
            with contextlib.suppress(OSError):  # the hub is busy or gone: drop the reports
                self.sock.send(message)

    def close(self) -> None:
        self.sock.close()


def _drain(sock: socket.socket) -> Iterator[bytes]:
    """Every message waiting on ``sock``; an empty one means end of file."""
    while True:
        try:
            message = sock.recv(8192)
        except BlockingIOError:
            return
        except OSError:
            message = b""
        yield message
        if not message:
            return
