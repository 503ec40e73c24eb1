"""Our FHIR bundles against the official FHIR R4 JSON Schema (tests/schemas/README.md).

The R4B models of fhir.resources and our StructureDefinitions check the bundles
elsewhere; this is the independent check the issue names: HL7's own schema, applied by
the jsonschema package.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema.exceptions import best_match

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "tests" / "schemas" / "fhir.r4.schema.json.gz"
SCHEMA_SHA256 = "15b9548af6412c44faaa411456e0652542de286fd1c58ef882b09bdc8947909d"
GOLDEN = sorted((ROOT / "tests" / "golden" / "fhir").glob("*.json"))


@cache
def validator() -> jsonschema.Draft6Validator:
    text = gzip.decompress(SCHEMA.read_bytes())
    assert hashlib.sha256(text).hexdigest() == SCHEMA_SHA256, "not HL7's file"
    schema = json.loads(text)
    assert schema["id"] == "http://hl7.org/fhir/json-schema/4.0"
    return jsonschema.Draft6Validator(schema)


def problems(document: dict[str, Any]) -> list[str]:
    errors = list(validator().iter_errors(document))
    if not errors:
        return []
    best = best_match(errors)
    return [f"{'/'.join(map(str, best.absolute_path))}: {best.message[:300]}"]


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_every_golden_bundle_is_valid_fhir_r4(path: Path) -> None:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    assert bundle["resourceType"] == "Bundle"
    assert problems(bundle) == []


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda r: r.update(status="arrived-ish"), "status"),
        (lambda r: r.update(notAnElement=1), "notAnElement"),
        (lambda r: r.update(period={"start": "2026-13-45T08:00:00+08:00"}), "start"),
    ],
)
def test_the_schema_check_finds_what_is_not_fhir(change: Any, where: str) -> None:
    bundle = json.loads(GOLDEN[0].read_text(encoding="utf-8"))
    broken = copy.deepcopy(bundle)
    encounter = next(
        e["resource"] for e in broken["entry"] if e["resource"]["resourceType"] == "Encounter"
    )
    change(encounter)
    found = list(validator().iter_errors(broken))
    assert found, f"a broken {where} passed the schema"
