"""ADT pre-registration end to end: the stroke scenario posted to the hub, an hl7v2-adt
route to the HIS twin over MLLP; A04 then A08 arrive with stable control ids and AA
acks, and every event that means nothing to ADT ends ``skipped``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hubkit import Hub, hub_config, wait_for

from hub.hl7v2.er7 import parse_message
from sandbox.his_twin import HisTwin

STROKE = Path(__file__).resolve().parents[2] / "sandbox" / "scenarios" / "stroke-ruian.json"


@pytest.fixture
def his() -> Iterator[HisTwin]:
    twin = HisTwin().start_in_thread()
    try:
        yield twin
    finally:
        twin.stop_thread()


def test_stroke_scenario_registers_then_updates_at_the_his(
    database_url: str, his: HisTwin, start_hub: Any
) -> None:
    events: list[dict[str, Any]] = json.loads(STROKE.read_text(encoding="utf-8"))["events"]
    # A re-assessment en route, after the destination: the HIS gets it as an A08.
    events.append(
        {
            "event_id": "RA120-20261125-0093-013",
            "type": "assessment.updated",
            "incident_id": "RA120-20261125-0093",
            "occurred_at": "2026-11-25T11:05:00+08:00",
            "source": "dispatch-ruian",
            "data": {
                "patient_id": "PAT-RA-0093",
                "assessed_at": "2026-11-25T11:05:00+08:00",
                "triage_level": "I",
                "gcs": {"eye": 4, "verbal": 3, "motor": 6},
            },
        }
    )
    config = hub_config(database_url)
    config["destinations"]["his"] = {"type": "mllp", "host": "127.0.0.1", "port": his.port}
    config["routes"].append(
        {
            "name": "adt-to-his",
            "mapping": "hl7v2-adt",
            "destination": "his",
            "options": {"hospital_code": "H330381001", "receiving_facility": "RAPH"},
        }
    )
    hub: Hub = start_hub(config)
    reply = hub.client.post("/v1/events", json={"events": events})
    assert reply.status_code == 202, reply.text
    accepted = reply.json()["accepted"]
    message_ids = [d["message_id"] for a in accepted for d in a["deliveries"]]
    assert len(message_ids) == len(events)
    inbound = accepted[0]["inbound_id"]

    def settled() -> list[dict[str, Any]] | None:
        deliveries: list[dict[str, Any]] = hub.message(inbound)["deliveries"]
        done = all(d["status"] in ("delivered", "skipped", "dead") for d in deliveries)
        return deliveries if done and len(deliveries) == len(events) else None

    deliveries = wait_for("every delivery settled", settled)
    delivered = [d["message_id"] for d in deliveries if d["status"] == "delivered"]
    statuses = {d["status"] for d in deliveries}
    assert statuses == {"delivered", "skipped"}
    assert len(delivered) == 2

    received = his.received()
    assert [r.answer for r in received] == ["AA", "AA"]
    assert [r.control_id for r in received] == [message_ids[8], message_ids[12]]
    assert sorted(delivered) == sorted(r.control_id for r in received)
    first, second = (parse_message(r.text) for r in received)
    assert first.header.message_type == "ADT^A04"
    assert second.header.message_type == "ADT^A08"
    assert first.get("MSH-6") == "RAPH"
    assert first.get("PID-3[1].1") == "330381194910080425"
    assert second.get("PV1-19") == "RA120-20261125-0093"
