"""The hl7v2-oru mapping: vitals and ECG results, read back through the parsers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import hl7
import pytest
from hl7apy.parser import parse_message as hl7apy_parse

from hub.hl7v2.er7 import Message, parse_message
from hub.registry import lookup
from hub.validate import validate_bytes
from mappings.base import MappingContext, NothingToSend
from mappings.hl7v2 import hl7v2_oru

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
