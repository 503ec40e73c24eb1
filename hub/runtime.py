"""One hub process: store, group-commit writer, ingestor, listeners and a worker.

The API and the CLI drive a runtime; the runtime knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from hub.compiled import compiled_modules
from hub.config.plan import Plan
from hub.engine.ingest import GroupCommitWriter, Ingestor
from hub.engine.metrics import HubMetrics
from hub.engine.processes import WorkerProcesses
from hub.engine.routing import Router
from hub.engine.worker import Worker
from hub.listeners import Listener
from hub.registry import lookup
from hub.store.store import Store

__all__ = ["HubRuntime"]

log = logging.getLogger("hub.runtime")


class HubRuntime:
    """``with_worker``: deliver in this process. ``worker_processes``: deliver in that
    many ``hub worker`` children on the hub.yaml at ``config`` (None: the built-in
    defaults) instead; ``hub run`` does, by the ``worker.processes`` setting."""

    def __init__(
        self,
        plan: Plan,
        store: Store | None = None,
        *,
        with_worker: bool = True,
        worker_processes: int = 0,
        config: Path | None = None,
    ) -> None:
        self.plan = plan
        self.store = store or Store.open(
            plan.database_url, migrate=True, sync=plan.spec.database_sync
        )
        self.metrics = HubMetrics()
        self.writer = GroupCommitWriter(self.store)
        self.ingestor = Ingestor(self.store, Router(plan), self.writer, self.metrics)
        self.processes: WorkerProcesses | None = None
        self.worker: Worker | None = None
        if with_worker and worker_processes > 0:
            self.processes = WorkerProcesses(
                worker_processes,
                config=config,
                store=self.store,
                observer=self.metrics,
                grace=plan.spec.worker.shutdown_grace,
            )
        elif with_worker:
            self.worker = Worker(self.store, plan, metrics=self.metrics)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.listeners: dict[str, Listener] = {}  # started ones, by name

    async def start(self) -> None:
        """Sweep interrupted claims, then start writing and delivering."""
        if self.worker is not None or self.processes is not None:
            swept = await asyncio.to_thread(self._sweep)
            if swept:
                log.warning("returned %d interrupted deliveries to the queue", swept)
        if self.worker is not None:
            self.writer.committed.append(self.worker.wake)
            self._stop.clear()
            self._task = asyncio.create_task(self.worker.run(self._stop), name="hub-worker")
        if self.processes is not None:
            await self.processes.start()
            self.writer.committed.append(self.processes.wake)
        self.writer.start()
        await self._start_listeners()
        compiled = compiled_modules()
        log.info(
            "%d of %d hot-path modules compiled%s",
            sum(compiled.values()),
            len(compiled),
            "" if all(compiled.values()) else " (HUB_COMPILE=0, or no C compiler at install)",
        )

    async def _start_listeners(self) -> None:
        """Start the listeners of hub.yaml; they submit through the writer started above."""
        try:
            for name, planned in self.plan.listeners.items():
                if not planned.enabled:
                    continue
                listener = lookup("listener", planned.type)(name, planned.settings, self.ingestor)
                await listener.start()
                self.listeners[name] = listener
        except BaseException:
            await self._stop_listeners()
            raise

    async def _stop_listeners(self) -> None:
        listeners, self.listeners = self.listeners, {}
        for listener in listeners.values():
            await listener.stop()

    def wake_workers(self) -> None:
        """Deliveries were queued outside an ingest (a resend): claim them now."""
        if self.worker is not None:
            self.worker.wake()
        if self.processes is not None:
            self.processes.wake()

    def _sweep(self) -> int:
        # On the embedded SQLite default this process is the only worker, so every
        # in-flight claim was interrupted; elsewhere leases return them.
        return self.store.recover() if self.store.sqlite else 0

    async def stop(self) -> None:
        """Stop accepting, let the worker finish what it holds (grace period), close."""
        await self._stop_listeners()
        self.writer.stop()
        if self._task is not None:
            self._stop.set()
            grace = self.plan.spec.worker.shutdown_grace
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=grace)
            except TimeoutError:
                log.warning("worker did not drain in %.1fs; leases will return its claims", grace)
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self.processes is not None:
            await self.processes.stop()
        await asyncio.to_thread(self.store.close)
