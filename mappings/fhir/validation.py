"""Structural validation of a bundle dict with the ``fhir.resources`` R4B models.

R4B is the closest model set ``fhir.resources`` 8 ships to R4 (4.0.1); the resources the
hub emits have the same shape in both. This costs a few milliseconds per bundle, so it
runs once, in the delivery worker (the mapping's output step), never on the ACK path.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

__all__ = ["validate_bundle"]

_SHOWN = 10


def validate_bundle(bundle: dict[str, Any]) -> list[str]:
    """Every problem R4B finds in bundle as ``path: message``; empty when it is valid."""
    try:
        Bundle.model_validate(bundle)
    except ValidationError as exc:
        problems = []
        for detail in exc.errors(include_url=False)[:_SHOWN]:
            path = ".".join(str(part) for part in detail["loc"]) or "Bundle"
            problems.append(f"{path}: {detail['msg']}")
        if exc.error_count() > _SHOWN:
            problems.append(f"(+{exc.error_count() - _SHOWN} more)")
        return problems
    return []
