"""Golden bundles of the example STEMI incident at four points; HUB_UPDATE_GOLDEN=1 rewrites."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import orjson
import pytest

from hub.testing.examples import example_events
from mappings.base import MappingContext
from mappings.fhir import fhir_r4_transaction
from mappings.fhir.profile_check import validate_fhir
from mappings.fhir.validation import validate_bundle

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "fhir"
CREATED = dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.UTC)

# scenario -> number (1-based) of the example event the bundle is mapped for
SCENARIOS = {
    "stemi-after-patient-identified": 6,
    "stemi-after-ecg": 8,
    "stemi-after-vitals": 9,
    "stemi-at-handover": 14,
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_golden_bundle(scenario: str) -> None:
    number = SCENARIOS[scenario]
    events = example_events()
    ctx = MappingContext(
        message_id=f"golden-{scenario}",
        created_at=CREATED,
        destination="emr",
        incident_events=tuple(events[:number]),
    )
    body = fhir_r4_transaction(events[number - 1], ctx).body
    path = GOLDEN / f"{scenario}.json"
    if os.environ.get("HUB_UPDATE_GOLDEN") == "1":
        document = orjson.loads(body)
        path.write_bytes(orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
    expected = orjson.loads(path.read_bytes())
    assert orjson.loads(body) == expected
    assert validate_bundle(expected) == []
    assert validate_fhir(expected) == []
