"""`hub sandbox` as a developer runs it: every scenario played, every partner served.

The sandbox runs `worker.processes: auto`: on two CPUs or more the hub delivers in a
worker process, which reads its plan from the sandbox's hub.yaml (a plan that only the
parent process knew left every partner empty).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from hub.testing.process import free_port

SUMMARY = re.compile(r"FHIR twin holds (\d+) Patient")


def test_the_sandbox_plays_every_scenario_and_every_partner_receives(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "hub.cli",
        "sandbox",
        "--port",
        str(free_port()),
        "--mllp-port",
        str(free_port()),
        "--workdir",
        str(tmp_path / "sandbox"),
    ]
    log = tmp_path / "sandbox.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 60
            while not SUMMARY.search(log.read_text(encoding="utf-8", errors="replace")):
                assert process.poll() is None, log.read_text(encoding="utf-8", errors="replace")
                assert time.monotonic() < deadline, "no summary within 60 s"
                time.sleep(0.2)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)
    text = log.read_text(encoding="utf-8", errors="replace")
    played = re.findall(r"played (\S+): HTTP (\d+)", text)
    scenarios = sorted(
        p.stem for p in (Path(__file__).parents[2] / "sandbox" / "scenarios").glob("*.json")
    )
    assert played == [(name, "202") for name in scenarios]
    webhook = re.search(r"webhook twin accepted (\d+) messages", text)
    his = re.search(r"HIS twin received (\d+) HL7 messages \((\d+) answered AA\)", text)
    patients = SUMMARY.search(text)
    assert webhook and his and patients, text
    assert int(webhook[1]) > 0
    assert int(his[1]) > 0 and his[1] == his[2]
    assert int(patients[1]) > 0
