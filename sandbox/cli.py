"""`hub sandbox`: the hub plus every partner twin, on loopback, on the embedded default.

Registered through the ``hub.commands`` entry point, so the engine never imports the
sandbox. Each scenario in ``sandbox/scenarios`` is played once the hub is up, unless
``--no-play``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from sandbox.partners import SECRET_ENV, SandboxPartners

__all__ = ["add_command", "scenario_files"]

SCENARIOS = Path(__file__).parent / "scenarios"


def scenario_files() -> list[Path]:
    return sorted(SCENARIOS.glob("*.json"))


def _run(args: argparse.Namespace) -> int:
    from hub.cli import serve
    from hub.config.plan import plan_from_mapping

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    partners = SandboxPartners(secret=os.environ.get(SECRET_ENV) or secrets.token_hex(16))
    os.environ[SECRET_ENV] = partners.secret  # hub.yaml reads it as ${HUB_SANDBOX_WEBHOOK_SECRET}
    partners.start()
    config = partners.config(workdir, mllp_listen_port=args.mllp_port)
    config["api"]["port"] = args.port
    (workdir / "hub.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    plan = plan_from_mapping(config, source=str(workdir / "hub.yaml"))
    hub_url = f"http://127.0.0.1:{args.port}"
    print("prehospital hub sandbox (120 院前急救互联互通沙箱)")
    print(f"  hub API (接入)      {hub_url}/docs   (POST {hub_url}/v1/events)")
    print(f"  metrics (监控)      {hub_url}/metrics")
    print(f"  MLLP listener       127.0.0.1:{args.mllp_port}  (monitors, ePCR: ADT/ORU in)")
    print(f"  webhook twin        {partners.webhook_url.removesuffix('/hook')}/_twin/received")
    print(f"  HIS twin (MLLP)     127.0.0.1:{partners.his.port}")
    print(f"  EMR twin (FHIR)     {partners.fhir_url}/Patient")
    print(f"  file outbox         {workdir / 'outbox'}")
    print(f"  config              {workdir / 'hub.yaml'}")
    if not args.no_play:
        threading.Thread(target=_play, args=(hub_url, partners), daemon=True).start()
    try:
        # The file too: worker processes read the plan from it, as `hub run` does.
        serve(plan, port=args.port, config_file=workdir / "hub.yaml")
    finally:
        partners.stop()
    return 0


def _play(hub_url: str, partners: SandboxPartners) -> None:
    """Post each scenario once the hub answers, then say what every partner received."""
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
    time.sleep(2.0)
    for line in partners.summary():
        print(f"  {line}")


def add_command(sub: Any) -> None:
    parser = sub.add_parser("sandbox", help="run the hub with every simulated partner")
    parser.add_argument("--port", type=int, default=8080, help="hub API port")
    parser.add_argument("--mllp-port", type=int, default=2575, help="hub MLLP listener port")
    parser.add_argument("--workdir", default="hub-data/sandbox", help="database and outbox")
    parser.add_argument("--no-play", action="store_true", help="do not play the scenarios")
    parser.set_defaults(func=_run)
