"""What went wrong with a received HL7 v2 message, in the terms an ACK reports it.

Every parse or conversion failure carries an HL7 table 0357 error code and, when known,
the location of the offending element, so a NAK can tell the sender what to fix.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

__all__ = ["ErrorCode", "ErrorLocation", "Hl7Error"]


class ErrorCode(IntEnum):
    """HL7 table 0357, message error condition codes."""

    ACCEPTED = 0
    SEGMENT_SEQUENCE_ERROR = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE_ERROR = 102
    TABLE_VALUE_NOT_FOUND = 103
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT_CODE = 201
    UNSUPPORTED_PROCESSING_ID = 202
    UNSUPPORTED_VERSION_ID = 203
    UNKNOWN_KEY_IDENTIFIER = 204
    DUPLICATE_KEY_IDENTIFIER = 205
    APPLICATION_RECORD_LOCKED = 206
    APPLICATION_INTERNAL_ERROR = 207

    @property
    def text(self) -> str:
        """The table's display text, used as ERR-3.2."""
        return _TEXTS[self]


_TEXTS = {
    ErrorCode.ACCEPTED: "Message accepted",
    ErrorCode.SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    ErrorCode.REQUIRED_FIELD_MISSING: "Required field missing",
    ErrorCode.DATA_TYPE_ERROR: "Data type error",
    ErrorCode.TABLE_VALUE_NOT_FOUND: "Table value not found",
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    ErrorCode.UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    ErrorCode.UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    ErrorCode.UNSUPPORTED_VERSION_ID: "Unsupported version id",
    ErrorCode.UNKNOWN_KEY_IDENTIFIER: "Unknown key identifier",
    ErrorCode.DUPLICATE_KEY_IDENTIFIER: "Duplicate key identifier",
    ErrorCode.APPLICATION_RECORD_LOCKED: "Application record locked",
    ErrorCode.APPLICATION_INTERNAL_ERROR: "Application internal error",
}


class ErrorLocation(NamedTuple):
    """ERR-2 (data type ERL): segment id, segment sequence, field position and below.

    A tuple: the inbound converter records one per field it reads, before knowing
    whether any will be reported.
    """

    segment: str
    sequence: int = 1
    field: int | None = None
    repetition: int | None = None
    component: int | None = None
    subcomponent: int | None = None

    def parts(self) -> list[str]:
        """The ERL components, trailing empty ones dropped."""
        values = [
            self.segment,
            str(self.sequence),
            *(
                "" if v is None else str(v)
                for v in (self.field, self.repetition, self.component, self.subcomponent)
            ),
        ]
        while values and not values[-1]:
            values.pop()
        return values

    def __str__(self) -> str:
        return "^".join(self.parts())


class Hl7Error(ValueError):
    """A received message the hub cannot take, with the ERR code and location to report."""

    def __init__(
        self,
        message: str,
        code: ErrorCode = ErrorCode.APPLICATION_INTERNAL_ERROR,
        location: ErrorLocation | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.location = location
