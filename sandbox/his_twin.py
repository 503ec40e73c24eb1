"""Twin of a hospital HIS that receives HL7 v2 over MLLP and answers with ACKs.

It records every message (control id, message type, raw bytes, decoded text), checks it
minimally (every segment well formed, MSH-9 and MSH-10 valued) and
answers AA, or misbehaves on request: NAK with AE or AR, answer late, hang up without
answering, answer with a wrong MSA-2, or say nothing. It honours enhanced mode
(MSH-15/MSH-16: CA then AA). Its charset is the one peer setting a HIS has: messages
without MSH-18 are read with it, and its replies are written with it.

Run it on the caller's event loop (``await twin.start()``) or in a thread of its own
(``twin.start_in_thread()``); either way it binds a free loopback port, and the same
port again when started after a stop (a partner restart), keeping what it received.

Each connection is an :class:`asyncio.Protocol` that answers inside ``data_received``:
the twin shares the benchmark's cores with the hub under test, and a stream task per
connection (a future per read, a drain per answer) cost it more CPU than its own work.
Answers on a connection always go out in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal, cast

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
        self._clients: set[_Connection] = set()
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
        for client in list(self._clients):
            client.close()

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

    def accepted_count(self) -> int:
        """How many distinct control ids were accepted, without copying them."""
        with self._lock:
            return len(self.state.order)

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return self.state.connections

    # ------------------------------------------------------------------ running

    async def start(self) -> HisTwin:
        """Bind on the running loop: a free port at first, the same one after a stop."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self._port, ssl=self.ssl_context
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
        # A connection accepted while stopping is closed as it is made (see _Connection),
        # and a transport closes in callbacks of its own: let those run before the loop
        # closes.
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

    def _next_behaviour(self) -> HisBehaviour:
        with self._lock:
            current = self.state.behaviour
            if current.count is None:
                return current
            left = current.count - 1
            self.state.behaviour = replace(current, count=left) if left > 0 else HisBehaviour()
            return current if current.count > 0 else HisBehaviour()

    def _garbage(self) -> None:
        with self._lock:
            self.state.garbage += 1

    def _answer(self, raw: bytes, behaviour: HisBehaviour) -> bytes | None:
        """Record one message; return the framed reply (b"" for none), None to hang up."""
        msh: MshHeader | None = None
        codec = self.codec
        text = control_id = ""
        error: Hl7Error | None = None
        try:
            decoded = decode(raw, self.charset)
            codec, text = decoded.codec, decoded.text
            msh = parse_message(text, codec).header
            control_id = msh.control_id  # read once: the record and the reply want it too
            for number, value in ((9, msh.get(9)), (10, control_id)):
                if not value.strip():
                    raise Hl7Error(
                        f"MSH-{number} is empty",
                        ErrorCode.REQUIRED_FIELD_MISSING,
                        ErrorLocation("MSH", 1, number),
                    )
        except Hl7Error as exc:
            error = exc
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
        self._record(raw, text, codec, msh, control_id, code)
        if behaviour.mode == "drop" and error is None:
            return None
        if code is None:
            return b""
        replies = self._acks(msh, control_id, code, errors, echo)
        return b"".join(frame(r.encode(codec, errors="replace")) for r in replies)

    def _acks(
        self,
        msh: MshHeader | None,
        control_id: str,
        code: AckCode,
        errors: tuple[ErrorDetail, ...],
        echo: str,
    ) -> list[str]:
        if msh is not None and echo != control_id:
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
        self,
        raw: bytes,
        text: str,
        codec: str,
        msh: MshHeader | None,
        control_id: str,
        code: AckCode | None,
    ) -> None:
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


class _Connection(asyncio.Protocol):
    """One client connection, answered inside ``data_received`` (no task per message).

    A message whose behaviour has a delay needs an await: it and everything after it on
    this connection go to a worker task, and reading pauses until the worker is done, so
    answers keep arrival order and a burst never queues more than one read. Reading also
    pauses while the transport's write buffer is full (a client that does not read its
    ACKs), so the twin never buffers without bound.
    """

    def __init__(self, twin: HisTwin) -> None:
        self._twin = twin
        self._transport: asyncio.Transport | None = None
        self._decoder = MllpDecoder()
        self._queue: deque[bytes | FrameError] = deque()  # waiting for the worker
        self._worker: asyncio.Task[None] | None = None
        self._write_paused = False
        self._eof = False  # the peer finished sending; close once all is answered

    # ------------------------------------------------------------------ transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        twin = self._twin
        if twin._server is None:  # accepted while stopping
            transport.close()
            return
        twin._clients.add(self)
        with twin._lock:
            twin.state.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        # A running worker sees the transport closing and stops after its message, as a
        # handler blocked in a delay did when hung up on.
        self._twin._clients.discard(self)

    def data_received(self, data: bytes) -> None:
        items = self._decoder.feed(data)
        if self._worker is not None:
            self._queue.extend(items)
        else:
            self._take(items)

    def eof_received(self) -> bool:
        items = self._decoder.close()
        if self._worker is None:
            self._take(items)
        else:
            self._queue.extend(items)
        if self._worker is None:
            return False  # nothing left to answer: the transport closes itself
        self._eof = True
        # Plain TCP stays half-open until the worker has answered; TLS closes anyway.
        return self._transport is not None and self._transport.get_extra_info("sslcontext") is None

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        transport = self._transport
        if transport is not None and self._worker is None and not transport.is_closing():
            transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # ------------------------------------------------------------------ answering

    def _take(self, items: list[bytes | FrameError]) -> None:
        """Answer ``items`` now, until one needs a delay: that one goes to a worker."""
        transport = self._transport
        assert transport is not None
        twin = self._twin
        for index, item in enumerate(items):
            if transport.is_closing():
                return
            if isinstance(item, FrameError):
                twin._garbage()
                continue
            behaviour = twin._next_behaviour()
            if behaviour.delay:
                self._queue.extend(items[index + 1 :])
                transport.pause_reading()
                self._worker = asyncio.get_running_loop().create_task(self._work(item, behaviour))
                twin._tasks.add(self._worker)
                return
            if not self._send(twin._answer(item, behaviour)):
                return

    async def _work(self, raw: bytes, behaviour: HisBehaviour) -> None:
        """Answer ``raw`` after its delay, then the queue, in order, awaiting each delay."""
        transport = self._transport
        assert transport is not None
        twin = self._twin
        queue = self._queue
        try:
            while True:
                if behaviour.delay:
                    await asyncio.sleep(behaviour.delay)
                if not self._send(twin._answer(raw, behaviour)):
                    return
                while True:
                    if not queue or transport.is_closing():
                        return
                    item = queue.popleft()
                    if not isinstance(item, FrameError):
                        break
                    twin._garbage()
                raw, behaviour = item, twin._next_behaviour()
        finally:
            queue.clear()
            task, self._worker = self._worker, None
            if task is not None:
                twin._tasks.discard(task)
            if self._eof:
                transport.close()
            elif not self._write_paused and not transport.is_closing():
                transport.resume_reading()

    def _send(self, answer: bytes | None) -> bool:
        """Write a reply from :meth:`HisTwin._answer`; False when the connection ends."""
        transport = self._transport
        assert transport is not None
        if answer is None:
            transport.close()
            return False
        if answer and not transport.is_closing():
            transport.write(answer)
        return not transport.is_closing()
