"""Golden outputs of every sandbox scenario: HL7 v2 ADT/ORU per event, FHIR at the end.

Each event of each scenario is mapped with a fixed context (message id derived from the
event id, created_at = the event's occurred_at), so the outputs are deterministic.
Comparisons are structural (ER7 segments and fields, parsed JSON); HUB_UPDATE_GOLDEN=1
rewrites the files. Every golden also parses with hl7apy and python-hl7 and passes
``hub validate``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hl7
import orjson
import pytest
from hl7apy.parser import parse_message as hl7apy_parse

from hub.hl7v2.er7 import Message, parse_message, split_messages
from hub.ids import sibling_id
from hub.validate import validate_bytes
from mappings.base import MappingContext, MappingFunction, NothingToSend
from mappings.fhir import fhir_r4_transaction
from mappings.hl7v2 import hl7v2_adt, hl7v2_oru

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = ROOT / "sandbox" / "scenarios"
GOLDEN = ROOT / "tests" / "golden"
NAMES = sorted(path.stem for path in SCENARIOS.glob("*.json"))
UPDATE = os.environ.get("HUB_UPDATE_GOLDEN") == "1"


def scenario_events(name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(
        (SCENARIOS / f"{name}.json").read_text(encoding="utf-8")
    )["events"]
    return events


def golden_ctx(events: list[dict[str, Any]], number: int, **options: Any) -> MappingContext:
    """The fixed context of event ``number`` (1-based): ids and time from the event."""
    event = events[number - 1]
    digest = hashlib.sha256(event["event_id"].encode()).hexdigest().upper()
    return MappingContext(
        message_id=f"G{digest[:19]}",  # 20 characters, the MSH-10 limit
        created_at=dt.datetime.fromisoformat(event["occurred_at"]),
        destination="his",
        options=options,
        incident_events=tuple(events[:number]),
    )


def hl7_outputs(name: str) -> dict[str, bytes]:
    """File name -> ER7 bytes of every ADT or ORU message the scenario produces."""
    events = scenario_events(name)
    mappings: tuple[MappingFunction, ...] = (hl7v2_adt, hl7v2_oru)
    out: dict[str, bytes] = {}
    for number, event in enumerate(events, start=1):
        for function in mappings:
            try:
                payload = function(event, golden_ctx(events, number))
            except NothingToSend:
                continue
            # One file per message: an event may concern several patients.
            for n, body in enumerate(split_messages(payload.body), start=1):
                trigger = parse_message(body.decode()).header.trigger_event
                suffix = f"-{n}" if n > 1 else ""
                out[f"{number:03d}-{event['type']}-{trigger}{suffix}.hl7"] = body
    return out


def control_id(events: list[dict[str, Any]], file_name: str) -> str:
    """MSH-10 of a golden file: the delivery's message id, or its n-th sibling."""
    first = golden_ctx(events, int(file_name[:3])).message_id
    n = file_name.removesuffix(".hl7").rsplit("-", 1)[-1]
    return sibling_id(first, int(n) - 1) if n.isdigit() else first


def fields(message: Message) -> list[list[str]]:
    return [[seg.raw(i) for i in range(len(seg) + 1)] for seg in message]


@pytest.mark.parametrize("name", NAMES)
def test_hl7v2_goldens(name: str) -> None:
    produced = hl7_outputs(name)
    folder = GOLDEN / "hl7v2" / name
    if UPDATE:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.hl7"):
            stale.unlink()
        for file_name, body in produced.items():
            (folder / file_name).write_bytes(body.replace(b"\r", b"\r\n"))
    expected = {path.name: path.read_bytes() for path in sorted(folder.glob("*.hl7"))}
    assert sorted(produced) == sorted(expected)
    assert any("-A04.hl7" in file_name for file_name in expected)  # every scenario registers
    for file_name, body in expected.items():
        # Stored with CRLF for readable diffs; a checkout may turn them into LF.
        text = body.decode("utf-8").replace("\r\n", "\n").replace("\n", "\r")
        assert fields(parse_message(produced[file_name].decode())) == fields(parse_message(text)), (
            file_name
        )
        # Both third-party parsers read it, and it passes hub validate.
        hl7apy_parse(text, find_groups=False)
        hl7apy_parse(text, find_groups=True)
        hl7.parse(text)
        kind, problems = validate_bytes(body)
        assert (kind, problems) == ("er7", []), file_name


@pytest.mark.parametrize("name", NAMES)
def test_hl7v2_golden_values_read_back(name: str) -> None:
    """Values pinned through the parsers, not through strings."""
    events = scenario_events(name)
    for file_name, body in hl7_outputs(name).items():
        number = int(file_name[:3])
        event = events[number - 1]
        text = body.decode()
        message = parse_message(text)
        parsed = hl7.parse(text)
        assert message.get("MSH-10") == control_id(events, file_name)
        assert str(parsed.segment("MSH")[10]) == message.get("MSH-10")
        assert message.get("MSH-12") == "2.5.1"
        assert message.get("PV1-2") == "E"
        visit = message.get("PV1-19")
        assert visit == event["incident_id"] or visit.startswith(f"{event['incident_id']}-")
        assert message.get("PID-3[1]") != ""
        if message.header.message_code == "ADT":
            assert message.get("MSH-9.3") == "ADT_A01"
            assert message.get("PID-8") in ("M", "F", "U")
            assert message.get("PV2-38") == "A"
            assert str(parsed.segment("PV1")[2]) == "E"
        else:
            assert message.header.message_type == "ORU^R01"
            for obx in message.all("OBX"):
                assert obx.get(3, 1) and obx.get(5) and obx.get(11) == "F"
                if obx.get(2) == "NM":
                    assert obx.get(6, 3) == "UCUM"


def _fhir_bundle(name: str) -> dict[str, Any]:
    events = scenario_events(name)
    ctx = golden_ctx(events, len(events))
    document: dict[str, Any] = orjson.loads(fhir_r4_transaction(events[-1], ctx).body)
    return document


@pytest.mark.parametrize("name", NAMES)
def test_fhir_golden_at_last_event(name: str) -> None:
    bundle = _fhir_bundle(name)
    path = GOLDEN / "fhir" / f"{name}.json"
    if UPDATE:
        path.write_bytes(orjson.dumps(bundle, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
    expected: Mapping[str, Any] = orjson.loads(path.read_bytes())
    assert bundle == expected
    assert validate_bytes(path.read_bytes()) == ("fhir", [])
