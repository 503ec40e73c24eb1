"""The worker-process link's reports: batched per loop turn, read back line by line."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

from hub.engine.processes import ChildLink, WorkerProcesses, _Child
from hub.store.records import DeliveryStatus
from hub.store.store import Store


class _Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str, DeliveryStatus, float]] = []

    def observe(self, destination: str, status: DeliveryStatus, created_at: float) -> None:
        self.seen.append((destination, status, created_at))


def test_the_reports_of_one_loop_turn_travel_in_one_message_and_all_arrive() -> None:
    hub_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    link = ChildLink(child_end.detach())
    reports = [
        ("his", DeliveryStatus.DELIVERED, 1_764_000_000.25),
        ("emr-fhir", DeliveryStatus.PENDING, 1_764_000_001.5),
        ("his", DeliveryStatus.DEAD, 1_764_000_002.0),
    ] + [("bulk", DeliveryStatus.DELIVERED, float(n)) for n in range(40)]

    async def report() -> None:
        for destination, status, created_at in reports:
            link.observe(destination, status, created_at)
        await asyncio.sleep(0.01)  # the turn ends: the reports are sent

    asyncio.run(report())
    hub_end.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(hub_end.recv(65536))
        except BlockingIOError:
            break
    assert len(messages) == 2  # 43 reports, at most 32 per message
    observer = _Observer()
    processes = WorkerProcesses(
        0, config=None, store=cast(Store, None), observer=observer, grace=1.0
    )
    receiving, sending = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    receiving.setblocking(False)
    for message in messages:
        sending.send(message)
    child = _Child(0, "w0", cast(Any, None), receiving, 0.0, cast(Any, None))
    processes._read(child)
    assert observer.seen == reports
    for sock in (hub_end, receiving, sending):
        sock.close()
    link.close()
