"""FHIR R4 transaction Bundle mapping (``fhir-r4-transaction``).

The mapping folds the incident's events up to and including the one being delivered
(``hub.model.state.fold``; parsing and folding the example incident costs ~0.2 ms) and
writes the whole picture for the event's patient as one transaction Bundle of
conditional updates; an incident-wide event (unit status, destination, cancellation, ...)
writes it for every patient of the incident. A stream event (``vitals.recorded``,
``ecg.acquired``) carries the picture without the incident's other vital signs and
ECGs: its own records, with the Patient, Encounter, Organizations, crew, scene,
Condition and assessment they refer to. Re-sending every earlier sample made a
monitor's stream quadratic: 100 earlier vitals events made each delivery 1,225 entries
(1.5 MiB) and 0.4 s of mapping and validation. Any other event still sends them all, so
a route that passes only, say, ``destination.assigned`` hands the hospital the history.

Keying (details in :mod:`mappings.fhir.bundle`): one Encounter per patient per incident,
keyed on ``<base>encounter|<incident>/<first id of the patient's chain>``, with the
dispatch number (``<base>incident``) and the ePCR number as non-key identifiers; the
Patient is keyed on the first id of its chain, so a temporary patient later identified
keeps one Patient and one Encounter. Shared by the incident's patients: the 120 center
and hospital Organizations, the crew's Practitioners and the scene Location.

Options (route ``options`` in hub.yaml):

- ``identifier_base``: base of hub-local identifier systems
  (default ``https://prehospital-hub.example/id/``);
- ``hospital_identifier_system``: system of destination hospital codes;
- ``code_overrides``: ``{table: {from: to}}`` over the tables in ``mappings/tables``;
- ``validate`` (default true): check the bundle with ``fhir.resources`` R4B models
  before it is sent (in the worker, off the ACK path: ~1.7 ms for a monitor's next
  vitals event, whose context resources were found valid before; see
  :mod:`mappings.fhir.validation`); an invalid bundle is a MappingError, so the
  delivery goes dead instead of being refused by the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.model.events import EcgAcquired, Event, VitalsRecordedEvent
from hub.model.state import IncidentState
from hub.registry import register
from mappings.base import MappingContext, MappingError, Payload
from mappings.fhir.bundle import EventRecords, build_bundle, entry_uuid
from mappings.fhir.validation import validate_bundle
from mappings.incident import (
    RECORD_EVENT_TYPES,
    event_patient_id,
    events_through,
    fold_context_through,
    fold_through,
    incident_source,
)
from mappings.tables import BUILTIN_TABLES

__all__ = ["CONTENT_TYPE", "FhirOptions", "entry_uuid", "fhir_r4_transaction", "incident_bundle"]

CONTENT_TYPE = "application/fhir+json"


class FhirOptions(BaseModel):
    """Route ``options`` of fhir-r4-transaction (unknown keys refused by `hub check`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    identifier_base: str | None = Field(default=None, description="Base of hub-local ids.")
    hospital_identifier_system: str | None = Field(
        default=None, description="System of destination hospital codes."
    )
    code_overrides: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="{table: {from: to}} over mappings/tables."
    )
    validate_bundle: bool = Field(
        default=True, alias="validate", description="Check with fhir.resources before send."
    )


def parse_options(options: Mapping[str, Any]) -> FhirOptions:
    """The route options, by the same spec `hub check` validated them with."""
    try:
        return FhirOptions.model_validate(options)
    except ValidationError as exc:
        raise MappingError(f"invalid options: {exc.errors()[0]['msg']}", "options") from None


def incident_bundle(event: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """The Bundle as a dict (for tests, validation and the CLI); see the module doc."""
    options = parse_options(ctx.options)
    dicts = events_through(event, ctx.incident_events)
    stream = event.get("type") in RECORD_EVENT_TYPES
    # A stream event's bundle takes its records from the event: the incident's context
    # is all it needs of the state (see fold_context_through).
    state, current = (fold_context_through if stream else fold_through)(dicts)
    source = incident_source(state)
    patient_id = event_patient_id(event)
    tables = BUILTIN_TABLES.with_overrides(options.code_overrides or None)
    return build_bundle(
        state,
        message_id=ctx.message_id,
        created_at=ctx.created_at,
        source=source,
        tables=tables,
        options=options.model_dump(
            exclude_none=True, include={"identifier_base", "hospital_identifier_system"}
        ),
        patient_id=patient_id,
        records=_own_records(current, state) if stream else None,
    )


def _own_records(current: Event, state: IncidentState) -> EventRecords:
    """A stream event's records, under its patient's current id, as the fold files them
    (samples in measured order; an ECG under the patient it belongs to now)."""
    if isinstance(current, VitalsRecordedEvent):
        patient_id = state.resolve_patient_id(current.data.patient_id)
        samples = sorted(current.data.samples, key=lambda sample: sample.measured_at)
        return EventRecords(patient_id, samples=samples)
    assert isinstance(current, EcgAcquired), current.type  # the other RECORD_EVENTS
    ecg = current.data
    patient_id = state.resolve_patient_id(ecg.patient_id)
    if ecg.patient_id != patient_id:
        ecg = ecg.model_copy(update={"patient_id": patient_id})
    return EventRecords(patient_id, ecgs=(ecg,))


@register("mapping", "fhir-r4-transaction")
def fhir_r4_transaction(event: Mapping[str, Any], ctx: MappingContext) -> Payload:
    """Map one event (with its incident) to a FHIR R4 transaction Bundle."""
    bundle = incident_bundle(event, ctx)
    if parse_options(ctx.options).validate_bundle:
        problems = validate_bundle(bundle)
        if problems:
            raise MappingError("FHIR validation failed: " + "; ".join(problems))
    return Payload(orjson.dumps(bundle, option=orjson.OPT_SORT_KEYS), CONTENT_TYPE)


fhir_r4_transaction.needs_incident = True  # type: ignore[attr-defined]
fhir_r4_transaction.options_model = FhirOptions  # type: ignore[attr-defined]
