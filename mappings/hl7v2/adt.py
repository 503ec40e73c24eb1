"""``hl7v2-adt``: ADT pre-registration of the incident's patients at the receiving HIS.

Which messages an event gives is decided from the incident history alone, by replaying
a small state machine over the events up to and including the delivered one (see
README.md "ADT trigger logic"): the first event at which a patient and a destination
(of this route's hospital, with ``hospital_code``) are both known registers the patient
(A04, A05 or A14 by ``trigger``); later patient, assessment and destination events
update it (A08); a cancellation, or a redirect to another hospital, cancels it with the
trigger's own cancel (A11, A38, A27). Anything else is :class:`NothingToSend`.

An event about one patient concerns that patient; an incident-wide event (the
destination) concerns every identified patient, and a cancellation every registered one,
so one event can give several messages (mother and newborn). They travel as one payload,
in patient order; the first has the delivery's message id as MSH-10, the others
:func:`hub.ids.sibling_id` of it, so each stays stable across retries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hub.hl7v2.er7 import FieldValue, Repeat
from hub.ids import sibling_id
from hub.model.events import Event, IncidentCancelled
from hub.model.incident import UnitStatus
from hub.model.state import IncidentState, fold
from hub.registry import register
from mappings.base import MappingContext, NothingToSend, Payload
from mappings.hl7v2.common import (
    Hl7v2Options,
    MessageBuilder,
    encode,
    number,
    parse_options,
    root_patient_id,
)
from mappings.incident import (
    RECORD_EVENTS,
    IncidentMemo,
    events_through,
    has_context,
    incident_source,
)

__all__ = [
    "CANCEL_OF",
    "STRUCTURES",
    "UPDATE_TRIGGER",
    "AdtAction",
    "decide",
    "hl7v2_adt",
]

UPDATE_TRIGGER = "A08"
STRUCTURES = {
    "A04": "ADT_A01",
    "A05": "ADT_A05",
    "A14": "ADT_A05",
    "A08": "ADT_A01",
    "A11": "ADT_A09",
    "A38": "ADT_A38",
    "A27": "ADT_A21",
}
"""Trigger event -> HL7 v2.5.1 message structure (MSH-9.3)."""

CANCEL_OF = {"A04": "A11", "A05": "A38", "A14": "A27"}
"""Registration trigger -> the trigger that cancels it."""

_ADT_TYPES = frozenset({"patient.identified", "assessment.updated", "destination.assigned"})


@dataclass(frozen=True, slots=True)
class AdtAction:
    """What one event means to one ADT route."""

    kind: Literal["register", "update", "cancel", "skip"]
    patient_id: str | None = None  # the patient's current id
    reason: str = ""  # why nothing is sent, or why a registration is cancelled


def _targets(event: Event, state: IncidentState) -> list[str]:
    """The current ids of the patients an event is about: its own, or (an incident-wide
    event) every identified patient, in the order they were first identified."""
    if event.patient_ref is not None:
        current = state.resolve_patient_id(event.patient_ref)
        return [current] if current in state.patients else []
    found = (state.resolve_patient_id(root) for root in state.patient_order)
    return [current for current in found if current in state.patients]


@dataclass(frozen=True, slots=True)
class _Replay:
    """The state machine after some events: what IncidentMemo remembers per route."""

    actions: tuple[AdtAction, ...] = (AdtAction("skip", reason="no events"),)
    state: IncidentState = field(default_factory=IncidentState)
    registered: tuple[str, ...] = ()  # root patient ids, in registration order


def _replay(start: _Replay, events: Sequence[Event], hospital_code: str | None) -> _Replay:
    state, actions = start.state, start.actions
    registered = dict.fromkeys(start.registered)
    for event in events:
        before = state
        if isinstance(event, RECORD_EVENTS) and has_context(before):
            # A vital sign or an ECG changes nothing an ADT message holds: not folded, as
            # in fold_context_through (a monitor's stream would copy the state each time).
            actions = (_record_skip(event, before),)
            continue
        state = fold([event], before)
        actions = tuple(_step(event, before, state, registered, hospital_code))
    return _Replay(actions, state, tuple(registered))


def _record_skip(event: Event, before: IncidentState) -> AdtAction:
    """What _step answers for a record event (RECORD_EVENTS) of an incident with context
    (a record event repeated under its event id is not told apart: the store holds
    none)."""
    if event.incident_id != before.incident_id:
        return AdtAction("skip", reason="a repeated event, or one of another incident")
    if before.cancelled is not None:
        return AdtAction("skip", reason="the incident was cancelled earlier")
    return AdtAction("skip", reason=f"{event.type} means nothing to an ADT registration")


def decide(
    events: Sequence[Event], hospital_code: str | None = None
) -> tuple[tuple[AdtAction, ...], IncidentState]:
    """The actions for the last event (one per patient, or one skip with the reason)
    and the incident state after it (its vital signs and ECGs applied only while the
    incident had no context yet: see fold_context_through).

    Pure: replays every event in order with the same rules, so an event always gives the
    same actions whatever was delivered before (a resend, a retry, another worker).
    """
    replay = _replay(_Replay(), events, hospital_code)
    return replay.actions, replay.state


# One memo per hospital_code: the replay depends on it.
_REPLAYS: dict[str | None, IncidentMemo[_Replay]] = {}


def _step(
    event: Event,
    before: IncidentState,
    after: IncidentState,
    registered: dict[str, None],
    hospital_code: str | None,
) -> list[AdtAction]:
    if event.event_id not in after.event_ids or event.event_id in before.event_ids:
        return [AdtAction("skip", reason="a repeated event, or one of another incident")]
    if before.cancelled is not None:
        return [AdtAction("skip", reason="the incident was cancelled earlier")]
    if isinstance(event, IncidentCancelled):
        if not registered:
            return [AdtAction("skip", reason="cancelled before any registration was sent")]
        reason = f"incident cancelled: {event.data.reason}"
        cancels = [AdtAction("cancel", after.resolve_patient_id(r), reason) for r in registered]
        registered.clear()
        return cancels
    if event.type not in _ADT_TYPES:
        return [AdtAction("skip", reason=f"{event.type} means nothing to an ADT registration")]
    targets = _targets(event, after)
    if not targets:
        return [AdtAction("skip", reason="no patient identified yet")]
    actions = []
    skips = []
    for patient_id in targets:
        root = root_patient_id(after, patient_id)
        destination = after.destination_for(patient_id)
        if destination is None:
            skips.append(AdtAction("skip", reason="no destination hospital assigned yet"))
        elif hospital_code is not None and destination.hospital_code != hospital_code:
            if root in registered:
                del registered[root]
                reason = f"redirected to {destination.hospital_code}"
                actions.append(AdtAction("cancel", patient_id, reason))
            else:
                reason = (
                    f"the patient goes to {destination.hospital_code}, "
                    f"this route registers for {hospital_code}"
                )
                skips.append(AdtAction("skip", reason=reason))
        elif root not in registered:
            registered[root] = None
            actions.append(AdtAction("register", patient_id))
        else:
            actions.append(AdtAction("update", patient_id))
    return actions or skips[:1]


@register("mapping", "hl7v2-adt")
def hl7v2_adt(event: Mapping[str, Any], ctx: MappingContext) -> Payload:
    """Map one event (with its incident) to an HL7 v2.5.1 ADT message; see the module doc.

    Raises NothingToSend when the event changes nothing at this HIS, MappingError when
    the options or the incident's events are invalid.
    """
    options = parse_options(ctx.options)
    dicts = events_through(event, ctx.incident_events)
    code = options.hospital_code
    memo = _REPLAYS.get(code)
    if memo is None:
        memo = _REPLAYS.setdefault(
            code, IncidentMemo(_Replay, lambda start, new: _replay(start, new, code))
        )
    replay, last = memo.reduce(dicts)
    actions, state = replay.actions, replay.state
    if len(actions) == 1 and (actions[0].kind == "skip" or actions[0].patient_id is None):
        raise NothingToSend(actions[0].reason)
    source = incident_source(state)
    messages = []
    for n, action in enumerate(actions):
        trigger: str
        if action.kind == "register":
            trigger = options.trigger
        elif action.kind == "update":
            trigger = UPDATE_TRIGGER
        else:
            trigger = CANCEL_OF[options.trigger]
        control_id = ctx.message_id if n == 0 else sibling_id(ctx.message_id, n)
        assert action.patient_id is not None
        builder = MessageBuilder.start(
            options, state, ctx, source, action.patient_id, control_id=control_id
        )
        _write(builder, last, trigger, action)
        messages.append(encode(builder))
    return Payload(b"".join(m.body for m in messages), messages[0].content_type)


hl7v2_adt.needs_incident = True  # type: ignore[attr-defined]
hl7v2_adt.options_model = Hl7v2Options  # type: ignore[attr-defined]


def _write(builder: MessageBuilder, event: Event, trigger: str, action: AdtAction) -> None:
    assert action.patient_id is not None
    state = builder.state
    patient = state.patients.get(action.patient_id)
    builder.msh("ADT", trigger, STRUCTURES[trigger])
    builder.evn(trigger, event.occurred_at)
    builder.pid(patient, action.patient_id)
    if action.kind == "cancel":
        builder.pv1(action.patient_id)
        _zph(builder, action.patient_id, cancel_reason=action.reason)
        return
    if patient is not None:
        builder.nk1(patient.emergency_contacts)
    builder.pv1(action.patient_id)
    _pv2(builder, action.patient_id)
    assessment = state.assessments.get(action.patient_id)
    if assessment is not None:
        for index, allergy in enumerate(assessment.allergies, start=1):
            severity = allergy.severity.value if allergy.severity else "unknown"
            builder.writer.segment(
                "AL1",
                str(index),
                [builder.code("hl7v2_allergy_type", allergy.category.value), None, "HL70127"]
                if allergy.category
                else None,
                [None, allergy.substance],  # AL1-3, text only: no national allergen code
                [builder.code("hl7v2_allergy_severity", severity), None, "HL70128"],
                allergy.reaction,
            )
        if assessment.impression_code is not None:
            builder.writer.segment(
                "DG1",
                "1",
                None,
                [
                    assessment.impression_code,
                    assessment.impression,
                    builder.code("hl7v2_dg1_coding_system", "icd10"),
                ],
                None,
                builder.ts(assessment.assessed_at),  # DG1-5
                "W",  # DG1-6 working diagnosis: a prehospital impression
            )
    _zph(builder, action.patient_id)


def _pv2(builder: MessageBuilder, patient_id: str) -> None:
    state = builder.state
    assessment = state.assessments.get(patient_id)
    reason = None
    if assessment is not None:
        reason = assessment.chief_complaint or assessment.impression
    if reason is None and state.call is not None:
        reason = state.call.chief_complaint_text
    priority = None
    if assessment is not None and assessment.triage_level is not None:
        priority = builder.code("hl7v2_visit_priority", assessment.triage_level.value)
    fields: list[FieldValue] = [None] * 38
    fields[2] = [None, reason] if reason else None  # PV2-3 admit reason, as text
    destination = builder.destination
    fields[7] = builder.ts(destination.eta if destination else None)  # PV2-8
    fields[24] = priority  # PV2-25
    fields[37] = [builder.code("mode_of_arrival", "ambulance"), "Ambulance", "HL70430"]
    builder.writer.segment("PV2", *fields)


def _zph(builder: MessageBuilder, patient_id: str, cancel_reason: str | None = None) -> None:
    """The prehospital Z-segment; its fields are documented in README.md."""
    state = builder.state
    call = state.call
    assessment = state.assessments.get(patient_id)
    patient = state.patients.get(patient_id)

    location = call.location if call else None
    units = [[unit.unit_id, unit.vehicle_plate] for unit in state.units.values()]
    lkw = assessment.be_fast.time_last_known_well if assessment and assessment.be_fast else None
    age = patient.estimated_age if patient else None
    builder.writer.segment(
        "ZPH",
        call.dispatch_code if call else None,  # ZPH-1
        call.priority.value if call and call.priority else None,
        assessment.triage_level.value if assessment and assessment.triage_level else None,
        Repeat(*units),  # ZPH-4
        builder.ts(call.received_at if call else None),
        builder.ts(state.status_times.get(UnitStatus.patient_contact)),
        [number(location.lat), number(location.lon), location.crs.value] if location else None,
        builder.destination.prenotify.value if builder.destination else None,  # ZPH-8
        Repeat(*sorted(g.value for g in patient.special_groups)) if patient else None,
        [str(age.value), age.unit.value] if age else None,  # ZPH-10
        builder.ts(assessment.onset_at if assessment else None),
        builder.ts(lkw),
        call.address.text if call and call.address else None,  # ZPH-13
        cancel_reason,  # ZPH-14
    )
