"""hub validate: format detection, FHIR and ER7 checks with paths, the CLI exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.cli import main
from hub.validate import detect_format, validate_bytes

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
A04 = GOLDEN / "hl7v2" / "stroke-ruian" / "009-destination.assigned-A04.hl7"
BUNDLE = GOLDEN / "fhir" / "stroke-ruian.json"


def test_detects_the_format_by_content() -> None:
    assert detect_format(b'  {"resourceType": "Patient"}') == "fhir"
    assert detect_format(b"\x0bMSH|^~\\&|A\r\x1c\r") == "er7"
    assert detect_format(b"hello") is None
    assert validate_bytes(b"hello")[0] == "unknown"


def test_goldens_are_clean() -> None:
    assert validate_bytes(A04.read_bytes()) == ("er7", [])
    assert validate_bytes(BUNDLE.read_bytes()) == ("fhir", [])


def test_er7_violations_have_paths() -> None:
    text = A04.read_bytes().decode().replace("\r\n", "\n").replace("\n", "\r")
    lines = text.split("\r")
    broken = []
    for line in lines:
        if line.startswith("PID|"):
            line = "PID|1"
        elif line.startswith("PV1|"):
            line = line.replace("PV1|1|E|", "PV1|1|I|", 1)
        elif line.startswith("ZPH|"):
            continue
        broken.append(line)
    _, problems = validate_bytes("\r".join(broken).encode())
    shown = {str(p) for p in problems}
    assert "PID-3: required field missing" in shown
    assert "PID-5: required field missing" in shown
    assert "PV1-2: must be 'E', found 'I'" in shown
    assert "ZPH: required segment missing (at least 1, found 0)" in shown
    assert any(p.path.endswith("(hl7apy 2.5.1)") for p in problems)


def test_a_file_of_several_messages_is_checked_message_by_message() -> None:
    good = A04.read_bytes()
    broken = good.replace(b"PV1|1|E|", b"PV1|1|I|", 1)
    assert validate_bytes(good + good) == ("er7", [])
    _, problems = validate_bytes(good + broken)
    assert {str(p) for p in problems} >= {"message[2].PV1-2: must be 'E', found 'I'"}
    assert not any(p.path.startswith("message[1]") for p in problems)


def test_unknown_message_type_is_reported() -> None:
    text = A04.read_bytes().decode().replace("ADT^A04^ADT_A01", "ADT^A03^ADT_A03")
    _, problems = validate_bytes(text.encode())
    assert any(p.path == "MSH-9" and "no message profile" in p.message for p in problems)


def test_fhir_violations_have_paths() -> None:
    bundle = json.loads(BUNDLE.read_text(encoding="utf-8"))
    index = next(
        i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Encounter"
    )
    del bundle["entry"][index]["resource"]["class"]
    _, problems = validate_bytes(json.dumps(bundle).encode())
    paths = {p.path for p in problems}
    assert f"Bundle.entry[{index}].resource(Encounter).class" in paths


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(A04), str(BUNDLE)]) == 0
    out = capsys.readouterr().out
    assert "valid (er7)" in out and "valid (fhir)" in out
    bad = tmp_path / "bad.hl7"
    bad.write_text("MSH|^~\\&|A|B|C|D|20261125000000+0800||ADT^A04^ADT_A01|X|P|2.5.1\rPID|1\r")
    assert main(["validate", str(bad)]) == 1
    assert f"{bad}: PID-3: required field missing" in capsys.readouterr().out
    assert main(["validate", str(tmp_path / "missing.hl7")]) == 1
