"""The hl7v2-oru mapping: vitals and ECG results, read back through the parsers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import hl7
import pytest
from hl7apy.parser import parse_message as hl7apy_parse
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hub.hl7v2.er7 import HOLE, Component, FieldValue, Message, build_segment, parse_message
from hub.model.vitals import VITAL_SIGN_CODES
from hub.registry import lookup
from hub.validate import validate_bytes
from mappings.base import MappingContext, NothingToSend
from mappings.hl7v2 import hl7v2_oru
from mappings.hl7v2.common import number
from mappings.tables import BUILTIN_TABLES

SCENARIOS = Path(__file__).resolve().parents[3] / "sandbox" / "scenarios"


def stemi() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(
        (SCENARIOS / "stemi-tianjin.json").read_text(encoding="utf-8")
    )["events"]
    return events


def oru_body(events: list[dict[str, Any]], number: int, **options: Any) -> bytes:
    ctx = MappingContext(
        f"ORU{number:03d}",
        dt.datetime(2026, 11, 25, 0, 30, tzinfo=dt.UTC),
        "his",
        options,
        tuple(events[:number]),
    )
    return hl7v2_oru(events[number - 1], ctx).body


def oru(events: list[dict[str, Any]], number: int, **options: Any) -> Message:
    return parse_message(oru_body(events, number, **options).decode())


def test_registered_with_incident_flag() -> None:
    assert lookup("mapping", "hl7v2-oru") is hl7v2_oru
    assert hl7v2_oru.needs_incident is True


def test_vitals_one_obr_per_sample_one_obx_per_value() -> None:
    events = stemi()
    number = next(i for i, e in enumerate(events, 1) if e["type"] == "vitals.recorded")
    samples = events[number - 1]["data"]["samples"]
    message = oru(events, number)
    assert message.header.message_type == "ORU^R01"
    assert message.get("MSH-9.3") == "ORU_R01"
    assert len(message.all("OBR")) == len(samples)
    assert message.get("OBR-4.1") == "85353-1"
    by_code = {obx.get(3, 1): obx for obx in message.all("OBX")}
    heart = by_code["8867-4"]
    assert heart.get(2) == "NM"
    assert heart.get(3, 3) == "LN"
    assert (heart.get(3, 4), heart.get(3, 6)) == ("DE04.10.206.00", "99WS363")
    assert float(heart.get(5)) in {sample.get("heart_rate") for sample in samples}
    assert (heart.get(6, 1), heart.get(6, 3)) == ("/min", "UCUM")
    assert heart.get(11) == "F"
    assert by_code["8480-6"].get(6, 1) == "mm[Hg]"
    # python-hl7 reads the same
    obx = hl7.parse(oru_body(events, number).decode()).segments("OBX")[0]
    assert str(obx[3][0][0]) == message.get("OBX-3.1")
    without = oru(events, number, ws363=False)
    assert without.get("OBX-3.4") == ""


def test_ecg_interpretation_stemi_flag_and_document() -> None:
    events = stemi()
    number = next(i for i, e in enumerate(events, 1) if e["type"] == "ecg.acquired")
    message = oru(events, number)
    assert message.get("OBR-4.1") == "34534-8"
    types = {obx.get(3, 1): obx for obx in message.all("OBX")}
    assert types["18844-1"].get(2) == "TX"
    assert "ST段抬高" in types["18844-1"].get(5)
    assert (types["STEMI"].get(2), types["STEMI"].get(5)) == ("CWE", "Y")
    document = types["11524-6"]
    assert document.get(2) == "RP"
    assert document.get(5, 1).startswith("https://")
    assert (document.get(5, 3), document.get(5, 4)) == ("AP", "PDF")
    inline = json.loads(json.dumps(events))
    inline[number - 1]["data"]["document"] = {
        "content_type": "application/pdf",
        "data_base64": "JVBERi0xLjQK",
    }
    ed = {obx.get(3, 1): obx for obx in oru(inline, number).all("OBX")}["11524-6"]
    assert (ed.get(2), ed.get(5, 2), ed.get(5, 4), ed.get(5, 5)) == (
        "ED",
        "AP",
        "Base64",
        "JVBERi0xLjQK",
    )
    for body in (oru_body(events, number), oru_body(inline, number)):
        hl7apy_parse(body.decode(), find_groups=True)
        assert validate_bytes(body) == ("er7", [])


def test_ecg_waveforms_as_channel_definitions_and_numeric_arrays() -> None:
    events = json.loads(json.dumps(stemi()))
    number = next(i for i, e in enumerate(events, 1) if e["type"] == "ecg.acquired")
    waveforms = events[number - 1]["data"]["waveforms"]
    waveforms[0]["origin"] = -50.0  # a baseline, so the calibration component is written
    message = oru(events, number)
    pairs = [obx for obx in message.all("OBX") if obx.get(2) in ("CD", "NA")]
    assert [obx.get(2) for obx in pairs] == ["CD", "NA"] * len(waveforms)
    channels = zip(pairs[::2], pairs[1::2], waveforms, strict=True)
    for channel, (cd, na, wave) in enumerate(channels, 1):
        assert cd.get(3, 2) == na.get(3, 2) == f"MDC_ECG_LEAD_{wave['lead']}"
        assert cd.get(3, 3) == "MDC" and cd.get(4) == na.get(4) == str(channel)
        assert (cd.get(5, 1, 1), cd.get(5, 1, 2)) == (str(channel), wave["lead"])
        sensitivity, unit = cd.get(5, 3, 1), cd.get(5, 3, 2)
        assert float(cd.get(5, 5)) == wave["sample_rate_hz"] and unit == "uV"
        baseline = float(cd.get(5, 4, 2) or 0.0)
        samples = [int(v) for v in na.raw(5).split("^")]
        assert samples == wave["data"]
        physical = [float(sensitivity) * (v - baseline) for v in samples]
        expected = [wave.get("origin", 0.0) + wave.get("factor", 1.0) * v for v in wave["data"]]
        assert physical == pytest.approx(expected)
        assert (na.get(6, 1), na.get(6, 3)) == ("uV", "UCUM")
    body = oru_body(events, number)
    hl7apy_parse(body.decode(), find_groups=True)
    assert str(hl7.parse(body.decode()).segments("OBX")[4][5][0][0]) == str(waveforms[0]["data"][0])
    assert validate_bytes(body) == ("er7", [])
    no_channel = body.replace(
        b"|NA|131330^MDC_ECG_LEAD_II^MDC|1|", b"|NA|131330^MDC_ECG_LEAD_II^MDC||"
    )
    assert any(p.path.endswith("-4") for p in validate_bytes(no_channel)[1])


def test_other_events_and_other_hospitals_are_skipped() -> None:
    events = stemi()
    with pytest.raises(NothingToSend, match="not a result"):
        oru(events, 1)
    number = next(i for i, e in enumerate(events, 1) if e["type"] == "vitals.recorded")
    with pytest.raises(NothingToSend, match="not H999"):
        oru(events, number, hospital_code="H999")


# Within every vital sign's range (temperature starts at 25).
_VALUES = st.floats(min_value=25, max_value=45, allow_nan=False).map(lambda v: round(v, 2))


@settings(max_examples=60, deadline=None)
@given(
    values=st.dictionaries(st.sampled_from(sorted(VITAL_SIGN_CODES)), _VALUES, min_size=1),
    device=st.none() | st.text(alphabet="AZ09-|^~\\&监护仪", min_size=1, max_size=12),
    ws363=st.booleans(),
)
def test_numeric_obx_written_as_the_generic_writer_would(
    values: dict[str, float], device: str | None, ws363: bool
) -> None:
    """The vital signs' OBX segments, written directly, equal what _obx writes field
    by field (escaping of the device included)."""
    assume(values.get("diastolic_bp", 0) < values.get("systolic_bp", 999))
    events = stemi()
    number_ = next(i for i, e in enumerate(events, 1) if e["type"] == "vitals.recorded")
    sample = {"measured_at": "2026-11-25T08:31:07+08:00", **values}
    if device is not None:
        sample["device_id"] = device
    events[number_ - 1] = {
        **events[number_ - 1],
        "data": {**events[number_ - 1]["data"], "samples": [sample]},
    }
    segments = oru_body(events, number_, ws363=ws363).decode().split("\r")
    written = [s for s in segments if s.startswith("OBX|")]
    expected = []
    for set_id, name in enumerate((n for n in VITAL_SIGN_CODES if n in values), start=1):
        # Coded from the tables field by field, not by _vital_fields.
        loinc = BUILTIN_TABLES.require("vital_loinc", name)
        ucum = BUILTIN_TABLES.require("vital_ucum", name)
        code: list[Component] = [loinc, BUILTIN_TABLES.get("vital_display", name), "LN"]
        alternate = BUILTIN_TABLES.get("vital_ws363", name) if ws363 else None
        if alternate:
            code += [alternate, None, "99WS363"]
        fields: list[FieldValue] = [None] * 18
        fields[:6] = [str(set_id), "NM", code, None, number(values[name]), [ucum, ucum, "UCUM"]]
        fields[10], fields[13] = "F", "20261125083107+0800"
        fields[17] = [sample["device_id"]] if "device_id" in sample else None
        expected.append(build_segment("OBX", fields))
    assert written == expected


def test_control_id_is_escaped_in_msh_10() -> None:
    events = stemi()
    number_ = next(i for i, e in enumerate(events, 1) if e["type"] == "vitals.recorded")
    ctx = MappingContext(
        "A|B^C&D", dt.datetime(2026, 11, 25, tzinfo=dt.UTC), "his", {}, tuple(events[:number_])
    )
    text = hl7v2_oru(events[number_ - 1], ctx).body.decode()
    assert text.split("\r")[0].split("|")[9] == "A\\F\\B\\S\\C\\T\\D"
    assert parse_message(text).header.control_id == "A|B^C&D"
    assert hl7.parse(text).segment("MSH")[10][0] == "A\\F\\B\\S\\C\\T\\D"


def test_msh_written_in_full_when_an_option_holds_the_template_stand_in() -> None:
    events = stemi()
    number_ = next(i for i, e in enumerate(events, 1) if e["type"] == "vitals.recorded")
    text = oru_body(events, number_, sending_application=f"A{HOLE}B").decode()
    header = parse_message(text).header
    assert (header.get(3), header.control_id) == (f"A{HOLE}B", f"ORU{number_:03d}")
    assert header.get(7) == "20261125083000+0800"
    plain = parse_message(oru_body(events, number_).decode()).header
    assert plain.fields[4:] == header.fields[4:]  # all but MSH-3 as the template writes


def test_vital_sign_codes_kept_per_tables_and_ws363_choice() -> None:
    """The OBX codes _vitals keeps live with their tables: tables overridden for one
    route write that route's codes, and the WS 363 choice keeps its own copy."""
    events = stemi()
    number_ = next(i for i, e in enumerate(events, 1) if e["type"] == "vitals.recorded")
    heart_rate = BUILTIN_TABLES.require("vital_loinc", "heart_rate")
    plain = oru_body(events, number_).decode()
    overrides = {"code_overrides": {"vital_loinc": {"heart_rate": "LOCAL-HR"}}}
    overridden = oru_body(events, number_, **overrides).decode()
    assert f"|NM|{heart_rate}^" in plain and "LOCAL-HR" not in plain
    assert "|NM|LOCAL-HR^" in overridden and f"|NM|{heart_rate}^" not in overridden
    assert f"|NM|{heart_rate}^" in oru_body(events, number_).decode()  # not the override's
    without_ws363 = oru_body(events, number_, ws363=False).decode()
    assert "99WS363" in plain and "99WS363" not in without_ws363
