"""``hl7v2-oru``: prehospital vital signs and ECGs as HL7 v2.5.1 ORU^R01 results.

``vitals.recorded``: one OBR (LOINC 85353-1 vital signs panel) per sample, one numeric
OBX per measurement (LOINC, and the WS 363 data-element code as the alternate coding
where one exists; UCUM units). ``ecg.acquired``: one OBR (LOINC 34534-8 12 lead EKG
panel) with the interpretation (TX), the STEMI flag (CWE, Y/N), the rendered document
(ED when inline, RP when it is a URL) and, per lead, the waveform as HL7 v2 waveform
results (chapter 7): a CD OBX defining the channel (number and lead name, sensitivity
in the waveform's unit per count, baseline when the origin is not 0, sampling
frequency) and an NA OBX with the raw integer samples, both coded with the lead's
IEEE 11073 MDC code and sharing the channel number as OBX-4 sub-ID. Other
events: :class:`NothingToSend`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

from hub.hl7v2.er7 import Component, Er7Writer, FieldValue, build_field, build_segment
from hub.model.ecg import DocumentRef, Ecg
from hub.model.events import EcgAcquired, VitalsRecordedEvent
from hub.model.state import IncidentState
from hub.model.vitals import VITAL_SIGNS_PANEL_LOINC, VitalSigns
from hub.registry import register
from mappings.base import MappingContext, NothingToSend, Payload
from mappings.hl7v2.common import Hl7v2Options, MessageBuilder, encode, number, parse_options
from mappings.incident import (
    MEMO_INCIDENTS,
    RECORD_EVENT_TYPES,
    events_through,
    fold_context_through,
    incident_source,
)
from mappings.tables import CodeTables

__all__ = ["ECG_PANEL_LOINC", "STEMI_CODE", "hl7v2_oru"]

ECG_PANEL_LOINC = "34534-8"
ECG_IMPRESSION_LOINC = "18844-1"
ECG_STUDY_LOINC = "11524-6"
STEMI_CODE = ("STEMI", "STEMI suspected", "99HUB")
"""Local code of the STEMI flag (no LOINC code says "STEMI suspected")."""
WS363_SYSTEM = "99WS363"
"""Table 0396 local name (99zzz) of WS 363 data elements (OID 2.16.156.10011.2.2.1)."""
_DATA_TYPE = {"image": "IM", "application": "AP", "text": "TEXT", "audio": "AU"}  # table 0191


@register("mapping", "hl7v2-oru")
def hl7v2_oru(event: Mapping[str, Any], ctx: MappingContext) -> Payload:
    """Map vitals.recorded / ecg.acquired (with the incident) to ORU^R01; see the module doc.

    Raises NothingToSend for other events, for an incident already cancelled and, with
    ``hospital_code``, for a patient not (yet) going to that hospital.
    """
    kind = event.get("type")
    if kind not in RECORD_EVENT_TYPES:
        raise NothingToSend(f"{kind} is not a result for ORU^R01")
    options = parse_options(ctx.options)
    dicts = events_through(event, ctx.incident_events)
    state, current = fold_context_through(dicts)  # reads no vital signs or ECGs
    if state.cancelled is not None and state.cancelled.at <= current.occurred_at:
        raise NothingToSend("the incident was cancelled")
    assert current.patient_ref is not None
    patient_id = state.resolve_patient_id(current.patient_ref)
    destination = state.destination_for(patient_id)
    if options.hospital_code is not None and (
        destination is None or destination.hospital_code != options.hospital_code
    ):
        where = destination.hospital_code if destination else "no hospital yet"
        raise NothingToSend(f"the patient goes to {where}, not {options.hospital_code}")
    builder = MessageBuilder.start(options, state, ctx, incident_source(state), patient_id)
    builder.msh("ORU", "R01", "ORU_R01")
    builder.writer.written(*_patient_segments(builder))
    if isinstance(current, VitalsRecordedEvent):
        for index, sample in enumerate(current.data.samples, start=1):
            _vitals(builder, current.event_id, index, sample)
    elif isinstance(current, EcgAcquired):
        _ecg(builder, current.data)
    return encode(builder)


hl7v2_oru.needs_incident = True  # type: ignore[attr-defined]
hl7v2_oru.options_model = Hl7v2Options  # type: ignore[attr-defined]


class _Written(NamedTuple):
    state: IncidentState  # held: an id seen again is this state
    options: Hl7v2Options
    segments: tuple[str, ...]


_PATIENT_SEGMENTS: OrderedDict[tuple[int, int, str], _Written] = OrderedDict()
_PATIENT_LOCK = threading.Lock()


def _patient_segments(builder: MessageBuilder) -> tuple[str, ...]:
    """PID and PV1 of the message's patient, written once per incident state and options.

    They read only the state, the patient id and the options (with their code tables).
    A monitor's stream leaves the incident's context unchanged, and
    :func:`fold_context_through` then hands out the same state object (states are
    never changed once folded), so its ORUs repeat the same two segments.
    """
    state, options, patient_id = builder.state, builder.options, builder.patient_id
    key = (id(state), id(options), patient_id)
    with _PATIENT_LOCK:
        known = _PATIENT_SEGMENTS.get(key)
        if known is not None and known.state is state and known.options is options:
            _PATIENT_SEGMENTS.move_to_end(key)
            return known.segments
    scratch = MessageBuilder(
        options,
        builder.tables,
        state,
        builder.ctx,
        builder.source,
        Er7Writer(builder.writer.separators),
        builder.control_id,
        patient_id,
    )
    scratch.pid(state.patients.get(patient_id), patient_id)
    scratch.pv1(patient_id, full=False)
    segments = scratch.writer.segments
    with _PATIENT_LOCK:
        _PATIENT_SEGMENTS[key] = _Written(state, options, segments)
        _PATIENT_SEGMENTS.move_to_end(key)
        while len(_PATIENT_SEGMENTS) > MEMO_INCIDENTS:
            _PATIENT_SEGMENTS.popitem(last=False)
    return segments


def _obr(
    builder: MessageBuilder, set_id: int, filler: str, service: FieldValue, at: str | None
) -> None:
    fields: list[FieldValue] = [None] * 25
    fields[0] = str(set_id)
    fields[2] = [filler, builder.options.sending_application]  # OBR-3 filler order number
    fields[3] = service  # OBR-4
    fields[6] = at  # OBR-7 observation date/time
    fields[24] = "F"  # OBR-25 result status
    builder.writer.segment("OBR", *fields)


def _obx(
    builder: MessageBuilder,
    set_id: int,
    value_type: str,
    code: FieldValue,
    value: FieldValue,
    unit: FieldValue,
    at: str | None,
    device: str | None,
    sub_id: str | None = None,
) -> None:
    fields: list[FieldValue] = [None] * 18
    fields[0] = str(set_id)
    fields[1] = value_type
    fields[2] = code
    fields[3] = sub_id  # OBX-4: the channel of a waveform
    fields[4] = value
    fields[5] = unit
    fields[10] = "F"  # OBX-11
    fields[13] = at  # OBX-14
    fields[17] = [device] if device else None  # OBX-18 equipment instance identifier
    builder.writer.segment("OBX", *fields)


def _vitals(builder: MessageBuilder, event_id: str, index: int, sample: VitalSigns) -> None:
    at = builder.ts(sample.measured_at)
    panel = [VITAL_SIGNS_PANEL_LOINC, "Vital signs panel", "LN"]
    _obr(builder, index, f"{event_id}-{index}", panel, at)
    tables = builder.tables
    ws363 = builder.options.ws363
    written: dict[str, tuple[str, str]] = tables.derived(("hl7v2-oru vital OBX", ws363), dict)
    tail = _obx_tail(at, sample.device_id)
    segments = []
    for set_id, (name, value) in enumerate(sample.present_values().items(), start=1):
        fields = written.get(name)
        if fields is None:
            fields = written[name] = _vital_fields(tables, name, ws363)
        # What _obx writes for it, without its generic walk over 18 fields (a monitor's
        # stream writes six of these per sample): the set id and the value are digits,
        # the codes are written already, and nothing here needs escaping.
        code, unit = fields
        segments.append(f"OBX|{set_id}|NM|{code}||{number(value)}|{unit}|||||F{tail}")
    builder.writer.written(*segments)


def _obx_tail(at: str | None, device: str | None) -> str:
    """OBX-12 to OBX-18 of a numeric result, as they follow OBX-11 (``F``): OBX-14 the
    time, OBX-18 the device (escaped), without trailing empty fields."""
    fields: list[FieldValue] = ["F", None, None, at, None, None, None, [device] if device else None]
    return build_segment("OBX", fields)[len("OBX|F") :]


def _vital_fields(tables: CodeTables, name: str, ws363: bool) -> tuple[str, str]:
    """OBX-3 (LOINC, and WS 363 as the alternate) and OBX-6 (UCUM) of a vital sign, as
    written. _vitals keeps them with the tables (CodeTables.derived): the same few codes
    fill every OBX of a monitor's stream. Written with the default separators, which
    every message the hub writes uses (MessageBuilder)."""
    loinc, ucum = tables.require("vital_loinc", name), tables.require("vital_ucum", name)
    code: list[Component] = [loinc, tables.get("vital_display", name), "LN"]
    alternate = tables.get("vital_ws363", name) if ws363 else None
    if alternate:
        code += [alternate, None, WS363_SYSTEM]
    return build_field(code).value, build_field([ucum, ucum, "UCUM"]).value


def _ecg(builder: MessageBuilder, ecg: Ecg) -> None:
    at = builder.ts(ecg.acquired_at)
    _obr(builder, 1, ecg.ecg_id, [ECG_PANEL_LOINC, "12 lead EKG panel", "LN"], at)
    set_id = 0
    if ecg.interpretation is not None:
        set_id += 1
        code = [ECG_IMPRESSION_LOINC, "EKG impression", "LN"]
        _obx(builder, set_id, "TX", code, ecg.interpretation, None, at, ecg.device_id)
    if ecg.stemi_suspected is not None:
        set_id += 1
        flag = ["Y", "Yes", "HL70136"] if ecg.stemi_suspected else ["N", "No", "HL70136"]
        _obx(builder, set_id, "CWE", list(STEMI_CODE), flag, None, at, ecg.device_id)
    if ecg.document is not None:
        set_id += 1
        value_type, value = _document(ecg.document)
        code = [ECG_STUDY_LOINC, "EKG study", "LN"]
        _obx(builder, set_id, value_type, code, value, None, at, ecg.device_id)
    for channel, waveform in enumerate(ecg.waveforms, start=1):
        lead = waveform.lead.value
        code = [builder.tables.require("ecg_lead_mdc", lead), f"MDC_ECG_LEAD_{lead}", "MDC"]
        unit = [waveform.unit, waveform.unit, "UCUM"]
        # CD: channel number & name, (source), sensitivity & units, calibration, rate.
        # The NA samples are the raw integers: physical = sensitivity x (sample - baseline)
        # (HL7 v2 7.14), i.e. the model's origin + factor x sample, without rounding.
        baseline = None if waveform.origin == 0 else number(-waveform.origin / waveform.factor)
        definition: list[Component] = [
            [str(channel), lead],
            None,
            [number(waveform.factor), *unit],
            ["1", baseline] if baseline is not None else None,
            number(waveform.sample_rate_hz),
        ]
        values = [str(v) for v in waveform.data]
        set_id += 1
        _obx(builder, set_id, "CD", code, definition, None, at, ecg.device_id, str(channel))
        set_id += 1
        _obx(builder, set_id, "NA", code, values, unit, at, ecg.device_id, str(channel))


def _document(document: DocumentRef) -> tuple[str, FieldValue]:
    """ED (inline base64) or RP (a URL), typed by table 0191 and the MIME subtype."""
    major, _, minor = document.content_type.partition("/")
    data_type = _DATA_TYPE.get(major.lower(), "AP")
    subtype = minor.upper()
    if document.data_base64 is not None:
        return "ED", [None, data_type, subtype, "Base64", document.data_base64]
    return "RP", [document.url, None, data_type, subtype]
