"""MLLP in → map → MLLP out: monitors' ORU^R01 vital signs through the hub to a HIS.

    python -m benchmarks.mllp [--database sqlite|postgres|all] [--sync full|normal|both]
                              [--messages N] [--connections 1,8]

Three processes on loopback: ``hub run`` (hub.testing.process) with an MLLP listener and
one route, ``vitals.recorded`` → ``hl7v2-oru`` → an ``mllp`` destination; the HIS twin
(sandbox.his_twin, this file run with ``--serve-twin``) in a process of its own; and the
load generator in this one. For each connection count (default 1 and 8) the generator
sends N ORU^R01 messages (default 5,000, each with its own MSH-10) as monitors do: on
each connection send, wait for the ACK, send the next. The hub ACKs (AA) only after
the commit that holds the message, so "accepted/s" is a durable rate *as durable as the
store's commit*:

- SQLite ``database_sync: full`` (default): WAL + synchronous=FULL, every commit
  fsynced: survives power loss.
- SQLite ``database_sync: normal``: WAL + synchronous=NORMAL: a commit survives a crash
  (SIGKILL) of the hub, not an OS crash or power loss. Never quote these figures as
  power-loss durable.
- PostgreSQL: as the server is configured (``synchronous_commit``, ``fsync``: recorded).

Figures per configuration and connection count: messages/s accepted (to the last ACK),
send→ACK p50/p99, end-to-end messages/s (until the twin has answered AA to every mapped
ORU), hub CPU ms per message. Results go to ``benchmarks/results/mllp.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

from benchmarks.common import (
    DEFAULT_PG,
    cpu_seconds,
    machine,
    postgres_schema,
    postgres_settings,
    profile_folder,
    profiled,
    speed_probe,
    stop_process,
    summary_ms,
    wait_delivered,
    worker_processes_option,
    write_report,
)
from hub.cli import run_loop
from hub.testing.process import HubProcess, free_port, start_hub, write_config

HERE = Path(__file__).resolve().parent

INCIDENTS = 200  # monitors (one patient, one incident each); ordering keys of the route
START, END = b"\x0b", b"\x1c\r"
FIRST_SAMPLE = datetime(2026, 11, 25, 8, 0)
WARM = 200  # messages sent before the measured phases
PHASE_TIMEOUT = 300.0  # seconds any one phase may take
POSTGRES_SETTINGS = ("server_version", "fsync", "synchronous_commit", "wal_sync_method")


# ---------------------------------------------------------------- the HIS twin process


async def _serve_twin() -> None:
    """Child mode: the HIS twin on this process's loop, plus a line-based control port
    (``count`` → distinct control ids answered AA; ``last`` → time of the latest)."""
    from sandbox.his_twin import HisTwin

    twin = await HisTwin().start()

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                # Polled every 20 ms while a phase drains: kept O(1), as the twin's
                # CPU shares the machine with the hub's.
                if line.strip() == b"count":
                    answer: Any = twin.accepted_count()
                else:
                    received = twin.received()
                    answer = max((r.at for r in received if r.answer == "AA"), default=0.0)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(control, "127.0.0.1", 0)
    control_port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": twin.port, "control": control_port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await twin.stop()


@dataclass
class Twin:
    process: subprocess.Popen[bytes]
    port: int
    control: int

    def ask(self, what: str) -> Any:
        async def one() -> Any:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.control)
            writer.write(what.encode() + b"\n")
            line = await reader.readline()
            writer.close()
            return json.loads(line)

        return asyncio.run(one())

    def count(self) -> int:
        return int(self.ask("count"))

    def last(self) -> float:
        return float(self.ask("last"))


@contextlib.contextmanager
def twin_process() -> Iterator[Twin]:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.mllp", "--serve-twin"],
        cwd=HERE.parent,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        ports = json.loads(process.stdout.readline() or b"null")
        if not ports:
            raise RuntimeError("the HIS twin did not start")
        yield Twin(process, int(ports["port"]), int(ports["control"]))
    finally:
        stop_process(process)


# ---------------------------------------------------------------- messages and load


def oru(control_id: str, incident: int, minute: int) -> bytes:
    """An ORU^R01 as a monitor sends it: one sample of six vital signs, original mode,
    taken ``minute`` minutes after 08:00 on the benchmark's day."""
    at = (FIRST_SAMPLE + timedelta(minutes=minute)).strftime("%Y%m%d%H%M%S+0800")
    segments = [
        f"MSH|^~\\&|LIFEPAK|AMB-{incident:03d}|HUB|120|{at}||ORU^R01^ORU_R01|{control_id}"
        "|P|2.5.1|||||CHN|UNICODE UTF-8",
        f"PID|1||PAT-BENCH-{incident:04d}^^^HUB120^PI||王^建国||19580312|M",
        f"PV1|1|E|||||||||||||||||INC-BENCH-{incident:04d}^^^HUB120^VN",
        f"OBR|1||{control_id}^LIFEPAK|85353-1^Vital signs panel^LN|||{at}",
        f"OBX|1|NM|8867-4^Heart rate^LN||{60 + minute % 40}|/min^/min^UCUM|||||F|||{at}",
        f"OBX|2|NM|9279-1^Respiratory rate^LN||18|/min^/min^UCUM|||||F|||{at}",
        f"OBX|3|NM|59408-5^SpO2^LN||96|%^%^UCUM|||||F|||{at}",
        f"OBX|4|NM|8480-6^Systolic blood pressure^LN||128|mm[Hg]^mm[Hg]^UCUM|||||F|||{at}",
        f"OBX|5|NM|8462-4^Diastolic blood pressure^LN||82|mm[Hg]^mm[Hg]^UCUM|||||F|||{at}",
        f"OBX|6|NM|8310-5^Body temperature^LN||36.8|Cel^Cel^UCUM|||||F|||{at}",
    ]
    return START + "\r".join(segments).encode() + b"\r" + END


def messages(prefix: str, count: int, first: int = 0) -> list[bytes]:
    """Messages ``first`` to ``first + count`` of the monitors' stream: each monitor
    sends one sample a minute, so a later phase goes on where the one before ended (a
    monitor's clock does not go back)."""
    return [
        oru(f"{prefix}{i:07d}", i % INCIDENTS, i // INCIDENTS) for i in range(first, first + count)
    ]


class _Monitor(asyncio.Protocol):
    """One monitor connection: send, wait for the ACK, send the next.

    A protocol on uvloop rather than a stream with a timeout per read: the generator's
    own work is on every round trip of a connection, so it is kept small (the phase as a
    whole has one timeout).
    """

    def __init__(self, queue: list[bytes], latencies: list[float]) -> None:
        self.queue = queue
        self.latencies = latencies
        self.done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.started = 0.0
        self.last = 0.0  # time of the last ACK

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send_next()

    def _send_next(self) -> None:
        assert self.transport is not None
        if not self.queue:
            self._finish(None)
            return
        block = self.queue.pop()
        self.started = time.perf_counter()
        self.transport.write(block)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(END)
        if end < 0:
            return
        reply, self.buffer = self.buffer[: end + len(END)], self.buffer[end + len(END) :]
        self.latencies.append(time.perf_counter() - self.started)
        if b"MSA|AA|" not in reply:
            self._finish(RuntimeError(f"the hub did not accept a message: {reply[:300]!r}"))
            return
        self.last = time.time()
        self._send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc or ConnectionError("the hub closed the connection"))

    def _finish(self, error: BaseException | None) -> None:
        if not self.done.done():
            if error is None:
                self.done.set_result(self.last)
            else:
                self.done.set_exception(error)


async def _send_all(
    host: str, port: int, blocks: list[bytes], connections: int
) -> tuple[float, list[float]]:
    """Send ``blocks`` over ``connections`` monitors; the last ACK time and latencies."""
    queue = list(reversed(blocks))
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    monitors: list[_Monitor] = []
    try:
        for _ in range(connections):
            _, monitor = await loop.create_connection(
                lambda: _Monitor(queue, latencies), host, port
            )
            monitors.append(monitor)
        try:
            lasts = await asyncio.wait_for(
                asyncio.gather(*(m.done for m in monitors)), PHASE_TIMEOUT
            )
        except TimeoutError:
            raise RuntimeError(f"{len(queue)} messages not sent within {PHASE_TIMEOUT}s") from None
    finally:
        for monitor in monitors:
            if monitor.transport is not None:
                monitor.transport.close()
    return max(lasts), latencies


# ---------------------------------------------------------------- measurements


def _wait_delivered(hub: HubProcess, twin: Twin, target: int) -> None:
    wait_delivered(hub, twin.count, target, timeout=PHASE_TIMEOUT, poll=0.02)


@dataclass
class Phase:
    connections: int
    messages: int
    accepted_per_s: float
    end_to_end_per_s: float | None  # None when receiving only
    accept_seconds: float
    end_to_end_seconds: float | None
    hub_cpu_ms_per_message: float
    send_to_ack: dict[str, float] = field(default_factory=dict)


def _phase(
    hub: HubProcess,
    twin: Twin,
    mllp_port: int,
    prefix: str,
    span: tuple[int, int],
    connections: int,
    receive_only: bool,
) -> Phase:
    first, count = span
    blocks = messages(prefix, count, first)
    base = twin.count()
    cpu = cpu_seconds(hub.pid)
    t0 = time.time()
    last_ack, latencies = run_loop(_send_all("127.0.0.1", mllp_port, blocks, connections))
    done = None
    if not receive_only:
        _wait_delivered(hub, twin, base + count)
        done = twin.last()
    cpu = cpu_seconds(hub.pid) - cpu
    return Phase(
        connections=connections,
        messages=count,
        accepted_per_s=round(count / (last_ack - t0), 1),
        end_to_end_per_s=None if done is None else round(count / (done - t0), 1),
        accept_seconds=round(last_ack - t0, 3),
        end_to_end_seconds=None if done is None else round(done - t0, 3),
        hub_cpu_ms_per_message=round(cpu / count * 1000, 3),
        send_to_ack=summary_ms(latencies, digits=3),
    )


def _config(
    database_url: str,
    sync: str,
    mllp_port: int,
    twin: Twin,
    args: argparse.Namespace,
) -> Any:
    his_links = args.his_connections
    return {
        "database_url": database_url,
        "database_sync": sync,
        "worker": {"processes": args.worker_processes},
        "listeners": {"monitors": {"type": "mllp", "host": "127.0.0.1", "port": mllp_port}},
        "destinations": {
            "his": {
                "type": "mllp",
                "host": "127.0.0.1",
                "port": twin.port,
                "connections": his_links,  # max_in_flight: the mllp default, 8 each
                # Receiving only: the route matches, but the disabled destination gets
                # no deliveries, so the figures are the receiving path's alone.
                "enabled": not args.receive_only,
            }
        },
        "routes": [
            {
                "name": "vitals-to-his",
                "when": {"types": ["vitals.recorded"]},
                "mapping": "hl7v2-oru",
                "destination": "his",
            }
        ],
    }


def run_one(
    label: str, database_url: str, sync: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    profile = profile_folder(args.profile)
    phases: list[Phase] = []
    with twin_process() as twin:
        mllp_port = free_port()
        config = write_config(
            workdir,
            _config(database_url, sync, mllp_port, twin, args),
        )
        with start_hub(config) as hub:
            try:
                warm = messages("W", WARM)
                base = twin.count()
                run_loop(_send_all("127.0.0.1", mllp_port, warm, 2))
                if not args.receive_only:
                    _wait_delivered(hub, twin, base + len(warm))
                for n, connections in enumerate(args.connections):
                    out = profile and profile / f"{label}-{connections}.txt"
                    with profiled(hub, out):
                        phase = _phase(
                            hub,
                            twin,
                            mllp_port,
                            f"P{n}",
                            (WARM + n * args.messages, args.messages),
                            connections,
                            args.receive_only,
                        )
                    phases.append(phase)
                    print(
                        f"  {label}, {connections} connection(s): "
                        f"{phase.accepted_per_s:.0f} accepted/s, "
                        f"send→ACK p50 {phase.send_to_ack['p50_ms']:.2f} ms "
                        f"p99 {phase.send_to_ack['p99_ms']:.2f} ms, "
                        f"{_rate(phase.end_to_end_per_s)} end-to-end/s",
                        flush=True,
                    )
            finally:
                hub.terminate()
    return {
        "configuration": label,
        "durability": DURABILITY[label.split("-")[-1] if label != "postgres" else "postgres"],
        "phases": [asdict(p) for p in phases],
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "speed_probe_ms_after": speed_probe(),
    }


DURABILITY = {
    "full": "SQLite WAL, synchronous=FULL: each ACKed message survives power loss",
    "normal": "SQLite WAL, synchronous=NORMAL: survives a hub crash, NOT an OS crash or "
    "power loss (the last commits may be lost)",
    "postgres": "PostgreSQL commit (see machine.postgres_settings for fsync and "
    "synchronous_commit)",
}


# ---------------------------------------------------------------- report


def print_table(results: list[dict[str, Any]], out: IO[str] = sys.stdout) -> None:
    header = (
        f"{'configuration':<14} {'conns':>5} {'accepted/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'e2e/s':>7} {'hub CPU ms/msg':>14}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in results:
        for p in r["phases"]:
            print(
                f"{r['configuration']:<14} {p['connections']:>5} {p['accepted_per_s']:>10.0f} "
                f"{p['send_to_ack']['p50_ms']:>7.2f} {p['send_to_ack']['p99_ms']:>7.2f} "
                f"{_rate(p['end_to_end_per_s']):>7} {p['hub_cpu_ms_per_message']:>14.3f}",
                file=out,
            )


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--serve-twin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--sync", choices=["full", "normal", "both"], default="both")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument(
        "--connections",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 8],
        help="comma-separated connection counts (default 1,8)",
    )
    parser.add_argument(
        "--his-connections", type=int, default=4, help="connections of the mllp destination"
    )
    worker_processes_option(parser)
    parser.add_argument(
        "--receive-only",
        action="store_true",
        help="disable the HIS destination: measure MLLP in, commit and ACK alone",
    )
    parser.add_argument("--postgres-url", default=os.environ.get("HUB_TEST_DATABASE_URL"))
    parser.add_argument("--out", default=str(HERE / "results" / "mllp.json"))
    parser.add_argument("--profile", metavar="DIR", help="py-spy the hub into DIR")
    args = parser.parse_args(argv)
    if args.serve_twin:
        run_loop(_serve_twin())
        return 0
    if args.messages < 1 or args.messages > 1_000_000:
        parser.error("--messages must be between 1 and 1,000,000")

    info = machine()
    syncs = ["full", "normal"] if args.sync == "both" else [args.sync]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hub-bench-mllp-") as tmp:
        if args.database in ("sqlite", "all"):
            for sync in syncs:
                workdir = Path(tmp) / f"sqlite-{sync}"
                url = f"sqlite:///{workdir / 'hub.db'}"
                results.append(run_one(f"sqlite-{sync}", url, sync, args, workdir))
        if args.database in ("postgres", "all"):
            base = args.postgres_url or DEFAULT_PG
            info["postgres_settings"] = postgres_settings(base, POSTGRES_SETTINGS)
            with postgres_schema(base) as url:
                results.append(run_one("postgres", url, "full", args, Path(tmp) / "postgres"))
    print()
    print_table(results)
    write_report(
        args.out,
        "mllp",
        machine=info,
        settings={
            "messages": args.messages,
            "connections": args.connections,
            "his_connections": args.his_connections,
            "worker_processes": args.worker_processes,
            "receive_only": args.receive_only,
            "incidents": INCIDENTS,
            "route": "ORU^R01 in (MLLP listener) → vitals.recorded → hl7v2-oru → mllp (HIS twin)",
            "ack": "original mode AA, written after the commit that holds the message",
        },
        results=results,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
