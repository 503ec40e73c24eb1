"""MLLP framing as bytes only: ``0x0B`` + message + ``0x1C 0x0D``. No sockets here.

:class:`MllpDecoder` is incremental: feed it whatever a socket read returned and it
hands back every complete message, in order. Bytes that are not a well-formed frame are
never dropped silently: each run of them comes back as a :class:`FrameError` item in
its place in the stream, so the caller can store it as rejected and, where the sender
expects one, answer with a NAK.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "CARRIAGE_RETURN",
    "DEFAULT_MAX_FRAME",
    "END_BLOCK",
    "START_BLOCK",
    "FrameError",
    "FrameErrorKind",
    "MllpDecoder",
    "frame",
]

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\x0d"
_TRAILER = END_BLOCK + CARRIAGE_RETURN
_EB = 0x1C
_CR = 0x0D
# Bytes a sender may leave between frames (a newline after each frame is common).
_INTERFRAME_WHITESPACE = b" \t\r\n\x00"

DEFAULT_MAX_FRAME = 10 * 1024 * 1024


def frame(message: bytes) -> bytes:
    """Wrap one encoded message in an MLLP block.

    The message must not contain the block characters ``0x0B`` or ``0x1C``; the ER7
    writer escapes every control character, so its output never does.
    """
    return START_BLOCK + message + _TRAILER


class FrameErrorKind(StrEnum):
    GARBAGE = "garbage"  # bytes before a start block (ended by a start block or by EOF)
    UNSTARTED = "unstarted"  # bytes ended by 0x1C 0x0D with no start block: a frame missing 0x0B
    TRUNCATED = "truncated"  # a frame cut short by a new start block or by EOF
    OVERSIZE = "oversize"  # a frame longer than the decoder's limit


@dataclass(frozen=True, slots=True)
class FrameError:
    """Bytes that did not form a valid frame, in their place in the stream.

    ``data`` holds the offending bytes (at most the decoder's ``max_frame`` of them;
    ``size`` is how many there were), so nothing a sender sent is lost. ``at_eof`` is
    set for what :meth:`MllpDecoder.close` reports: the peer hung up mid-frame.
    """

    kind: FrameErrorKind
    data: bytes
    size: int
    detail: str
    at_eof: bool = False


class MllpDecoder:
    """Incremental MLLP deframer; one per connection, not thread-safe.

    A ``0x0B`` inside a frame starts a new frame (``0x0B`` is never valid HL7 text, nor a
    byte of a UTF-8 or GB18030 multi-byte character), so the partial frame before it is
    reported as TRUNCATED. A frame whose ``0x1C`` is followed directly by the next
    ``0x0B`` (the ``0x0D`` forgotten) is accepted. Whitespace between frames is ignored.
    Memory stays bounded by ``max_frame`` whatever the peer sends.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self._buf = bytearray()  # the current frame body, or the garbage run outside frames
        self._in_frame = False
        self._skipped = 0  # > 0: inside an oversize frame; its size so far
        self._garbage_size = 0  # size of the current garbage run (only max_frame kept)
        self._last_eb = False  # the last byte consumed was 0x1C (a trailer may be split)

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete frame or a garbage run not yet reported."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        """Consume ``data``; return the messages and errors it completed, in stream order."""
        out: list[bytes | FrameError] = []
        pos = 0
        end = len(data)
        while pos < end:
            if self._skipped:
                pos = self._skip(data, pos, out)
            elif self._in_frame:
                pos = self._inside(data, pos, out)
            else:
                pos = self._outside(data, pos, out)
        if end:
            self._last_eb = data[-1] == _EB
        return out

    def close(self) -> list[bytes | FrameError]:
        """The peer closed the stream: report what was left incomplete, then reset."""
        out: list[bytes | FrameError] = []
        if self._skipped:
            out.append(self._oversize("frame exceeds the limit and has no end", eof=True))
        elif self._in_frame:
            body = bytes(self._buf)
            detail = "frame without its end block (0x1C 0x0D) at end of stream"
            out.append(FrameError(FrameErrorKind.TRUNCATED, body, len(body), detail, True))
        elif self._buf.strip(_INTERFRAME_WHITESPACE):
            out.append(self._garbage("bytes outside any frame at end of stream", eof=True))
        self._buf = bytearray()
        self._in_frame = False
        self._skipped = self._garbage_size = 0
        self._last_eb = False
        return out

    # ------------------------------------------------------------------ states

    def _outside(self, data: bytes, pos: int, out: list[bytes | FrameError]) -> int:
        if self._last_eb and pos == 0 and data[0] == _CR and self._buf:
            # A trailer split between two reads ends a block that had no start.
            del self._buf[-1]
            self._garbage_size -= 1
            self._unstarted(out)
            return 1
        start = data.find(START_BLOCK, pos)
        trailer = data.find(_TRAILER, pos, len(data) if start == -1 else start)
        if trailer != -1:
            self._add_garbage(data, pos, trailer)
            self._unstarted(out)
            return trailer + 2
        stop = len(data) if start == -1 else start
        self._add_garbage(data, pos, stop)
        if start == -1:
            if self._garbage_size > self.max_frame:
                out.append(self._garbage("bytes outside any frame exceed the frame limit"))
            return stop
        if self._buf.strip(_INTERFRAME_WHITESPACE):
            out.append(self._garbage("bytes before a start block (0x0B)"))
        self._buf = bytearray()
        self._garbage_size = 0
        self._in_frame = True
        return start + 1

    def _inside(self, data: bytes, pos: int, out: list[bytes | FrameError]) -> int:
        buf = self._buf
        if self._last_eb and pos == 0 and data[0] == _CR and buf:
            del buf[-1]  # the trailer was split between two reads
            self._emit_frame(out)
            return 1
        trailer = data.find(_TRAILER, pos)
        stop = len(data) if trailer == -1 else trailer
        restart = data.find(START_BLOCK, pos, stop)
        if restart != -1:
            buf += data[pos:restart]
            if buf.endswith(END_BLOCK):
                del buf[-1]  # "0x1C 0x0B": the carriage return was left out
                self._emit_frame(out)
            else:
                body = bytes(buf)
                detail = "frame cut short by a new start block (0x0B)"
                out.append(FrameError(FrameErrorKind.TRUNCATED, body, len(body), detail))
                self._buf = bytearray()
            self._in_frame = True
            return restart + 1
        if len(buf) + (stop - pos) > self.max_frame:
            room = self.max_frame - len(buf)
            buf += data[pos : pos + room]
            self._skipped = len(buf) + (stop - pos - room)
            if trailer == -1:
                return stop
            out.append(self._oversize("frame exceeds the limit"))
            return trailer + 2
        buf += data[pos:stop]
        if trailer == -1:
            return stop
        self._emit_frame(out)
        return trailer + 2

    def _skip(self, data: bytes, pos: int, out: list[bytes | FrameError]) -> int:
        # The rest of an oversize frame is counted, not kept.
        if self._last_eb and pos == 0 and data[0] == _CR:
            out.append(self._oversize("frame exceeds the limit"))
            return 1
        trailer = data.find(_TRAILER, pos)
        stop = len(data) if trailer == -1 else trailer
        restart = data.find(START_BLOCK, pos, stop)
        if restart != -1:
            self._skipped += restart - pos
            out.append(self._oversize("frame exceeds the limit and was cut short"))
            self._in_frame = True
            return restart + 1
        self._skipped += stop - pos
        if trailer == -1:
            return stop
        out.append(self._oversize("frame exceeds the limit"))
        return trailer + 2

    # ------------------------------------------------------------------ helpers

    def _emit_frame(self, out: list[bytes | FrameError]) -> None:
        out.append(bytes(self._buf))
        self._buf = bytearray()
        self._in_frame = False

    def _add_garbage(self, data: bytes, start: int, stop: int) -> None:
        room = self.max_frame - len(self._buf)
        if room > 0:
            self._buf += data[start : min(stop, start + room)]
        self._garbage_size += stop - start

    def _unstarted(self, out: list[bytes | FrameError]) -> None:
        if self._buf.strip(_INTERFRAME_WHITESPACE):
            error = self._garbage("frame end (0x1C 0x0D) without a start block (0x0B)")
            out.append(FrameError(FrameErrorKind.UNSTARTED, error.data, error.size, error.detail))
        self._buf = bytearray()
        self._garbage_size = 0

    def _garbage(self, detail: str, *, eof: bool = False) -> FrameError:
        error = FrameError(
            FrameErrorKind.GARBAGE, bytes(self._buf), self._garbage_size, detail, eof
        )
        self._buf = bytearray()
        self._garbage_size = 0
        return error

    def _oversize(self, detail: str, *, eof: bool = False) -> FrameError:
        size = self._skipped
        error = FrameError(
            FrameErrorKind.OVERSIZE,
            bytes(self._buf),
            size,
            f"{detail}: {size} bytes or more, limit {self.max_frame}",
            eof,
        )
        self._buf = bytearray()
        self._in_frame = False
        self._skipped = 0
        return error
