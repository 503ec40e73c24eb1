"""What the benchmark scripts share: child processes, the webhook twin, PostgreSQL,
the machine's description, percentiles and the JSON report.

The scripts run as modules from the repository root, ``python -m benchmarks.NAME``, so
the root is on ``sys.path`` (run as a file, ``benchmarks/mappings.py`` would hide the
``mappings`` package).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from hub.compiled import compiled_modules
from hub.testing.postgres import postgres_schema as _postgres_schema
from hub.testing.process import HubProcess, free_port

__all__ = [
    "DEFAULT_PG",
    "HERE",
    "WebhookTwin",
    "cpu_seconds",
    "machine",
    "postgres_schema",
    "postgres_settings",
    "profile_folder",
    "profiled",
    "stop_process",
    "summary_ms",
    "wait_delivered",
    "webhook_twin",
    "worker_processes_option",
    "write_report",
]

HERE = Path(__file__).resolve().parent
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def worker_processes_option(parser: argparse.ArgumentParser) -> None:
    """``--worker-processes``: the hub's ``worker.processes``. The benchmarks measure
    ``auto`` (one worker process on two CPUs) unless told: the setting recommended there;
    the hub's own default is 0."""
    parser.add_argument(
        "--worker-processes",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="worker.processes of the hub: auto (default here), or N (0: deliver in the "
        "hub's own process, the hub's default)",
    )


# ---------------------------------------------------------------- processes


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group a child was started in (``start_new_session=True``),
    SIGKILL it if it has not exited ten seconds later, and reap the child."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class WebhookTwin:
    """``benchmarks/twin.py`` running in a process of its own."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self) -> int:
        """How many distinct messages the twin has accepted."""
        return int(httpx.get(f"{self.url}/_bench/count", timeout=10).json())

    def arrivals(self) -> dict[str, float]:
        """Each accepted message id with its arrival time (epoch seconds)."""
        data: dict[str, float] = httpx.get(f"{self.url}/_bench/arrivals", timeout=30).json()
        return data


@contextlib.contextmanager
def webhook_twin(log: Path | None = None) -> Iterator[WebhookTwin]:
    """Start the webhook twin on a free port, wait until it answers, stop it afterwards.
    Its output goes to ``log`` (appended), or nowhere."""
    port = free_port()
    with contextlib.ExitStack() as files:
        out = files.enter_context(log.open("ab")) if log else subprocess.DEVNULL
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.twin", str(port)],
            cwd=HERE.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    twin = WebhookTwin(process, port)
    see = f"; see {log}" if log else ""
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"twin exited{see}")
            try:
                twin.count()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"twin did not start{see}") from None
                time.sleep(0.05)
        yield twin
    finally:
        stop_process(process)


def wait_delivered(
    hub: HubProcess, count: Callable[[], int], target: int, *, timeout: float, poll: float
) -> None:
    """Return once ``count()`` reaches ``target``; raise (hub log included) if the hub
    dies or ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while count() < target:
        if time.monotonic() > deadline or not hub.alive():
            raise RuntimeError(f"deliveries stalled; hub log:\n{hub.log_tail()}")
        time.sleep(poll)


def cpu_seconds(pid: int) -> float:
    """User + system CPU used by a process and its live children (the worker processes
    of ``hub run``), from Linux /proc, to express cost per event."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited while we looked
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def profile_folder(option: str | None) -> Path | None:
    """The ``--profile`` folder, created; None when not profiling."""
    if not option:
        return None
    folder = Path(option)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def profiled(hub: HubProcess, out: Path | None) -> Iterator[None]:
    """Sample the hub with py-spy (``--profile``) while the block runs: collapsed stacks
    of the GIL holder, one file per phase, for flame graphs or a quick ``sort | tail``."""
    if out is None:
        yield
        return
    command = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(hub.pid)]
    command += ["--format", "raw", "--threads", "--gil", "--rate", "250", "--nonblocking"]
    command += ["--subprocesses"]  # the worker processes of ``hub run``
    spy = subprocess.Popen(
        [*command, "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


# ---------------------------------------------------------------- PostgreSQL


def postgres_schema(base_url: str) -> contextlib.AbstractContextManager[str]:
    """A schema of the run's own (``hubbench_…``) on ``base_url``, dropped afterwards."""
    return _postgres_schema(base_url, prefix="hubbench")


def postgres_settings(url: str, names: Iterable[str]) -> dict[str, str]:
    """The server's value of each setting (``SHOW name``), to record with the results."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {name: str(conn.execute(text(f"SHOW {name}")).scalar()) for name in names}
    finally:
        engine.dispose()


# ---------------------------------------------------------------- figures and report


def machine() -> dict[str, Any]:
    """CPUs, CPU model, Python, platform and SQLite; printed, with a warning when the
    machine is busy (its one-minute load average is recorded as ``loadavg_1m_before``)."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        # Which CPython build: the speed probe below is pure Python, so its figures
        # compare only between runs of the same interpreter.
        "python_executable": os.path.realpath(sys.executable),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "compiled": compiled_modules(),  # hub/compiled.py: mypyc, or Python (HUB_COMPILE=0)
    }
    print(f"machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}")
    info["loadavg_1m_before"] = round(os.getloadavg()[0], 2)
    if info["loadavg_1m_before"] > 0.5:
        print(f"warning: load average {info['loadavg_1m_before']}: figures will be low")
    info["speed_probe_ms_before"] = speed_probe()
    print(f"speed probe: {info['speed_probe_ms_before']} ms (lower is faster)")
    return info


def speed_probe() -> float:
    """Milliseconds of a fixed pure-Python workload (best of five), none of it the hub's.

    The shared 2-core machine has run the same code 30% to 2.5 times slower from one
    hour to the next; reported beside each run, this says which phase a figure came
    from, so that runs are compared only within one phase.
    """
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        table: dict[str, int] = {}
        for i in range(100_000):
            key = str(i)
            table[key] = len(key) + i
        sum(table.values())
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 2)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary_ms(values: list[float], digits: int = 2) -> dict[str, float]:
    """p50, p99, max and mean of durations in seconds, in milliseconds (NaN when empty)."""
    ms = [v * 1000 for v in values]
    return {
        "p50_ms": round(_pct(ms, 50), digits),
        "p99_ms": round(_pct(ms, 99), digits),
        "max_ms": round(max(ms), digits) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), digits) if ms else float("nan"),
    }


def write_report(out: str | Path, benchmark: str, **sections: Any) -> None:
    """Write ``{"benchmark", "at", **sections}`` as JSON to ``out`` (folders created)."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": benchmark, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **sections}
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")
