"""An HL7 v2 ADT^A04 for tests, as a HIS, an ePCR system or the hub writes one.

One builder for the reader, listener and connector tests, so they exercise the same
message and differ only where a test says so.
"""

from __future__ import annotations

from hub.hl7v2.er7 import Er7Writer, Repeat
from hub.model.identifiers import RESIDENT_ID_OID

__all__ = ["INCIDENT", "RESIDENT_ID", "sample_adt"]

RESIDENT_ID = "110101199003070011"  # a resident ID card number with a valid check digit
INCIDENT = "TJ120-20261125-0001"
AT = "20261125080000+0800"


def sample_adt(
    control_id: str = "MSG0001",
    *,
    sender: tuple[str, str] = ("HUB", "120"),
    receiver: tuple[str, str] = ("HIS", "H1"),
    kind: tuple[str, str] = ("ADT", "A04"),
    ack: tuple[str, str] | None = None,
    charset: str | None = "UNICODE UTF-8",
    name: tuple[str, str] = ("张", "三"),
    sex: str = "M",
    patient_id: str = "P0001",
    resident_id: str = RESIDENT_ID,
    incident: str = INCIDENT,
    note: str | None = None,
) -> Er7Writer:
    """``ack``: MSH-15/16 (enhanced mode); ``charset``: MSH-18, None to leave it empty;
    ``note``: an NTE segment."""
    structure = "ADT_A01" if kind == ("ADT", "A04") else None
    writer = Er7Writer()
    writer.msh(
        *sender,
        *receiver,
        AT,
        None,
        [*kind, structure],
        control_id,
        "P",
        "2.5.1",
        None,
        None,
        ack[0] if ack else None,
        ack[1] if ack else None,
        "CHN",
        charset,
    )
    writer.segment("EVN", kind[1], AT)
    writer.segment(
        "PID",
        "1",
        None,
        Repeat(
            [patient_id, None, None, [sender[0]], "PI"],
            [resident_id, None, None, ["", RESIDENT_ID_OID, "ISO"], "NN"],
        ),
        None,
        list(name),
        None,
        "19900307",
        sex,
    )
    writer.segment("PV1", "1", "E", None, "E", *([None] * 14), incident)
    if note is not None:
        writer.segment("NTE", "1", None, note)
    return writer
