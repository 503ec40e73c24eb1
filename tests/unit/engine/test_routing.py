"""Routes decide at ingest which deliveries an event causes, and on which ordering key."""

from __future__ import annotations

import re
from typing import Any

import pytest

from hub.config.plan import plan_from_mapping
from hub.engine.routing import Router, get_path

ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{20}$")


def router(*routes: dict[str, Any], disabled: tuple[str, ...] = ()) -> Router:
    names = {r["destination"] for r in routes}
    plan = plan_from_mapping(
        {
            "destinations": {
                name: {"type": "file", "directory": f"out/{name}", "enabled": name not in disabled}
                for name in names
            },
            "routes": list(routes),
        },
        env={},
    )
    return Router(plan)


def event(event_type: str = "vitals.recorded", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": "e1",
        "type": event_type,
        "incident_id": "INC-1",
        "source": "dispatch-tianjin",
        "patient_ref": "PAT-1",
        "data": {"unit_id": "AMB-12", "priority": "delta", "samples": [{"spo2": 93}]},
    }
    body.update(extra)
    return body


def routes_taken(r: Router, body: dict[str, Any]) -> list[str]:
    return [d.route for d in r.fan_out(body, 0.0)]


@pytest.mark.parametrize(
    ("types", "event_type", "taken"),
    [
        (["*"], "call.received", True),
        (["vitals.recorded"], "vitals.recorded", True),
        (["vitals.recorded"], "vitals.recorded.v2", False),
        (["unit.*"], "unit.status", True),
        (["unit.*"], "unit.dispatched", True),
        (["unit.*"], "units.status", False),
        (["ecg.*", "vitals.recorded"], "ecg.acquired", True),
        (["ecg.*", "vitals.recorded"], "treatment.given", False),
        (["*.cancelled"], "incident.cancelled", True),
        (["unit.?tatus"], "unit.status", True),
        (["Unit.*"], "unit.status", False),
    ],
)
def test_type_globs(types: list[str], event_type: str, taken: bool) -> None:
    r = router({"name": "r", "destination": "d", "when": {"types": types}})
    assert routes_taken(r, event(event_type)) == (["r"] if taken else [])


@pytest.mark.parametrize(
    ("match", "taken"),
    [
        ({"source": "dispatch-tianjin"}, True),
        ({"source": "dispatch-beijing"}, False),
        ({"source": ["dispatch-beijing", "dispatch-tianjin"]}, True),
        ({"source": ["dispatch-beijing"]}, False),
        ({"data.priority": "delta", "source": "dispatch-tianjin"}, True),
        ({"data.priority": "delta", "source": "dispatch-beijing"}, False),
        ({"data.samples.0.spo2": 93}, True),
        ({"data.samples.0.spo2": [90, 91]}, False),
        ({"data.samples.1.spo2": 93}, False),
        ({"data.missing": None}, False),
        ({"data.samples": "x"}, False),  # a list never equals a scalar
        ({"data": ["x"]}, False),  # nor does a mapping
    ],
)
def test_match_conditions(match: dict[str, Any], taken: bool) -> None:
    r = router({"name": "r", "destination": "d", "when": {"match": match}})
    assert routes_taken(r, event()) == (["r"] if taken else [])


@pytest.mark.parametrize(
    ("exists", "taken"),
    [
        (["patient_ref"], True),
        (["data.unit_id", "data.samples.0"], True),
        (["data.hospital_code"], False),
        (["data.samples.3"], False),
        (["data.unit_id.deeper"], False),
    ],
)
def test_exists_conditions(exists: list[str], taken: bool) -> None:
    r = router({"name": "r", "destination": "d", "when": {"exists": exists}})
    assert routes_taken(r, event()) == (["r"] if taken else [])


def test_every_matching_route_delivers_in_route_order() -> None:
    r = router(
        {"name": "clinical", "destination": "his", "when": {"types": ["vitals.*"]}},
        {"name": "all", "destination": "archive"},
        {"name": "dispatch-only", "destination": "his", "when": {"types": ["call.*"]}},
        {"name": "copy", "destination": "his"},
    )
    out = r.fan_out(event(), 0.0)
    assert [(d.route, d.destination, d.mapping) for d in out] == [
        ("clinical", "his", "canonical-json"),
        ("all", "archive", "canonical-json"),
        ("copy", "his", "canonical-json"),
    ]
    assert all(ID.match(d.message_id) for d in out)
    assert len({d.message_id for d in out}) == 3, "every delivery has its own message id"


def test_a_disabled_destination_gets_nothing() -> None:
    r = router(
        {"name": "a", "destination": "on"},
        {"name": "b", "destination": "off"},
        disabled=("off",),
    )
    assert routes_taken(r, event()) == ["a"]


@pytest.mark.parametrize(
    ("ordering_key", "body", "expected"),
    [
        ("incident", event(), "incident:INC-1"),
        ("patient", event(), "patient:PAT-1"),
        ("patient", event("call.received", patient_ref=None), "incident:INC-1"),
        ("field:data.unit_id", event(), "field:data.unit_id=AMB-12"),
        ("field:data.samples.0.spo2", event(), "field:data.samples.0.spo2=93"),
        ("field:data.hospital_code", event(), "field:data.hospital_code="),
    ],
)
def test_ordering_keys(ordering_key: str, body: dict[str, Any], expected: str) -> None:
    r = router({"name": "r", "destination": "d", "ordering_key": ordering_key})
    [delivery] = r.fan_out(body, 0.0)
    assert delivery.ordering_key == expected


def test_ordering_key_none_gives_every_delivery_its_own_queue() -> None:
    r = router({"name": "r", "destination": "d", "ordering_key": "none"})
    keys = [r.fan_out(event(), 0.0)[0] for _ in range(3)]
    assert [k.ordering_key for k in keys] == [f"message:{k.message_id}" for k in keys]
    assert len({k.ordering_key for k in keys}) == 3


def test_get_path() -> None:
    doc = {"a": {"b": [{"c": 1}, {"c": None}]}, "n": 0}
    assert get_path(doc, "a.b.0.c") == 1
    assert get_path(doc, "a.b.1.c") is None
    assert get_path(doc, "n") == 0
    missing = get_path(doc, "a.x")
    assert missing is get_path(doc, "a.b.2.c") is get_path(doc, "n.deeper")
    assert missing is not None


@pytest.mark.parametrize(
    ("filter_value", "event_value", "taken"),
    [
        (True, True, True),
        (True, 1, False),  # JSON true is not the number 1 (Python says True == 1)
        (1, True, False),
        (0, False, False),
        (1, 1.0, True),  # one JSON number
        ("1", 1, False),
    ],
)
def test_match_compares_json_values_not_python_equality(
    filter_value: Any, event_value: Any, taken: bool
) -> None:
    r = router({"name": "flag", "destination": "d", "when": {"match": {"data.flag": filter_value}}})
    body = event()
    body["data"]["flag"] = event_value
    assert routes_taken(r, body) == (["flag"] if taken else [])
