"""The ER7 reader and writer: paths, escaping, charsets, and agreement with python-hl7
and hl7apy (hl7apy only here, never on the hot path)."""

from __future__ import annotations

import re
import warnings
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import hl7
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.hl7v2.er7 import (
    DEFAULT_SEPARATORS,
    Er7Writer,
    Raw,
    Repeat,
    Separators,
    build_segment,
    codec_for,
    decode,
    escape,
    format_ts,
    hl7_charset_name,
    parse_message,
    parse_ts,
    read_msh,
    split_messages,
    unescape,
)
from hub.hl7v2.errors import ErrorCode, Hl7Error
from hub.testing.hl7v2 import RESIDENT_ID, sample_adt

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from hl7apy.parser import parse_message as hl7apy_parse

CST = timezone(timedelta(hours=8))


def adt(**changes: Any) -> Er7Writer:
    """The shared sample ADT in enhanced mode, with a note (the reader tests read both)."""
    return sample_adt(**{"ack": ("AL", "NE"), "note": "胸痛", **changes})


def test_writer_output_is_plain_er7() -> None:
    text = adt().text()
    assert text.startswith("MSH|^~\\&|HUB|120|HIS|H1|20261125080000+0800||ADT^A04^ADT_A01|")
    assert text.endswith("\r")
    assert "\n" not in text
    assert (
        "PID|1||P0001^^^HUB^PI~110101199003070011^^^&2.16.156.10011.1.3&ISO^NN||张^三||19900307|M\r"
        in text
    )


def test_reader_paths() -> None:
    m = parse_message(adt().text())
    assert m.get("MSH-9") == "ADT"
    assert m.get("MSH-9.2") == "A04"
    assert m.raw("MSH-9") == "ADT^A04^ADT_A01"
    assert m.get("MSH-1") == "|"
    assert m.get("MSH-2") == "^~\\&"
    assert m.get("MSH-10") == "MSG0001"
    assert m.get("PID-3") == "P0001"
    assert m.get("PID-3[2].1") == RESIDENT_ID
    assert m.get("PID-3[2].4.2") == "2.16.156.10011.1.3"
    assert m.get("PID-3[3].1") == ""
    assert m.get("PID-5.1") + m.get("PID-5.2") == "张三"
    assert m.get("PV1-19") == "TJ120-20261125-0001"
    assert m.get("ZZZ-1") == ""
    assert m.get("PID-99.3") == ""
    pid = m.segment("PID")
    assert pid is not None
    assert pid.repetitions(3) == 2
    assert pid.repetitions(4) == 0
    header = m.header
    assert (header.message_type, header.structure, header.version) == (
        "ADT^A04",
        "ADT_A01",
        "2.5.1",
    )
    assert header.charset == "UNICODE UTF-8"
    assert header.enhanced_mode


def test_segment_occurrence_path() -> None:
    text = "MSH|^~\\&|A\rOBX|1|NM|8867-4^HR^LN||80\rOBX|2|NM|9279-1^RR^LN||18\r"
    m = parse_message(text)
    assert m.get("OBX[2]-5") == "18"
    assert m.get("OBX-5") == "80"
    assert len(m.all("OBX")) == 2


@pytest.mark.parametrize("bad", ["PID", "PID-", "pid-3", "PID-0x", "PID-3.0", "PID[0]-3"])
def test_bad_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_message("MSH|^~\\&|A\r").get(bad)


@pytest.mark.parametrize("end", ["\r", "\n", "\r\n"])
def test_segment_ends_cr_lf_crlf(end: str) -> None:
    text = adt().text().replace("\r", end)
    m = parse_message(text)
    assert [s.name for s in m] == ["MSH", "EVN", "PID", "PV1", "NTE"]
    assert m.get("PV1-19") == "TJ120-20261125-0001"


def test_custom_delimiters_are_read_from_msh() -> None:
    seps = Separators("#", "!", "*", "$", "%")
    writer = Er7Writer(seps).msh(
        "A", None, None, None, None, None, ["ADT", "A08"], "X1", "P", "2.5.1"
    )
    writer.segment("PID", None, None, "id#with!delims", None, ["王", "五"])
    m = parse_message(writer.text())
    assert m.separators == seps
    assert m.get("MSH-9.2") == "A08"
    assert m.get("PID-3") == "id#with!delims"
    assert m.get("PID-5.2") == "五"
    assert m.raw("PID-3") == "id$F$with$S$delims"


def test_escape_rules() -> None:
    assert escape("a|b^c~d\\e&f") == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f"
    assert escape("line1\rline2\n") == "line1\\X0D\\line2\\X0A\\"
    assert escape("\x0b\x1c") == "\\X0B\\\\X1C\\"
    assert escape("张三") == "张三"
    assert unescape("\\H\\bold\\N\\") == "\\H\\bold\\N\\"  # not interpreted: kept
    assert unescape("a\\.br\\b") == "a\nb"
    assert unescape("dangling \\F") == "dangling \\F"
    assert unescape("\\XE5BCA0\\") == "张"  # hex bytes decoded with the message charset
    assert unescape("\\XE5BC\\") == "\\XE5BC\\"  # half a character: kept, not guessed


def test_writer_value_kinds() -> None:
    fields = [
        "1",
        "NM",
        ["8867-4", "Heart rate", "LN"],
        None,
        88,
        Decimal("36.5"),
        1.5,
        Raw("a^b"),
        ["x", ["s1", "s2"]],
        "",
        None,
    ]
    seg = build_segment("OBX", fields)
    assert seg == "OBX|1|NM|8867-4^Heart rate^LN||88|36.5|1.5|a^b|x^s1&s2"
    with pytest.raises(TypeError):
        build_segment("OBX", [True])
    with pytest.raises(ValueError):
        build_segment("TOOLONG", [])
    assert build_segment("MSH", []) == "MSH|^~\\&"
    assert build_segment("NTE", []) == "NTE"
    assert repr(Repeat("a", "b")) == "Repeat('a', 'b')"


def test_charset_names() -> None:
    assert codec_for("UNICODE UTF-8") == "utf-8"
    assert codec_for("GB 18030-2000") == "gb18030"
    assert codec_for("gbk") == "gb18030"
    assert codec_for("8859/1") == "iso8859-1"
    assert codec_for("latin-1") == "iso8859-1"
    assert codec_for("UNICODE UTF-16") is None
    assert codec_for("utf-16") is None
    assert codec_for("cp500") is None  # EBCDIC would break the delimiters
    assert codec_for("no such charset") is None
    assert hl7_charset_name("gb18030") == "GB 18030-2000"
    assert hl7_charset_name("UTF8") == "UNICODE UTF-8"
    with pytest.raises(ValueError):
        hl7_charset_name("koi8-r")


@pytest.mark.parametrize(
    ("charset", "default", "codec"),
    [
        ("UNICODE UTF-8", "gb18030", "utf-8"),
        ("GB 18030-2000", "utf-8", "gb18030"),
        (None, "gb18030", "gb18030"),
        (None, "utf-8", "utf-8"),
    ],
)
def test_decode_by_msh18_or_peer_default(charset: str | None, default: str, codec: str) -> None:
    raw = adt(charset=charset, name=("欧阳", "娜娜")).encode(codec)
    decoded = decode(raw, default)
    assert decoded.codec == codec
    assert decoded.declared == charset
    assert parse_message(decoded.text).get("PID-5.1") == "欧阳"


def test_latin1_declared() -> None:
    raw = adt(charset="8859/1", name=("Müller", "Zoë"), note="chest pain").encode("latin-1")
    decoded = decode(raw, "gb18030")
    assert decoded.codec == "iso8859-1"
    assert parse_message(decoded.text).get("PID-5.2") == "Zoë"


def test_gb18030_second_byte_equal_to_the_field_separator() -> None:
    # 縷 is 0xBF 0x7C in GB18030: a byte-level split would see an extra "|" in MSH-4.
    assert "縷".encode("gb18030")[1:] == b"|"
    raw = adt(charset="GB 18030-2000", sender=("HUB", "縷礬医院")).encode("gb18030")
    decoded = decode(raw, "utf-8")
    assert decoded.codec == "gb18030"
    m = parse_message(decoded.text)
    assert m.get("MSH-4") == "縷礬医院"
    assert m.get("MSH-10") == "MSG0001"


def test_declared_utf8_but_gbk_bytes_is_a_data_type_error() -> None:
    raw = adt(charset="UNICODE UTF-8").text().encode("gb18030")
    with pytest.raises(Hl7Error) as info:
        decode(raw, "gb18030")
    assert info.value.code is ErrorCode.DATA_TYPE_ERROR
    assert str(info.value.location) == "MSH^1^18"


def test_unknown_charset_is_table_value_not_found() -> None:
    raw = adt(charset="KLINGON-8").encode("utf-8")
    with pytest.raises(Hl7Error) as info:
        decode(raw, "utf-8")
    assert info.value.code is ErrorCode.TABLE_VALUE_NOT_FOUND


def test_undecodable_without_msh18() -> None:
    raw = adt(charset=None).encode("gb18030")
    with pytest.raises(Hl7Error) as info:
        decode(raw, "utf-8")
    assert info.value.code is ErrorCode.DATA_TYPE_ERROR


def test_utf8_bom_is_honoured() -> None:
    raw = b"\xef\xbb\xbf" + adt(charset=None).encode("utf-8")
    assert decode(raw, "gb18030").codec == "utf-8"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", ErrorCode.SEGMENT_SEQUENCE_ERROR),
        (b"hello world", ErrorCode.SEGMENT_SEQUENCE_ERROR),
        (b"PID|1", ErrorCode.SEGMENT_SEQUENCE_ERROR),
        (b"MSH|^~", ErrorCode.DATA_TYPE_ERROR),
        (b"MSH|^^\\&|", ErrorCode.DATA_TYPE_ERROR),
        (b"MSHA^~\\&A", ErrorCode.DATA_TYPE_ERROR),
    ],
)
def test_not_hl7(raw: bytes, code: ErrorCode) -> None:
    with pytest.raises(Hl7Error) as info:
        decode(raw, "utf-8")
    assert info.value.code is code
    with pytest.raises(Hl7Error):
        read_msh(raw)


def test_bad_segment_id() -> None:
    with pytest.raises(Hl7Error) as info:
        parse_message("MSH|^~\\&|A\r|no name\r")
    assert info.value.code is ErrorCode.SEGMENT_SEQUENCE_ERROR


def test_times() -> None:
    assert parse_ts("20261125080000+0800") == datetime(2026, 11, 25, 8, tzinfo=CST)
    assert parse_ts("20261125080000", CST) == datetime(2026, 11, 25, 8, tzinfo=CST)
    assert parse_ts("202611250800") == datetime(2026, 11, 25, 8, tzinfo=UTC)
    assert parse_ts("20261125080000.25-0500").microsecond == 250000
    assert parse_ts("19900307").date().isoformat() == "1990-03-07"
    assert format_ts(datetime(2026, 11, 25, 8, tzinfo=CST)) == "20261125080000+0800"
    assert format_ts(
        datetime(2026, 11, 25, 8, tzinfo=timezone(-timedelta(hours=5, minutes=30)))
    ).endswith("-0530")
    with pytest.raises(ValueError):
        parse_ts("yesterday")
    with pytest.raises(ValueError):
        format_ts(datetime(2026, 11, 25))  # naive on purpose
    # One instant in two offsets: equal datetimes, each written in its own offset.
    beijing = datetime(2026, 11, 25, 8, tzinfo=CST)
    for _ in range(2):
        assert format_ts(beijing) == "20261125080000+0800"
        assert format_ts(beijing.astimezone(UTC)) == "20261125000000+0000"
        assert format_ts(beijing.replace(microsecond=999_999)) == "20261125080000+0800"


# ------------------------------------------------------------------ properties

any_text = st.text(max_size=40)
chinese = st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=12)
delims = st.text(alphabet="|^~\\&\r\n#", max_size=8)
field_text = st.one_of(
    any_text,
    chinese,
    delims,
    st.lists(st.one_of(chinese, delims, any_text), max_size=4).map("".join),
)


@settings(max_examples=250)
@given(value=field_text)
def test_escape_round_trip(value: str) -> None:
    escaped = escape(value)
    assert not set(escaped) & set("|^~&\r\n\x0b\x1c")
    assert unescape(escaped) == value


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=field_text,
    given_name=field_text,
    note=field_text,
    charset=st.sampled_from(["utf-8", "gb18030"]),
)
def test_any_text_survives_write_then_read(
    family: str, given_name: str, note: str, charset: str
) -> None:
    writer = adt(name=(family, given_name), note=note, charset=hl7_charset_name(charset))
    raw = writer.encode(charset)
    assert b"\x0b" not in raw and b"\x1c" not in raw
    decoded = decode(raw, "utf-8")
    m = parse_message(decoded.text, decoded.codec)
    assert m.get("PID-5.1") == family
    assert m.get("PID-5.2") == given_name
    assert m.get("NTE-3") == note
    assert m.get("MSH-10") == "MSG0001"
    # python-hl7 splits and unescapes it the same way.
    parsed = hl7.parse(decoded.text)
    assert parsed["PID.F5.R1.C1"] == family
    if given_name:  # else the writer drops the empty trailing component
        assert parsed["PID.F5.R1.C2"] == given_name
    assert parsed["MSH.F10"] == "MSG0001"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=field_text, note=field_text)
def test_written_messages_parse_with_hl7apy(family: str, note: str) -> None:
    text = adt(name=(family, "三"), note=note).text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        message = hl7apy_parse(text, find_groups=False)
    assert message.msh.msh_10.to_er7() == "MSG0001"
    assert message.msh.msh_9.to_er7() == "ADT^A04^ADT_A01"
    # hl7apy blanks whitespace-only values, trims the end of a segment and does not know
    # the \\Xhh\\ escape (it keeps it as literal text, writing \\E\\Xhh\\E\\).
    assert _hl7apy_er7(message.pid.pid_5.xpn_1) == escape(family).strip()
    assert _hl7apy_er7(message.nte.nte_3) == escape(note).strip()


def _hl7apy_er7(element: Any) -> str:
    text: str = element.to_er7()
    return re.sub(r"\\E\\X([0-9A-F]+)\\E\\", r"\\X\1\\", text).strip()


def test_default_separators() -> None:
    assert DEFAULT_SEPARATORS.encoding_characters == "^~\\&"
    assert Separators("|", "^", "~", "\\", "&", "#").encoding_characters == "^~\\&#"


@given(st.permutations("|^~\\&#"), st.booleans())
def test_separators_are_read_alike_each_time_they_are_declared(
    chars: list[str], truncation: bool
) -> None:
    # Read twice: the second read may come from the declarations already seen.
    declared = "".join(chars[: 6 if truncation else 5])
    line = f"MSH{declared}{chars[0]}HUB"
    for _ in range(2):
        seps = Separators.from_msh(line)
        assert seps.field + seps.encoding_characters == declared
    with pytest.raises(Hl7Error):
        Separators.from_msh(f"MSH{declared[:4]}{declared[1]}{chars[0]}HUB")  # one repeated


def _element_by_splitting(field: str, rep: int, comp: int, sub: int) -> str:
    """What an element is, by the standard's nesting: repetitions, components, subcomponents."""
    for sep, index in (("~", rep), ("^", comp), ("&", sub)):
        parts = field.split(sep)
        field = parts[index - 1] if index <= len(parts) else ""
    return unescape(field)


@given(
    field=st.text(alphabet="ab中~^&\\FS", max_size=14),
    rep=st.integers(1, 3),
    comp=st.integers(1, 3),
    sub=st.integers(1, 3),
)
def test_segment_get_reads_each_element_as_its_nesting_says(
    field: str, rep: int, comp: int, sub: int
) -> None:
    message = parse_message(f"MSH|^~\\&|A\rZZZ|{field}\r")
    segment = message.segments[1]
    assert segment.get(1, comp, sub, rep=rep) == _element_by_splitting(field, rep, comp, sub)
    assert segment.get(1) == _element_by_splitting(field, 1, 1, 1)
    assert segment.get(2, comp) == ""


@given(field=st.text(alphabet="ab中~^&\\FS", max_size=14))
def test_segment_components_are_the_first_repetitions_components(field: str) -> None:
    segment = parse_message(f"MSH|^~\\&|A\rZZZ|{field}\r").segments[1]
    first = field.split("~")[0]
    expected = [_element_by_splitting(field, 1, c, 1) for c in range(1, first.count("^") + 2)]
    assert segment.components(1) == expected


_scalar_values = st.one_of(
    st.none(), st.text(alphabet="ab中|^~&\\\r", max_size=6), st.integers(-5, 99)
)
_components = st.one_of(_scalar_values, st.lists(_scalar_values, max_size=3))


def _reference_segment(name: str, fields: list[Any]) -> str:
    """Each value escaped on its own, trailing empties dropped: what the writer's
    one-test-per-field shortcut must equal."""

    def text(value: Any) -> str:
        return "" if value is None else escape(str(value))

    def joined(parts: list[str], sep: str) -> str:
        while parts and not parts[-1]:
            parts.pop()
        return sep.join(parts)

    def field(value: Any) -> str:
        if not isinstance(value, list):
            return text(value)
        return joined(
            [joined([text(s) for s in c], "&") if isinstance(c, list) else text(c) for c in value],
            "^",
        )

    body = joined([field(f) for f in fields], "|")
    return f"{name}|{body}" if body else name


@given(fields=st.lists(st.one_of(_scalar_values, st.lists(_components, max_size=4)), max_size=6))
def test_a_segment_is_written_as_each_value_escaped_on_its_own(fields: list[Any]) -> None:
    assert build_segment("OBX", fields) == _reference_segment("OBX", fields)


@given(
    st.lists(
        st.sampled_from(["MSH|^~\\&|A", "PID|1||MSH", "OBX|1|ST|||xMSH", "", " "]), max_size=6
    ),
    st.sampled_from(["\r", "\n", "\r\n"]),
)
def test_split_messages_starts_one_at_every_msh_line(lines: list[str], end: str) -> None:
    data = end.join(lines).encode()
    by_pattern = [p for p in re.split(rb"(?<=[\r\n])(?=MSH)", data) if p.strip()]
    assert split_messages(data) == by_pattern
    assert len(by_pattern) <= 1 + sum(line.startswith("MSH") for line in lines[1:])
