"""MLLP listener: HL7 v2 messages in, stored durably, then acknowledged.

For each framed message: decode it by MSH-18 (or the listener's default charset), read
it with the fast ER7 reader, convert it to canonical events and submit them; the ACK
(AA) is written only after the commit that holds the message. What cannot be taken is
still stored, as rejected with its raw bytes, and answered with a NAK naming the error
(ERR-3, table 0357) and where it is (ERR-2):

====================================================  =====================================
received                                              answer (original mode)
====================================================  =====================================
stored (or a resend of a stored control id)           AA
not HL7 / no MSH / no MSH-9 or MSH-10 / bad charset   AE (100, 101, 102 or 103)
content the converter cannot read                     AE (101, 102, 103 with location)
unsupported message type or event                     AR (200 / 201)
same control id, different content                    AE (205)
the store failed                                      AR (207): resend later
frame missing its start block, cut short, oversize    AE (100 / 102)
bytes before a start block, anything cut off at EOF   stored only: no frame awaits a reply
====================================================  =====================================

Enhanced mode (MSH-15/16 valued): the commit acknowledgement CA/CE/CR follows MSH-15,
then, where MSH-16 asks, the application acknowledgement AA/AE/AR on the same
connection; storing the message is this hub's application processing, so both are
known at the commit. Messages on one connection are handled one at a time, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import Field, FilePath, SecretStr, field_validator

from hub.deadlines import IdleDeadline
from hub.hl7v2.ack import AckCode, ErrorDetail, ack_wanted, build_ack
from hub.hl7v2.er7 import Charset, MshHeader, codec_for, decode, parse_message, read_msh
from hub.hl7v2.errors import ErrorCode, ErrorLocation, Hl7Error
from hub.hl7v2.framing import DEFAULT_MAX_FRAME, FrameError, FrameErrorKind, MllpDecoder, frame
from hub.ids import new_id
from hub.listeners import Listener, ListenerSettings
from hub.registry import register
from mappings.hl7v2.inbound import Conversion, InboundOptions, convert

if TYPE_CHECKING:
    from hub.engine.ingest import Ingestor

__all__ = [
    "CONTENT_TYPE",
    "MllpListener",
    "MllpListenerSettings",
    "MllpMessageHandler",
    "TlsServerSettings",
]

log = logging.getLogger("hub.listeners.mllp")

CONTENT_TYPE = "application/hl7-v2"
CHANNEL = "mllp"
_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")
_READ_SIZE = 65536


class TlsServerSettings(ListenerSettings):
    cert_file: FilePath = Field(description="PEM certificate (chain) the listener presents.")
    key_file: FilePath = Field(description="PEM private key of that certificate.")
    key_password: SecretStr | None = Field(default=None, description="From ${ENV}.")
    client_ca_file: FilePath | None = Field(
        default=None, description="When set, senders must present a certificate it signed."
    )


class MllpListenerSettings(ListenerSettings):
    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    charset: Charset = Field(
        default="UNICODE UTF-8",
        description="Charset of messages whose MSH-18 is empty: an HL7 name "
        "(`GB 18030-2000`, `UNICODE UTF-8`, `8859/1`) or a codec name.",
    )
    peer: str | None = Field(
        default=None,
        pattern=_NAME,
        description="Sender name used as event `source` and id prefix; default the listener name.",
    )
    incident_field: str = Field(
        default="PV1-19.1", description="ER7 path holding the incident id (e.g. PV1-19.1)."
    )
    patient_field: str = Field(default="PID-3.1", description="ER7 path of the patient id.")
    utc_offset: str = Field(
        default="+08:00", description="Offset of HL7 times sent without one, e.g. +08:00."
    )
    max_frame: int = Field(
        default=DEFAULT_MAX_FRAME, ge=1024, description="Largest message accepted, in bytes."
    )
    idle_timeout: float = Field(
        default=600.0, gt=0, description="Seconds without data before a connection is closed."
    )
    tls: TlsServerSettings | None = Field(default=None, description="Serve MLLP over TLS.")

    @field_validator("utc_offset")
    @classmethod
    def _offset(cls, value: str) -> str:
        if not _OFFSET.match(value):
            raise ValueError("must look like +08:00")
        return value

    @field_validator("incident_field", "patient_field")
    @classmethod
    def _path(cls, value: str) -> str:
        if not re.match(r"^[A-Z][A-Z0-9]{2}(\[\d+\])?-\d+(\[\d+\])?(\.\d+){0,2}$", value):
            raise ValueError("must be an ER7 path such as PV1-19.1 or PID-3[1].1")
        return value

    def tzinfo(self) -> timezone:
        m = _OFFSET.match(self.utc_offset)
        assert m is not None
        delta = timedelta(hours=int(m[2]), minutes=int(m[3]))
        return timezone(-delta if m[1] == "-" else delta)


class _Verdict(NamedTuple):
    code: AckCode
    errors: tuple[ErrorDetail, ...] = ()


def server_ssl_context(tls: TlsServerSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    password = tls.key_password.get_secret_value() if tls.key_password else None
    context.load_cert_chain(Path(tls.cert_file), Path(tls.key_file), password)
    if tls.client_ca_file is not None:
        context.load_verify_locations(cafile=Path(tls.client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class MllpMessageHandler:
    """Turns one deframed item into zero or more encoded replies, after storing it.

    Never raises for anything a sender can send: every failure becomes a NAK and a
    rejected record. Socket-free, so it can be driven directly by tests.
    """

    def __init__(self, ingestor: Ingestor, settings: MllpListenerSettings, peer: str) -> None:
        self.ingestor = ingestor
        self.settings = settings
        self.peer = peer
        self.tz = settings.tzinfo()
        codec = codec_for(settings.charset)
        assert codec is not None  # validated by the settings
        self.default_codec = codec
        self.options = InboundOptions(
            peer=peer,
            incident_field=settings.incident_field,
            patient_field=settings.patient_field,
            default_tz=self.tz,
        )

    async def handle(self, item: bytes | FrameError, *, alone: bool = False) -> list[bytes]:
        """``alone``: this sender's connection is the listener's only one (see ingest)."""
        try:
            if isinstance(item, FrameError):
                return await self._frame_error(item)
            return await self._message(item, alone)
        except Exception:
            # A bug here must cost one message (which the sender will resend), never the
            # connection or the listener.
            log.exception("mllp listener %s failed on a message", self.peer)
            error = ErrorDetail(
                ErrorCode.APPLICATION_INTERNAL_ERROR, "the hub failed to process the message"
            )
            raw = item.data if isinstance(item, FrameError) else item
            verdict = _Verdict(AckCode.AR, (error,))
            await self._store_rejected(raw, verdict, CONTENT_TYPE)  # kept to reproduce the bug
            return self._reply(_msh_or_none(raw), verdict, None)

    async def _message(self, raw: bytes, alone: bool) -> list[bytes]:
        msh: MshHeader | None = None
        codec: str | None = None
        try:
            decoded = decode(raw, self.settings.charset)
            codec = decoded.codec
            message = parse_message(decoded.text, decoded.codec)
            msh = message.header
            for number, what in ((9, "message type"), (10, "message control id")):
                if not msh.get(number).strip():
                    raise Hl7Error(
                        f"MSH-{number} ({what}) is empty",
                        ErrorCode.REQUIRED_FIELD_MISSING,
                        ErrorLocation("MSH", 1, number),
                    )
            conversion = convert(message, self.options)
        except Hl7Error as exc:
            if msh is None:
                msh = _msh_or_none(raw)
            code = AckCode.AR if 200 <= exc.code < 300 else AckCode.AE
            verdict = _Verdict(code, (ErrorDetail.from_error(exc),))
            await self._store_rejected(raw, verdict, CONTENT_TYPE)
            return self._reply(msh, verdict, codec)
        verdict = await self._submit(raw, conversion, alone)
        return self._reply(msh, verdict, codec)

    async def _submit(self, raw: bytes, conversion: Conversion, alone: bool) -> _Verdict:
        try:
            result = await self.ingestor.submit_foreign(
                raw,
                conversion.events,
                channel=CHANNEL,
                content_type=CONTENT_TYPE,
                source=self.peer,
                alone=alone,
            )
        except Exception:
            log.exception("mllp listener %s could not store a message", self.peer)
            error = ErrorDetail(
                ErrorCode.APPLICATION_INTERNAL_ERROR, "the hub could not store the message"
            )
            return _Verdict(AckCode.AR, (error,))
        if result.errors:
            return _Verdict(
                AckCode.AE,
                tuple(
                    ErrorDetail(
                        _error_code(e["type"]),
                        f"{e['path']}: {e['reason']}" if e["path"] else e["reason"],
                        conversion.locate(e["path"]),
                    )
                    for e in result.errors
                ),
            )
        assert result.outcome is not None
        if result.outcome.conflicts:
            # The store kept this body as rejected; the first one stays as it was.
            return _Verdict(
                AckCode.AE,
                (
                    ErrorDetail(
                        ErrorCode.DUPLICATE_KEY_IDENTIFIER,
                        "this MSH-10 was already accepted with different content",
                        ErrorLocation("MSH", 1, 10),
                    ),
                ),
            )
        return _Verdict(AckCode.AA)

    async def _frame_error(self, item: FrameError) -> list[bytes]:
        msh = _msh_or_none(item.data)
        if item.kind is FrameErrorKind.OVERSIZE:
            code = ErrorCode.DATA_TYPE_ERROR
        else:
            code = ErrorCode.SEGMENT_SEQUENCE_ERROR
        text = f"MLLP {item.kind.value}: {item.detail}"
        verdict = _Verdict(AckCode.AE, (ErrorDetail(code, text),))
        content_type = CONTENT_TYPE if msh is not None else "application/octet-stream"
        await self._store_rejected(item.data, verdict, content_type, size=item.size)
        if item.kind is FrameErrorKind.GARBAGE or item.at_eof:
            # No frame of the sender's awaits this answer; one would be taken for the next.
            log.warning("mllp listener %s: %s (%d bytes), stored", self.peer, text, item.size)
            return []
        return self._reply(msh, verdict, None)

    async def _store_rejected(
        self, raw: bytes, verdict: _Verdict, content_type: str, size: int | None = None
    ) -> None:
        errors = [
            {
                "path": str(e.location) if e.location is not None else "",
                "reason": e.text,
                "type": f"hl7_{int(e.code)}",
            }
            for e in verdict.errors
        ]
        if size is not None and size > len(raw):
            errors.append(
                {"path": "", "reason": f"kept {len(raw)} of {size} bytes", "type": "truncated"}
            )
        try:
            await self.ingestor.reject(
                raw, errors, channel=CHANNEL, content_type=content_type, source=self.peer
            )
        except Exception:
            log.exception("mllp listener %s could not store a rejected message", self.peer)

    def _reply(self, msh: MshHeader | None, verdict: _Verdict, codec: str | None) -> list[bytes]:
        codes: list[AckCode] = []
        ok = verdict.code.accepted
        if msh is not None and msh.enhanced_mode:
            if ack_wanted(msh.accept_ack_type, ok):
                codes.append(verdict.code.commit_level())
            if ack_wanted(msh.application_ack_type, ok):
                codes.append(verdict.code)
        else:
            codes.append(verdict.code)
        charset = None if codec is not None else ""  # echo MSH-18 only when decoded by it
        out = []
        for code in codes:
            text = build_ack(
                msh,
                code,
                control_id=new_id(),
                timestamp=datetime.now(self.tz),
                errors=verdict.errors,
                charset=charset,
            )
            out.append(frame(text.encode(codec or self.default_codec, errors="replace")))
        return out


def _msh_or_none(data: bytes) -> MshHeader | None:
    try:
        return read_msh(data)
    except Hl7Error:
        return None


def _error_code(error_type: str) -> ErrorCode:
    if error_type in ("missing", "vitals_empty", "patient_unidentified", "too_short"):
        return ErrorCode.REQUIRED_FIELD_MISSING
    if error_type in ("enum", "literal_error"):
        return ErrorCode.TABLE_VALUE_NOT_FOUND
    return ErrorCode.DATA_TYPE_ERROR


@register("listener", "mllp")
class MllpListener(Listener):
    """An asyncio MLLP server feeding the ingestor."""

    settings_model = MllpListenerSettings
    settings: MllpListenerSettings

    def __init__(self, name: str, settings: MllpListenerSettings, ingestor: Ingestor) -> None:
        super().__init__(name, settings, ingestor)
        self.peer = settings.peer or name
        self.handler = MllpMessageHandler(ingestor, settings, self.peer)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the listener is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self._server is not None:
            return
        context = server_ssl_context(self.settings.tls) if self.settings.tls else None
        self._server = await asyncio.start_server(
            self._serve,
            self.settings.host,
            self.settings.port,
            ssl=context,
            limit=_READ_SIZE,
        )
        log.info("mllp listener %s on %s:%d", self.name, self.settings.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted while stopping: the writer may be gone
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        decoder = MllpDecoder(self.settings.max_frame)
        loop = asyncio.get_running_loop()
        idle_timeout = self.settings.idle_timeout
        # Counts only while waiting for data (see IdleDeadline).
        idle = IdleDeadline(loop, reader, idle_timeout)
        try:
            while True:
                idle.waiting()
                data = await reader.read(_READ_SIZE)
                idle.received()
                items = decoder.feed(data) if data else decoder.close()
                for item in items:
                    alone = len(self._connections) == 1
                    replies = await self.handler.handle(item, alone=alone)
                    if replies and data:
                        writer.writelines(replies)
                        await writer.drain()
                if not data:
                    break
        except TimeoutError:  # idle for idle_timeout (an OSError: caught first)
            log.info("mllp listener %s: connection idle for %ss, closed", self.name, idle_timeout)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("mllp listener %s: connection ended: %r", self.name, exc)
        except asyncio.CancelledError:
            # stop() ends connections this way; finishing normally keeps asyncio's stream
            # callback (3.11) from logging the cancellation as an error.
            pass
        finally:
            idle.cancel()
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
