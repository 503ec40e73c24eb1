"""The connector's quick reading of control ids and replies agrees with a full decode."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hub.connectors.mllp import _control_id, _read_reply
from hub.hl7v2.ack import read_ack
from hub.hl7v2.er7 import decode, parse_message, read_msh
from hub.hl7v2.errors import Hl7Error

_ASCII = st.text(alphabet="AZaz09 .-_^&~\\", max_size=8)
_CHARSETS = st.sampled_from(["", "UNICODE UTF-8", "GB 18030-2000", "8859/1", "NO-SUCH-SET"])
# 中 escaped as UTF-8 and as GB18030 bytes: read by the reply's charset, or ours
_TEXTS = st.text(alphabet="Ab 1\\X中", max_size=8) | st.sampled_from(
    ["\\XE4B8AD\\", "\\XD6D0\\", "\\XFF\\"]
)


def _slow_control_id(block: bytes, charset: str) -> str:
    return read_msh(decode(block, charset).text).control_id


def _slow_reply(data: bytes, charset: str) -> tuple[str, object]:
    decoded = decode(data, charset)
    return decoded.text, read_ack(parse_message(decoded.text, decoded.codec))


def _outcome(fn: object, *args: object) -> object:
    try:
        return fn(*args)  # type: ignore[operator]
    except Hl7Error as exc:
        return ("error", exc.code)


@given(control_id=_ASCII, msh18=_CHARSETS, default=st.sampled_from(["utf-8", "gb18030"]))
def test_control_id_of_an_ascii_msh_reads_as_decoded(
    control_id: str, msh18: str, default: str
) -> None:
    block = (
        f"MSH|^~\\&|HUB|120|HIS|H1|20261126080000+0800||ORU^R01|{control_id}|P|2.5.1"
        f"|||||CHN|{msh18}\rPID|1||王\r"
    ).encode("gb18030" if "18030" in msh18 else "utf-8")
    slow = _outcome(_slow_control_id, block, default)
    if isinstance(slow, tuple):  # a charset it cannot name: still read, the partner judges
        assert _control_id(block, default) == read_msh(block).control_id
    else:
        assert _control_id(block, default) == slow


def test_control_id_of_a_non_ascii_msh_is_decoded_first() -> None:
    # In GB18030 the second byte of 亅 is "|": a split of the bytes would be one off.
    block = "MSH|^~\\&|亅|120|HIS|H1|||ORU^R01|C-1|P|2.5.1|||||CHN|GB 18030-2000\r"
    assert read_msh(block.encode("gb18030")).control_id != "C-1"
    assert _control_id(block.encode("gb18030"), "utf-8") == "C-1"


@given(
    code=st.sampled_from(["AA", "AE", "CA"]),
    text=_TEXTS,
    msh18=_CHARSETS,
    default=st.sampled_from(["utf-8", "gb18030"]),
)
def test_a_reply_reads_as_decoded(code: str, text: str, msh18: str, default: str) -> None:
    reply = (
        f"MSH|^~\\&|HIS|H1|HUB|120|20261126080000+0800||ACK^R01^ACK|A-1|P|2.5.1"
        f"|||||CHN|{msh18}\rMSA|{code}|C-1\rERR||||E|||{text}\r"
    ).encode("gb18030" if "18030" in msh18 else "utf-8")
    assert _outcome(_read_reply, reply, default) == _outcome(_slow_reply, reply, default)
