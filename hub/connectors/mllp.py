"""MLLP connector: HL7 v2 over TCP (TLS optional), one message in flight per connection.

Each attempt frames the stored payload, writes it and waits for the acknowledgement
whose MSA-2 equals the payload's MSH-10. A reply for any other control id is never
taken for this message: it is discarded and the wait goes on until ``ack_timeout``;
then the connection, being out of step, is dropped. How replies are classified:

========  ===============================================================
AA        delivered
CA        delivered (commit accept), unless ``require_application_ack``: then the
          AA/AE/AR that follows on the same connection decides
AE / CE   permanent when ``ae_is_permanent`` (default), else transient
AR / CR   transient unless ``ar_is_permanent`` (AR: the receiver is busy or down)
timeout   transient: ``ack_timeout``, or ``ack_mismatch`` if only other ids came back
refused, reset, closed, TLS failure: transient
========  ===============================================================

Connections are kept open and reused; a reused connection that turns out to be closed
by the partner is replaced once, at once. ``connections`` > 1 keeps a small pool, and
the destination's ``max_in_flight`` defaults to eight deliveries per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from pathlib import Path
from typing import Self

from pydantic import Field, FilePath, SecretStr, model_validator

from hub.connectors.base import (
    DEFAULT_IN_FLIGHT,
    Connector,
    ConnectorSettings,
    Outbound,
    Outcome,
    SendResult,
    truncate,
)
from hub.deadlines import fail_reads
from hub.hl7v2.ack import AckCode, AckResult, read_ack
from hub.hl7v2.er7 import (
    Charset,
    codec_for,
    decode,
    parse_message,
    read_msh,
    split_messages,
)
from hub.hl7v2.errors import Hl7Error
from hub.hl7v2.framing import FrameError, MllpDecoder, frame
from hub.registry import register

__all__ = ["MllpConnector", "MllpSettings", "TlsClientSettings", "client_ssl_context"]

log = logging.getLogger("hub.connectors.mllp")

_READ_SIZE = 65536
_IN_FLIGHT_PER_CONNECTION = 8  # the default window (MllpConnector.default_in_flight)


class TlsClientSettings(ConnectorSettings):
    ca_file: FilePath | None = Field(
        default=None, description="PEM CA bundle to verify the partner; default: system CAs."
    )
    cert_file: FilePath | None = Field(
        default=None, description="PEM client certificate, when the partner asks for one."
    )
    key_file: FilePath | None = Field(default=None, description="PEM key of cert_file.")
    key_password: SecretStr | None = Field(default=None, description="From ${ENV}.")
    verify: bool = Field(
        default=True, description="Verify the partner's certificate and host name."
    )
    server_hostname: str | None = Field(
        default=None, description="Name to verify and send (SNI); default: host."
    )

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class MllpSettings(ConnectorSettings):
    host: str = Field(description="Partner host name or address.")
    port: int = Field(ge=1, le=65535, description="Partner MLLP port.")
    tls: TlsClientSettings | None = Field(default=None, description="MLLP over TLS.")
    charset: Charset = Field(
        default="UNICODE UTF-8",
        description="Charset of replies whose MSH-18 is empty (`GB 18030-2000` for many "
        "Chinese HIS).",
    )
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to connect.")
    ack_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for the matching ACK."
    )
    ae_is_permanent: bool = Field(
        default=True, description="AE/CE parks the delivery as dead (else it is retried)."
    )
    ar_is_permanent: bool = Field(
        default=False, description="AR/CR parks the delivery as dead (else it is retried)."
    )
    require_application_ack: bool = Field(
        default=False,
        description="After a commit ACK (CA), wait for the application ACK (AA/AE/AR).",
    )
    connections: int = Field(
        default=1, ge=1, le=32, description="Connections kept open; one message in flight each."
    )
    max_frame: int = Field(
        default=1024 * 1024, ge=1024, description="Largest reply accepted, in bytes."
    )


def client_ssl_context(tls: TlsClientSettings) -> ssl.SSLContext:
    """The TLS context of the settings (reads the files; raises ssl.SSLError/OSError)."""
    context = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls.ca_file is not None else None
    )
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert_file is not None:
        password = tls.key_password.get_secret_value() if tls.key_password else None
        key = Path(tls.key_file) if tls.key_file is not None else None
        context.load_cert_chain(Path(tls.cert_file), key, password)
    return context


def _control_id(block: bytes, charset: str) -> str:
    """MSH-10 of one message. An MSH line of ASCII bytes reads the same in every charset
    an MLLP partner uses (all extend ASCII), so only a non-ASCII one is decoded first."""
    end = block.find(b"\r")
    head = block if end < 0 else block[:end]
    if head.isascii() and b"\x00" not in head:  # UTF-16 would hold NULs
        return read_msh(head).control_id
    return read_msh(decode(block, charset).text).control_id


def _read_reply(data: bytes, charset: str) -> tuple[str, AckResult]:
    """A reply's text and what it says. ASCII, the usual ACK, reads the same in every
    charset: its own (MSH-18) or ours is needed only for ``\\Xhh\\`` escapes."""
    if data.isascii() and b"\x00" not in data:
        text = data.decode("ascii")
        assumed = codec_for(charset)
        message = parse_message(text, assumed or "ascii")
        codec = codec_for(message.header.charset or charset)
        if codec is not None:
            if codec != assumed:  # its own charset, for the escapes: read again with it
                message = parse_message(text, codec)
            return text, read_ack(message)
    decoded = decode(data, charset)  # an unknown MSH-18 is refused here
    return decoded.text, read_ack(parse_message(decoded.text, decoded.codec))


class _PeerClosed(Exception):
    def __init__(self, what: str, replied: bool) -> None:
        super().__init__(what)
        self.what = what
        self.replied = replied  # some reply bytes arrived before the end


class _Link:
    """One connection and its deframer; used by one send at a time."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.decoder = MllpDecoder(max_frame)
        self.pending: deque[bytes | FrameError] = deque()
        # Control ids answered on this connection lately: a late second ACK for one of
        # them (an AA after the CA that delivered it) is expected, not a mismatch.
        self.answered: deque[str] = deque(maxlen=16)

    @property
    def usable(self) -> bool:
        return (
            self.writer is not None
            and self.reader is not None
            and not self.writer.is_closing()
            and not self.reader.at_eof()
        )

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        self.decoder = MllpDecoder(self.max_frame)
        self.pending.clear()
        self.answered.clear()
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@register("connector", "mllp")
class MllpConnector(Connector):
    settings_model = MllpSettings
    settings: MllpSettings

    @classmethod
    def default_in_flight(cls, settings: MllpSettings) -> int:
        """Eight deliveries per connection, at least the common default.

        Each connection carries one message at a time; the rest of the window waits,
        mapped, for a free connection. A claimed delivery holds its slot until its result
        is recorded, and results are recorded together (worker.record_linger), so each
        connection idles from its last ACK of a round until the next round is claimed and
        mapped; the deeper the window per connection, the rarer that gap. Four HIS
        connections, eight monitors on 2 cores, eight alternating pairs: 32 instead of 16
        gave 3,704 instead of 3,382 msg/s end to end (means, faster in 7 of 8) at 8% less
        CPU per message, from fewer and larger claims and records (benchmarks/README.md,
        eleventh round).
        """
        return max(DEFAULT_IN_FLIGHT, _IN_FLIGHT_PER_CONNECTION * settings.connections)

    def __init__(self, name: str, settings: MllpSettings) -> None:
        super().__init__(name, settings)
        self._links: asyncio.Queue[_Link] = asyncio.Queue()
        self._all = [_Link(settings.max_frame) for _ in range(settings.connections)]
        for link in self._all:
            self._links.put_nowait(link)
        self._ssl: ssl.SSLContext | None = None
        self._ssl_error: str | None = None
        self._ssl_loaded = False

    async def start(self) -> None:
        """Load the TLS files once; connections open on the first send."""
        if self._ssl_loaded or self.settings.tls is None:
            return
        self._ssl_loaded = True
        try:
            self._ssl = client_ssl_context(self.settings.tls)
        except (ssl.SSLError, OSError) as exc:
            self._ssl_error = f"TLS settings of {self.name} cannot be loaded: {exc!r}"
            log.error("%s", self._ssl_error)

    async def send(self, message: Outbound) -> SendResult:
        """Send the payload's message(s) in order on one connection, each awaiting its
        own ACK; the first that is not accepted ends the send with its result."""
        await self.start()
        if self._ssl_error is not None:
            return SendResult(Outcome.TRANSIENT, error=self._ssl_error, error_class="config")
        blocks = split_messages(message.payload) or [message.payload]
        control_ids = []
        for index, block in enumerate(blocks, start=1):
            which = f"message {index} of {len(blocks)}: " if len(blocks) > 1 else ""
            try:
                control_id = _control_id(block, self.settings.charset)
            except Hl7Error as exc:
                return SendResult(
                    Outcome.PERMANENT,
                    error=f"{which}the payload is not an HL7 v2 message: {exc.message}",
                    error_class="invalid_payload",
                )
            if not control_id:
                return SendResult(
                    Outcome.PERMANENT,
                    error=f"{which}the payload has no MSH-10 to match the ACK against",
                    error_class="invalid_payload",
                )
            control_ids.append(control_id)
        link = await self._links.get()
        try:
            for block, control_id in zip(blocks, control_ids, strict=True):
                result = await self._exchange(link, frame(block), control_id)
                if result.outcome is not Outcome.DELIVERED:
                    break
            return result
        finally:
            self._links.put_nowait(link)

    async def close(self) -> None:
        for link in self._all:
            await link.close()

    # ------------------------------------------------------------------ one exchange

    async def _exchange(self, link: _Link, block: bytes, control_id: str) -> SendResult:
        reused = link.usable
        while True:
            if not link.usable:
                await link.close()
                failed = await self._connect(link)
                if failed is not None:
                    return failed
            if link.pending:
                log.debug("%s: dropping %d late replies", self.name, len(link.pending))
                link.pending.clear()
            try:
                assert link.writer is not None
                link.writer.write(block)
                await link.writer.drain()
                return await self._await_ack(link, control_id)
            except _PeerClosed as exc:
                await link.close()
                if reused and not exc.replied:
                    # The partner closed an idle connection; the message may not have
                    # been read. Resend once on a fresh one (it dedupes on MSH-10).
                    reused = False
                    continue
                return SendResult(
                    Outcome.TRANSIENT,
                    error=f"the partner {exc.what} before acknowledging {control_id}",
                    error_class="connection_closed",
                )
            except (ConnectionError, OSError) as exc:
                await link.close()
                if reused:
                    reused = False
                    continue
                return SendResult(
                    Outcome.TRANSIENT, error=f"send failed: {exc!r}", error_class="network"
                )

    async def _connect(self, link: _Link) -> SendResult | None:
        s = self.settings
        hostname = None
        if self._ssl is not None:
            assert s.tls is not None
            hostname = s.tls.server_hostname or s.host
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    s.host, s.port, ssl=self._ssl, server_hostname=hostname, limit=_READ_SIZE
                ),
                s.connect_timeout,
            )
        except TimeoutError:
            return SendResult(
                Outcome.TRANSIENT,
                error=f"no connection to {s.host}:{s.port} within {s.connect_timeout}s",
                error_class="connect_timeout",
            )
        except ConnectionRefusedError as exc:
            return SendResult(
                Outcome.TRANSIENT,
                error=f"connection to {s.host}:{s.port} refused: {exc.strerror}",
                error_class="refused",
            )
        except ssl.SSLError as exc:
            return SendResult(
                Outcome.TRANSIENT, error=f"TLS handshake failed: {exc!r}", error_class="tls"
            )
        except OSError as exc:
            return SendResult(
                Outcome.TRANSIENT,
                error=f"cannot connect to {s.host}:{s.port}: {exc!r}",
                error_class="network",
            )
        link.reader, link.writer = reader, writer
        return None

    async def _await_ack(self, link: _Link, control_id: str) -> SendResult:
        loop = asyncio.get_running_loop()
        reader = link.reader
        assert reader is not None
        timer = loop.call_at(loop.time() + self.settings.ack_timeout, fail_reads, reader)
        try:
            return await self._read_ack(link, reader, control_id)
        finally:
            timer.cancel()
            if reader.exception() is not None:
                await link.close()  # failed by the timer after the last read: out of step

    async def _read_ack(
        self, link: _Link, reader: asyncio.StreamReader, control_id: str
    ) -> SendResult:
        mismatched: list[str] = []
        committed: AckResult | None = None
        replied = False
        while True:
            while link.pending:
                item = link.pending.popleft()
                if isinstance(item, FrameError):
                    log.warning("%s: ignored %s bytes from the partner", self.name, item.kind)
                    continue
                try:
                    text, ack = _read_reply(item, self.settings.charset)
                except Hl7Error as exc:
                    # code and location only: an error text may quote a field's value
                    log.warning(
                        "%s: ignored an unreadable reply (ERR %s at %s)",
                        self.name,
                        exc.code.value,
                        exc.location or "MSH",
                    )
                    continue
                if ack.control_id != control_id:
                    if ack.control_id in link.answered:
                        continue
                    mismatched.append(ack.control_id)
                    log.warning(
                        "%s: ignored an ACK for %r while waiting for %r",
                        self.name,
                        ack.control_id,
                        control_id,
                    )
                    continue
                result = self._classify(ack, text)
                if result is None:
                    committed = ack
                    continue
                if result.error_class == "ack_invalid":
                    await link.close()
                else:
                    link.answered.append(control_id)
                return result
            try:
                data = await reader.read(_READ_SIZE)  # TimeoutError: see _await_ack
            except TimeoutError:
                await link.close()  # whatever comes later on it would be out of step
                return self._timed_out(control_id, mismatched, committed)
            except (ConnectionError, OSError) as exc:
                raise _PeerClosed(f"reset the connection ({exc!r})", replied) from None
            if not data:
                raise _PeerClosed("closed the connection", replied)
            replied = True
            link.pending.extend(link.decoder.feed(data))

    def _timed_out(
        self, control_id: str, mismatched: list[str], committed: AckResult | None
    ) -> SendResult:
        wait = self.settings.ack_timeout
        if committed is not None:
            return SendResult(
                Outcome.TRANSIENT,
                status="CA",
                error=f"commit ACK for {control_id} but no application ACK within {wait}s",
                error_class="ack_timeout",
            )
        if mismatched:
            seen = ", ".join(repr(m) for m in mismatched[:5])
            return SendResult(
                Outcome.TRANSIENT,
                error=f"no ACK for {control_id} within {wait}s; ACKs came for {seen}",
                error_class="ack_mismatch",
            )
        return SendResult(
            Outcome.TRANSIENT,
            error=f"no ACK for {control_id} within {wait}s",
            error_class="ack_timeout",
        )

    def _classify(self, ack: AckResult, text: str) -> SendResult | None:
        """The outcome of a matching ACK; None when a commit ACK must wait for the next."""
        response = truncate(text.replace("\r", "\n"))
        try:
            code = AckCode(ack.code)
        except ValueError:
            return SendResult(
                Outcome.TRANSIENT,
                status=ack.code or None,
                response=response,
                error=f"MSA-1 {ack.code!r} is not an acknowledgement code",
                error_class="ack_invalid",
            )
        if code.accepted:
            if code is AckCode.CA and self.settings.require_application_ack:
                return None
            return SendResult(Outcome.DELIVERED, status=code.value, response=response)
        permanent = self.settings.ae_is_permanent if code.error else self.settings.ar_is_permanent
        what = "an error" if code.error else "a rejection"
        detail = f": {ack.error_text}" if ack.error_text else ""
        return SendResult(
            Outcome.PERMANENT if permanent else Outcome.TRANSIENT,
            status=code.value,
            response=response,
            error=f"the partner answered {code.value} ({what}){detail}",
            error_class=f"ack_{code.value.lower()}",
        )
