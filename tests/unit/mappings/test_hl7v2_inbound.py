"""The stop-gap inbound converter: ADT and ORU to canonical events, validated by the model."""

from __future__ import annotations

import orjson
import pytest

from hub.hl7v2.er7 import Er7Writer, Repeat, parse_message
from hub.hl7v2.errors import ErrorCode, Hl7Error
from hub.model.events import parse_events
from mappings.hl7v2.inbound import InboundOptions, convert, event_id

OPTIONS = InboundOptions(peer="his-a")
RESIDENT_ID = "11010119900307001" + "1"  # check character 1


def msh(writer: Er7Writer, kind: list[str], control_id: str = "C1") -> Er7Writer:
    return writer.msh(
        "HIS", "H1", "HUB", "120", "20261125083000", None, kind, control_id, "P", "2.5.1"
    )


def adt(trigger: str = "A04", **pid: object) -> str:
    fields: dict[int, object] = {
        3: Repeat(["MRN001", None, None, ["HIS"], "MR"], [RESIDENT_ID, None, None, None, "NN"]),
        5: ["欧阳", "娜娜"],
        7: "19900307",
        8: "M",
        11: ["和平路1号", "3单元", "和平区", "天津市", "300000"],
        13: "13800000000",
    }
    fields.update({int(k[1:]): v for k, v in pid.items()})
    values = [fields.get(i) for i in range(1, 14)]
    writer = msh(Er7Writer(), ["ADT", trigger, "ADT_A01"])
    writer.segment("EVN", trigger, "20261125082900+0800")
    writer.segment("PID", *values)  # type: ignore[arg-type]
    writer.segment("PV1", "1", "E", *([None] * 16), "TJ120-0001")
    return writer.text()


def oru(*obx: list[object], obr_time: str | None = "20261125082000") -> str:
    writer = msh(Er7Writer(), ["ORU", "R01", "ORU_R01"], "V9")
    writer.segment("PID", "1", None, "MRN001")
    writer.segment("PV1", "1", "E", *([None] * 16), "TJ120-0001")
    writer.segment("OBR", "1", None, None, ["85353-1", "Vital signs", "LN"], None, None, obr_time)
    for n, row in enumerate(obx, start=1):
        writer.segment("OBX", str(n), *row)  # type: ignore[arg-type]
    return writer.text()


def obx(loinc: str, value: str, unit: str | None = None, when: str | None = None) -> list[object]:
    return [
        "NM",
        [loinc, None, "LN"],
        None,
        value,
        unit,
        None,
        None,
        None,
        None,
        "F",
        None,
        None,
        when,
    ]


def events(text: str) -> list[dict[str, object]]:
    conversion = convert(parse_message(text), OPTIONS)
    parse_events(orjson.dumps(conversion.events))  # the canonical model accepts them
    return conversion.events


def test_adt_a04_to_patient_identified() -> None:
    (event,) = events(adt())
    assert event["event_id"] == "his-a-C1-1"
    assert event["type"] == "patient.identified"
    assert event["incident_id"] == "TJ120-0001"
    assert event["source"] == "his-a"
    assert event["occurred_at"] == "2026-11-25T08:29:00+08:00"
    assert event["data"] == {
        "patient_id": "MRN001",
        "name": "欧阳娜娜",
        "sex": "1",
        "birth_date": "1990-03-07",
        "resident_id": RESIDENT_ID,
        "phone": "13800000000",
        "address": {"text": "天津市和平区和平路1号3单元", "province": "天津市", "city": "和平区"},
    }


def test_adt_western_name_and_a08() -> None:
    (event,) = events(adt("A08", p5=["Smith", "John", "Q"], p11=None, p3="MRN9"))
    assert event["data"]["name"] == "John Q Smith"  # type: ignore[index]
    assert "resident_id" not in event["data"]  # type: ignore[operator]


def test_same_message_same_events() -> None:
    assert events(adt()) == events(adt())


def test_oru_vitals_grouped_by_time_with_units() -> None:
    text = oru(
        obx("8867-4", "112", "/min"),
        obx("8480-6", "150", "mmHg"),
        obx("8462-4", "12", "kPa"),
        obx("59408-5", "94", "%"),
        obx("8310-5", "98.6", "[degF]"),
        obx("9279-1", "22", None, "20261125082500+0800"),
        obx("1234-5", "7", "x"),  # not a vital sign: ignored
    )
    (event,) = events(text)
    assert event["type"] == "vitals.recorded"
    assert event["event_id"] == "his-a-V9-1"
    assert event["occurred_at"] == "2026-11-25T08:20:00+08:00"
    first, second = event["data"]["samples"]  # type: ignore[index]
    assert first == {
        "measured_at": "2026-11-25T08:20:00+08:00",
        "heart_rate": 112.0,
        "systolic_bp": 150.0,
        "diastolic_bp": 90.01,
        "spo2": 94.0,
        "temperature": 37.0,
    }
    assert second == {"measured_at": "2026-11-25T08:25:00+08:00", "respiratory_rate": 22.0}


def test_oru_repeated_vital_at_same_time_makes_a_second_sample() -> None:
    (event,) = events(oru(obx("8867-4", "80"), obx("8867-4", "82")))
    samples = event["data"]["samples"]  # type: ignore[index]
    assert [s["heart_rate"] for s in samples] == [80.0, 82.0]


def test_patient_known_only_by_id_card() -> None:
    (event,) = events(adt(p5=None))
    assert event["data"]["resident_id"] == RESIDENT_ID  # type: ignore[index]
    assert "name" not in event["data"]  # type: ignore[operator]


def error_of(text: str) -> Hl7Error:
    with pytest.raises(Hl7Error) as info:
        convert(parse_message(text), OPTIONS)
    return info.value


def test_unsupported_message_type_and_event() -> None:
    writer = msh(Er7Writer(), ["SIU", "S12"])
    error = error_of(writer.text())
    assert error.code is ErrorCode.UNSUPPORTED_MESSAGE_TYPE
    assert "unsupported message type SIU^S12" in error.message
    error = error_of(adt("A03"))
    assert error.code is ErrorCode.UNSUPPORTED_EVENT_CODE
    assert "unsupported message type ADT^A03" in error.message


@pytest.mark.parametrize(
    ("text", "code", "where"),
    [
        (adt(p8="Q"), ErrorCode.TABLE_VALUE_NOT_FOUND, "PID^1^8"),
        (adt(p7="1990-03-07"), ErrorCode.DATA_TYPE_ERROR, "PID^1^7"),
        (adt(p3=None), ErrorCode.REQUIRED_FIELD_MISSING, "PID^1^3^^1"),
        (adt(p3="has space"), ErrorCode.DATA_TYPE_ERROR, "PID^1^3^^1"),
        (oru(obx("8867-4", "fast")), ErrorCode.DATA_TYPE_ERROR, "OBX^1^5"),
        (oru(obx("8867-4", "80", "furlongs")), ErrorCode.DATA_TYPE_ERROR, "OBX^1^6"),
        (oru(obx("1234-5", "1")), ErrorCode.REQUIRED_FIELD_MISSING, "OBX^1^3"),
    ],
)
def test_errors_carry_code_and_location(text: str, code: ErrorCode, where: str) -> None:
    error = error_of(text)
    assert error.code is code
    assert str(error.location) == where


def test_missing_incident_id() -> None:
    text = adt().replace("TJ120-0001", "")
    error = error_of(text)
    assert error.code is ErrorCode.REQUIRED_FIELD_MISSING
    assert str(error.location) == "PV1^1^19^^1"


def test_model_errors_map_back_to_hl7_locations() -> None:
    conversion = convert(
        parse_message(adt(p3=Repeat("MRN1", ["11010119900307001X", None, None, None, "NN"]))),
        OPTIONS,
    )
    assert str(conversion.locate("events[0].data.resident_id")) == "PID^1^3^2"
    assert str(conversion.locate("events[0].data.address.text")) == "PID^1^11"
    assert str(conversion.locate("events[0].incident_id")) == "PV1^1^19^^1"
    assert conversion.locate("nowhere") is None


def test_model_errors_in_vital_signs_map_back_to_their_obx() -> None:
    # two samples at two times: the second sample's SpO2 is the fourth OBX
    conversion = convert(
        parse_message(
            oru(
                obx("8867-4", "80", when="20261125082000"),
                obx("59408-5", "96", when="20261125082000"),
                obx("8867-4", "84", when="20261125082100"),
                obx("59408-5", "97", when="20261125082100"),
            )
        ),
        OPTIONS,
    )
    assert str(conversion.locate("events[0].data.samples[1].spo2")) == "OBX^4^5"
    assert str(conversion.locate("events[0].data.samples[1].heart_rate")) == "OBX^3^5"
    assert str(conversion.locate("events[0].data.samples[1]")) == "OBX^3"
    assert str(conversion.locate("events[0].data.samples[0].spo2.x")) == "OBX^2^5"
    assert str(conversion.locate("events[0].incident_id")) == "PV1^1^19^^1"


def test_event_ids() -> None:
    assert event_id("his-a", "CTL-1", 2) == "his-a-CTL-1-2"
    odd = event_id("his-a", "ctl with/odd chars", 1)
    assert odd.startswith("his-a-h") and odd.endswith("-1")
    assert odd == event_id("his-a", "ctl with/odd chars", 1)
    assert len(event_id("p" * 60, "X" * 60, 1)) <= 64
