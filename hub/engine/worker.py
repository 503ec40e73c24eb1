"""The delivery worker: claim due queue heads, map, send, record, repeat.

Many workers may share one database; each claims under a lease, so a crashed worker's
deliveries return to the queue when its lease ends (or at once, by the start-up sweep).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from hub.config.plan import Destination, Plan
from hub.connectors.base import Connector, Outbound, Outcome, SendResult
from hub.engine.metrics import HubMetrics
from hub.ids import new_id
from hub.registry import RegistryError, lookup
from hub.store.records import Claimed, DeliveryStatus, Finished
from hub.store.store import Store
from mappings.base import MappingContext, MappingError, Payload

__all__ = ["Worker", "build_connectors", "worker_id"]

log = logging.getLogger("hub.worker")
T = TypeVar("T")


def worker_id() -> str:
    """host:pid:random, so a sweep can tell this host's dead workers from live ones."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{new_id()[-6:]}"


def build_connectors(plan: Plan) -> dict[str, Connector]:
    connectors = {}
    for name, dest in plan.destinations.items():
        cls = lookup("connector", dest.type)
        connectors[name] = cls(name, dest.settings)
    return connectors


class Worker:
    """Drains the outbox until ``stop`` is set, then finishes what it holds.

    Call :meth:`wake` (from any thread) after a commit that created deliveries, so they
    go out without waiting for the next poll.
    """

    def __init__(
        self,
        store: Store,
        plan: Plan,
        *,
        metrics: HubMetrics | None = None,
        connectors: Mapping[str, Connector] | None = None,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.plan = plan
        self.metrics = metrics or HubMetrics()
        self.connectors = dict(connectors) if connectors is not None else build_connectors(plan)
        self.name = name or worker_id()
        self._spec = plan.spec.worker
        self._limits = {n: asyncio.Semaphore(d.max_in_flight) for n, d in plan.destinations.items()}
        self._disabled = tuple(n for n, d in plan.destinations.items() if not d.enabled)
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-worker-db")
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        loop, event = self._loop, self._wake
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    async def _db_call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, lambda: fn(*args, **kwargs))

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until ``stop`` is set; in-flight sends are finished and recorded first."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        for connector in self.connectors.values():
            await connector.start()
        try:
            while not stop.is_set():
                claimed: list[Claimed] = await self._db_call(
                    self.store.claim,
                    self.name,
                    limit=self._spec.batch_size,
                    lease_seconds=self._spec.lease_seconds,
                    exclude=self._disabled,
                )
                if claimed:
                    await self._deliver(claimed)
                    continue
                self._wake.clear()
                stop_wait = asyncio.ensure_future(stop.wait())
                wake_wait = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    {stop_wait, wake_wait},
                    timeout=self._spec.poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                stop_wait.cancel()
                wake_wait.cancel()
        finally:
            for connector in self.connectors.values():
                await connector.close()
            self._db.shutdown(wait=True)

    async def run_once(self) -> int:
        """Claim and deliver one batch; the number handled. For tests and `hub` tooling."""
        claimed = self.store.claim(
            self.name,
            limit=self._spec.batch_size,
            lease_seconds=self._spec.lease_seconds,
            exclude=self._disabled,
        )
        if claimed:
            await self._deliver(claimed)
        return len(claimed)

    async def _deliver(self, claimed: list[Claimed]) -> None:
        results = await asyncio.gather(*(self._attempt(c) for c in claimed))
        await self._db_call(self.store.finish, results)
        for result, c in zip(results, claimed, strict=True):
            self.metrics.observe(c.destination, result, c.created_at)

    async def _attempt(self, c: Claimed) -> Finished:
        started = time.time()
        number = c.attempts + 1
        dest = self.plan.destinations.get(c.destination)
        connector = self.connectors.get(c.destination)
        if dest is None or connector is None:
            result = SendResult(
                Outcome.PERMANENT,
                error=f"destination {c.destination!r} is not configured",
                error_class="config",
            )
            return self._finish(c, None, result, started, number, None)
        mapped: Payload | None = None
        if c.payload is None:
            try:
                mapped = await self._map(c, dest)
            except (MappingError, RegistryError) as exc:
                result = SendResult(Outcome.PERMANENT, error=str(exc), error_class="mapping")
                return self._finish(c, dest, result, started, number, None)
            except Exception as exc:
                log.exception("mapping %s failed for delivery %s", c.mapping, c.id)
                result = SendResult(
                    Outcome.PERMANENT, error=f"mapping crashed: {exc!r}", error_class="mapping"
                )
                return self._finish(c, dest, result, started, number, None)
            payload, content_type = mapped.body, mapped.content_type
        else:
            payload, content_type = c.payload, c.content_type or "application/octet-stream"
        message = Outbound(
            delivery_id=c.id,
            message_id=c.message_id,
            destination=c.destination,
            payload=payload,
            content_type=content_type,
            attempt=number,
            incident_id=c.incident_id,
            correlation_id=c.correlation_id,
            event_type=c.event_type,
        )
        async with self._limits[c.destination]:
            try:
                result = await connector.send(message)
            except Exception as exc:
                log.exception("connector %s raised for delivery %s", c.destination, c.id)
                result = SendResult(
                    Outcome.TRANSIENT, error=f"connector raised {exc!r}", error_class="connector"
                )
        return self._finish(c, dest, result, started, number, mapped)

    async def _map(self, c: Claimed, dest: Destination) -> Payload:
        function = lookup("mapping", c.mapping)
        route = next((r for r in self.plan.routes if r.name == c.route), None)
        options = route.options if route is not None else {}
        incident: tuple[Mapping[str, Any], ...] = ()
        if getattr(function, "needs_incident", False):
            rows = await self._db_call(
                self.store.incident_events, c.incident_id, until=c.created_at
            )
            incident = tuple(rows)
        ctx = MappingContext(
            message_id=c.message_id,
            created_at=datetime.fromtimestamp(c.created_at, tz=UTC),
            destination=dest.name,
            options=options,
            incident_events=incident,
        )
        assert c.event is not None
        payload: Payload = function(c.event, ctx)
        return payload

    def _finish(
        self,
        c: Claimed,
        dest: Destination | None,
        result: SendResult,
        started: float,
        number: int,
        mapped: Payload | None,
    ) -> Finished:
        now = time.time()
        error = result.error
        next_at = now
        if result.outcome is Outcome.DELIVERED:
            status = DeliveryStatus.DELIVERED
        elif result.outcome is Outcome.PERMANENT or dest is None:
            status = DeliveryStatus.DEAD
        else:
            delay = dest.retry.delay_after(number, result.retry_after)
            if delay is None:
                status = DeliveryStatus.DEAD
                error = f"gave up after {number} attempts: {result.error}"
            else:
                status = DeliveryStatus.PENDING
                next_at = now + delay
        return Finished(
            delivery_id=c.id,
            number=number,
            worker=self.name,
            started_at=started,
            latency_ms=(now - started) * 1000,
            outcome=result.outcome.value,
            new_status=status,
            next_attempt_at=next_at,
            status=result.status,
            response=result.response,
            error_class=result.error_class,
            error=error,
            payload=mapped.body if mapped is not None else None,
            content_type=mapped.content_type if mapped is not None else None,
        )
