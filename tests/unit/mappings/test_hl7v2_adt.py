"""The hl7v2-adt mapping: trigger logic, filters, fields read back through parsers."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import hl7
import pytest
from hl7apy.parser import parse_message as hl7apy_parse

from hub.hl7v2.er7 import Message, decode, parse_message, split_messages
from hub.ids import sibling_id
from hub.registry import lookup
from hub.validate import validate_bytes
from mappings.base import MappingContext, MappingError, NothingToSend
from mappings.hl7v2 import hl7v2_adt

AT = "2026-11-25T11:00:00+08:00"
SCENARIOS = Path(__file__).resolve().parents[3] / "sandbox" / "scenarios"


def scenario_events(name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(
        (SCENARIOS / f"{name}.json").read_text(encoding="utf-8")
    )["events"]
    return events


def stroke() -> list[dict[str, Any]]:
    return scenario_events("stroke-ruian")


def extra(events: list[dict[str, Any]], kind: str, data: dict[str, Any], n: int) -> None:
    """Append an event of the incident (``n`` makes its id)."""
    events.append(
        {
            "event_id": f"X-{n:03d}",
            "type": kind,
            "incident_id": events[0]["incident_id"],
            "occurred_at": AT,
            "source": "dispatch-ruian",
            "data": data,
        }
    )


def cancel(events: list[dict[str, Any]], n: int = 900) -> None:
    extra(events, "incident.cancelled", {"at": AT, "reason": "患者拒绝送院"}, n)


def reassess(events: list[dict[str, Any]], n: int = 901, **data: Any) -> None:
    body = {"patient_id": "PAT-RA-0093", "assessed_at": AT, "triage_level": "II", **data}
    extra(events, "assessment.updated", body, n)


def adt(events: list[dict[str, Any]], number: int, **options: Any) -> Message:
    """The ADT of event ``number`` (1-based), parsed by the hub's reader."""
    ctx = MappingContext(
        message_id=f"MSG{number:03d}",
        created_at=dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.UTC),
        destination="his",
        options=options,
        incident_events=tuple(events[:number]),
    )
    payload = hl7v2_adt(events[number - 1], ctx)
    codec = options.get("charset", "utf-8").lower().replace("-", "")
    assert payload.content_type.startswith("application/hl7-v2; charset=")
    return parse_message(payload.body.decode("gb18030" if codec == "gb18030" else "utf-8"))


def skip_reason(events: list[dict[str, Any]], number: int, **options: Any) -> str:
    with pytest.raises(NothingToSend) as info:
        adt(events, number, **options)
    return str(info.value)


def test_registered_with_incident_flag() -> None:
    function = lookup("mapping", "hl7v2-adt")
    assert function is hl7v2_adt
    assert function.needs_incident is True


def test_registration_at_first_event_with_patient_and_destination() -> None:
    events = stroke()
    assert "no destination" in skip_reason(events, 6)  # patient.identified
    assert "no destination" in skip_reason(events, 7)  # assessment.updated
    message = adt(events, 9)  # destination.assigned
    assert message.header.message_type == "ADT^A04"
    assert message.get("MSH-9.3") == "ADT_A01"
    assert message.get("MSH-10") == "MSG009"
    assert message.get("MSH-7") == "20261125110000+0800"  # created_at in +08:00
    assert message.get("MSH-17") == "CHN"
    assert message.get("MSH-18") == "UNICODE UTF-8"
    assert message.get("MSH-6") == "H330381001"
    assert message.get("PID-3[1].1") == "330381194910080425"
    assert message.get("PID-3[1].4.2") == "2.16.156.10011.1.3"
    assert message.get("PID-3[1].4.3") == "ISO"
    assert message.get("PID-3[1].5") == "NN"
    assert (message.get("PID-3[2].1"), message.get("PID-3[2].5")) == ("PAT-RA-0093", "PI")
    assert message.get("PID-5") == "陈阿婆"
    assert message.get("PID-7") == "19491008"
    assert message.get("PID-8") == "F"
    assert (message.get("NK1-2"), message.get("NK1-3.2"), message.get("NK1-5")) == (
        "陈伟",
        "儿子",
        "13957700931",
    )
    assert message.get("PV1-2") == "E"
    assert (message.get("PV1-3.1"), message.get("PV1-3.4")) == ("STROKE", "H330381001")
    assert message.get("PV1-4") == "E"
    assert message.get("PV1-14") == "7"
    assert message.get("PV1-19") == "RA120-20261125-0093"
    assert message.get("PV1-44") == "20261125105030+0800"  # first medical contact
    assert message.get("PV2-8") == "20261125110900+0800"  # ETA
    assert message.get("PV2-25") == "1"  # triage I
    assert message.get("PV2-38") == "A"
    assert (message.get("DG1-3.1"), message.get("DG1-3.3")) == ("I63.9", "I10")
    assert message.get("ZPH-1") == "28-C-1"
    assert message.get("ZPH-8") == "stroke"
    assert message.get("ZPH-12") == "20261125102000+0800"  # last known well
    # python-hl7 and hl7apy read the same values from the bytes.
    text = _body(events, 9).decode()
    pid = hl7.parse(text).segment("PID")
    assert str(pid[3][0][0]) == "330381194910080425"
    assert str(pid[8]) == "F"
    parsed = hl7apy_parse(text, find_groups=False)
    assert parsed.pid.pid_3[1].cx_5.to_er7() == "PI"
    assert parsed.pv1.pv1_2.to_er7() == "E"
    assert parsed.msh.msh_9.to_er7() == "ADT^A04^ADT_A01"


def test_events_meaning_nothing_to_adt_are_skipped_with_a_reason() -> None:
    events = stroke()
    assert skip_reason(events, 1) == "call.received means nothing to an ADT registration"
    assert skip_reason(events, 8) == "vitals.recorded means nothing to an ADT registration"
    assert skip_reason(events, 12) == "handover.completed means nothing to an ADT registration"


def test_later_updates_are_a08() -> None:
    events = stroke()
    reassess(events)
    message = adt(events, len(events))
    assert message.header.message_type == "ADT^A08"
    assert message.get("MSH-9.3") == "ADT_A01"
    assert message.get("PV2-25") == "1"  # triage II -> 1
    assert message.get("EVN-1") == "A08"


@pytest.mark.parametrize(
    ("trigger", "structure", "cancel_trigger", "cancel_structure"),
    [
        ("A04", "ADT_A01", "A11", "ADT_A09"),
        ("A05", "ADT_A05", "A38", "ADT_A38"),
        ("A14", "ADT_A05", "A27", "ADT_A21"),
    ],
)
def test_trigger_option_and_matching_cancel(
    trigger: str, structure: str, cancel_trigger: str, cancel_structure: str
) -> None:
    events = stroke()
    registration = adt(events, 9, trigger=trigger)
    assert (registration.get("MSH-9.2"), registration.get("MSH-9.3")) == (trigger, structure)
    cancel(events)
    cancelled = adt(events, len(events), trigger=trigger)
    assert cancelled.header.message_type == f"ADT^{cancel_trigger}"
    assert cancelled.get("MSH-9.3") == cancel_structure
    assert cancelled.get("ZPH-14") == "incident cancelled: 患者拒绝送院"
    assert [seg.name for seg in cancelled] == ["MSH", "EVN", "PID", "PV1", "ZPH"]
    body = _body(events, len(events), trigger=trigger)
    assert validate_bytes(body) == ("er7", [])
    hl7apy_parse(body.decode(), find_groups=True)
    assert str(hl7.parse(body.decode()).segment("MSH")[9][0][1]) == cancel_trigger


def _body(events: list[dict[str, Any]], number: int, **options: Any) -> bytes:
    ctx = MappingContext(
        "MSG",
        dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.UTC),
        "his",
        options,
        tuple(events[:number]),
    )
    return hl7v2_adt(events[number - 1], ctx).body


def test_cancel_before_registration_and_after_cancel_is_nothing() -> None:
    events = stroke()[:7]  # patient and assessment, no destination yet
    cancel(events)
    assert "before any registration" in skip_reason(events, len(events))
    events = stroke()
    cancel(events, 900)
    reassess(events, 901)
    assert "cancelled earlier" in skip_reason(events, len(events))


def test_hospital_code_filter_and_redirect() -> None:
    events = stroke()
    assert adt(events, 9, hospital_code="H330381001").header.message_type == "ADT^A04"
    reason = skip_reason(events, 9, hospital_code="H999")
    assert "goes to H330381001" in reason
    redirect = {"hospital_code": "H330300002", "hospital_name": "温州医科大学附属第一医院"}
    extra(events, "destination.assigned", redirect, 950)
    message = adt(events, len(events), hospital_code="H330381001")
    assert message.header.message_type == "ADT^A11"
    assert message.get("ZPH-14") == "redirected to H330300002"
    other = adt(events, len(events), hospital_code="H330300002")
    assert other.header.message_type == "ADT^A04"
    assert other.get("MSH-6") == "H330300002"


def test_temporary_patient_keeps_its_id_when_identified() -> None:
    events = scenario_events("trauma-changzhi")
    registration = adt(events, 10)
    assert registration.get("PID-3[1].1") == "TMP-CZ-0311-1"
    assert (registration.get("PID-5"), registration.get("PID-5.7")) == ("无名氏", "U")
    assert registration.get("PV1-4") == "A"  # trauma -> accident
    assert registration.get("ZPH-10") == "35"
    update = adt(events, 12)
    assert update.header.message_type == "ADT^A08"
    assert update.get("PID-3[1].5") == "NN"
    assert update.get("PID-3[2].1") == "TMP-CZ-0311-1"  # the HIS needs no merge
    assert update.get("PID-5") == "赵某"


def test_allergies_and_code_overrides() -> None:
    events = stroke()
    allergies = [
        {"substance": "青霉素", "category": "medication", "severity": "severe", "reaction": "皮疹"},
        {"substance": "花粉", "category": "environment"},
    ]
    reassess(events, allergies=allergies)
    overrides = {"hl7v2_allergy_type": {"environment": "LA"}, "sex_hl7v2": {"2": "F2"}}
    message = adt(events, len(events), code_overrides=overrides)
    first, second = message.all("AL1")
    assert (first.get(2), first.get(3, 2), first.get(4), first.get(5)) == (
        "DA",
        "青霉素",
        "SV",
        "皮疹",
    )
    assert (second.get(2), second.get(4)) == ("LA", "U")
    assert message.get("PID-8") == "F2"
    with pytest.raises(MappingError):
        adt(events, len(events), code_overrides={"no_such_table": {}})


def test_bad_options_are_mapping_errors() -> None:
    events = stroke()
    for options in ({"trigger": "A01"}, {"charset": "EBCDIC"}, {"typo": 1}, {"timezone": "8"}):
        with pytest.raises(MappingError):
            adt(events, 9, **options)


def test_special_characters_round_trip_through_every_parser() -> None:
    events = stroke()
    nasty = "言语不清|右侧^无力~加重\\突发&伴呕吐"
    reassess(events, chief_complaint=nasty)
    body = _body(events, len(events))
    text = body.decode()
    assert parse_message(text).get("PV2-3.2") == nasty
    pv2 = hl7.parse(text).segment("PV2")
    assert "\\F\\" in str(pv2[3])  # escaped on the wire, not a delimiter
    parsed = hl7apy_parse(text, find_groups=False)
    assert (
        parsed.pv2.pv2_3.ce_2.to_er7() == "言语不清\\F\\右侧\\S\\无力\\R\\加重\\E\\突发\\T\\伴呕吐"
    )
    assert validate_bytes(body) == ("er7", [])


def test_gb18030_option() -> None:
    events = stroke()
    ctx = MappingContext(
        "MSG",
        dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.UTC),
        "his",
        {"charset": "GB18030"},
        tuple(events[:9]),
    )
    payload = hl7v2_adt(events[8], ctx)
    assert payload.content_type == "application/hl7-v2; charset=gb18030"
    with pytest.raises(UnicodeDecodeError):
        payload.body.decode("utf-8")
    decoded = decode(payload.body)
    assert decoded.codec == "gb18030"
    message = parse_message(payload.body.decode("gb18030"))
    assert message.get("MSH-18") == "GB 18030-2000"
    assert message.get("PID-5") == "陈阿婆"
    assert validate_bytes(payload.body) == ("er7", [])


def test_deterministic_and_ignores_later_history() -> None:
    events = stroke()
    later = copy.deepcopy(events)
    reassess(later)
    ctx = MappingContext(
        "M", dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.UTC), "his", {}, tuple(events[:9])
    )
    with_later = MappingContext("M", ctx.created_at, "his", {}, tuple(later))
    assert hl7v2_adt(events[8], ctx).body == hl7v2_adt(events[8], ctx).body
    assert hl7v2_adt(events[8], ctx).body == hl7v2_adt(events[8], with_later).body


def birth_messages(events: list[dict[str, Any]], **options: Any) -> list[Message]:
    """Every ADT message the last event gives, parsed."""
    ctx = MappingContext(
        message_id="06H1A2B3C4D5E6F7G8H9",
        created_at=dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.UTC),
        destination="his",
        options=options,
        incident_events=tuple(events),
    )
    body = hl7v2_adt(events[-1], ctx).body
    return [parse_message(part.decode()) for part in split_messages(body)]


def test_an_incident_wide_event_registers_every_patient_each_with_its_own_visit() -> None:
    """The precipitous birth: the destination makes both mother and newborn known at the
    HIS, each with its own visit number and MSH-10 (the newborn used to be left out)."""
    events = scenario_events("precipitous-birth-tianjin")
    destination = next(i for i, e in enumerate(events) if e["type"] == "destination.assigned")
    mother, newborn = birth_messages(events[: destination + 1])
    incident = events[0]["incident_id"]
    assert [m.header.message_type for m in (mother, newborn)] == ["ADT^A04", "ADT^A04"]
    assert mother.get("PID-3[2].1") == "PAT-TJ-0522-M"
    assert newborn.get("PID-3.1") == "TMP-TJ-0522-B"
    assert (mother.get("PV1-19"), newborn.get("PV1-19")) == (incident, f"{incident}-2")
    assert mother.get("MSH-10") == "06H1A2B3C4D5E6F7G8H9"
    assert newborn.get("MSH-10") == sibling_id("06H1A2B3C4D5E6F7G8H9", 1)
    for message in (mother, newborn):
        hl7.parse(message_text(message))


def test_cancelling_or_redirecting_an_incident_cancels_every_registration() -> None:
    events = scenario_events("precipitous-birth-tianjin")
    cancelled = copy.deepcopy(events)
    extra(cancelled, "incident.cancelled", {"at": AT, "reason": "转院"}, 960)
    cancels = birth_messages(cancelled)
    assert [m.header.message_type for m in cancels] == ["ADT^A11", "ADT^A11"]
    assert [m.get("PV1-19").rsplit("-", 1)[-1] for m in cancels] == ["0522", "2"]
    redirected = copy.deepcopy(events)
    extra(redirected, "destination.assigned", {"hospital_code": "H999"}, 961)
    moved = birth_messages(redirected, hospital_code="H120111001")
    assert [m.header.message_type for m in moved] == ["ADT^A11", "ADT^A11"]
    assert {m.get("ZPH-14") for m in moved} == {"redirected to H999"}


def message_text(message: Message) -> str:
    return "\r".join("|".join(seg.raw(i) for i in range(len(seg) + 1)) for seg in message)
