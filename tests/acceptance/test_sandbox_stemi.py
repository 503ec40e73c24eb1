"""The sandbox end to end: the hub with the sandbox's own configuration and partners
(webhook twin verifying signatures, HIS over MLLP, EMR over FHIR), and every scenario
of sandbox/scenarios played through the API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from hub.api.app import create_app
from hub.config.plan import plan_from_mapping
from hub.runtime import HubRuntime
from hub.store.records import DeliveryStatus
from sandbox.cli import scenario_files
from sandbox.http_receiver import ServerThread
from sandbox.partners import SandboxPartners

CLINICAL = {"vitals.recorded", "ecg.acquired", "assessment.updated"}


class Sandbox:
    def __init__(self, workdir: Path) -> None:
        self.partners = SandboxPartners().start()
        self.twin = self.partners.webhook
        config = self.partners.config(workdir)
        config["api"]["port"] = 0
        plan = plan_from_mapping(config, env=self.partners.env())
        self.outbox = workdir / "outbox"
        self.runtime = HubRuntime(plan)
        self.hub_server = ServerThread(create_app(self.runtime), lifespan=True).start()
        self.client = httpx.Client(base_url=self.hub_server.url, timeout=30)

    def post_events(self, raw: bytes) -> httpx.Response:
        return self.client.post(
            "/v1/events", content=raw, headers={"content-type": "application/json"}
        )

    def play(self, scenario: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """POST a scenario file's events in one request: (the events, the 202's accepted)."""
        raw = scenario.read_bytes()
        reply = self.post_events(raw)
        assert reply.status_code == 202, reply.text
        return orjson.loads(raw)["events"], reply.json()["accepted"]

    def stop(self) -> None:
        self.client.close()
        self.hub_server.stop()
        self.partners.stop()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path)
    try:
        yield box
    finally:
        box.stop()


def wait_until(what: str, done: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _deliveries_by_route(accepted: list[dict[str, Any]], route: str) -> list[str]:
    return [d["message_id"] for a in accepted for d in a["deliveries"] if d["route"] == route]


@pytest.mark.parametrize("scenario", scenario_files(), ids=lambda p: p.stem)
def test_a_scenario_reaches_every_partner_in_order(sandbox: Sandbox, scenario: Path) -> None:
    events, accepted = sandbox.play(scenario)
    assert [a["event_id"] for a in accepted] == [e["event_id"] for e in events]
    to_webhook = _deliveries_by_route(accepted, "all-to-webhook")
    to_file = {
        d["message_id"]: a["event_id"]
        for a in accepted
        for d in a["deliveries"]
        if d["route"] == "clinical-to-file"
    }
    assert len(to_webhook) == len(events)
    assert sorted(to_file.values()) == sorted(
        e["event_id"] for e in events if e["type"] in CLINICAL
    )

    wait_until("every webhook delivery", lambda: len(sandbox.twin.accepted_ids()) >= len(events))
    wait_until(
        "every file delivery", lambda: len(list(sandbox.outbox.glob("*.json"))) >= len(to_file)
    )

    assert sandbox.twin.accepted_ids() == to_webhook, "one incident: delivered in ingest order"
    assert sandbox.twin.duplicates() == {}
    assert sandbox.twin.state.bad_signatures == 0
    for received, event in zip(sandbox.twin.accepted(), events, strict=True):
        body = orjson.loads(received.body)
        assert body["message_id"] == received.message_id
        assert body["event"]["event_id"] == event["event_id"]
        assert body["event"]["type"] == received.event_type == event["type"]
    for path in sandbox.outbox.glob("*.json"):
        document = orjson.loads(path.read_bytes())
        assert document["message_id"] == path.stem
        assert document["event"]["event_id"] == to_file[path.stem]

    # the dispatch center sends the whole incident again: answered, nothing sent twice
    again = sandbox.post_events(scenario.read_bytes())
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["accepted"] == accepted
    messages = sandbox.client.get("/v1/messages").json()["items"]
    assert len(messages) == 1
    assert sandbox.twin.accepted_ids() == to_webhook


@pytest.mark.parametrize("scenario", scenario_files(), ids=lambda p: p.stem)
def test_a_scenario_reaches_the_his_and_the_emr(sandbox: Sandbox, scenario: Path) -> None:
    events, accepted = sandbox.play(scenario)
    to_his = _deliveries_by_route(accepted, "adt-to-his") + _deliveries_by_route(
        accepted, "oru-to-his"
    )
    to_emr = _deliveries_by_route(accepted, "bundle-to-emr")
    store = sandbox.runtime.store

    def finished(message_ids: list[str]) -> bool:
        rows = [store.delivery_by_message_id(m) for m in message_ids]
        return all(r is not None and r["status"] not in ("pending", "in_flight") for r in rows)

    wait_until("HIS and EMR deliveries", lambda: finished(to_his + to_emr))
    his_rows = [store.delivery_by_message_id(m) for m in to_his]
    sent = [r for r in his_rows if r is not None and r["status"] == DeliveryStatus.DELIVERED]
    assert all(
        r is not None and r["status"] in (DeliveryStatus.DELIVERED, DeliveryStatus.SKIPPED)
        for r in his_rows
    )
    # every scenario registers its patient at the HIS (ADT A04) and each message was ACKed
    received = {m.control_id: m for m in sandbox.partners.his.received()}
    assert {r["message_id"] for r in sent} <= set(received)
    assert any(received[r["message_id"]].message_type == "ADT^A04" for r in sent)
    assert all(received[r["message_id"]].answer == "AA" for r in sent)

    emr_rows = [store.delivery_by_message_id(m) for m in to_emr]
    assert all(r is not None and r["status"] == DeliveryStatus.DELIVERED for r in emr_rows)
    encounters = sandbox.partners.fhir.resources("Encounter")
    # one Encounter per patient chain (a temporary id and the id that supersedes it are
    # one patient), each grouped under the dispatch number and with its own subject
    identified = [e["data"] for e in events if e["type"] == "patient.identified"]
    superseded = {p["supersedes"] for p in identified if p.get("supersedes")}
    chains = {p["patient_id"] for p in identified if p["patient_id"] not in superseded}
    assert len(encounters) == len(chains), "conditional updates: one Encounter per patient"
    assert len({e["subject"]["reference"] for e in encounters}) == len(chains)
    incident_id = events[0]["incident_id"]
    for encounter in encounters:
        assert any(i.get("value") == incident_id for i in encounter["identifier"])
    handed_over = {e["data"]["patient_id"] for e in events if e["type"] == "handover.completed"}
    if handed_over and len(chains) == 1:
        assert encounters[0]["status"] == "finished"
    elif handed_over:  # the patients handed over have their Encounter finished
        assert sum(e["status"] == "finished" for e in encounters) == len(handed_over)
