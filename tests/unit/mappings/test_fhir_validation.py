"""validate_bundle: the bundle's fields and each resource checked apart, valid resources
remembered, agreeing with ``Bundle.model_validate`` on what is valid and what is not."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from mappings.fhir import validation
from mappings.fhir.validation import validate_bundle

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "fhir"
BUNDLES = sorted(GOLDEN.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(path.read_bytes())
    return document


def _whole_model_accepts(bundle: dict[str, Any]) -> bool:
    try:
        Bundle.model_validate(bundle)
    except (ValidationError, KeyError):  # KeyError: an unknown resourceType
        return False
    return True


def _broken(bundle: dict[str, Any], n: int) -> dict[str, Any]:
    """Entry n's resource without a field its type requires (or with a bad one)."""
    out = copy.deepcopy(bundle)
    resource = out["entry"][n]["resource"]
    required = {"Observation": "code", "Encounter": "class", "Condition": "subject"}
    kind = resource["resourceType"]
    if kind in required:
        resource.pop(required[kind], None)
    else:
        resource["id"] = "not an id!"
    return out


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.stem)
def test_agrees_with_the_whole_bundle_model(path: Path) -> None:
    bundle = _load(path)
    assert validate_bundle(bundle) == [] and _whole_model_accepts(bundle)
    for n in range(len(bundle["entry"])):
        broken = _broken(bundle, n)
        problems = validate_bundle(broken)
        assert problems and not _whole_model_accepts(broken), n
        assert all(p.startswith(f"entry.{n}.resource.") for p in problems), problems


def test_a_remembered_resource_never_hides_a_changed_one() -> None:
    bundle = _load(BUNDLES[0])
    validation._valid.clear()
    assert validate_bundle(bundle) == []
    assert len(validation._valid) == len(bundle["entry"])
    assert validate_bundle(bundle) == []  # all remembered
    observation = next(
        n for n, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Observation"
    )
    broken = copy.deepcopy(bundle)
    del broken["entry"][observation]["resource"]["code"]
    assert validate_bundle(broken) == [f"entry.{observation}.resource.code: Field required"]


def test_what_is_not_a_resource_and_the_bundles_own_fields() -> None:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "transaction",
        "timestamp": "yesterday",
        "entry": [{"resource": 3}, {"resource": {"resourceType": "Nonsense"}}],
    }
    problems = validate_bundle(bundle)
    assert problems[0].startswith("timestamp: ")
    assert problems[1:] == [
        "entry.0.resource: not a FHIR resource (an object with a resourceType)",
        "entry.1.resource.resourceType: 'Nonsense' is not an R4B resource type",
    ]
    assert not _whole_model_accepts(bundle)
