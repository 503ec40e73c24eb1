"""Prometheus metrics: counters kept by this process, queue gauges read from the store.

Each app or worker gets its own registry, so several hubs in one test process do not
share counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hub.store.records import DeliveryStatus
from hub.store.store import QueueStat

__all__ = ["DeliveryObserver", "HubMetrics", "QueueCollector"]

_RESULTS = {
    DeliveryStatus.DELIVERED: "delivered",
    DeliveryStatus.DEAD: "dead",
    DeliveryStatus.SKIPPED: "skipped",
}  # any other status: "failed" (it will be tried again)
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class HubMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.received = Counter(
            "hub_events_received",
            "Events accepted, by type.",
            ["type"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "hub_messages_rejected",
            "Bodies refused and stored as rejected.",
            registry=self.registry,
        )
        self.deliveries = Counter(
            "hub_delivery_attempts",
            "Attempts by destination and result: delivered, failed (will retry), dead, skipped.",
            ["destination", "result"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hub_delivery_latency_seconds",
            "From acceptance to confirmed delivery.",
            ["destination"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Children by label values: labels() costs ~1 µs a call, on every message.
        self._attempts: dict[tuple[str, DeliveryStatus], Counter] = {}
        self._latency: dict[str, Histogram] = {}
        self._received: dict[str, Counter] = {}

    def observe(self, destination: str, status: DeliveryStatus, created_at: float) -> None:
        """Count a recorded attempt by the status it left its delivery in."""
        key = (destination, status)
        attempts = self._attempts.get(key)
        if attempts is None:
            result = _RESULTS.get(status, "failed")
            attempts = self._attempts[key] = self.deliveries.labels(destination, result)
        attempts.inc()
        if status is DeliveryStatus.DELIVERED:
            latency = self._latency.get(destination)
            if latency is None:
                latency = self._latency[destination] = self.latency.labels(destination)
            latency.observe(time.time() - created_at)

    def received_one(self, event_type: str) -> None:
        """Count an accepted event of ``event_type``."""
        counter = self._received.get(event_type)
        if counter is None:
            counter = self._received[event_type] = self.received.labels(event_type)
        counter.inc()


class DeliveryObserver(Protocol):
    """Where a worker reports recorded attempts: HubMetrics, or the link of a worker
    process to its hub (hub.engine.processes)."""

    def observe(self, destination: str, status: DeliveryStatus, created_at: float) -> None: ...


class QueueCollector(Collector):
    """Reads queue depth and the oldest pending age from the store at scrape time."""

    def __init__(self, stats: Callable[[], list[QueueStat]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "hub_queue_depth", "Deliveries not yet finished.", labels=["destination", "state"]
        )
        oldest = GaugeMetricFamily(
            "hub_queue_oldest_age_seconds",
            "Age of the oldest unfinished delivery.",
            labels=["destination"],
        )
        now = time.time()
        for stat in self._stats():
            depth.add_metric([stat.destination, "pending"], stat.pending)
            depth.add_metric([stat.destination, "in_flight"], stat.in_flight)
            age = 0.0 if stat.oldest_created_at is None else now - stat.oldest_created_at
            oldest.add_metric([stat.destination], age)
        yield depth
        yield oldest
