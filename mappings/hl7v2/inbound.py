"""Inbound HL7 v2: received messages to canonical event dicts (the MLLP listener's parse).

It lives with the mappings, not in hub.hl7v2, because it knows medicine (PID is a
patient, OBX 8867-4 a heart rate). It reads what is listed here and refuses the rest
with an ERR code and location:

- ADT^A01/A04/A05/A08 → ``patient.identified`` from PID (PID-3 ids, PID-5 name, PID-7
  birth date, PID-8 sex, PID-11 address, PID-13 phone);
- ORU^R01 → ``vitals.recorded`` from OBX rows whose OBX-3 is a vital-sign LOINC code
  (HR 8867-4, RR 9279-1, SpO2 2708-6/59408-5, BP 8480-6/8462-4, temperature 8310-5, and
  the other codes of ``hub.model.vitals``), one sample per observation time.

Event ids are ``<peer>-<MSH-10>-<n>``, so a message resent with the same control id
produces the same events: the store answers it as an idempotent replay. The output is
a pure function of the message (no clock), which that replay depends on.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from hub.hl7v2.er7 import Message, Segment, parse_ts
from hub.hl7v2.errors import ErrorCode, ErrorLocation, Hl7Error
from hub.model.identifiers import RESIDENT_ID_OID
from hub.model.vitals import SPO2_PULSE_OXIMETRY_LOINC, VITAL_SIGN_CODES

__all__ = [
    "SUPPORTED_MESSAGES",
    "Conversion",
    "InboundOptions",
    "convert",
    "event_id",
]

CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")

SUPPORTED_MESSAGES = MappingProxyType(
    {"ADT": frozenset({"A01", "A04", "A05", "A08"}), "ORU": frozenset({"R01"})}
)
"""Message code → trigger events this converter reads."""

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_LOINC = MappingProxyType(
    {
        **{coding.loinc: name for name, coding in VITAL_SIGN_CODES.items()},
        SPO2_PULSE_OXIMETRY_LOINC: "spo2",
    }
)
# Units seen from monitors and Chinese HIS, with the factor and offset to the UCUM unit
# the canonical model uses.
_UNITS: dict[str, dict[str, Callable[[float], float]]] = {
    "/min": {u: float for u in ("/min", "1/min", "bpm", "{beats}/min", "{breaths}/min", "次/分")},
    "%": {"%": float},
    "mm[Hg]": {
        **{u: float for u in ("mm[Hg]", "mmHg", "mm Hg", "mmhg")},
        "kPa": lambda v: v * 7.50062,
    },
    "Cel": {
        **{u: float for u in ("Cel", "°C", "℃", "C", "degC")},
        **{u: (lambda v: (v - 32) * 5 / 9) for u in ("[degF]", "°F", "degF", "F")},
    },
    "mmol/L": {u: float for u in ("mmol/L", "mmol/l")},
}
_SKIPPED_STATUS = frozenset({"X", "D", "W"})  # not obtained, deleted, posted in error
_SEX = {"M": "1", "F": "2", "U": "0", "O": "9", "A": "9", "N": "9"}


@dataclass(frozen=True, slots=True)
class InboundOptions:
    """Per-listener choices; ``peer`` names the sender in event ids and ``source``."""

    peer: str
    incident_field: str = "PV1-19.1"  # the visit number carries the hub's incident id
    patient_field: str = "PID-3.1"
    default_tz: tzinfo = CHINA_STANDARD_TIME  # for HL7 times without an offset


@dataclass(frozen=True, slots=True)
class Conversion:
    """Events for the ingestor, and where in the message each event field came from."""

    events: list[dict[str, Any]]
    locations: dict[str, ErrorLocation] = field(default_factory=dict)
    # (sample index, vital sign, OBX number) of each value read: located only when asked
    # (an error), not written out for every message a monitor sends.
    vitals_read: tuple[tuple[int, str, int], ...] = ()

    def locate(self, path: str) -> ErrorLocation | None:
        """The HL7 location of an event path such as ``events[0].data.name``."""
        locations = self.locations
        if self.vitals_read:
            locations = {**locations}
            for index, name, n in self.vitals_read:
                sample = f"events[0].data.samples[{index}]"
                locations[f"{sample}.{name}"] = ErrorLocation("OBX", n, 5)
                locations.setdefault(sample, ErrorLocation("OBX", n))
        while path:
            found = locations.get(path)
            if found is not None:
                return found
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                break
            path = path[:cut]
        return None


def event_id(peer: str, control_id: str, n: int) -> str:
    """``<peer>-<MSH-10>-<n>``; a control id that is no valid identifier is hashed."""
    candidate = f"{peer}-{control_id}-{n}"
    if _ID.match(candidate) and len(candidate) <= 64:
        return candidate
    digest = hashlib.sha256(control_id.encode()).hexdigest()[:20]
    return f"{peer[:32]}-h{digest}-{n}"


def convert(message: Message, options: InboundOptions) -> Conversion:
    """The canonical events of a supported message; Hl7Error (code, location) otherwise."""
    msh = message.header
    code, trigger = msh.message_code, msh.trigger_event
    where = ErrorLocation("MSH", 1, 9)
    if not code:
        raise Hl7Error("MSH-9 (message type) is empty", ErrorCode.REQUIRED_FIELD_MISSING, where)
    triggers = SUPPORTED_MESSAGES.get(code)
    if triggers is None:
        raise Hl7Error(
            f"unsupported message type {msh.message_type}",
            ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
            where,
        )
    if trigger not in triggers:
        raise Hl7Error(
            f"unsupported message type {msh.message_type} (event {trigger or 'missing'})",
            ErrorCode.UNSUPPORTED_EVENT_CODE,
            where,
        )
    if not msh.control_id:
        raise Hl7Error(
            "MSH-10 (message control id) is empty",
            ErrorCode.REQUIRED_FIELD_MISSING,
            ErrorLocation("MSH", 1, 10),
        )
    reader = _Reader(message, options)
    if code == "ADT":
        return reader.patient_identified()
    return reader.vitals_recorded()


class _Reader:
    def __init__(self, message: Message, options: InboundOptions) -> None:
        self.message = message
        self.options = options
        self.msh = message.header
        self.locations: dict[str, ErrorLocation] = {}

    # ------------------------------------------------------------ envelope

    def _envelope(self, n: int, event_type: str, occurred_at: datetime) -> dict[str, Any]:
        prefix = f"events[{n - 1}]"
        incident_at = _location(self.options.incident_field)
        patient_at = _location(self.options.patient_field)
        self.locations[f"{prefix}.incident_id"] = incident_at
        self.locations[f"{prefix}.data.patient_id"] = patient_at
        self.locations[f"{prefix}.patient_ref"] = patient_at
        return {
            "event_id": event_id(self.options.peer, self.msh.control_id, n),
            "type": event_type,
            "incident_id": self._identifier(self.options.incident_field, "incident id"),
            "occurred_at": occurred_at.isoformat(),
            "source": self.options.peer,
        }

    def _identifier(self, path: str, what: str) -> str:
        value = self.message.get(path).strip()
        at = _location(path)
        if not value:
            raise Hl7Error(f"{path} ({what}) is empty", ErrorCode.REQUIRED_FIELD_MISSING, at)
        if not _ID.match(value) or len(value) > 64:
            raise Hl7Error(
                f"{path} ({what}) {value[:40]!r} is not an identifier "
                "(letters, digits and . _ : -, at most 64)",
                ErrorCode.DATA_TYPE_ERROR,
                at,
            )
        return value

    def _time(self, segment: Segment | None, name: str, field_no: int) -> datetime | None:
        if segment is None:
            return None
        value = segment.get(field_no).strip()
        if not value:
            return None
        try:
            return parse_ts(value, self.options.default_tz)
        except ValueError:
            raise Hl7Error(
                f"{name}-{field_no} {value[:30]!r} is not an HL7 date/time",
                ErrorCode.DATA_TYPE_ERROR,
                ErrorLocation(name, 1, field_no),
            ) from None

    def _message_time(self) -> datetime:
        at = self._time(self.message.segment("MSH"), "MSH", 7)
        if at is None:
            raise Hl7Error(
                "MSH-7 (date/time of message) is empty",
                ErrorCode.REQUIRED_FIELD_MISSING,
                ErrorLocation("MSH", 1, 7),
            )
        return at

    def _pid(self) -> Segment:
        pids = self.message.all("PID")
        if not pids:
            raise Hl7Error(
                "the message has no PID segment",
                ErrorCode.SEGMENT_SEQUENCE_ERROR,
                ErrorLocation("PID"),
            )
        if len(pids) > 1:
            raise Hl7Error(
                "only one patient (PID) per message is supported",
                ErrorCode.SEGMENT_SEQUENCE_ERROR,
                ErrorLocation("PID", 2),
            )
        return pids[0]

    # ------------------------------------------------------------ ADT

    def patient_identified(self) -> Conversion:
        pid = self._pid()
        occurred = self._time(self.message.segment("EVN"), "EVN", 2) or self._message_time()
        event = self._envelope(1, "patient.identified", occurred)
        data: dict[str, Any] = {
            "patient_id": self._identifier(self.options.patient_field, "patient id")
        }
        loc = self.locations
        name = _person_name(pid)
        if name:
            data["name"] = name
            loc["events[0].data.name"] = ErrorLocation("PID", 1, 5)
        sex = pid.get(8).strip().upper()
        if sex:
            code = _SEX.get(sex, sex if sex in ("0", "1", "2", "9") else None)
            if code is None:
                raise Hl7Error(
                    f"PID-8 (sex) {sex[:10]!r} is not in table 0001",
                    ErrorCode.TABLE_VALUE_NOT_FOUND,
                    ErrorLocation("PID", 1, 8),
                )
            data["sex"] = code
            loc["events[0].data.sex"] = ErrorLocation("PID", 1, 8)
        birth = self._time(pid, "PID", 7)
        if birth is not None:
            data["birth_date"] = birth.date().isoformat()
            loc["events[0].data.birth_date"] = ErrorLocation("PID", 1, 7)
        for rep in range(1, pid.repetitions(3) + 1):
            authority = pid.get(3, 4, 2, rep=rep)
            if authority == RESIDENT_ID_OID or pid.get(3, 5, rep=rep).upper() == "NN":
                data["resident_id"] = pid.get(3, 1, rep=rep).strip()
                loc["events[0].data.resident_id"] = ErrorLocation("PID", 1, 3, rep)
                break
        phone = (pid.get(13, 1) or pid.get(13, 12)).strip()
        if phone:
            data["phone"] = phone
            loc["events[0].data.phone"] = ErrorLocation("PID", 1, 13)
        address = _address(pid)
        if address:
            data["address"] = address
            loc["events[0].data.address"] = ErrorLocation("PID", 1, 11)
        event["data"] = data
        loc["events[0].data"] = ErrorLocation("PID", 1)
        return Conversion([event], dict(loc))

    # ------------------------------------------------------------ ORU

    def vitals_recorded(self) -> Conversion:
        self._pid()
        fallback = self._time(self.message.segment("OBR"), "OBR", 7) or self._message_time()
        samples: list[dict[str, Any]] = []
        by_time: dict[datetime, list[int]] = {}  # samples per observation time, in order
        read: list[tuple[int, str, int]] = []  # (sample, vital, OBX number): locations
        for n, obx in enumerate(self.message.all("OBX"), start=1):
            name = _vital(obx.components(3))
            if name is None or obx.get(11).strip().upper() in _SKIPPED_STATUS:
                continue
            value = self._value(obx, n, name)
            when = self._time(obx, "OBX", 14) or fallback
            same_time = by_time.setdefault(when, [])
            index = next((i for i in same_time if name not in samples[i]), None)
            if index is None:
                index = len(samples)
                samples.append({"measured_at": when.isoformat()})
                same_time.append(index)
            samples[index][name] = value
            read.append((index, name, n))
        if not samples:
            raise Hl7Error(
                "no vital-sign OBX (OBX-3 a vital-sign LOINC code) in this ORU^R01",
                ErrorCode.REQUIRED_FIELD_MISSING,
                ErrorLocation("OBX", 1, 3),
            )
        event = self._envelope(1, "vitals.recorded", min(by_time))
        event["data"] = {
            "patient_id": self._identifier(self.options.patient_field, "patient id"),
            "samples": samples,
        }
        return Conversion([event], dict(self.locations), tuple(read))

    @staticmethod
    def _value(obx: Segment, n: int, name: str) -> float:
        kind = obx.get(2).strip().upper()
        raw = obx.get(5).strip()
        if kind not in ("", "NM") or not raw:
            raise Hl7Error(
                f"OBX-5 of {obx.get(3, 1)} must be a number (OBX-2 NM), got {kind or '-'} "
                f"{raw[:20]!r}",
                ErrorCode.DATA_TYPE_ERROR,
                ErrorLocation("OBX", n, 5 if kind in ("", "NM") else 2),
            )
        try:
            value = float(raw)
        except ValueError:
            raise Hl7Error(
                f"OBX-5 {raw[:20]!r} is not a number",
                ErrorCode.DATA_TYPE_ERROR,
                ErrorLocation("OBX", n, 5),
            ) from None
        ucum = VITAL_SIGN_CODES[name].ucum
        unit = obx.get(6, 1).strip()
        if not unit:
            return value
        convert_unit = _UNITS.get(ucum, {}).get(unit)
        if convert_unit is None:
            raise Hl7Error(
                f"OBX-6 unit {unit[:20]!r} is not understood for {name} (expected {ucum})",
                ErrorCode.DATA_TYPE_ERROR,
                ErrorLocation("OBX", n, 6),
            )
        return round(convert_unit(value), 2)


def _vital(code: list[str]) -> str | None:
    """The vital sign an OBX-3 (its components) codes: LOINC as the identifier or as
    the alternate identifier."""
    for code_at, system_at in ((0, 2), (3, 5)):
        value = code[code_at].strip() if len(code) > code_at else ""
        system = code[system_at].strip().upper() if len(code) > system_at else ""
        if value and system in ("", "LN", "LOINC") and value in _LOINC:
            return _LOINC[value]
    return None


@lru_cache(maxsize=256)  # the listener's few configured paths, read for every message
def _location(path: str) -> ErrorLocation:
    m = re.match(r"^([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?-(\d+)(?:\[(\d+)\])?(?:\.(\d+))?", path)
    if m is None:
        return ErrorLocation("MSH")
    seg, occ, fld, rep, comp = m.groups()
    return ErrorLocation(
        seg, int(occ or 1), int(fld), int(rep) if rep else None, int(comp) if comp else None
    )


def _cjk(text: str) -> bool:
    return any(unicodedata.east_asian_width(c) in ("W", "F") for c in text)


def _person_name(pid: Segment) -> str | None:
    family = pid.get(5, 1, 1).strip()
    given = pid.get(5, 2).strip()
    middle = pid.get(5, 3).strip()
    if _cjk(family + given + middle):
        name = family + given + middle  # 姓 then 名, no space
    else:
        name = " ".join(p for p in (given, middle, family) if p)
    return name or None


def _address(pid: Segment) -> dict[str, Any] | None:
    street = pid.get(11, 1, 1).strip()
    other = pid.get(11, 2).strip()
    city = pid.get(11, 3).strip()
    province = pid.get(11, 4).strip()
    postcode = pid.get(11, 5).strip()
    parts = [street, other, city, province, postcode]
    if _cjk("".join(parts)):
        text = "".join(p for p in (province, city, street, other) if p)
    else:
        text = ", ".join(p for p in parts if p)
    if not text:
        return None
    address: dict[str, Any] = {"text": text}
    if province:
        address["province"] = province
    if city:
        address["city"] = city
    return address
