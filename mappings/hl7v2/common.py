"""Pieces shared by the HL7 v2.5.1 mappings: options, header, patient, visit, bytes.

Everything here is pure: times come from the event and ``ctx.created_at``, the control
id from ``ctx.message_id``, and the ER7 text is written with the fast
:class:`hub.hl7v2.er7.Er7Writer` (never hl7apy, see ARCHITECTURE.md "The hot path").
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hub.hl7v2.er7 import (
    DEFAULT_SEPARATORS,
    HOLE,
    Component,
    Er7Writer,
    FieldValue,
    Raw,
    Repeat,
    build_segment,
    codec_for,
    escape,
    format_ts,
    hl7_charset_name,
    template_parts,
)
from hub.model.disposition import Destination
from hub.model.identifiers import RESIDENT_ID_OID
from hub.model.incident import UnitStatus
from hub.model.location import Address
from hub.model.patient import Contact, Patient, Sex
from hub.model.state import IncidentState
from hub.model.state import root_patient_id as chain_root
from mappings.base import MappingContext, MappingError, Payload
from mappings.tables import BUILTIN_TABLES, CodeTables

__all__ = [
    "HL7_VERSION",
    "Hl7v2Options",
    "MessageBuilder",
    "content_type",
    "encode",
    "number",
    "parse_options",
    "root_patient_id",
]

HL7_VERSION = "2.5.1"
_MOBILE = re.compile(r"^1[3-9][0-9]{9}$")  # Chinese mobile numbers: 11 digits from 13x


class Hl7v2Options(BaseModel):
    """Route ``options`` of the hl7v2-adt and hl7v2-oru mappings (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    trigger: Literal["A04", "A05", "A14"] = Field(
        default="A04", description="Registration trigger (adt): A04, A05 or A14."
    )
    hospital_code: str | None = Field(
        default=None, description="Only patients going to this hospital (destination code)."
    )
    sending_application: str = "PREHOSPITAL-HUB"
    sending_facility: str | None = Field(
        default=None, description="MSH-4; default: the source of the incident's call."
    )
    receiving_application: str = "HIS"
    receiving_facility: str | None = Field(
        default=None, description="MSH-6; default: hospital_code, else the destination name."
    )
    processing_id: Literal["P", "T", "D"] = "P"
    accept_ack_type: Literal["AL", "NE", "ER", "SU", ""] = "AL"
    application_ack_type: Literal["AL", "NE", "ER", "SU", ""] = "NE"
    charset: str = Field(default="UTF-8", description="UTF-8 or GB18030 (MSH-18 and bytes).")
    timezone: str = Field(default="+08:00", description="Offset of every written time.")
    patient_id_authority: str = Field(
        default="HUB120", description="CX-4 of the hub patient id (PI) and visit number (VN)."
    )
    unknown_name: str = Field(
        default="无名氏", description="PID-5 of a temporary patient with no name (type U)."
    )
    ws363: bool = Field(default=True, description="OBX-3 also carries the WS 363 code (oru).")
    code_overrides: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("charset")
    @classmethod
    def _known_charset(cls, value: str) -> str:
        codec = codec_for(value)
        if codec is None:
            raise ValueError(f"unknown character set {value!r}")
        hl7_charset_name(codec)  # ValueError when HL7 has no name for it
        return codec

    @field_validator("timezone")
    @classmethod
    def _offset(cls, value: str) -> str:
        if not re.fullmatch(r"[+-](0\d|1[0-4]):[0-5]\d", value):
            raise ValueError("expected an offset like +08:00")
        return value

    @functools.cached_property
    def tzinfo(self) -> dt.timezone:
        sign = -1 if self.timezone[0] == "-" else 1
        hours, minutes = int(self.timezone[1:3]), int(self.timezone[4:6])
        return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def parse_options(options: Mapping[str, Any]) -> Hl7v2Options:
    """The validated options; a bad option is a MappingError (the route is misconfigured).

    A route's options are the same on every delivery, so each distinct set is validated
    once (the model is frozen and shared).
    """
    return _options(orjson.dumps(options, option=orjson.OPT_SORT_KEYS))


@functools.lru_cache(maxsize=256)
def _options(text: bytes) -> Hl7v2Options:
    try:
        return Hl7v2Options.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise MappingError(f"options: {problems}") from None


def content_type(codec: str) -> str:
    return f"application/hl7-v2; charset={codec}"


def number(value: float) -> str:
    """A measured value as written in OBX-5 / ZPH: integral floats without ``.0``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def root_patient_id(state: IncidentState, patient_id: str) -> str:
    """The first id of a patient's identity chain (its temporary id, if it had one).

    The hub's patient identifier (PID-3, type PI) is this id, as the FHIR mapping keys its
    Patient on it: identifying a temporary patient then needs no merge at the HIS.
    """
    return chain_root(state.patient_links, patient_id)


class _MshConstants(NamedTuple):
    """The MSH fields a destination's messages share (all but MSH-7 and MSH-10)."""

    sending_application: str
    sending_facility: str
    receiving_application: str | None
    receiving_facility: str
    message_type: tuple[str, str, str]
    processing_id: str
    accept_ack_type: str | None
    application_ack_type: str | None
    charset: str


def _msh_fields(c: _MshConstants, at: FieldValue, control_id: FieldValue) -> list[FieldValue]:
    """MSH-3 onwards."""
    return [
        c.sending_application,  # MSH-3
        c.sending_facility,
        c.receiving_application,
        c.receiving_facility,
        at,  # MSH-7
        None,
        list(c.message_type),  # MSH-9
        control_id,  # MSH-10, stable across retries
        c.processing_id,
        HL7_VERSION,  # MSH-12
        None,
        None,
        c.accept_ack_type,  # MSH-15
        c.application_ack_type,
        "CHN",  # MSH-17
        c.charset,  # MSH-18
    ]


@functools.lru_cache(maxsize=256)
def _msh_template(constants: _MshConstants) -> tuple[str, ...] | None:
    """MSH as written around MSH-7 and MSH-10, the two fields that change from message
    to message (writing all of it each time cost a tenth of an ORU); None when a
    constant holds the stand-in."""
    hole = Raw(HOLE)
    return template_parts(build_segment("MSH", _msh_fields(constants, hole, hole)), 2)


@dataclass(slots=True)
class MessageBuilder:
    """One message being written: options, tables and the incident it describes."""

    options: Hl7v2Options
    tables: CodeTables
    state: IncidentState
    ctx: MappingContext
    source: str
    writer: Er7Writer
    control_id: str  # MSH-10
    patient_id: str  # the patient the message is about

    def __post_init__(self) -> None:
        # Segments written directly (the MSH template, hl7v2-oru's OBX, its OBX-3/OBX-6
        # fields) are in the default separators, as every message the hub writes.
        assert self.writer.separators is DEFAULT_SEPARATORS

    @classmethod
    def start(
        cls,
        options: Hl7v2Options,
        state: IncidentState,
        ctx: MappingContext,
        source: str,
        patient_id: str,
        *,
        control_id: str | None = None,
    ) -> MessageBuilder:
        """``control_id``: MSH-10, by default the delivery's message id."""
        tables = BUILTIN_TABLES.with_overrides(options.code_overrides)
        message_id = control_id or ctx.message_id
        return cls(options, tables, state, ctx, source, Er7Writer(), message_id, patient_id)

    @property
    def destination(self) -> Destination | None:
        """The hospital this message's patient goes to (see IncidentState.destination_for)."""
        return self.state.destination_for(self.patient_id)

    # ------------------------------------------------------------------ values

    def ts(self, value: dt.datetime | None) -> str | None:
        """A time in the center's offset, ``YYYYMMDDHHMMSS+0800``."""
        if value is None:
            return None
        return format_ts(value.astimezone(self.options.tzinfo))

    def code(self, table: str, key: str) -> str:
        return self.tables.require(table, key)

    def xtn(self, phone: str) -> list[str | None]:
        """XTN: the number in XTN-1 (what most HIS read) and XTN-12; CP for a mobile."""
        equipment = "CP" if _MOBILE.match(phone) else "PH"
        return [phone, "PRN", equipment, None, None, None, None, None, None, None, None, phone]

    def cx(self, value: str, type_code: str) -> list[Component]:
        return [value, None, None, self.options.patient_id_authority, type_code]

    # ------------------------------------------------------------------ segments

    def msh(self, code: str, trigger: str, structure: str) -> None:
        o = self.options
        destination = self.destination
        receiving = o.receiving_facility or o.hospital_code
        if receiving is None:
            receiving = destination.hospital_code if destination else self.ctx.destination
        constants = _MshConstants(
            o.sending_application,
            o.sending_facility or self.source,
            o.receiving_application,
            receiving,
            (code, trigger, structure),
            o.processing_id,
            o.accept_ack_type,
            o.application_ack_type,
            hl7_charset_name(o.charset),
        )
        at = self.ts(self.ctx.created_at)
        template = _msh_template(constants)
        if template is None or at is None:
            self.writer.msh(*_msh_fields(constants, at, self.control_id))
            return
        head, middle, tail = template
        self.writer.written(f"{head}{at}{middle}{escape(self.control_id)}{tail}")

    def evn(self, trigger: str, occurred_at: dt.datetime) -> None:
        self.writer.segment(
            "EVN", trigger, self.ts(self.ctx.created_at), None, None, None, self.ts(occurred_at)
        )

    def pid(self, patient: Patient | None, patient_id: str) -> None:
        """PID of patient (or of a patient known only by its id, for results)."""
        root = root_patient_id(self.state, patient_id)
        ids: list[FieldValue] = []
        if patient is not None and patient.resident_id is not None:
            ids.append([patient.resident_id, None, None, [None, RESIDENT_ID_OID, "ISO"], "NN"])
        if patient is not None and patient.passport_no is not None:
            ids.append([patient.passport_no, None, None, None, "PPN"])
        ids.append(self.cx(root, "PI"))
        if patient is not None and patient.name is not None:
            name: FieldValue = [patient.name, None, None, None, None, None, "L"]
        else:
            name = [self.options.unknown_name, None, None, None, None, None, "U"]
        sex = None
        birth = None
        address = None
        phone = None
        if patient is not None:
            code = patient.sex
            if code is Sex.unknown and patient.sex_from_id is not None:
                code = patient.sex_from_id
            sex = self.code("sex_hl7v2", code.value)
            birth_date = patient.birth_date or patient.birth_date_from_id
            birth = birth_date.strftime("%Y%m%d") if birth_date else None
            address = _xad(patient.address) if patient.address else None
            phone = self.xtn(patient.phone) if patient.phone else None
        self.writer.segment(
            "PID",
            "1",
            None,
            Repeat(*ids),  # PID-3
            None,
            name,  # PID-5
            None,
            birth,  # PID-7
            sex,  # PID-8
            None,
            None,
            address,  # PID-11
            None,
            phone,  # PID-13
        )

    def nk1(self, contacts: Sequence[Contact]) -> None:
        for index, contact in enumerate(contacts, start=1):
            self.writer.segment(
                "NK1",
                str(index),
                [contact.name] if contact.name else None,
                [None, contact.relationship] if contact.relationship else None,
                None,
                self.xtn(contact.phone),  # NK1-5
                None,
                ["C", "Emergency Contact", "HL70131"],  # NK1-7 contact role
            )

    def pv1(self, patient_id: str, *, full: bool = True) -> None:
        """PV1 of the patient's visit; ``full`` adds admission type, admit source and
        admit time (ADT)."""
        state = self.state
        destination = state.destination_for(patient_id)
        location: FieldValue = None
        if destination is not None:
            location = [
                destination.department_code,
                None,
                None,
                destination.hospital_code,  # PL-4 facility
                None,
                None,
                None,
                None,
                destination.department_name,  # PL-9 location description
            ]
        fields: list[FieldValue] = [None] * 44
        fields[0] = "1"
        fields[1] = self.code("patient_class", "emergency")  # PV1-2
        fields[2] = location
        if full:
            kind = destination.prenotify.value if destination else "none"
            fields[3] = self.code("admission_type", kind)  # PV1-4
            fields[13] = self.code("hl7v2_admit_source", "ambulance")  # PV1-14
            fields[43] = self.ts(_admit_time(state))  # PV1-44
        fields[18] = self.cx(visit_number(state, patient_id), "VN")  # PV1-19
        self.writer.segment("PV1", *fields)


def visit_number(state: IncidentState, patient_id: str) -> str:
    """PV1-19: the incident id for its first patient, ``<incident>-<n>`` for the n-th.

    Each patient of an incident (mother and newborn, the casualties of a crash) is a
    visit of its own at the HIS. n is the patient's place in the order patients were
    first identified, so it does not change when a temporary patient gets its
    permanent id; a patient never identified (known only from results) is the first.
    """
    incident = state.incident_id or ""
    root = root_patient_id(state, patient_id)
    if root in state.patient_order:
        place = state.patient_order.index(root) + 1
        if place > 1:
            return f"{incident}-{place}"
    return incident


def _xad(address: Address) -> list[Component]:
    """XAD: the full text in XAD-1 (what Chinese HIS display), parts where known."""
    return [
        address.text,
        None,
        address.city,
        address.province,
        None,
        "CHN",
        "H",
        None,
        address.county,  # XAD-9 county/parish
    ]


def _admit_time(state: IncidentState) -> dt.datetime | None:
    """First medical contact, else the first unit time node, else the first dispatch."""
    times = state.status_times
    if UnitStatus.patient_contact in times:
        return times[UnitStatus.patient_contact]
    if times:
        return min(times.values())
    return min((unit.dispatched_at for unit in state.units.values()), default=None)


def encode(builder: MessageBuilder) -> Payload:
    """The finished message as bytes in the option's charset."""
    codec = builder.options.charset
    try:
        body = builder.writer.encode(codec)
    except UnicodeEncodeError as exc:
        raise MappingError(f"the message has text that {codec} cannot encode: {exc}") from None
    return Payload(body, content_type(codec))
