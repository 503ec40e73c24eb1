"""Run the hub as real processes, for crash tests, scale-out tests and benchmarks.

A test writes a hub.yaml with :func:`write_config`, starts ``hub run`` with
:func:`start_hub` (which picks a free loopback port and waits for ``/readyz``) or
``hub worker`` with :func:`start_worker`, and stops each with
:meth:`HubProcess.terminate` (SIGTERM: the hub drains and exits) or
:meth:`HubProcess.kill` (SIGKILL: a crash). Every process runs in a session of its
own so a kill reaches anything it spawned; its stdout and stderr go to a log file
whose tail is put in every error, so a failing test says why the hub died.

Use each process as a context manager (or call ``kill`` in a ``finally``): a test
that fails half-way must not leave a hub running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import yaml

__all__ = [
    "GRACEFUL_EXIT",
    "HubProcess",
    "HubProcessError",
    "free_port",
    "start_hub",
    "start_worker",
    "write_config",
]

# Variables that would override the hub.yaml a test wrote; a test passes them in ``env``
# when it means to.
_INHERITED_OVERRIDES = ("HUB_CONFIG", "HUB_DATABASE_URL")
_LOG_TAIL = 4000  # characters of a process log quoted in errors

# Return codes of a clean stop after SIGTERM: `hub worker` exits 0; `hub run` (uvicorn)
# shuts down gracefully and then re-raises the signal, so it ends "killed by SIGTERM"
# (which, by the code alone, a process that had no handler yet would end with too).
GRACEFUL_EXIT = frozenset({0, -signal.SIGTERM})


class HubProcessError(RuntimeError):
    """A hub process did not start, did not become ready, or did not stop."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now.

    The port is free only until someone binds it; :func:`start_hub` retries with another
    one when the hub loses that race.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(directory: str | Path, config: Mapping[str, Any], name: str = "hub.yaml") -> Path:
    """Write ``config`` as YAML into ``directory`` (created if needed); the file's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


class HubProcess:
    """One ``hub`` subprocess with its log file; started by :func:`start_hub` or
    :func:`start_worker`."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        log_path: Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.args = tuple(args)
        self.log_path = log_path
        self.port = port
        self.host = host
        command = [sys.executable, "-m", "hub.cli", *self.args]
        self._killed = False
        self._log: IO[bytes] = log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                command,
                cwd=cwd,
                env=_child_env(env),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: kill reaches every child
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        """Base URL of the API (``hub run`` only)."""
        if self.port is None:
            raise HubProcessError(f"{self.describe()} serves no API")
        return f"http://{self.host}:{self.port}"

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def describe(self) -> str:
        return f"`hub {' '.join(self.args)}` (pid {self.pid})"

    def log_text(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, chars: int = _LOG_TAIL) -> str:
        return self.log_text()[-chars:]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once ``/readyz`` answers 200; raise (log included) if the process dies
        or the timeout passes first."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if not self.alive():
                    raise HubProcessError(
                        f"{self.describe()} exited with {self.returncode} before it was "
                        f"ready; log:\n{self.log_tail()}"
                    )
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise HubProcessError(
                        f"{self.describe()} not ready after {timeout:.0f}s; log:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; its return code (negative: killed by a signal)."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise HubProcessError(
                f"{self.describe()} still running after {timeout}s; log:\n{self.log_tail()}"
            ) from None

    def terminate(self, timeout: float = 20.0) -> int:
        """Graceful stop: SIGTERM, then wait for the drain. If the process is still up
        after ``timeout`` it is killed and HubProcessError raised; else its return code,
        one of :data:`GRACEFUL_EXIT` when the process stopped cleanly."""
        if self.alive():
            self._signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except HubProcessError:
            self.kill()
            raise
        finally:
            self._log.close()

    def kill(self) -> int:
        """Crash: SIGKILL to the whole process group, then reap. Safe to call twice."""
        if not self._killed:
            self._signal(signal.SIGKILL)
            self._killed = True  # never signal the group id again: it may be reused
        code = self.popen.wait()
        self._log.close()
        return code

    def _signal(self, sig: signal.Signals) -> None:
        if self._killed:
            return
        with contextlib.suppress(ProcessLookupError):  # the whole group has exited
            os.killpg(self.popen.pid, sig)

    def __enter__(self) -> HubProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Whatever happened in the block, nothing may outlive it.
        self.kill()


def start_hub(
    config: str | Path,
    *,
    workdir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    worker: bool = True,
    ready_timeout: float = 30.0,
    log_name: str = "hub.log",
) -> HubProcess:
    """Start ``hub -c CONFIG run`` on a free loopback port and wait until it is ready.

    ``workdir`` (default: the config's directory) is the process's working directory and
    holds its log. With ``port`` unset a free port is picked, and picked again if another
    process took it before the hub bound it.
    """
    config = Path(config).resolve()
    cwd = Path(workdir).resolve() if workdir is not None else config.parent
    tries = 1 if port is not None else 3
    for attempt in range(tries):
        chosen = port if port is not None else free_port(host)
        args = ["-c", str(config), "run", "--host", host, "--port", str(chosen)]
        if not worker:
            args.append("--no-worker")
        process = HubProcess(
            args, log_path=cwd / log_name, cwd=cwd, env=env, port=chosen, host=host
        )
        try:
            process.wait_ready(ready_timeout)
            return process
        except BaseException as exc:
            process.kill()
            lost_race = (
                isinstance(exc, HubProcessError) and "address already in use" in str(exc).lower()
            )
            if not lost_race or attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def start_worker(
    config: str | Path,
    *,
    name: str,
    workdir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    log_name: str | None = None,
) -> HubProcess:
    """Start ``hub -c CONFIG worker --name NAME``; it logs to ``worker-NAME.log``.

    A worker serves nothing, so there is no readiness to wait for: it starts claiming as
    soon as it has connected to the database.
    """
    config = Path(config).resolve()
    cwd = Path(workdir).resolve() if workdir is not None else config.parent
    return HubProcess(
        ["-c", str(config), "worker", "--name", name],
        log_path=cwd / (log_name or f"worker-{name}.log"),
        cwd=cwd,
        env=env,
    )


def _child_env(overrides: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED_OVERRIDES}
    env["PYTHONUNBUFFERED"] = "1"
    if overrides:
        env.update(overrides)
    return env
