"""MLLP framing, tested with bytes only."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.hl7v2.framing import FrameError, FrameErrorKind, MllpDecoder, frame

MSG = b"MSH|^~\\&|A|B|C|D|20261125080000||ADT^A04|1|P|2.5.1\rPID|||1\r"


def feed_all(decoder: MllpDecoder, chunks: list[bytes]) -> list[bytes | FrameError]:
    out: list[bytes | FrameError] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    out.extend(decoder.close())
    return out


def test_frame_wraps_in_block_characters() -> None:
    assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\x0d"


def test_one_frame_in_one_chunk() -> None:
    assert MllpDecoder().feed(frame(MSG)) == [MSG]


def test_several_frames_in_one_chunk_and_a_split_one() -> None:
    decoder = MllpDecoder()
    data = frame(b"one") + frame(b"two") + frame(b"three")[:4]
    assert decoder.feed(data) == [b"one", b"two"]
    assert decoder.pending == 3
    assert decoder.feed(frame(b"three")[4:]) == [b"three"]


@pytest.mark.parametrize("cut", range(1, len(frame(MSG))))
def test_every_split_point(cut: int) -> None:
    data = frame(MSG)
    decoder = MllpDecoder()
    assert decoder.feed(data[:cut]) + decoder.feed(data[cut:]) == [MSG]
    assert decoder.close() == []


def test_trailer_split_between_reads() -> None:
    decoder = MllpDecoder()
    assert decoder.feed(b"\x0babc\x1c") == []
    assert decoder.feed(b"\x0d") == [b"abc"]


def test_whitespace_between_frames_is_ignored() -> None:
    data = frame(b"a") + b"\r\n" + frame(b"b") + b"\n"
    assert feed_all(MllpDecoder(), [data]) == [b"a", b"b"]


def test_garbage_before_a_start_block_is_reported_not_lost() -> None:
    out = MllpDecoder().feed(b"hello" + frame(b"a"))
    assert len(out) == 2
    error, message = out
    assert isinstance(error, FrameError)
    assert error.kind is FrameErrorKind.GARBAGE
    assert error.data == b"hello"
    assert not error.at_eof
    assert message == b"a"


def test_block_without_start_is_unstarted() -> None:
    out = MllpDecoder().feed(MSG + b"\x1c\x0d" + frame(b"next"))
    assert isinstance(out[0], FrameError)
    assert out[0].kind is FrameErrorKind.UNSTARTED
    assert out[0].data == MSG
    assert out[1] == b"next"


def test_new_start_block_truncates_the_frame_before_it() -> None:
    out = MllpDecoder().feed(b"\x0bpartial" + frame(b"whole"))
    assert isinstance(out[0], FrameError)
    assert out[0].kind is FrameErrorKind.TRUNCATED
    assert out[0].data == b"partial"
    assert out[1] == b"whole"


def test_missing_carriage_return_before_next_frame_is_tolerated() -> None:
    assert MllpDecoder().feed(b"\x0bone\x1c\x0btwo\x1c\x0d") == [b"one", b"two"]


def test_truncated_frame_at_eof() -> None:
    decoder = MllpDecoder()
    assert decoder.feed(b"\x0bMSH|half") == []
    (error,) = decoder.close()
    assert isinstance(error, FrameError)
    assert error.kind is FrameErrorKind.TRUNCATED
    assert error.at_eof
    assert error.data == b"MSH|half"


def test_oversize_frame_is_reported_and_stream_recovers() -> None:
    decoder = MllpDecoder(max_frame=10)
    out = decoder.feed(b"\x0b" + b"x" * 25)
    assert out == []
    out = decoder.feed(b"y" * 5 + b"\x1c\x0d" + frame(b"ok"))
    assert isinstance(out[0], FrameError)
    assert out[0].kind is FrameErrorKind.OVERSIZE
    assert out[0].data == b"x" * 10  # only the limit is kept
    assert out[0].size == 30
    assert "limit 10" in out[0].detail
    assert out[1] == b"ok"
    assert decoder.pending == 0


def test_oversize_frame_in_one_chunk() -> None:
    out = MllpDecoder(max_frame=4).feed(frame(b"123456") + frame(b"1234"))
    assert isinstance(out[0], FrameError)
    assert out[0].kind is FrameErrorKind.OVERSIZE
    assert out[1] == b"1234"


def test_endless_garbage_stays_bounded() -> None:
    decoder = MllpDecoder(max_frame=8)
    out = decoder.feed(b"g" * 20)
    assert isinstance(out[0], FrameError)
    assert out[0].size == 20
    assert decoder.pending == 0


def test_max_frame_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MllpDecoder(max_frame=0)


body = st.binary(max_size=60).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))


@settings(max_examples=300)
@given(messages=st.lists(body, max_size=8), cuts=st.lists(st.integers(0, 600), max_size=10))
def test_framed_messages_split_anywhere_decode_to_the_same_list(
    messages: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(frame(m) for m in messages)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert feed_all(MllpDecoder(), chunks) == messages


@settings(max_examples=300)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8))
def test_random_bytes_never_raise_and_chunking_does_not_matter(
    data: bytes, cuts: list[int]
) -> None:
    whole = feed_all(MllpDecoder(max_frame=64), [data])
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert feed_all(MllpDecoder(max_frame=64), chunks) == whole
    for item in whole:
        assert isinstance(item, bytes | FrameError)
