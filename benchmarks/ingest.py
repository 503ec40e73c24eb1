"""Throughput and latency of the hub end to end: `hub run` as its own process, a webhook
twin in another, clients in this one.

    python -m benchmarks.ingest [--database sqlite|postgres|both] [--events N]
                                [--out benchmarks/results/ingest.json]

For each database:

1. throughput: N events (default 5,000), one per POST, from ``--concurrency`` keep-alive
   connections. "accepted/s" is N over the time to the last 202 (each 202 means the
   event and its delivery are committed: durable); "end-to-end/s" is N over the time
   until the twin has received every delivery. POST→202 percentiles under that load too.
2. latency: events paced at ``--rate`` per second (default 100) for ``--duration``
   seconds (default 10); p50/p99 of POST→202 and of POST start → arrival at the twin
   (matched by the message id in the 202 answer).

The clients speak HTTP/1.1 over asyncio streams rather than through httpx: on a
2-core machine the load generator shares the CPU with the hub, and a client costing a
millisecond per request would measure itself.

PostgreSQL comes from ``--postgres-url``, else HUB_TEST_DATABASE_URL, else the local
default; the run gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import (
    DEFAULT_PG,
    WebhookTwin,
    cpu_seconds,
    machine,
    postgres_schema,
    postgres_settings,
    profile_folder,
    profiled,
    speed_probe,
    summary_ms,
    wait_delivered,
    webhook_twin,
    worker_processes_option,
    write_report,
)
from hub.testing.process import HubProcess, start_hub, write_config

HERE = Path(__file__).resolve().parent

INCIDENTS = 500  # ordering keys: deliveries of one incident go one at a time


# ---------------------------------------------------------------- a lean HTTP client


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self._writer.write(head + body)
        status_line = await self._reader.readline()
        length = 0
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self._reader.readexactly(length)
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()


def _event(prefix: str, i: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{prefix}-{i}",
            "type": "unit.status",
            "incident_id": f"BENCH-{i % INCIDENTS}",
            "occurred_at": "2026-11-25T08:00:00+08:00",
            "source": "dispatch",
            "data": {
                "unit_id": f"AMB-{i % 40}",
                "status": "en_route",
                "at": "2026-11-25T08:00:00+08:00",
            },
        }
    )


def _message_id(answer: bytes) -> str:
    (accepted,) = orjson.loads(answer)["accepted"]
    (delivery,) = accepted["deliveries"]
    return str(delivery["message_id"])


# ---------------------------------------------------------------- the hub


def _config(database_url: str, hook: str, processes: int | str) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "worker": {"processes": processes},
        "destinations": {"webhook": {"type": "http", "url": hook}},
        "routes": [{"name": "all", "destination": "webhook"}],
    }


# ---------------------------------------------------------------- measurements


@dataclass
class Throughput:
    events: int
    concurrency: int
    accepted_per_s: float
    end_to_end_per_s: float
    accept_seconds: float
    end_to_end_seconds: float
    hub_cpu_ms_per_event: float  # hub process CPU (all threads) from first POST to drained
    twin_cpu_ms_per_event: float
    post_to_202: dict[str, float] = field(default_factory=dict)


@dataclass
class Latency:
    rate: float
    duration_s: float
    events: int
    achieved_rate: float
    post_to_202: dict[str, float] = field(default_factory=dict)
    post_to_partner: dict[str, float] = field(default_factory=dict)


def _wait_delivered(hub: HubProcess, twin: WebhookTwin, target: int) -> None:
    wait_delivered(hub, twin.count, target, timeout=300, poll=0.05)


async def _post_all(
    hub: HubProcess, bodies: list[bytes], concurrency: int
) -> tuple[float, list[float]]:
    """POST every body from ``concurrency`` connections; (time of the last 202, latencies)."""
    latencies: list[float] = []
    next_index = 0
    last_202 = 0.0

    async def client() -> None:
        nonlocal next_index, last_202
        conn = Connection(hub.host, hub.port or 0)
        try:
            while next_index < len(bodies):
                body = bodies[next_index]
                next_index += 1
                started = time.perf_counter()
                status, answer = await conn.post("/v1/events", body)
                if status != 202:
                    raise RuntimeError(f"hub answered {status}: {answer[:300]!r}")
                latencies.append(time.perf_counter() - started)
                last_202 = time.time()
        finally:
            await conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return last_202, latencies


def _throughput(hub: HubProcess, twin: WebhookTwin, events: int, concurrency: int) -> Throughput:
    bodies = [_event("tp", i) for i in range(events)]
    base = twin.count()
    hub_cpu, twin_cpu = cpu_seconds(hub.pid), cpu_seconds(twin.process.pid)
    t0 = time.time()
    last_202, latencies = asyncio.run(_post_all(hub, bodies, concurrency))
    _wait_delivered(hub, twin, base + events)
    hub_cpu = cpu_seconds(hub.pid) - hub_cpu
    twin_cpu = cpu_seconds(twin.process.pid) - twin_cpu
    done = max(twin.arrivals().values())
    accept = last_202 - t0
    return Throughput(
        events=events,
        concurrency=concurrency,
        accepted_per_s=round(events / accept, 1),
        end_to_end_per_s=round(events / (done - t0), 1),
        accept_seconds=round(accept, 3),
        end_to_end_seconds=round(done - t0, 3),
        hub_cpu_ms_per_event=round(hub_cpu / events * 1000, 3),
        twin_cpu_ms_per_event=round(twin_cpu / events * 1000, 3),
        post_to_202=summary_ms(latencies),
    )


async def _paced(
    hub: HubProcess, rate: float, count: int
) -> tuple[float, list[float], dict[str, float]]:
    """POST ``count`` events at ``rate``/s, each on a free connection of a small pool.

    Returns the rate achieved, the POST→202 latencies, and each message id's start time.
    """
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    connections = [Connection(hub.host, hub.port or 0) for _ in range(16)]
    for conn in connections:
        idle.put_nowait(conn)
    started_at: dict[str, float] = {}
    acks: list[float] = []

    async def one(i: int) -> None:
        conn = await idle.get()
        try:
            wall = time.time()
            t = time.perf_counter()
            status, answer = await conn.post("/v1/events", _event("lat", i))
            acks.append(time.perf_counter() - t)
        finally:
            idle.put_nowait(conn)
        if status != 202:
            raise RuntimeError(f"hub answered {status}: {answer[:300]!r}")
        started_at[_message_id(answer)] = wall

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = []
    for i in range(count):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    achieved = count / (loop.time() - t0)
    for conn in connections:
        await conn.close()
    return achieved, acks, started_at


def _latency(hub: HubProcess, twin: WebhookTwin, rate: float, duration: float) -> Latency:
    count = int(rate * duration)
    base = twin.count()
    achieved, acks, started_at = asyncio.run(_paced(hub, rate, count))
    _wait_delivered(hub, twin, base + count)
    arrivals = twin.arrivals()
    return Latency(
        rate=rate,
        duration_s=duration,
        events=count,
        achieved_rate=round(achieved, 1),
        post_to_202=summary_ms(acks),
        post_to_partner=summary_ms([arrivals[m] - s for m, s in started_at.items()]),
    )


def _warm_up(hub: HubProcess, twin: WebhookTwin) -> None:
    base = twin.count()
    asyncio.run(_post_all(hub, [_event("warm", i) for i in range(50)], 4))
    _wait_delivered(hub, twin, base + 50)


def run_one(
    database: str, database_url: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    profile = profile_folder(args.profile)
    with webhook_twin(workdir / "twin.log") as twin:
        config = write_config(
            workdir, _config(database_url, f"{twin.url}/hook", args.worker_processes)
        )
        with start_hub(config) as hub:
            try:
                _warm_up(hub, twin)
                with profiled(hub, profile and profile / f"{database}-throughput.txt"):
                    tp = _throughput(hub, twin, args.events, args.concurrency)
                print(
                    f"  {database}: throughput {tp.accepted_per_s:.0f} accepted/s, "
                    f"{tp.end_to_end_per_s:.0f} end-to-end/s",
                    flush=True,
                )
                with profiled(hub, profile and profile / f"{database}-latency.txt"):
                    lat = _latency(hub, twin, args.rate, args.duration)
            finally:
                hub.terminate()
    return {
        "database": database,
        "throughput": asdict(tp),
        "latency": asdict(lat),
        # Other work on the machine skews every figure but CPU per event: keep the load.
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "speed_probe_ms_after": speed_probe(),
    }


# ---------------------------------------------------------------- report


def _p50_p99(summary: dict[str, float]) -> str:
    return f"{summary['p50_ms']:.1f} / {summary['p99_ms']:.1f}"


def print_table(results: list[dict[str, Any]]) -> None:
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("accepted events/s (durable)", lambda r: f"{r['throughput']['accepted_per_s']:.0f}"),
        ("end-to-end events/s", lambda r: f"{r['throughput']['end_to_end_per_s']:.0f}"),
        ("loaded: POST→202 p50/p99 ms", lambda r: _p50_p99(r["throughput"]["post_to_202"])),
        ("hub CPU ms per event", lambda r: f"{r['throughput']['hub_cpu_ms_per_event']:.2f}"),
        ("paced: rate achieved /s", lambda r: f"{r['latency']['achieved_rate']:.0f}"),
        ("paced: POST→202 p50/p99 ms", lambda r: _p50_p99(r["latency"]["post_to_202"])),
        ("paced: POST→partner p50/p99 ms", lambda r: _p50_p99(r["latency"]["post_to_partner"])),
    ]
    width = max(len(label) for label, _ in rows)
    header = f"{'':<{width}}  " + "  ".join(f"{r['database']:>16}" for r in results)
    print(header)
    print("-" * len(header))
    for label, cell in rows:
        print(f"{label:<{width}}  " + "  ".join(f"{cell(r):>16}" for r in results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--postgres-url", default=os.environ.get("HUB_TEST_DATABASE_URL"))
    worker_processes_option(parser)
    parser.add_argument("--out", default=str(HERE / "results" / "ingest.json"))
    parser.add_argument(
        "--profile", metavar="DIR", help="record the hub with py-spy into DIR (pip install py-spy)"
    )
    args = parser.parse_args(argv)

    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    info = machine()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        for database in databases:
            workdir = Path(tmp) / database
            if database == "sqlite":
                url = f"sqlite:///{workdir / 'hub.db'}"
                results.append(run_one(database, url, args, workdir))
            else:
                base = args.postgres_url or DEFAULT_PG
                info["postgres"] = postgres_settings(base, ["server_version"])["server_version"]
                with postgres_schema(base) as url:
                    results.append(run_one(database, url, args, workdir))
    print()
    print_table(results)
    write_report(
        args.out,
        "ingest",
        machine=info,
        settings={
            "events": args.events,
            "concurrency": args.concurrency,
            "rate": args.rate,
            "duration_s": args.duration,
            "ordering_keys": INCIDENTS,
            "worker_processes": args.worker_processes,
        },
        results=results,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
