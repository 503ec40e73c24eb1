"""Building and reading HL7 v2 acknowledgements (ACK with MSA and ERR).

Original mode (MSH-15 and MSH-16 both empty): one reply, AA accept, AE error (fix and
resend), AR reject (resend unchanged later). Enhanced mode: the accept acknowledgement
says CA/CE/CR (the receiver committed, or could not commit, the message to safe
storage) and, where MSH-16 asks for it, an application acknowledgement AA/AE/AR
follows. Building is pure: the caller passes the control id and the time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache

from hub.hl7v2.er7 import (
    DEFAULT_SEPARATORS,
    HOLE,
    Er7Writer,
    Message,
    MshHeader,
    Raw,
    decode,
    format_ts,
    parse_message,
    template_parts,
)
from hub.hl7v2.errors import ErrorCode, ErrorLocation, Hl7Error

__all__ = [
    "AckCode",
    "AckResult",
    "ErrorDetail",
    "ack_wanted",
    "build_ack",
    "read_ack",
]

DEFAULT_VERSION = "2.5.1"


class AckCode(StrEnum):
    """MSA-1 (HL7 table 0008)."""

    AA = "AA"  # application accept
    AE = "AE"  # application error
    AR = "AR"  # application reject
    CA = "CA"  # commit accept (enhanced mode)
    CE = "CE"  # commit error
    CR = "CR"  # commit reject

    @property
    def enhanced(self) -> bool:
        """A commit (accept-level) acknowledgement of enhanced mode."""
        return self.value[0] == "C"

    @property
    def accepted(self) -> bool:
        return self.value[1] == "A"

    @property
    def error(self) -> bool:
        return self.value[1] == "E"

    @property
    def rejected(self) -> bool:
        return self.value[1] == "R"

    def commit_level(self) -> AckCode:
        """The enhanced-mode (C*) code with the same meaning."""
        return AckCode("C" + self.value[1])

    def application_level(self) -> AckCode:
        """The application (A*) code with the same meaning."""
        return AckCode("A" + self.value[1])


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One ERR segment: what is wrong (table 0357), where, and how bad."""

    code: ErrorCode
    text: str
    location: ErrorLocation | None = None
    severity: str = "E"  # table 0516: E error, W warning, I information, F fatal

    @classmethod
    def from_error(cls, error: Hl7Error) -> ErrorDetail:
        return cls(error.code, error.message, error.location)


@dataclass(frozen=True, slots=True)
class AckResult:
    """What a partner's acknowledgement said."""

    code: str  # MSA-1 as sent: AA/AE/AR/CA/CE/CR (or whatever a faulty peer wrote)
    control_id: str  # MSA-2: the MSH-10 of the message acknowledged
    error_text: str | None  # ERR-8/ERR-3.2/MSA-3, for people
    enhanced: bool  # a commit (CA/CE/CR) acknowledgement
    error_codes: tuple[str, ...] = ()  # ERR-3.1 of each ERR segment
    ack_control_id: str = ""  # the ACK's own MSH-10


def ack_wanted(mode: str, ok: bool) -> bool:
    """Whether an acknowledgement is due under MSH-15/MSH-16 ``mode`` (table 0155).

    AL always, NE never, ER only on error, SU only on success; empty means always (the
    original-mode default).
    """
    mode = mode.strip().upper()
    if mode == "NE":
        return False
    if mode == "ER":
        return not ok
    if mode == "SU":
        return ok
    return True


def build_ack(
    received: MshHeader | None,
    code: AckCode | str,
    *,
    control_id: str,
    timestamp: datetime,
    text: str | None = None,
    errors: Sequence[ErrorDetail] = (),
    charset: str | None = None,
    sending_application: str | None = None,
    sending_facility: str | None = None,
) -> str:
    """The ACK (or NAK) text answering ``received``, CR-terminated segments.

    Sender and receiver are swapped from the received MSH; MSH-9 is
    ``ACK^<trigger>^ACK``; MSA-2 echoes the received MSH-10; one ERR segment per error
    (ERR-2 location, ERR-3 table 0357 code, ERR-4 severity, ERR-8 text). ``received`` may
    be None when nothing could be read (MSA-2 is then empty). ``charset`` (an HL7 name)
    goes in MSH-18 and defaults to the received MSH-18; encode the result with it.
    """
    ack_code = AckCode(code)
    stamp = format_ts(timestamp)
    if received is not None and text is None and not errors:
        template = _template(received, ack_code, charset, sending_application, sending_facility)
        if template is not None:
            head, middle, tail = template
            return head + stamp + middle + control_id + tail + received.fields[10] + "\r"
    return _ack_text(
        received,
        ack_code,
        control_id,
        stamp,
        text,
        errors,
        charset,
        sending_application,
        sending_facility,
    )


def _ack_text(
    received: MshHeader | None,
    ack_code: AckCode,
    control_id: str,
    stamp: str,
    text: str | None,
    errors: Sequence[ErrorDetail],
    charset: str | None,
    sending_application: str | None,
    sending_facility: str | None,
) -> str:
    seps = received.separators if received is not None else DEFAULT_SEPARATORS
    trigger = received.trigger_event if received is not None else ""
    msh18 = charset if charset is not None else (received.charset if received else "")
    version = (received.version if received is not None else "") or DEFAULT_VERSION
    processing = (received.processing_id if received is not None else "") or "P"
    writer = Er7Writer(seps)
    writer.msh(
        sending_application if sending_application is not None else _copy(received, 5),
        sending_facility if sending_facility is not None else _copy(received, 6),
        _copy(received, 3),
        _copy(received, 4),
        Raw(stamp),
        None,
        ["ACK", trigger or None, "ACK"],
        control_id,
        processing,
        version,
        None,
        None,
        None,
        None,
        None,
        msh18 or None,
    )
    first = text if text is not None else (errors[0].text if errors else None)
    writer.segment(
        "MSA",
        ack_code.value,
        received.control_id if received is not None else None,
        _msa3(first),
    )
    for error in errors:
        writer.segment(
            "ERR",
            None,
            error.location.parts() if error.location is not None else None,
            [str(int(error.code)), error.code.text, "HL70357"],
            error.severity,
            None,
            None,
            None,
            error.text,
        )
    return writer.text()


_MSA2 = "0"  # stands for MSA-2 in the header a template is built from


def _template(
    received: MshHeader,
    ack_code: AckCode,
    charset: str | None,
    sending_application: str | None,
    sending_facility: str | None,
) -> tuple[str, str, str] | None:
    """(before the time, between time and control id, between that and MSA-2), or None
    when this header's control id does not allow a template.

    An accept without errors differs from the last one to the same sender only in its
    time, its control id and MSA-2: the rest is built once per kind of header, from the
    fields the reply copies (MSH-3 to 6, 9, 11, 12 and 18), and kept.
    """
    fields = received.fields
    if len(fields) <= 10 or not _verbatim(fields[10], received):
        return None
    field = received.field
    copied = (*fields[:7], "", "", field(9), _MSA2, field(11), field(12), "", "", "", "", "")
    header = MshHeader(received.separators, (*copied, field(18)))
    return _built_template(header, ack_code, charset, sending_application, sending_facility)


@lru_cache(maxsize=256)
def _built_template(
    header: MshHeader,
    ack_code: AckCode,
    charset: str | None,
    sending_application: str | None,
    sending_facility: str | None,
) -> tuple[str, str, str] | None:
    full = _ack_text(
        header, ack_code, HOLE, HOLE, None, (), charset, sending_application, sending_facility
    )
    parts = template_parts(full, 2)  # the time and the control id
    if parts is None or not parts[2].endswith(_MSA2 + "\r"):
        return None  # a copied field held the stand-in
    head, middle, rest = parts
    return head, middle, rest[: -len(_MSA2) - 1]


def _verbatim(value: str, received: MshHeader) -> bool:
    """Whether the control id is written back as it came: not empty, no separator,
    escape or control character in it (those would be escaped in MSA-2)."""
    seps = received.separators
    return (
        value != ""
        and value.isprintable()
        and seps.field not in value
        and seps.component not in value
        and seps.repetition not in value
        and seps.escape not in value
        and seps.subcomponent not in value
        and (seps.truncation is None or seps.truncation not in value)
    )


def _copy(received: MshHeader | None, field: int) -> Raw | None:
    # Copied as written (an HD keeps its components); control characters a faulty
    # sender put there are escaped so they can never end the reply's frame early.
    if received is None:
        return None
    value = received.field(field)
    if not value:
        return None
    return Raw(value.translate(_CONTROL_ESCAPES[received.separators.escape]))


class _ControlEscapes(dict[str, dict[int, str]]):
    def __missing__(self, escape: str) -> dict[int, str]:
        table = {c: f"{escape}X{c:02X}{escape}" for c in (*range(0x20), 0x7F)}
        self[escape] = table
        return table


_CONTROL_ESCAPES = _ControlEscapes()


def _msa3(text: str | None) -> str | None:
    # MSA-3 is kept for receivers that predate ERR; it is an 80-character ST.
    if not text:
        return None
    return text if len(text) <= 80 else text[:79] + "…"


def read_ack(data: bytes | str | Message, *, default_charset: str = "utf-8") -> AckResult:
    """Read a partner's acknowledgement; Hl7Error when it has no MSA segment.

    Bytes are decoded by their MSH-18, else ``default_charset``.
    """
    if isinstance(data, Message):
        message = data
    elif isinstance(data, bytes):
        decoded = decode(data, default_charset)
        message = parse_message(decoded.text, decoded.codec)
    else:
        message = parse_message(data)
    msa = message.segment("MSA")
    if msa is None:
        raise Hl7Error(
            "the reply has no MSA segment",
            ErrorCode.SEGMENT_SEQUENCE_ERROR,
            ErrorLocation("MSA"),
        )
    code = msa.get(1).strip().upper()
    texts: list[str] = []
    codes: list[str] = []
    for err in message.all("ERR"):
        error_code = err.get(3, 1)
        if error_code:
            codes.append(error_code)
        detail = err.get(8) or err.get(7) or err.get(3, 2) or err.get(1, 4, 2)
        if detail:
            texts.append(detail)
    if not texts and msa.get(3):
        texts.append(msa.get(3))
    return AckResult(
        code=code,
        control_id=msa.get(2),
        error_text="; ".join(texts) or None,
        enhanced=code in ("CA", "CE", "CR"),
        error_codes=tuple(codes),
        ack_control_id=message.header.control_id,
    )
