"""``hub run`` delivers in ``worker.processes`` children: they deliver, report to the
hub's /metrics, come back when killed, and leave when the hub is gone.

Real processes (``hub run`` and its ``hub worker`` children), the webhook twin in this
process, SQLite on disk shared by the hub and its children.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hubkit import FAST_RETRY, Webhook, cancelled, wait_for

from hub.testing.process import GRACEFUL_EXIT, HubProcess, start_hub, write_config

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, hook_url: str, processes: int) -> Path:
    return write_config(
        tmp_path,
        {
            "database_url": f"sqlite:///{tmp_path / 'hub.db'}",
            "worker": {"processes": processes, "poll_interval": 5, "shutdown_grace": 5},
            "retry_policies": {"default": FAST_RETRY},
            "destinations": {"hook": {"type": "http", "url": hook_url}},
            "routes": [{"name": "all", "destination": "hook"}],
        },
    )


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def _post(hub: HubProcess, events: list[dict[str, Any]]) -> set[str]:
    ids: set[str] = set()
    with httpx.Client(base_url=hub.url, timeout=10) as client:
        for event in events:
            reply = client.post("/v1/events", json=event)
            assert reply.status_code == 202, reply.text
            ids.update(d["message_id"] for d in reply.json()["accepted"][0]["deliveries"])
    return ids


def _delivered_metric(hub: HubProcess) -> float:
    text = httpx.get(f"{hub.url}/metrics", timeout=10).text
    m = re.search(
        r'^hub_delivery_attempts_total\{destination="hook",result="delivered"\} (\S+)$', text, re.M
    )
    return float(m.group(1)) if m else 0.0


def test_children_deliver_and_the_hub_counts_their_attempts(
    tmp_path: Path, webhook: Webhook
) -> None:
    receiver, url = webhook.twin, webhook.url
    with start_hub(_config(tmp_path, url, processes=2)) as hub:
        assert len(children_of(hub.pid)) == 2, hub.log_tail()
        # poll_interval is 5 s: deliveries this quick prove the hub wakes its children.
        ids = _post(hub, [cancelled(f"e{i}", incident=f"I{i % 7}") for i in range(60)])
        wait_for("every delivery", lambda: ids <= set(receiver.accepted_ids()), timeout=4)
        wait_for("the children's reports", lambda: _delivered_metric(hub) == len(ids), 10)
        assert hub.terminate() in GRACEFUL_EXIT, hub.log_tail()


def test_a_killed_child_is_started_again_and_nothing_is_lost(
    tmp_path: Path, webhook: Webhook
) -> None:
    receiver, url = webhook.twin, webhook.url
    receiver.set_behaviour(delay=0.05)  # keep deliveries in flight when the child dies
    with start_hub(_config(tmp_path, url, processes=1)) as hub:
        (child,) = children_of(hub.pid)
        ids = _post(hub, [cancelled(f"a{i}", incident=f"I{i % 5}") for i in range(40)])
        wait_for("a first delivery", lambda: receiver.accepted_ids(), timeout=10)
        os.kill(child, signal.SIGKILL)
        replaced = wait_for(
            "a new child", lambda: [c for c in children_of(hub.pid) if c != child], 20
        )
        assert len(replaced) == 1
        receiver.set_behaviour(delay=0)
        ids |= _post(hub, [cancelled(f"b{i}", incident=f"I{i % 5}") for i in range(20)])
        wait_for("every delivery", lambda: ids <= set(receiver.accepted_ids()), timeout=30)
        assert "exited with -9; starting it again" in hub.log_text()
        assert hub.terminate() in GRACEFUL_EXIT, hub.log_tail()


def test_children_leave_when_the_hub_is_killed(tmp_path: Path, webhook: Webhook) -> None:
    url = webhook.url
    with start_hub(_config(tmp_path, url, processes=2)) as hub:
        children = children_of(hub.pid)
        assert len(children) == 2
        os.kill(hub.pid, signal.SIGKILL)  # the hub alone, not its process group
        hub.wait(10)
        # Each child sees its link end and drains (shutdown_grace 5 s) before it exits.
        wait_for("the children to exit", lambda: not any(map(_running, children)), 15)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
