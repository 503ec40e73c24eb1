"""Shared configuration and constrained string types for canonical records.

Every record is immutable and rejects unknown fields, so a typo in a producer's payload
fails loudly at the edge instead of silently dropping data.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

__all__ = [
    "ID_PATTERN",
    "CanonicalModel",
    "Code",
    "Identifier",
    "Name",
    "Phone",
    "Text",
]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
"""Identifiers used as keys by the hub: URL- and file-name-safe, 1..64 characters."""


class CanonicalModel(BaseModel):
    """Base of every canonical record: frozen, strict about unknown fields, finite numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]
"""A key the hub stores and routes on (event, incident, patient, unit, call ids)."""

Code = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^\S+$")]
"""A code from an external code system (ICD-10, department, device serial): no spaces."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
"""A short human-readable label: person, hospital, station, relationship."""

Text = Annotated[str, StringConstraints(min_length=1, max_length=4000)]
"""Free text written by a clinician or a dispatcher."""

Phone = Annotated[
    str, StringConstraints(min_length=3, max_length=32, pattern=r"^\+?[0-9][0-9 ()#*-]*$")
]
"""A phone number as dialled: digits with optional +, spaces, dashes, brackets, # and *."""
