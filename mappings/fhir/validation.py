"""Structural validation of a bundle dict with the ``fhir.resources`` R4B models.

R4B is the closest model set ``fhir.resources`` 8 ships to R4 (4.0.1); the resources the
hub emits have the same shape in both. It runs once, in the delivery worker (the
mapping's output step), never on the ACK path.

The bundle's own fields and each entry's resource are validated apart, which is what
``Bundle.model_validate`` does (it validates an entry's resource with the model its
``resourceType`` names) at about two thirds of the cost. A resource found valid is
remembered by its JSON text: the Patient, Encounter, Organizations, crew and scene of
an incident come again, unchanged, in the bundle of each of its events.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

__all__ = ["validate_bundle"]

_SHOWN = 10
_REMEMBERED = 2048  # resources known valid, least recently seen forgotten first
_LARGEST_REMEMBERED = 16 * 1024  # bytes of JSON: an ECG's waveforms are not kept

_valid: OrderedDict[bytes, None] = OrderedDict()
_lock = threading.Lock()


def validate_bundle(bundle: dict[str, Any]) -> list[str]:
    """Every problem R4B finds in bundle as ``path: message``; empty when it is valid."""
    problems: list[tuple[str, str]] = []
    entries = bundle.get("entry")
    shell = bundle
    if isinstance(entries, list):
        shell = {**bundle, "entry": [_without_resource(e) for e in entries]}
        for n, entry in enumerate(entries):
            if isinstance(entry, Mapping) and "resource" in entry:
                problems += _resource_problems(entry["resource"], f"entry.{n}.resource")
    problems = _model_problems(Bundle, shell, "") + problems
    shown = [f"{path}: {message}" for path, message in problems[:_SHOWN]]
    if len(problems) > _SHOWN:
        shown.append(f"(+{len(problems) - _SHOWN} more)")
    return shown


def _without_resource(entry: Any) -> Any:
    if isinstance(entry, Mapping):
        return {key: value for key, value in entry.items() if key != "resource"}
    return entry


def _resource_problems(resource: Any, where: str) -> list[tuple[str, str]]:
    kind = resource.get("resourceType") if isinstance(resource, Mapping) else None
    if not isinstance(kind, str):
        return [(where, "not a FHIR resource (an object with a resourceType)")]
    try:
        model = get_fhir_model_class(kind)
    except (KeyError, ValueError):  # which one depends on the name
        return [(f"{where}.resourceType", f"{kind!r} is not an R4B resource type")]
    text = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
    with _lock:
        if text in _valid:
            _valid.move_to_end(text)
            return []
    problems = _model_problems(model, resource, where)
    if not problems and len(text) <= _LARGEST_REMEMBERED:
        with _lock:
            _valid[text] = None
            while len(_valid) > _REMEMBERED:
                _valid.popitem(last=False)
    return problems


def _model_problems(model: Any, data: Any, where: str) -> list[tuple[str, str]]:
    try:
        model.model_validate(data)
    except ValidationError as exc:
        found = []
        for detail in exc.errors(include_url=False):
            path = ".".join([where, *map(str, detail["loc"])] if where else map(str, detail["loc"]))
            found.append((path or "Bundle", detail["msg"]))
        return found
    return []
