"""Twin of a hospital HIS that receives HL7 v2 over MLLP and answers with ACKs.

It records every message (control id, message type, raw bytes, decoded text), checks it
minimally (MSH present, MSH-9 and MSH-10 valued) and answers AA, or misbehaves on
request: NAK with AE or AR, answer late, hang up without answering, answer with a wrong
MSA-2, or say nothing. It honours enhanced mode (MSH-15/MSH-16: CA then AA). Its charset
is the one peer setting a HIS has: messages without MSH-18 are read with it, and its
replies are written with it.

Run it on the caller's event loop (``await twin.start()``) or in a thread of its own
(``twin.start_in_thread()``); either way it binds a free loopback port, and the same
port again when started after a stop (a partner restart), keeping what it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from hub.hl7v2.ack import AckCode, ErrorDetail, ack_wanted, build_ack
from hub.hl7v2.er7 import MshHeader, codec_for, decode, parse_message
from hub.hl7v2.errors import ErrorCode, ErrorLocation, Hl7Error
from hub.hl7v2.framing import FrameError, MllpDecoder, frame
from hub.ids import new_id

__all__ = ["HisBehaviour", "HisReceived", "HisTwin", "Mode"]

Mode = Literal["ack", "nak", "drop", "wrong_id", "silent"]


@dataclass
class HisBehaviour:
    """How the twin answers the next ``count`` messages (None: all), then ``ack`` again.

    ``nak`` answers ``nak_code`` (AE, AR, CE, CR); ``drop`` closes the connection
    without answering; ``wrong_id`` answers AA for another control id; ``silent``
    answers nothing and keeps the connection. ``delay`` applies before any answer.
    """

    mode: Mode = "ack"
    nak_code: str = "AE"
    count: int | None = None
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class HisReceived:
    control_id: str
    message_type: str
    raw: bytes
    text: str
    codec: str
    answer: str | None  # the MSA-1 sent back; None when nothing was answered
    at: float


@dataclass
class _State:
    behaviour: HisBehaviour = field(default_factory=HisBehaviour)
    received: list[HisReceived] = field(default_factory=list)
    accepted: dict[str, list[bytes]] = field(default_factory=dict)  # AA'd, by MSH-10
    order: list[str] = field(default_factory=list)  # control ids first accepted, in order
    garbage: int = 0
    connections: int = 0


class HisTwin:
    """An asyncio MLLP server on loopback; thread-safe to steer and inspect."""

    def __init__(
        self,
        *,
        charset: str = "UNICODE UTF-8",
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        application: str = "HIS",
        facility: str = "HOSPITAL",
    ) -> None:
        codec = codec_for(charset)
        if codec is None:
            raise ValueError(f"unknown character set {charset!r}")
        self.charset = charset
        self.codec = codec
        self.ssl_context = ssl_context
        self.host = host
        self.application = application
        self.facility = facility
        self.state = _State()
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port = port  # 0 until first bound; a restart binds the same port again

    # ------------------------------------------------------------------ steering

    def set_behaviour(
        self,
        mode: Mode = "ack",
        *,
        nak_code: str = "AE",
        count: int | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``count`` messages (None: all) this way; see HisBehaviour."""
        AckCode(nak_code)  # a typo fails here, not in the middle of a test
        with self._lock:
            self.state.behaviour = HisBehaviour(mode, nak_code, count, delay)

    def nak(self, code: str = "AE", count: int | None = None) -> None:
        self.set_behaviour("nak", nak_code=code, count=count)

    def heal(self) -> None:
        self.set_behaviour()

    def reset(self) -> None:
        with self._lock:
            self.state = _State()

    def hang_up(self) -> None:
        """Close every client connection now; the twin keeps listening."""
        loop = self._loop
        if loop is None:
            self._close_clients()
            return
        done = threading.Event()

        def close() -> None:
            self._close_clients()
            done.set()

        loop.call_soon_threadsafe(close)
        done.wait(10)

    def _close_clients(self) -> None:
        for writer in list(self._writers):
            writer.close()

    # ------------------------------------------------------------------ inspection

    @property
    def port(self) -> int:
        return self._port

    def received(self) -> list[HisReceived]:
        """Every message received, answered or not, in arrival order."""
        with self._lock:
            return list(self.state.received)

    def accepted(self, control_id: str) -> list[bytes]:
        """Payloads answered AA (or CA) under ``control_id``, one per copy received."""
        with self._lock:
            return list(self.state.accepted.get(control_id, ()))

    def accepted_ids(self) -> list[str]:
        """Distinct control ids accepted, in the order first accepted."""
        with self._lock:
            return list(self.state.order)

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return self.state.connections

    # ------------------------------------------------------------------ running

    async def start(self) -> HisTwin:
        """Bind on the running loop: a free port at first, the same one after a stop."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self._port, ssl=self.ssl_context
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Stop listening and hang up on every client; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._close_clients()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await server.wait_closed()

    def start_in_thread(self, timeout: float = 10.0) -> HisTwin:
        """Run on an event loop of its own in a daemon thread; returns once bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name="his-twin", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the HIS twin did not start")
        if failure:
            raise RuntimeError("the HIS twin did not start") from failure[0]
        return self

    async def _shutdown(self) -> None:
        await self.stop()
        # A connection accepted while stopping has a task not yet run; it ends at once
        # (see _serve), so wait for those before the loop closes.
        for _ in range(5):
            others = asyncio.all_tasks() - {asyncio.current_task()}
            if not others:
                return
            _, late = await asyncio.wait(others, timeout=5)
            for task in late:
                task.cancel()

    def stop_thread(self) -> None:
        """Stop a twin started with :meth:`start_in_thread`; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    # ------------------------------------------------------------------ serving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted while stopping
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        with self._lock:
            self.state.connections += 1
        decoder = MllpDecoder()
        try:
            while True:
                data = await reader.read(65536)
                items = decoder.feed(data) if data else decoder.close()
                for item in items:
                    if isinstance(item, FrameError):
                        with self._lock:
                            self.state.garbage += 1
                        continue
                    if not await self._answer(item, writer):
                        return
                if not data:
                    return
        except (ConnectionError, OSError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _next_behaviour(self) -> HisBehaviour:
        with self._lock:
            current = self.state.behaviour
            if current.count is None:
                return current
            left = current.count - 1
            self.state.behaviour = replace(current, count=left) if left > 0 else HisBehaviour()
            return current if current.count > 0 else HisBehaviour()

    async def _answer(self, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        """Record and answer one message; False when the connection must end."""
        behaviour = self._next_behaviour()
        msh: MshHeader | None = None
        codec = self.codec
        text = ""
        error: Hl7Error | None = None
        try:
            decoded = decode(raw, self.charset)
            codec, text = decoded.codec, decoded.text
            msh = parse_message(text, codec).header
            for number in (9, 10):
                if not msh.get(number).strip():
                    raise Hl7Error(
                        f"MSH-{number} is empty",
                        ErrorCode.REQUIRED_FIELD_MISSING,
                        ErrorLocation("MSH", 1, number),
                    )
        except Hl7Error as exc:
            error = exc
        control_id = msh.control_id if msh is not None else ""
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        code: AckCode | None
        errors: tuple[ErrorDetail, ...] = ()
        echo = control_id
        if error is not None:
            code, errors = AckCode.AE, (ErrorDetail.from_error(error),)
        elif behaviour.mode == "nak":
            code = AckCode(behaviour.nak_code)
            errors = (ErrorDetail(ErrorCode.APPLICATION_INTERNAL_ERROR, "twin told to refuse"),)
        elif behaviour.mode == "wrong_id":
            code, echo = AckCode.AA, control_id + "-OTHER"
        elif behaviour.mode in ("drop", "silent"):
            code = None
        else:
            code = AckCode.AA
        self._record(raw, text, codec, msh, code)
        if behaviour.mode == "drop" and error is None:
            return False
        if code is None:
            return True
        replies = self._acks(msh, code, errors, echo)
        writer.writelines(frame(r.encode(codec, errors="replace")) for r in replies)
        await writer.drain()
        return True

    def _acks(
        self,
        msh: MshHeader | None,
        code: AckCode,
        errors: tuple[ErrorDetail, ...],
        echo: str,
    ) -> list[str]:
        if msh is not None and echo != msh.control_id:
            fields = list(msh.fields)
            fields[10] = echo
            msh = MshHeader(msh.separators, tuple(fields))
        codes = [code]
        if msh is not None and msh.enhanced_mode and not code.enhanced:
            ok = code.accepted
            codes = []
            if ack_wanted(msh.accept_ack_type, ok):
                codes.append(code.commit_level())
            if ack_wanted(msh.application_ack_type, ok):
                codes.append(code)
        now = datetime.now(UTC)
        return [
            build_ack(
                msh,
                c,
                control_id=new_id(),
                timestamp=now,
                errors=errors,
                sending_application=self.application,
                sending_facility=self.facility,
            )
            for c in codes
        ]

    def _record(
        self, raw: bytes, text: str, codec: str, msh: MshHeader | None, code: AckCode | None
    ) -> None:
        control_id = msh.control_id if msh is not None else ""
        item = HisReceived(
            control_id=control_id,
            message_type=msh.message_type if msh is not None else "",
            raw=raw,
            text=text,
            codec=codec,
            answer=code.value if code is not None else None,
            at=time.time(),
        )
        with self._lock:
            self.state.received.append(item)
            if code is not None and code.accepted:
                if control_id not in self.state.accepted:
                    self.state.order.append(control_id)
                self.state.accepted.setdefault(control_id, []).append(raw)
