"""ER7 (pipe-and-hat) reading and writing by plain string splitting.

On the hot path a received message is decoded with the right codec, split into segments
and fields, and only the fields asked for are split further and unescaped; the writer
builds segments from plain Python values and applies the escape rules. hl7apy is never
used here (see ARCHITECTURE.md, "The hot path").

Reading order for bytes off the wire: :func:`decode` reads MSH from the *bytes* to find
the character set (MSH-18), decodes the whole message with it (or with the peer's
default when MSH-18 is empty), then checks that the decoded MSH-18 agrees.

Paths: ``SEG[-occurrence]...`` is written ``PID-3``, ``PID-3.1``, ``PID-3.4.2`` (field,
component, subcomponent), ``PID-3[2].1`` for the second repetition and ``OBX[2]-5``
for the second OBX segment; every number is 1-based, as in the standard.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Self, TypeAlias

from pydantic import AfterValidator

from hub.hl7v2.errors import ErrorCode, ErrorLocation, Hl7Error

__all__ = [
    "DEFAULT_SEPARATORS",
    "HOLE",
    "Charset",
    "Decoded",
    "Er7Writer",
    "FieldValue",
    "Message",
    "MshHeader",
    "Raw",
    "Repeat",
    "Segment",
    "Separators",
    "build_segment",
    "codec_for",
    "decode",
    "escape",
    "format_ts",
    "hl7_charset_name",
    "parse_message",
    "parse_ts",
    "read_msh",
    "split_messages",
    "template_parts",
    "unescape",
]


# --------------------------------------------------------------------- separators


@dataclass(frozen=True, slots=True)
class Separators:
    """The delimiters a message declares in MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str | None = None  # the fifth MSH-2 character of v2.7 and later

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as written."""
        return (
            self.component
            + self.repetition
            + self.escape
            + self.subcomponent
            + (self.truncation or "")
        )

    @classmethod
    def from_msh(cls, msh: str) -> Separators:
        """Read MSH-1 and MSH-2 from the start of an MSH segment; Hl7Error if malformed."""
        if len(msh) < 4 or not msh.startswith("MSH"):
            raise Hl7Error(
                "the message does not start with an MSH segment",
                ErrorCode.SEGMENT_SEQUENCE_ERROR,
                ErrorLocation("MSH"),
            )
        field = msh[3]
        end = msh.find(field, 4)
        return _declared(field + (msh[4:] if end == -1 else msh[4:end]))


# Every message of a sender declares the same: read once (an invalid one raises, and is
# not kept).
@lru_cache(maxsize=64)
def _declared(pool: str) -> Separators:
    """Separators from MSH-1 followed by MSH-2; Hl7Error unless five or six distinct
    printable non-alphanumeric characters."""
    field, chars = pool[0], pool[1:]
    if (
        not 4 <= len(chars) <= 5
        or any(not "!" <= c <= "~" or c.isalnum() for c in pool)
        or len(set(pool)) != len(pool)
    ):
        raise Hl7Error(
            f"MSH-1/MSH-2 do not declare five distinct delimiters: {pool!r}",
            ErrorCode.DATA_TYPE_ERROR,
            ErrorLocation("MSH", 1, 2),
        )
    return Separators(
        field, chars[0], chars[1], chars[2], chars[3], chars[4] if len(chars) > 4 else None
    )


DEFAULT_SEPARATORS = Separators()


# --------------------------------------------------------------------- escaping


@lru_cache(maxsize=32)
def _escape_table(seps: Separators) -> dict[int, str]:
    e = seps.escape
    table = {c: f"{e}X{c:02X}{e}" for c in range(0x20)}
    table[0x7F] = f"{e}X7F{e}"
    table.update(
        {
            ord(seps.escape): f"{e}E{e}",
            ord(seps.field): f"{e}F{e}",
            ord(seps.component): f"{e}S{e}",
            ord(seps.repetition): f"{e}R{e}",
            ord(seps.subcomponent): f"{e}T{e}",
        }
    )
    if seps.truncation:
        table[ord(seps.truncation)] = f"{e}P{e}"
    return table


@lru_cache(maxsize=32)
def _needs_escape(seps: Separators) -> re.Pattern[str]:
    specials = re.escape(seps.field + seps.encoding_characters)
    return re.compile(f"[{specials}\\x00-\\x1f\\x7f]")


def escape(text: str, seps: Separators = DEFAULT_SEPARATORS) -> str:
    """Text made safe for one ER7 element.

    The delimiters become ``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\`` (``\\P\\`` for the truncation
    character) and every control character, CR and LF included, becomes ``\\Xhh\\``, so
    the result never contains a segment end or an MLLP block character. Other characters
    (Chinese included) are kept as they are; the charset is the encoder's business.
    """
    if not _needs_escape(seps).search(text):
        return text
    return text.translate(_escape_table(seps))


def unescape(value: str, seps: Separators = DEFAULT_SEPARATORS, codec: str = "utf-8") -> str:
    """The text of an escaped element: the inverse of :func:`escape`.

    ``\\Xhh..\\`` is decoded with ``codec`` (the message's charset); ``\\.br\\`` becomes a
    line feed; escape sequences this reader does not interpret (highlighting, charset
    switches) are kept verbatim, as is an escape character with no closing one.
    """
    e = seps.escape
    start = value.find(e)
    if start == -1:
        return value
    out: list[str] = []
    pos = 0
    while start != -1:
        close = value.find(e, start + 1)
        if close == -1:
            break
        out.append(value[pos:start])
        out.append(_escape_sequence(value[start + 1 : close], seps, codec))
        pos = close + 1
        start = value.find(e, pos)
    out.append(value[pos:])
    return "".join(out)


def _escape_sequence(seq: str, seps: Separators, codec: str) -> str:
    simple = {
        "F": seps.field,
        "S": seps.component,
        "R": seps.repetition,
        "E": seps.escape,
        "T": seps.subcomponent,
        ".br": "\n",
    }
    if seps.truncation:
        simple["P"] = seps.truncation
    found = simple.get(seq)
    if found is not None:
        return found
    if len(seq) > 1 and seq[0] == "X" and len(seq) % 2 == 1:
        try:
            return bytes.fromhex(seq[1:]).decode(codec)
        except (ValueError, LookupError):
            pass
    return f"{seps.escape}{seq}{seps.escape}"


# --------------------------------------------------------------------- charsets

# HL7 table 0211 names (and spellings Chinese systems are seen to use) -> Python codec.
# GBK and GB2312 are decoded as GB18030, their superset.
_CHARSETS = {
    "ASCII": "ascii",
    "UNICODEUTF8": "utf-8",
    "UTF8": "utf-8",
    "ISOIR192": "utf-8",
    "GB180302000": "gb18030",
    "GB18030": "gb18030",
    "GBK": "gb18030",
    "GB2312": "gb18030",
    "CP936": "gb18030",
    "BIG5": "big5",
    "KSX1001": "euc_kr",
    "ISOIR6": "ascii",
    "ISOIR100": "iso8859-1",
    "ISOIR101": "iso8859-2",
    "ISOIR109": "iso8859-3",
    "ISOIR110": "iso8859-4",
    "ISOIR144": "iso8859-5",
    "ISOIR127": "iso8859-6",
    "ISOIR126": "iso8859-7",
    "ISOIR138": "iso8859-8",
    "ISOIR148": "iso8859-9",
    **{f"8859{n}": f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15)},
}
_HL7_NAMES = {
    "ascii": "ASCII",
    "utf-8": "UNICODE UTF-8",
    "gb18030": "GB 18030-2000",
    "big5": "BIG-5",
    "euc_kr": "KS X 1001",
    **{f"iso8859-{n}": f"8859/{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15)},
}
# Codec names accepted as they are (in configuration, or from a sender that writes
# one in MSH-18): byte-oriented and ASCII-compatible, so delimiters stay single bytes.
_SAFE_CODECS = frozenset(
    {"ascii", "utf-8", "gb18030", "gbk", "gb2312", "big5", "euc_kr", "cp1252"}
    | {f"iso8859-{n}" for n in range(1, 17)}
)
_NORMALIZE = re.compile(r"[\s_/-]+")


@lru_cache(maxsize=256)
def codec_for(name: str) -> str | None:
    """The Python codec for an HL7 charset name (table 0211) or a codec name; None if unknown.

    ``UNICODE UTF-8`` → utf-8, ``GB 18030-2000`` → gb18030, ``8859/1`` → iso8859-1.
    Encodings that would break single-byte delimiters (UTF-16, EBCDIC) are refused.
    """
    key = _NORMALIZE.sub("", name.strip().upper())
    found = _CHARSETS.get(key)
    if found is not None:
        return found
    try:
        canonical = codecs.lookup(name.strip()).name
    except LookupError:
        return None
    if canonical in ("gbk", "gb2312"):
        return "gb18030"
    return canonical if canonical in _SAFE_CODECS else None


def _known_charset(value: str) -> str:
    if codec_for(value) is None:
        raise ValueError(f"unknown character set {value!r}")
    return value


# A settings field holding an HL7 (table 0211) or Python charset name, checked at load.
Charset = Annotated[str, AfterValidator(_known_charset)]


def hl7_charset_name(codec: str) -> str:
    """The MSH-18 value for a codec (``utf-8`` → ``UNICODE UTF-8``); ValueError if none."""
    canonical = codec_for(codec)
    name = _HL7_NAMES.get(canonical or "")
    if name is None:
        raise ValueError(f"no HL7 character set name for {codec!r}")
    return name


# --------------------------------------------------------------------- MSH and decoding


@dataclass(frozen=True, slots=True)
class MshHeader:
    """The message header, fields kept raw (escaped); ``fields[n]`` is MSH-n."""

    separators: Separators
    fields: tuple[str, ...]

    def field(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def get(self, n: int, component: int = 1, codec: str = "utf-8") -> str:
        """The unescaped component of the first repetition of MSH-n."""
        if n <= 2:
            return self.field(n)
        return _element(self.field(n), self.separators, 1, component, 1, codec)

    @property
    def message_code(self) -> str:
        return self.get(9, 1)

    @property
    def trigger_event(self) -> str:
        return self.get(9, 2)

    @property
    def structure(self) -> str:
        return self.get(9, 3)

    @property
    def message_type(self) -> str:
        """``ADT^A04`` style, for logs and records."""
        code, trigger = self.message_code, self.trigger_event
        return f"{code}^{trigger}" if trigger else code

    @property
    def control_id(self) -> str:
        return self.get(10)

    @property
    def processing_id(self) -> str:
        return self.get(11)

    @property
    def version(self) -> str:
        return self.get(12)

    @property
    def accept_ack_type(self) -> str:
        return self.get(15)

    @property
    def application_ack_type(self) -> str:
        return self.get(16)

    @property
    def charset(self) -> str:
        """MSH-18, first repetition (the message's character set); empty when absent."""
        return self.get(18).strip()

    @property
    def enhanced_mode(self) -> bool:
        """Enhanced acknowledgement mode: MSH-15 or MSH-16 is valued."""
        return bool(self.accept_ack_type or self.application_ack_type)


_MESSAGE_START = re.compile(rb"(?<=[\r\n])(?=MSH)")


def split_messages(data: bytes) -> list[bytes]:
    """The messages of a payload holding one or more ER7 messages back to back (a
    mapping's several messages for one delivery): a new message starts at every line
    that starts with ``MSH``. Each keeps its own segment ends."""
    if b"\rMSH" not in data and b"\nMSH" not in data:  # one message: no regex scan
        return [data] if data.strip() else []
    return [part for part in _MESSAGE_START.split(data) if part.strip()]


def read_msh(message: str | bytes) -> MshHeader:
    """The MSH of a message; bytes are read as Latin-1 (enough for the ASCII fields).

    Raises Hl7Error (table 0357 code and location) when there is no well-formed MSH.
    """
    text = message.decode("latin-1") if isinstance(message, bytes) else message
    line = _first_segment(text)
    seps = Separators.from_msh(line)
    return _msh_from_line(line, seps)


def _first_segment(text: str) -> str:
    text = text.lstrip(" \t\r\n\ufeff")
    end = len(text)
    for sep in ("\r", "\n"):
        at = text.find(sep)
        if at != -1 and at < end:
            end = at
    return text[:end]


def _msh_from_line(line: str, seps: Separators) -> MshHeader:
    parts = line.split(seps.field)
    # MSH-1 is the field separator itself, so MSH-n is parts[n - 1] for n >= 2.
    return MshHeader(seps, ("MSH", seps.field, *parts[1:]))


@dataclass(frozen=True, slots=True)
class Decoded:
    """A received message as text, and how it was decoded."""

    text: str
    codec: str  # the Python codec that decoded it
    declared: str | None  # MSH-18 as the sender wrote it; None when absent


def decode(raw: bytes, default: str = "utf-8") -> Decoded:
    """Decode a received message by its MSH-18, or by ``default`` when MSH-18 is empty.

    MSH is first read from the bytes. In GB18030 a second byte may equal ``|``, so when
    the MSH holds non-ASCII bytes the field split is also tried GB18030-aware; every
    candidate is confirmed by reading MSH-18 again from the decoded text.

    Raises Hl7Error: 100 when there is no MSH, 103 for an unknown MSH-18 charset, 102 when
    the bytes are not valid in the declared (or default) charset.
    """
    default_codec = codec_for(default)
    if default_codec is None:
        raise ValueError(f"unknown default character set {default!r}")
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark says it all
        raw = raw[3:]
        default_codec = "utf-8"
    line = _first_segment(raw.decode("latin-1"))
    seps = Separators.from_msh(line)
    named = _msh18(line.split(seps.field), seps)
    names = [named]
    if not line.isascii():
        # A byte-level split may be off by a GB18030 second byte; the text check decides.
        names.append(_msh18(_split_multibyte(line, seps.field), seps))
    candidates = [c for c in map(codec_for, filter(None, names)) if c is not None]
    candidates.append(default_codec)
    unknown = named if named and line.isascii() and codec_for(named) is None else None
    declared_seen: str | None = None
    index = 0
    while index < len(candidates):
        codec = candidates[index]
        index += 1
        if codec in candidates[: index - 1]:
            continue
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError:
            continue
        declared = _msh18(_first_segment(text).split(seps.field), seps)
        if not declared:
            if codec == default_codec:
                return Decoded(text, codec, None)
            continue
        declared_codec = codec_for(declared)
        if declared_codec is None:
            unknown = unknown or declared
            continue
        declared_seen = declared_seen or declared
        if declared_codec == codec:
            return Decoded(text, codec, declared)
        candidates.append(declared_codec)
    charset_at = ErrorLocation("MSH", 1, 18)
    if unknown:
        raise Hl7Error(
            f"unknown character set {unknown!r} in MSH-18",
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            charset_at,
        )
    if declared_seen:
        raise Hl7Error(
            f"the bytes are not valid {declared_seen} text, as MSH-18 declares",
            ErrorCode.DATA_TYPE_ERROR,
            charset_at,
        )
    raise Hl7Error(
        f"the bytes are not valid {default_codec} text (the default; MSH-18 is empty)",
        ErrorCode.DATA_TYPE_ERROR,
        charset_at,
    )


def _msh18(parts: Sequence[str], seps: Separators) -> str:
    value = parts[17] if len(parts) > 17 else ""
    return value.split(seps.repetition, 1)[0].split(seps.component, 1)[0].strip()


def _split_multibyte(line: str, sep: str) -> list[str]:
    """Split a Latin-1 view of GB18030 bytes on ``sep``, never inside a character."""
    parts: list[str] = []
    start = i = 0
    n = len(line)
    while i < n:
        c = ord(line[i])
        if 0x81 <= c <= 0xFE and i + 1 < n:
            nxt = ord(line[i + 1])
            i += 4 if 0x30 <= nxt <= 0x39 else 2
            continue
        if line[i] == sep:
            parts.append(line[start:i])
            start = i + 1
        i += 1
    parts.append(line[start:])
    return parts


# --------------------------------------------------------------------- reading


_PATH = re.compile(
    r"^(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<occ>\d+)\])?-(?P<field>\d+)(?:\[(?P<rep>\d+)\])?"
    r"(?:\.(?P<comp>\d+)(?:\.(?P<sub>\d+))?)?$"
)


@lru_cache(maxsize=1024)
def _parse_path(path: str) -> tuple[str, int, int, int, int | None, int | None]:
    m = _PATH.match(path.strip())
    if m is None:
        raise ValueError(f"not an ER7 path: {path!r} (expected e.g. PID-3[1].4.2)")
    numbers = [int(m[g]) if m[g] else None for g in ("occ", "field", "rep", "comp", "sub")]
    if any(n is not None and n < 1 for n in numbers[:1] + numbers[2:]):
        raise ValueError(f"ER7 path positions are 1-based: {path!r}")
    occ, field, rep, comp, sub = numbers
    assert field is not None
    return m["seg"], occ or 1, field, rep or 1, comp, sub


def _element(
    value: str, seps: Separators, rep: int, comp: int | None, sub: int | None, codec: str
) -> str:
    # A plain value, the common case, costs four substring tests and no call or split.
    if rep != 1 or seps.repetition in value:
        value = _pick(value, seps.repetition, rep)
    if (comp is not None and comp != 1) or seps.component in value:
        value = _pick(value, seps.component, comp or 1)
    if (sub is not None and sub != 1) or seps.subcomponent in value:
        value = _pick(value, seps.subcomponent, sub or 1)
    if seps.escape in value:
        return unescape(value, seps, codec)
    return value


def _pick(value: str, sep: str, index: int) -> str:
    if sep not in value:
        return value if index == 1 else ""
    parts = value.split(sep)
    return parts[index - 1] if index <= len(parts) else ""


class Segment:
    """One segment; fields are split on access only as far as asked."""

    __slots__ = ("_codec", "_fields", "name", "separators")

    def __init__(self, fields: list[str], separators: Separators, codec: str = "utf-8") -> None:
        self._fields = fields
        self.name = fields[0]
        self.separators = separators
        self._codec = codec

    def __repr__(self) -> str:
        return f"Segment({self.separators.field.join(self._fields)!r})"

    def __len__(self) -> int:
        """The highest field position present."""
        return len(self._fields) - 1

    def raw(self, field: int) -> str:
        """Field ``field`` as written (escaped, with its delimiters); empty when absent."""
        return self._fields[field] if field < len(self._fields) else ""

    def get(
        self,
        field: int,
        component: int | None = None,
        subcomponent: int | None = None,
        *,
        rep: int = 1,
    ) -> str:
        """Unescaped text of one element; a field with components gives its first one."""
        fields = self._fields
        if field >= len(fields):
            return ""
        if field <= 2 and self.name == "MSH":
            return fields[field]
        return _element(fields[field], self.separators, rep, component, subcomponent, self._codec)

    def components(self, field: int) -> list[str]:
        """The unescaped components of the field's first repetition (each its first
        subcomponent): one split where a reader wants several components of one field."""
        raw = self.raw(field)
        seps = self.separators
        if not raw or (field <= 2 and self.name == "MSH"):
            return [raw]
        if seps.repetition in raw or seps.subcomponent in raw or seps.escape in raw:
            count = _pick(raw, seps.repetition, 1).count(seps.component) + 1
            return [self.get(field, c) for c in range(1, count + 1)]
        return raw.split(seps.component)

    def repetitions(self, field: int) -> int:
        """How many repetitions field ``field`` holds (0 when empty)."""
        raw = self.raw(field)
        if not raw or (self.name == "MSH" and field <= 2):
            return 1 if raw else 0
        return raw.count(self.separators.repetition) + 1


class Message:
    """A parsed message: segments in order, with path access (see the module docstring)."""

    __slots__ = ("_header", "charset", "segments", "separators")

    def __init__(self, segments: list[Segment], separators: Separators, charset: str) -> None:
        self.segments = segments
        self.separators = separators
        self.charset = charset
        self._header: MshHeader | None = None

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __len__(self) -> int:
        return len(self.segments)

    @property
    def header(self) -> MshHeader:
        if self._header is None:
            # MSH-n is the segment's n-th raw field (Segment.raw), all of them at once.
            self._header = MshHeader(self.separators, tuple(self.segments[0]._fields))
        return self._header

    def segment(self, name: str, occurrence: int = 1) -> Segment | None:
        """The ``occurrence``-th segment named ``name`` (1-based), or None."""
        seen = 0
        for seg in self.segments:
            if seg.name == name:
                seen += 1
                if seen == occurrence:
                    return seg
        return None

    def all(self, name: str) -> list[Segment]:
        return [seg for seg in self.segments if seg.name == name]

    def get(self, path: str) -> str:
        """Unescaped text at ``path``; empty when the segment or element is absent."""
        name, occ, field, rep, comp, sub = _parse_path(path)
        seg = self.segment(name, occ)
        if seg is None:
            return ""
        return seg.get(field, comp, sub, rep=rep)

    def raw(self, path: str) -> str:
        """The element at ``path`` as written (escaped, with its delimiters)."""
        name, occ, field, rep, comp, sub = _parse_path(path)
        seg = self.segment(name, occ)
        if seg is None:
            return ""
        seps = self.separators
        value = seg.raw(field)
        if name == "MSH" and field <= 2:
            return value
        value = _pick(value, seps.repetition, rep)
        if comp is not None:
            value = _pick(value, seps.component, comp)
            if sub is not None:
                value = _pick(value, seps.subcomponent, sub)
        return value


def parse_message(text: str, codec: str = "utf-8") -> Message:
    """Split a decoded message; segments may end with CR, LF or CRLF.

    ``codec`` is the charset the text was decoded from (for ``\\Xhh\\`` escapes). Raises
    Hl7Error when the first segment is not a well-formed MSH or a segment has a bad name.
    """
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    lines = [line for line in text.lstrip(" \t\r\ufeff").split("\r") if line.strip()]
    if not lines:
        raise Hl7Error("empty message", ErrorCode.SEGMENT_SEQUENCE_ERROR, ErrorLocation("MSH"))
    seps = Separators.from_msh(lines[0])
    fsep = seps.field
    segments: list[Segment] = []
    counts: dict[str, int] = {}
    for line in lines:
        parts = line.split(fsep)
        name = parts[0]
        counts[name] = counts.get(name, 0) + 1
        if len(name) != 3 or not name.isascii() or not name.isalnum() or not name[0].isalpha():
            raise Hl7Error(
                f"segment {len(segments) + 1} has no valid segment id: {name[:10]!r}",
                ErrorCode.SEGMENT_SEQUENCE_ERROR,
                ErrorLocation(name[:3] or "?", counts[name]),
            )
        if name == "MSH":
            parts = ["MSH", fsep, *parts[1:]]
        segments.append(Segment(parts, seps, codec))
    return Message(segments, seps, codec)


# --------------------------------------------------------------------- times


_TS = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?(?:([+-])(\d{2})(\d{2}))?$"
)


def parse_ts(value: str, default_tz: tzinfo = UTC) -> datetime:
    """An HL7 DTM/TS (``YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]``) as an aware datetime.

    A value without an offset is taken in ``default_tz``. Raises ValueError. Remembered,
    because a message repeats its times (every OBX-14 of one sample).
    """
    return _parse_ts(value, default_tz)


@lru_cache(maxsize=4096)
def _parse_ts(value: str, default_tz: tzinfo) -> datetime:
    m = _TS.match(value.strip().split("^", 1)[0])
    if m is None:
        raise ValueError(f"not an HL7 date/time: {value!r}")
    year, month, day, hour, minute, second, frac, sign, oh, om = m.groups()
    tz: tzinfo = default_tz
    if sign:
        delta = timedelta(hours=int(oh), minutes=int(om))
        tz = timezone(-delta if sign == "-" else delta)
    micro = int((frac or "0").ljust(6, "0")[:6])
    return datetime(
        int(year),
        int(month or 1),
        int(day or 1),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        micro,
        tzinfo=tz,
    )


def format_ts(value: datetime) -> str:
    """``YYYYMMDDHHMMSS+ZZZZ`` (seconds precision); a naive datetime is refused."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("format_ts needs an aware datetime")
    # Kept by the second written (an ACK's "now" differs in its microseconds every time)
    # and by the offset: equal instants in two offsets are equal datetimes, but are
    # written differently.
    return _ts_text(value.replace(microsecond=0) if value.microsecond else value, offset)


@lru_cache(maxsize=256)  # a message repeats its times (each OBX-14 of one sample)
def _ts_text(value: datetime, offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return value.strftime("%Y%m%d%H%M%S") + f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


# --------------------------------------------------------------------- writing


@dataclass(frozen=True, slots=True)
class Raw:
    """Text already in ER7 form, written without escaping (e.g. a copied MSH-3)."""

    value: str


class Repeat:
    """A repeating field: each item is written as one repetition."""

    __slots__ = ("items",)

    def __init__(self, *items: FieldValue) -> None:
        self.items: tuple[FieldValue, ...] = items

    def __repr__(self) -> str:
        return f"Repeat{self.items!r}"


Scalar: TypeAlias = str | int | Decimal | float | Raw | None
Component: TypeAlias = Scalar | Sequence[Scalar]  # a sequence here holds subcomponents
FieldValue: TypeAlias = Scalar | Sequence[Component] | Repeat  # a sequence holds components


Escaper: TypeAlias = Callable[[str], str]


@lru_cache(maxsize=32)
def _escaper(seps: Separators) -> Escaper:
    """:func:`escape` bound to ``seps``: looked up once per segment, not per value."""
    search = _needs_escape(seps).search
    table = _escape_table(seps)

    def escape_text(text: str) -> str:
        return text.translate(table) if search(text) else text

    return escape_text


Special: TypeAlias = Callable[[str], object]


@lru_cache(maxsize=32)
def _writing(seps: Separators) -> tuple[Escaper, Special]:
    """The escaper of ``seps`` and its test: a truthy answer means the text needs
    escaping. One test of a field's joined texts answers for all its parts, since
    escaping is per character."""
    return _escaper(seps), _needs_escape(seps).search


def _scalar(value: Scalar, esc: Escaper) -> str:
    if value is None:
        return ""
    if type(value) is str:
        return esc(value)
    if isinstance(value, Raw):
        return value.value
    if isinstance(value, str):
        return esc(value)
    if isinstance(value, bool):
        raise TypeError("booleans have no ER7 form; write the code (Y/N) instead")
    return esc(str(value))


def _join(values: list[str], sep: str) -> str:
    while values and not values[-1]:
        values.pop()
    return sep.join(values)


_SCALARS = (str, int, float, Decimal, Raw)


def _component(value: Component, seps: Separators, esc: Escaper) -> str:
    if value is None or isinstance(value, _SCALARS):
        return _scalar(value, esc)
    return _join([_scalar(v, esc) for v in value], seps.subcomponent)


def _texts(values: Sequence[object], special: Special) -> list[str] | None:
    """``values`` as texts when each is a string needing no escape or None; else None
    (the caller then writes each value on its own)."""
    texts = ["" if v is None else v for v in values]
    try:
        joined = "".join(texts)  # type: ignore[arg-type]  # TypeError: not all strings
    except TypeError:
        return None
    return None if special(joined) else texts  # type: ignore[return-value]


def _field(value: FieldValue, seps: Separators, esc: Escaper, special: Special) -> str:
    # Written for speed: every delivery writes a few hundred of these.
    if value is None:
        return ""
    kind = type(value)
    if kind is str:
        return esc(value)  # type: ignore[arg-type]
    if kind is list or kind is tuple:
        texts = _texts(value, special)  # type: ignore[arg-type]
        if texts is not None:
            return _join(texts, seps.component)
    if isinstance(value, Repeat):
        items = value.items
        return _join([_field(item, seps, esc, special) for item in items], seps.repetition)
    if isinstance(value, _SCALARS):
        return _scalar(value, esc)
    return _join([_component(c, seps, esc) for c in value], seps.component)


HOLE = "\ue000"
"""A private-use character that stands for a value while a template is written (as
``Raw(HOLE)``, or as text: escaping leaves it alone); see :func:`template_parts`."""


def template_parts(text: str, holes: int) -> tuple[str, ...] | None:
    """``text``, written with ``holes`` stand-ins (:data:`HOLE`), cut at each; None when
    it holds another number of them (a written value held the character itself), and
    the caller then writes the text in full."""
    parts = tuple(text.split(HOLE))
    return parts if len(parts) == holes + 1 else None


def build_field(value: FieldValue, seps: Separators = DEFAULT_SEPARATORS) -> Raw:
    """One field in ER7 form, to write as it is wherever the same value recurs."""
    esc, special = _writing(seps)
    return Raw(_field(value, seps, esc, special))


@lru_cache(maxsize=256)
def _segment_id(name: str) -> str:
    if len(name) != 3 or not name.isascii() or not name.isalnum():
        raise ValueError(f"bad segment id {name!r}")
    return name


def build_segment(
    name: str, fields: Sequence[FieldValue], seps: Separators = DEFAULT_SEPARATORS
) -> str:
    """One segment without its terminator; ``fields[0]`` is field 1 (MSH-3 for MSH).

    Strings are escaped, sequences are components (and sequences inside them
    subcomponents), :class:`Repeat` repeats and :class:`Raw` is written as is; trailing
    empty fields and components are dropped.
    """
    _segment_id(name)
    esc, special = _DEFAULT_WRITING if seps is DEFAULT_SEPARATORS else _writing(seps)
    parts: list[str] = []
    texts: list[str] = []  # the plain strings: one test for all (escaping is per character)
    for f in fields:
        if f is None:
            parts.append("")
        elif type(f) is str:
            parts.append(f)
            texts.append(f)
        elif type(f) is Raw:
            parts.append(f.value)
        else:
            parts.append(_field(f, seps, esc, special))
    if texts and special("".join(texts)):
        parts = [esc(f) if type(f) is str else p for f, p in zip(fields, parts, strict=True)]
    body = _join(parts, seps.field)
    if name == "MSH":
        head = f"MSH{seps.field}{seps.encoding_characters}"
        return f"{head}{seps.field}{body}" if body else head
    return f"{name}{seps.field}{body}" if body else name


_DEFAULT_WRITING = _writing(DEFAULT_SEPARATORS)


class Er7Writer:
    """Builds a message segment by segment; cheap enough for every delivery.

    >>> w = Er7Writer().msh("HUB", "120", "HIS", "H1", "20261125080000+0800", None,
    ...                      ["ADT", "A04", "ADT_A01"], "MSG1", "P", "2.5.1")
    >>> w.segment("PID", None, None, [["P1"]], None, ["张", "三"]).text()[-15:]
    '|||P1||张^三\\r'
    """

    def __init__(
        self, separators: Separators = DEFAULT_SEPARATORS, segment_end: str = "\r"
    ) -> None:
        self.separators = separators
        self.segment_end = segment_end
        self._segments: list[str] = []

    def msh(self, *fields: FieldValue) -> Self:
        """Add MSH; ``fields`` start at MSH-3 (MSH-1 and MSH-2 come from the separators)."""
        self._segments.append(build_segment("MSH", fields, self.separators))
        return self

    def segment(self, name: str, *fields: FieldValue) -> Self:
        """Add a segment; ``fields`` start at field 1."""
        self._segments.append(build_segment(name, fields, self.separators))
        return self

    @property
    def segments(self) -> tuple[str, ...]:
        """The segments so far, without terminators."""
        return tuple(self._segments)

    def written(self, *segments: str) -> Self:
        """Add segments already written (:attr:`segments` of a writer with the same
        separators), as they are."""
        self._segments.extend(segments)
        return self

    def text(self) -> str:
        return "".join(s + self.segment_end for s in self._segments)

    def encode(self, charset: str = "utf-8") -> bytes:
        """The message as bytes in ``charset`` (HL7 name or codec); ValueError if unknown.

        Raises UnicodeEncodeError when the text has a character the charset lacks.
        """
        codec = codec_for(charset)
        if codec is None:
            raise ValueError(f"unknown character set {charset!r}")
        return self.text().encode(codec)
