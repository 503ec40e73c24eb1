"""Check a bundle against the differentials of the hub's StructureDefinitions.

Not a full FHIR validator: it checks what our differentials say (minimum cardinality,
``fixed[x]`` values, ``pattern[x]`` values, required extension slices by profile URL)
for each resource that claims one of our profiles in ``meta.profile`` and for the
Bundle itself. The full structural check is :func:`mappings.fhir.validation.validate_bundle`.

The profiles are read from ``profiles/fhir`` on first use (a data file read, not I/O
per message) and cached.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PROFILES_DIR", "Violation", "load_profiles", "validate_fhir"]

PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles" / "fhir"


@dataclass(frozen=True, slots=True)
class Violation:
    """One defect: where (a FHIRPath-like path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@functools.cache
def load_profiles(directory: Path = PROFILES_DIR) -> dict[str, dict[str, Any]]:
    """StructureDefinitions in directory by canonical URL."""
    profiles = {}
    for path in sorted(directory.glob("*.json")):
        definition = json.loads(path.read_text(encoding="utf-8"))
        if definition.get("resourceType") == "StructureDefinition":
            profiles[str(definition["url"])] = definition
    return profiles


def validate_fhir(document: dict[str, Any]) -> list[Violation]:
    """Every violation of our profiles in a Bundle or a single resource; [] when it conforms.

    Resources are checked against each of our profiles they claim in ``meta.profile``;
    a claimed profile of ours that does not exist is itself a violation.
    """
    profiles = load_profiles()
    violations: list[Violation] = []
    kind = document.get("resourceType")
    root = str(kind) if kind else "<resource>"
    violations.extend(_check_resource(document, root, profiles))
    if kind == "Bundle":
        for index, entry in enumerate(document.get("entry") or []):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict):
                label = f"Bundle.entry[{index}].resource({resource.get('resourceType')})"
                violations.extend(_check_resource(resource, label, profiles))
    return violations


def _check_resource(
    resource: dict[str, Any], label: str, profiles: dict[str, dict[str, Any]]
) -> Iterator[Violation]:
    claimed = (resource.get("meta") or {}).get("profile") or []
    for url in claimed:
        definition = profiles.get(url)
        if definition is None:
            if url.startswith(_our_base(profiles)):
                yield Violation(f"{label}.meta.profile", f"unknown profile {url}")
            continue
        if definition.get("type") != resource.get("resourceType"):
            yield Violation(label, f"profile {url} is for {definition.get('type')}")
            continue
        for element in definition["differential"]["element"]:
            yield from _check_element(resource, label, element)


def _our_base(profiles: dict[str, dict[str, Any]]) -> str:
    urls = list(profiles)
    return urls[0].rsplit("/", 1)[0] + "/" if urls else "\x00"


def _check_element(
    resource: dict[str, Any], label: str, element: dict[str, Any]
) -> Iterator[Violation]:
    parts = str(element["path"]).split(".")[1:]
    if not parts:
        return
    *parent_parts, name = parts
    minimum = int(element.get("min", 0))
    extension_profile = _slice_profile(element) if name == "extension" else None
    for parent, parent_path in _instances(resource, label, parent_parts):
        if not isinstance(parent, dict):
            continue
        values = _as_list(parent.get(name))
        if extension_profile is not None:
            values = [
                v for v in values if isinstance(v, dict) and v.get("url") == extension_profile
            ]
        if len(values) < minimum:
            what = f"required extension {extension_profile}" if extension_profile else "required"
            if minimum > 1:
                what = f"at least {minimum} required, found {len(values)}"
            yield Violation(f"{parent_path}.{name}", what)
        for index, value in enumerate(values):
            where = f"{parent_path}.{name}" + (
                f"[{index}]" if isinstance(parent.get(name), list) else ""
            )
            for key, expected in element.items():
                if key.startswith("fixed") and value != expected:
                    yield Violation(where, f"must be {json.dumps(expected, ensure_ascii=False)}")
                elif key.startswith("pattern") and not _matches(value, expected):
                    yield Violation(where, f"must match {json.dumps(expected, ensure_ascii=False)}")


def _slice_profile(element: dict[str, Any]) -> str | None:
    for type_ in element.get("type") or []:
        for profile in type_.get("profile") or []:
            return str(profile)
    return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _instances(node: Any, path: str, parts: list[str]) -> Iterator[tuple[Any, str]]:
    """Each value reached by following parts from node, with its indexed path."""
    if not parts:
        yield node, path
        return
    head, *rest = parts
    if not isinstance(node, dict):
        return
    value = node.get(head)
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _instances(item, f"{path}.{head}[{index}]", rest)
    elif value is not None:
        yield from _instances(value, f"{path}.{head}", rest)


def _matches(value: Any, pattern: Any) -> bool:
    """FHIR pattern semantics: every element of pattern appears in value (lists: any item)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            _matches(value.get(key), expected) for key, expected in pattern.items()
        )
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else []
        return all(any(_matches(item, expected) for item in items) for expected in pattern)
    return bool(value == pattern)
