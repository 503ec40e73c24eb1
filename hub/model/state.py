"""The current picture of one incident, folded from its events.

Folding is pure and total: the same events in the same order always give the same state,
and no event, in any order, makes it raise, because the events are facts that already
happened and the hub must keep forwarding what it knows.
"""

import bisect
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import AwareDatetime, Field

from hub.model.base import CanonicalModel
from hub.model.clinical import Assessment, Treatment
from hub.model.disposition import Destination, Handover
from hub.model.ecg import Ecg
from hub.model.events import (
    AssessmentUpdated,
    CallReceived,
    DestinationAssigned,
    EcgAcquired,
    Event,
    EventEnvelope,
    HandoverCompleted,
    IncidentCancelled,
    PatientIdentified,
    TreatmentGiven,
    UnitDispatched,
    UnitStatusChanged,
    VitalsRecordedEvent,
)
from hub.model.incident import Call, Cancellation, UnitDispatch, UnitStatus, UnitStatusChange
from hub.model.patient import Patient
from hub.model.vitals import VitalSigns

__all__ = ["IncidentState", "fold", "resolve_patient_id", "root_patient_id"]


def _measured_at(sample: VitalSigns) -> datetime:
    return sample.measured_at


_Owned = TypeVar("_Owned", Assessment, Ecg, Treatment, Handover)


class IncidentState(CanonicalModel):
    """Everything known about one incident.

    Per-patient records are keyed by the current (resolved) patient id and carry that id:
    once a temporary patient is identified, its records move to the permanent id and
    `patient_links` keeps the temporary -> permanent link.
    """

    incident_id: str | None = None
    call: Call | None = None
    units: dict[str, UnitDispatch] = Field(default_factory=dict)
    # Every status change, ordered by time (arrival order among equal times).
    timeline: list[UnitStatusChange] = Field(default_factory=list)
    # Earliest time each status was reached by any unit: the incident's time nodes.
    status_times: dict[UnitStatus, AwareDatetime] = Field(default_factory=dict)
    # Latest status of each unit.
    unit_status: dict[str, UnitStatus] = Field(default_factory=dict)
    # Current identities; identities replaced by an identification are in superseded_patients.
    patients: dict[str, Patient] = Field(default_factory=dict)
    superseded_patients: dict[str, Patient] = Field(default_factory=dict)
    patient_links: dict[str, str] = Field(default_factory=dict)  # temporary -> permanent id
    # The first id of each patient's identity chain, in the order patients were first
    # identified: stable when a temporary patient gets its permanent id later.
    patient_order: list[str] = Field(default_factory=list)
    assessments: dict[str, Assessment] = Field(default_factory=dict)  # latest per patient
    vitals: dict[str, list[VitalSigns]] = Field(default_factory=dict)  # by measured_at
    ecgs: dict[str, list[Ecg]] = Field(default_factory=dict)  # one per ecg_id, by acquired_at
    treatments: dict[str, list[Treatment]] = Field(default_factory=dict)  # by given_at
    destination: Destination | None = None  # the latest assignment of the whole incident
    # Assignments of one patient (destination.assigned with patient_ref), by the id they
    # named, in the order made: casualties of one incident taken to different hospitals.
    patient_destinations: dict[str, Destination] = Field(default_factory=dict)
    handovers: dict[str, Handover] = Field(default_factory=dict)  # latest per patient
    cancelled: Cancellation | None = None
    event_ids: list[str] = Field(default_factory=list)  # applied, in order
    ignored_event_ids: list[str] = Field(default_factory=list)  # repeats, other incidents
    last_occurred_at: AwareDatetime | None = None
    # The producing system: the source of the incident's (first) call, else of its first
    # event; messages about the incident name it as their sender.
    source: str | None = None

    @property
    def handover(self) -> Handover | None:
        """The latest handover of any patient."""
        return max(self.handovers.values(), key=lambda handover: handover.at, default=None)

    def resolve_patient_id(self, patient_id: str) -> str:
        """The current id of a patient, following temporary -> permanent links."""
        return resolve_patient_id(self.patient_links, patient_id)

    def destination_for(self, patient_id: str) -> Destination | None:
        """Where this patient goes: the latest assignment naming any id of the patient's
        identity chain, else the incident's."""
        if self.patient_destinations:
            chain = identity_chain(self.patient_links, patient_id)
            for named in reversed(self.patient_destinations):
                if named in chain:
                    return self.patient_destinations[named]
        return self.destination


def resolve_patient_id(links: dict[str, str], patient_id: str) -> str:
    """Follow links from patient_id to the id that is not superseded (cycle-safe)."""
    seen = {patient_id}
    while (target := links.get(patient_id)) is not None and target not in seen:
        seen.add(target)
        patient_id = target
    return patient_id


def identity_chain(links: dict[str, str], patient_id: str) -> set[str]:
    """Every id of patient_id's identity chain, from its first (temporary) id to its current."""
    chain = {root_patient_id(links, patient_id)}
    current = next(iter(chain))
    while (target := links.get(current)) is not None and target not in chain:
        chain.add(target)
        current = target
    return chain


def root_patient_id(links: dict[str, str], patient_id: str) -> str:
    """The first id of patient_id's identity chain (its temporary id, if it had one)."""
    reverse = {new: old for old, new in links.items()}
    seen = {patient_id}
    while (older := reverse.get(patient_id)) is not None and older not in seen:
        seen.add(older)
        patient_id = older
    return patient_id


def fold(events: Iterable[Event], initial: IncidentState | None = None) -> IncidentState:
    """Apply events in order to initial (or an empty state) and return the new state.

    An event whose event_id was already applied is a retry and is ignored, as is an event of
    another incident than the first one seen.
    """
    builder = _Builder(initial or IncidentState())
    for event in events:
        builder.apply(event)
    return builder.build()


class _Builder:
    """Mutable working copy of an IncidentState."""

    def __init__(self, start: IncidentState) -> None:
        self.incident_id = start.incident_id
        self.call = start.call
        self.units = dict(start.units)
        self.timeline = list(start.timeline)
        self.patients = dict(start.patients)
        self.superseded = dict(start.superseded_patients)
        self.links = dict(start.patient_links)
        self.patient_order = list(start.patient_order)
        self.assessments = dict(start.assessments)
        # Shared with ``start`` until a key gets new samples, then copied once and kept
        # sorted by insertion: folding a few events onto a long incident stays cheap.
        self.vitals = dict(start.vitals)
        self.vitals_changed: set[str] = set()
        self.ecgs = {key: {ecg.ecg_id: ecg for ecg in value} for key, value in start.ecgs.items()}
        self.treatments = {key: list(value) for key, value in start.treatments.items()}
        self.destination = start.destination
        self.patient_destinations = dict(start.patient_destinations)
        self.handovers = dict(start.handovers)
        self.cancelled = start.cancelled
        self.event_ids = list(start.event_ids)
        self.seen = set(start.event_ids)
        self.ignored = list(start.ignored_event_ids)
        self.last_occurred_at = start.last_occurred_at
        self.source = start.source

    def apply(self, event: EventEnvelope[Any]) -> None:
        if event.event_id in self.seen or (
            self.incident_id is not None and event.incident_id != self.incident_id
        ):
            self.ignored.append(event.event_id)
            return
        self.incident_id = event.incident_id
        self.seen.add(event.event_id)
        self.event_ids.append(event.event_id)
        if self.last_occurred_at is None or event.occurred_at > self.last_occurred_at:
            self.last_occurred_at = event.occurred_at
        if self.source is None or (self.call is None and isinstance(event, CallReceived)):
            self.source = event.source
        match event:
            case CallReceived():
                self.call = event.data
            case UnitDispatched():
                self.units[event.data.unit_id] = event.data
            case UnitStatusChanged():
                self.timeline.append(event.data)
            case PatientIdentified():
                self._identify(event.data)
            case AssessmentUpdated():
                self._add_assessment(self._owned(event.data))
            case VitalsRecordedEvent():
                key = self._resolve(event.data.patient_id)
                self._add_vitals(key, event.data.samples)
            case EcgAcquired():
                ecg = self._owned(event.data)
                self.ecgs.setdefault(ecg.patient_id, {})[ecg.ecg_id] = ecg
            case TreatmentGiven():
                treatment = self._owned(event.data)
                self.treatments.setdefault(treatment.patient_id, []).append(treatment)
            case DestinationAssigned():
                if event.patient_ref is None:
                    # The whole incident goes there: earlier per-patient choices end.
                    self.destination = event.data
                    self.patient_destinations = {}
                else:
                    self.patient_destinations.pop(event.patient_ref, None)  # now the latest
                    self.patient_destinations[event.patient_ref] = event.data
            case HandoverCompleted():
                self._add_handover(self._owned(event.data))
            case IncidentCancelled():
                if self.cancelled is None or event.data.at >= self.cancelled.at:
                    self.cancelled = event.data
            case _:  # pragma: no cover - Event is a closed union
                pass

    def _resolve(self, patient_id: str) -> str:
        return resolve_patient_id(self.links, patient_id)

    def _owned(self, record: _Owned) -> _Owned:
        """record carrying the current id of its patient."""
        current = self._resolve(record.patient_id)
        if current == record.patient_id:
            return record
        return record.model_copy(update={"patient_id": current})

    def _add_assessment(self, assessment: Assessment) -> None:
        current = self.assessments.get(assessment.patient_id)
        if current is None or assessment.assessed_at >= current.assessed_at:
            self.assessments[assessment.patient_id] = assessment

    def _add_handover(self, handover: Handover) -> None:
        current = self.handovers.get(handover.patient_id)
        if current is None or handover.at >= current.at:
            self.handovers[handover.patient_id] = handover

    def _identify(self, patient: Patient) -> None:
        root = root_patient_id(self.links, patient.supersedes or patient.patient_id)
        if root not in self.patient_order:
            self.patient_order.append(root)
        if patient.supersedes is not None:
            self._link(patient.supersedes, patient.patient_id)
        if patient.patient_id in self.links:  # an identity that was already replaced
            self.superseded[patient.patient_id] = patient
        else:
            self.patients[patient.patient_id] = patient

    def _link(self, old: str, new: str) -> None:
        """Record that old is now known as new and move old's records to new."""
        if self._resolve(new) == old:
            # new had itself been merged into old: the latest identification wins, so new
            # becomes current again instead of closing a cycle.
            del self.links[new]
            if new in self.superseded:
                self.patients[new] = self.superseded.pop(new)
        self.links[old] = new
        if old in self.patients:
            self.superseded[old] = self.patients.pop(old)
        self._move_records(old, new)

    def _add_vitals(self, key: str, samples: Iterable[VitalSigns]) -> None:
        """Insert in measured_at order, after equal times (as a stable sort would)."""
        if key not in self.vitals_changed:
            self.vitals_changed.add(key)
            self.vitals[key] = list(self.vitals.get(key, ()))
        target = self.vitals[key]
        for sample in samples:
            bisect.insort_right(target, sample, key=_measured_at)

    def _move_records(self, old: str, new: str) -> None:
        if (assessment := self.assessments.pop(old, None)) is not None:
            self._add_assessment(assessment.model_copy(update={"patient_id": new}))
        if (samples := self.vitals.pop(old, None)) is not None:
            self._add_vitals(new, samples)
        if (ecgs := self.ecgs.pop(old, None)) is not None:
            target = self.ecgs.setdefault(new, {})
            for ecg_id, ecg in ecgs.items():
                target.setdefault(ecg_id, ecg.model_copy(update={"patient_id": new}))
        if (treatments := self.treatments.pop(old, None)) is not None:
            moved = [item.model_copy(update={"patient_id": new}) for item in treatments]
            self.treatments.setdefault(new, []).extend(moved)
        if (handover := self.handovers.pop(old, None)) is not None:
            self._add_handover(handover.model_copy(update={"patient_id": new}))

    def build(self) -> IncidentState:
        timeline = sorted(self.timeline, key=lambda change: change.at)
        status_times: dict[UnitStatus, AwareDatetime] = {}
        unit_status: dict[str, UnitStatus] = {}
        for change in timeline:
            first = status_times.get(change.status)
            if first is None or change.at < first:
                status_times[change.status] = change.at
            unit_status[change.unit_id] = change.status
        # Every part is a validated record already; validating the whole again re-ran
        # each vital sign's checks on every fold (quadratic over an incident's life).
        return IncidentState.model_construct(
            incident_id=self.incident_id,
            call=self.call,
            units=self.units,
            timeline=timeline,
            status_times=status_times,
            unit_status=unit_status,
            patients=self.patients,
            superseded_patients=self.superseded,
            patient_links=self.links,
            patient_order=self.patient_order,
            assessments=self.assessments,
            vitals=self.vitals,  # kept in order by _add_vitals
            ecgs={
                key: sorted(by_id.values(), key=lambda ecg: ecg.acquired_at)
                for key, by_id in self.ecgs.items()
            },
            treatments={
                key: sorted(items, key=lambda item: item.given_at)
                for key, items in self.treatments.items()
            },
            destination=self.destination,
            patient_destinations=self.patient_destinations,
            handovers=self.handovers,
            cancelled=self.cancelled,
            event_ids=self.event_ids,
            ignored_event_ids=self.ignored,
            last_occurred_at=self.last_occurred_at,
            source=self.source,
        )
