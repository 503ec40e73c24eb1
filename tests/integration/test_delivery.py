"""Delivery through real sockets: the hub API in-process, a webhook twin beside it.

At least once with stable message ids, in order per incident, retried through partner
failures, parked as dead on refusal and sent again by `hub resend` (a real subprocess).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import yaml
from hubkit import Hub, Webhook, cancelled, hub_config, wait_for

from hub.store.database import is_sqlite

HUB_BIN = Path(sys.executable).with_name("hub")


def post_incident(hub_url: str, incident: str, count: int, answers: dict[str, list[str]]) -> None:
    """Post ``count`` events of one incident one after another; keep each answer's message id."""
    with httpx.Client(base_url=hub_url, timeout=30) as client:
        for n in range(count):
            reply = client.post("/v1/events", json=cancelled(f"{incident}-e{n}", incident))
            assert reply.status_code == 202, reply.text
            [accepted] = reply.json()["accepted"]
            [delivery] = accepted["deliveries"]
            answers[incident].append(delivery["message_id"])


def test_a_flaky_partner_gets_every_message_once_in_order_per_incident(
    database_url: str, webhook: Webhook, start_hub: Any
) -> None:
    incidents = 5
    per_incident = 10 if is_sqlite(database_url) else 4
    webhook.twin.set_behaviour(fail_first=6, fail_status=503)
    hub: Hub = start_hub(hub_config(database_url, webhook.url))

    answers: dict[str, list[str]] = defaultdict(list)
    senders = [
        threading.Thread(target=post_incident, args=(hub.url, f"INC-{i}", per_incident, answers))
        for i in range(incidents)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    expected = {m for ids in answers.values() for m in ids}
    assert len(expected) == incidents * per_incident
    assert [len(answers[f"INC-{i}"]) for i in range(incidents)] == [per_incident] * incidents

    wait_for(
        f"{len(expected)} messages at the twin",
        lambda: len(webhook.twin.accepted_ids()) >= len(expected),
    )
    got = webhook.twin.accepted_ids()
    assert sorted(got) == sorted(expected), "each message id exactly once"
    assert webhook.twin.duplicates() == {}, "no success was lost, so nothing came twice"
    assert webhook.twin.state.calls > len(expected), "the first calls failed and were retried"

    incident_of = {m: incident for incident, ids in answers.items() for m in ids}
    arrived: dict[str, list[str]] = defaultdict(list)
    for message_id in got:
        arrived[incident_of[message_id]].append(message_id)
    assert arrived == answers, "per incident, the twin saw the order of the 202 answers"

    received = {r.message_id: r for r in webhook.twin.accepted()}
    for incident, ids in answers.items():
        for n, message_id in enumerate(ids):
            body = yaml.safe_load(received[message_id].body)  # JSON is YAML
            assert body["message_id"] == message_id
            assert body["event"]["event_id"] == f"{incident}-e{n}"


def write_hub_yaml(path: Path, database_url: str) -> Path:
    path.write_text(yaml.safe_dump({"database_url": database_url}), encoding="utf-8")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HUB_DATABASE_URL", "HUB_CONFIG")}
    return subprocess.run(
        [str(HUB_BIN), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def delivery_of(hub: Hub, inbound_id: str) -> dict[str, Any]:
    [delivery] = hub.message(inbound_id)["deliveries"]
    return delivery


def test_a_refused_delivery_goes_dead_and_hub_resend_delivers_it(
    database_url: str, webhook: Webhook, start_hub: Any, tmp_path: Path
) -> None:
    webhook.twin.set_behaviour(always_status=400)
    hub: Hub = start_hub(hub_config(database_url, webhook.url))
    reply = hub.client.post("/v1/events", json=cancelled("e1"))
    assert reply.status_code == 202, reply.text
    [accepted] = reply.json()["accepted"]
    inbound_id = accepted["inbound_id"]
    message_id = accepted["deliveries"][0]["message_id"]

    dead = wait_for("a dead delivery", lambda: _with_status(hub, inbound_id, "dead"))
    assert dead["message_id"] == message_id
    assert dead["attempts"] == 1, "a refusal is not retried"
    assert [a["outcome"] for a in dead["attempt_log"]] == ["permanent"]
    assert dead["attempt_log"][0]["status"] == "HTTP 400"
    assert webhook.twin.accepted_ids() == []

    webhook.twin.set_behaviour()  # the partner fixed its side
    config = write_hub_yaml(tmp_path / "hub.yaml", database_url)
    done = run_cli("-c", str(config), "resend", str(dead["id"]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"delivery {dead['id']}: queued again"

    delivered = wait_for("the resent delivery", lambda: _with_status(hub, inbound_id, "delivered"))
    assert delivered["message_id"] == message_id
    assert delivered["attempts"] == 1, "resend starts the schedule again"
    assert [a["outcome"] for a in delivered["attempt_log"]] == ["permanent", "delivered"]
    assert webhook.twin.accepted_ids() == [message_id]

    again = run_cli("-c", str(config), "resend", "999999")
    assert again.returncode == 1
    assert "delivery 999999: no delivery 999999" in again.stderr


def _with_status(hub: Hub, inbound_id: str, status: str) -> dict[str, Any] | None:
    delivery = delivery_of(hub, inbound_id)
    return delivery if delivery["status"] == status else None


def test_resend_through_the_api(database_url: str, webhook: Webhook, start_hub: Any) -> None:
    webhook.twin.set_behaviour(always_status=422)
    hub: Hub = start_hub(hub_config(database_url, webhook.url))
    reply = hub.client.post("/v1/events", json=cancelled("e1"))
    inbound_id = reply.json()["accepted"][0]["inbound_id"]
    dead = wait_for("a dead delivery", lambda: _with_status(hub, inbound_id, "dead"))

    webhook.twin.set_behaviour()
    resent = hub.client.post(f"/v1/deliveries/{dead['id']}/resend")
    assert (resent.status_code, resent.json()) == (
        202,
        {"delivery_id": dead["id"], "status": "pending"},
    )
    delivered = wait_for("the resent delivery", lambda: _with_status(hub, inbound_id, "delivered"))
    assert delivered["message_id"] == dead["message_id"]
    assert webhook.twin.accepted_ids() == [dead["message_id"]]

    # nothing to resend while queued; unknown ids are 404
    webhook.twin.set_behaviour(always_status=503)
    second = hub.client.post("/v1/events", json=cancelled("e2"))
    pending_id = delivery_of(hub, second.json()["accepted"][0]["inbound_id"])["id"]
    conflict = hub.client.post(f"/v1/deliveries/{pending_id}/resend")
    assert conflict.status_code == 409
    assert "is still" in conflict.json()["detail"]
    assert hub.client.post("/v1/deliveries/999999/resend").status_code == 404
