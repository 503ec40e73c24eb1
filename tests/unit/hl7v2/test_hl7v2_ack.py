"""Building and reading ACKs."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.hl7v2 import ack as ack_module
from hub.hl7v2.ack import AckCode, ErrorDetail, ack_wanted, build_ack, read_ack
from hub.hl7v2.er7 import format_ts, parse_message, read_msh
from hub.hl7v2.errors import ErrorCode, ErrorLocation, Hl7Error

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from hl7apy.parser import parse_message as hl7apy_parse

CST = timezone(timedelta(hours=8))
AT = datetime(2026, 11, 25, 8, 0, 5, tzinfo=CST)
RECEIVED = (
    "MSH|^~\\&|EMS^1.2.3^ISO|TJ120|HIS|HOSP|20261125080000+0800||ADT^A04^ADT_A01|"
    "CTL-42|P|2.5.1|||||CHN|GB 18030-2000\rPID|||1\r"
)


def test_ack_swaps_sender_and_receiver_and_echoes_control_id() -> None:
    text = build_ack(read_msh(RECEIVED), AckCode.AA, control_id="ACK1", timestamp=AT)
    m = parse_message(text)
    assert m.raw("MSH-3") == "HIS"
    assert m.raw("MSH-4") == "HOSP"
    assert m.raw("MSH-5") == "EMS^1.2.3^ISO"
    assert m.raw("MSH-6") == "TJ120"
    assert m.get("MSH-7") == "20261125080005+0800"
    assert m.raw("MSH-9") == "ACK^A04^ACK"
    assert m.get("MSH-10") == "ACK1"
    assert m.get("MSH-11") == "P"
    assert m.get("MSH-12") == "2.5.1"
    assert m.get("MSH-18") == "GB 18030-2000"
    assert m.get("MSA-1") == "AA"
    assert m.get("MSA-2") == "CTL-42"
    assert m.segment("ERR") is None


def test_nak_with_err_segments() -> None:
    errors = [
        ErrorDetail(
            ErrorCode.REQUIRED_FIELD_MISSING, "PV1-19 is empty", ErrorLocation("PV1", 1, 19)
        ),
        ErrorDetail(ErrorCode.TABLE_VALUE_NOT_FOUND, "PID-8 'Q'", ErrorLocation("PID", 1, 8)),
    ]
    text = build_ack(read_msh(RECEIVED), "AE", control_id="ACK2", timestamp=AT, errors=errors)
    m = parse_message(text)
    assert m.get("MSA-1") == "AE"
    assert m.get("MSA-3") == "PV1-19 is empty"
    first, second = m.all("ERR")
    assert first.raw(2) == "PV1^1^19"
    assert first.raw(3) == "101^Required field missing^HL70357"
    assert first.get(4) == "E"
    assert first.get(8) == "PV1-19 is empty"
    assert second.raw(2) == "PID^1^8"
    assert second.get(3) == "103"
    result = read_ack(text)
    assert result.code == "AE"
    assert result.control_id == "CTL-42"
    assert result.error_codes == ("101", "103")
    assert result.error_text == "PV1-19 is empty; PID-8 'Q'"
    assert not result.enhanced
    assert result.ack_control_id == "ACK2"


def test_ack_of_unreadable_message() -> None:
    text = build_ack(
        None,
        AckCode.AR,
        control_id="ACK3",
        timestamp=AT,
        errors=[ErrorDetail(ErrorCode.SEGMENT_SEQUENCE_ERROR, "not HL7 | at all")],
    )
    m = parse_message(text)
    assert m.raw("MSH-9") == "ACK^^ACK"
    assert m.get("MSA-2") == ""
    assert m.get("ERR-8") == "not HL7 | at all"
    assert m.get("MSH-12") == "2.5.1"


@pytest.mark.parametrize("code", list(AckCode))
def test_every_code_parses_with_hl7apy(code: AckCode) -> None:
    text = build_ack(
        read_msh(RECEIVED),
        code,
        control_id="ACK4",
        timestamp=AT,
        errors=[ErrorDetail(ErrorCode.APPLICATION_INTERNAL_ERROR, "boom", ErrorLocation("MSH"))],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        message = hl7apy_parse(text, find_groups=False)
    assert message.msa.msa_1.to_er7() == code.value
    assert message.msa.msa_2.to_er7() == "CTL-42"
    assert message.err.err_3.to_er7() == "207^Application internal error^HL70357"
    assert read_ack(text.encode("gb18030")).code == code.value
    assert read_ack(text).enhanced is code.enhanced


def test_long_text_is_cut_in_msa3_but_whole_in_err8() -> None:
    long = "x" * 200
    text = build_ack(
        read_msh(RECEIVED),
        AckCode.AE,
        control_id="A",
        timestamp=AT,
        errors=[ErrorDetail(ErrorCode.DATA_TYPE_ERROR, long)],
    )
    m = parse_message(text)
    assert len(m.get("MSA-3")) == 80
    assert m.get("ERR-8") == long


def test_read_ack_falls_back_to_msa3_and_refuses_non_acks() -> None:
    result = read_ack("MSH|^~\\&|H||||||ACK|9|P|2.3\rMSA|AR|CTL-1|system busy\r")
    assert (result.code, result.control_id, result.error_text) == ("AR", "CTL-1", "system busy")
    with pytest.raises(Hl7Error):
        read_ack("MSH|^~\\&|H||||||ADT^A04|9|P|2.5.1\rPID|1\r")


def test_code_helpers() -> None:
    assert AckCode.AE.commit_level() is AckCode.CE
    assert AckCode.CR.application_level() is AckCode.AR
    assert AckCode.CA.accepted and AckCode.CA.enhanced
    assert AckCode.AR.rejected and not AckCode.AR.enhanced
    assert ErrorCode.UNSUPPORTED_MESSAGE_TYPE.text == "Unsupported message type"
    assert str(ErrorLocation("PID", 1, 3, 2, 4)) == "PID^1^3^2^4"
    assert str(ErrorLocation("MSH")) == "MSH^1"


@pytest.mark.parametrize(
    ("mode", "ok", "wanted"),
    [
        ("AL", True, True),
        ("AL", False, True),
        ("NE", True, False),
        ("ER", True, False),
        ("ER", False, True),
        ("SU", True, True),
        ("SU", False, False),
        ("", False, True),
    ],
)
def test_ack_wanted(mode: str, ok: bool, wanted: bool) -> None:
    assert ack_wanted(mode, ok) is wanted


_FIELD_TEXT = st.text(alphabet="AB1 .^~\\&#中\x01\ue000", max_size=6)


@given(
    fields=st.lists(_FIELD_TEXT, min_size=16, max_size=16),
    control_ids=st.lists(_FIELD_TEXT, min_size=2, max_size=2),
    code=st.sampled_from(list(AckCode)),
    charset=st.sampled_from([None, "", "UNICODE UTF-8"]),
)
def test_an_accept_from_a_kept_template_is_the_one_built_in_full(
    fields: list[str], control_ids: list[str], code: AckCode, charset: str | None
) -> None:
    # Each later reply to the same header (another control id, or another sender named)
    # may come from a template an earlier one left; each must be the one built in full.
    for sender in [(None, None), ("HIS", "医院^1.2&3"), (None, None)]:
        for number, control_id in enumerate(control_ids):
            values = [*fields]
            values[9] = control_id  # MSH-10
            try:
                received = read_msh("MSH|^~\\&|" + "|".join(values[2:]) + "\r")
            except Hl7Error:
                return
            when = AT + timedelta(seconds=number)
            built = ack_module._ack_text(
                received, code, f"ACK{number}", format_ts(when), None, (), charset, *sender
            )
            answer = build_ack(
                received,
                code,
                control_id=f"ACK{number}",
                timestamp=when,
                charset=charset,
                sending_application=sender[0],
                sending_facility=sender[1],
            )
            assert answer == built
