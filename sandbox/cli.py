"""`hub sandbox`: the hub plus every partner twin, on loopback, on the embedded default.

Registered through the ``hub.commands`` entry point, so the engine never imports the
sandbox. Each scenario in ``sandbox/scenarios`` is played once the hub is up, unless
``--no-play``.
"""

from __future__ import annotations

import argparse
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from sandbox.http_receiver import HttpReceiverTwin, ServerThread

__all__ = ["add_command", "sandbox_config", "scenario_files"]

SCENARIOS = Path(__file__).parent / "scenarios"


def scenario_files() -> list[Path]:
    return sorted(SCENARIOS.glob("*.json"))


def sandbox_config(workdir: Path, webhook_url: str, secret_env: str) -> dict[str, Any]:
    """The hub.yaml the sandbox runs: every route to its twin, secrets by ${ENV}."""
    return {
        "database_url": f"sqlite:///{workdir / 'hub.db'}",
        "api": {"host": "127.0.0.1", "port": 8080},
        "retry_policies": {
            "default": {"initial_delay": 0.5, "max_delay": 30, "max_attempts": 8},
        },
        "destinations": {
            "ems-webhook": {"type": "http", "url": webhook_url, "secret": f"${{{secret_env}}}"},
            "debug-outbox": {"type": "file", "directory": str(workdir / "outbox")},
        },
        "routes": [
            {"name": "all-to-webhook", "destination": "ems-webhook"},
            {
                "name": "clinical-to-file",
                "when": {"types": ["vitals.recorded", "ecg.acquired", "assessment.updated"]},
                "destination": "debug-outbox",
                "ordering_key": "patient",
            },
        ],
    }


def _run(args: argparse.Namespace) -> int:
    import os

    from hub.cli import serve
    from hub.config.plan import plan_from_mapping

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    secret = os.environ.setdefault("HUB_SANDBOX_WEBHOOK_SECRET", secrets.token_hex(16))
    twin = HttpReceiverTwin(secret=secret)
    twin_server = ServerThread(twin.app).start()
    config = sandbox_config(workdir, f"{twin_server.url}/hook", "HUB_SANDBOX_WEBHOOK_SECRET")
    config["api"]["port"] = args.port
    (workdir / "hub.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    plan = plan_from_mapping(config, source=str(workdir / "hub.yaml"))
    hub_url = f"http://127.0.0.1:{args.port}"
    print("prehospital hub sandbox (120 院前急救互联互通沙箱)")
    print(f"  hub API            {hub_url}/docs   (POST {hub_url}/v1/events)")
    print(f"  metrics            {hub_url}/metrics")
    print(f"  webhook twin       {twin_server.url}/_twin/received")
    print(f"  file outbox        {workdir / 'outbox'}")
    print(f"  config             {workdir / 'hub.yaml'}")
    if not args.no_play:
        threading.Thread(target=_play, args=(hub_url, twin_server.url), daemon=True).start()
    try:
        serve(plan, port=args.port)
    finally:
        twin_server.stop()
    return 0


def _play(hub_url: str, twin_url: str) -> None:
    """Post each scenario once the hub answers, and say what happened."""
    with httpx.Client(timeout=10) as client:
        for _ in range(200):
            try:
                if client.get(f"{hub_url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        for path in scenario_files():
            reply = client.post(
                f"{hub_url}/v1/events",
                content=path.read_bytes(),
                headers={"content-type": "application/json"},
            )
            print(f"  played {path.stem}: HTTP {reply.status_code}")
        time.sleep(1.0)
        seen = client.get(f"{twin_url}/_twin/received").json()
        print(f"  webhook twin accepted {seen['accepted']} messages ({seen['calls']} calls)")


def add_command(sub: Any) -> None:
    parser = sub.add_parser("sandbox", help="run the hub with every simulated partner")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workdir", default="hub-data/sandbox", help="database and outbox")
    parser.add_argument("--no-play", action="store_true", help="do not play the scenarios")
    parser.set_defaults(func=_run)
