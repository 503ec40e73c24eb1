"""The HIS twin on the wire: raw sockets, several messages per write, delays, half-close.

The connector tests (tests/unit/connectors/test_mllp.py) send one message at a time; a
partner may pipeline, and the twin answers inside ``data_received`` except when told to
delay, so order across that switch is checked here.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from hub.testing.hl7v2 import sample_adt
from sandbox.his_twin import HisTwin, _Connection

START, END = b"\x0b", b"\x1c\r"


def framed(control_id: str) -> bytes:
    return START + sample_adt(control_id).encode() + END


def read_acks(sock: socket.socket, count: int) -> list[tuple[str, str]]:
    """(MSA-1, MSA-2) of the next ``count`` ACKs."""
    buf = b""
    acks: list[tuple[str, str]] = []
    while len(acks) < count:
        while END not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {len(acks)} ACKs")
            buf += chunk
        block, buf = buf.split(END, 1)
        msa = next(s for s in block.decode().split("\r") if s.startswith("MSA|"))
        fields = msa.split("|")
        acks.append((fields[1], fields[2]))
    return acks


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(params=["asyncio", "uvloop"])
def twin(request: pytest.FixtureRequest) -> Iterator[HisTwin]:
    """The twin in its own thread, on asyncio (start_in_thread) and on uvloop (as the
    benchmark runs it: ``await twin.start()``; uvloop's transports differ)."""
    if request.param == "asyncio":
        his = HisTwin().start_in_thread()
        try:
            yield his
        finally:
            his.stop_thread()
        return
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    his = asyncio.run_coroutine_threadsafe(HisTwin().start(), loop).result(5)
    his._loop = loop  # so that hang_up() runs on the twin's loop
    try:
        yield his
    finally:
        asyncio.run_coroutine_threadsafe(his.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.fixture
def client(twin: HisTwin) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", twin.port), timeout=5)
    try:
        yield sock
    finally:
        sock.close()


def test_pipelined_messages_are_answered_in_order(twin: HisTwin, client: socket.socket) -> None:
    client.sendall(b"".join(framed(f"P{n}") for n in range(20)))
    assert read_acks(client, 20) == [("AA", f"P{n}") for n in range(20)]
    assert twin.accepted_ids() == [f"P{n}" for n in range(20)]
    client.sendall(framed("P3"))  # a retry: received again, counted once
    assert read_acks(client, 1) == [("AA", "P3")]
    assert len(twin.received()) == 21
    assert twin.accepted_count() == 20


def test_a_delayed_answer_holds_back_the_ones_after_it(
    twin: HisTwin, client: socket.socket
) -> None:
    twin.set_behaviour("ack", delay=0.1, count=1)
    client.sendall(framed("D1") + framed("D2") + b"junk" + framed("D3"))
    assert read_acks(client, 3) == [("AA", "D1"), ("AA", "D2"), ("AA", "D3")]
    twin.set_behaviour("ack", delay=0.05, count=2)  # the worker again, then back inline
    client.sendall(framed("D4") + framed("D5") + framed("D6"))
    assert read_acks(client, 3) == [("AA", "D4"), ("AA", "D5"), ("AA", "D6")]
    assert twin.state.garbage == 1
    received = twin.received()
    assert [r.control_id for r in received] == [f"D{n}" for n in range(1, 7)]
    assert received[0].at <= received[1].at


def test_a_half_closed_client_still_gets_its_delayed_answer(
    twin: HisTwin, client: socket.socket
) -> None:
    twin.set_behaviour("ack", delay=0.1)
    client.sendall(framed("H1") + framed("H2"))
    client.shutdown(socket.SHUT_WR)
    assert read_acks(client, 2) == [("AA", "H1"), ("AA", "H2")]
    assert client.recv(1) == b""


def test_drop_hangs_up_and_ignores_the_rest_of_the_read(
    twin: HisTwin, client: socket.socket
) -> None:
    twin.set_behaviour("drop", count=1)
    client.sendall(framed("X1") + framed("X2"))
    assert client.recv(65536) == b""
    assert [(r.control_id, r.answer) for r in twin.received()] == [("X1", None)]


def test_silent_then_nak_then_missing_control_id(twin: HisTwin, client: socket.socket) -> None:
    twin.set_behaviour("silent", count=1)
    client.sendall(framed("S1"))
    wait_until(lambda: len(twin.received()) == 1)
    twin.nak("AR", count=1)
    no_id = sample_adt("ZZZ").encode().replace(b"|ZZZ|", b"||")
    client.sendall(framed("S2") + START + no_id + END)
    assert read_acks(client, 2) == [("AR", "S2"), ("AE", "")]
    assert [r.answer for r in twin.received()] == [None, "AR", "AE"]
    assert twin.accepted_ids() == []


def test_a_malformed_segment_after_the_msh_is_refused(twin: HisTwin, client: socket.socket) -> None:
    broken = sample_adt("B1").encode().replace(b"\rPID|", b"\rP!D|")
    client.sendall(START + broken + END + framed("B2"))
    assert read_acks(client, 2) == [("AE", ""), ("AA", "B2")]
    assert twin.accepted_ids() == ["B2"]


def test_hang_up_closes_a_connection_waiting_in_a_delay(
    twin: HisTwin, client: socket.socket
) -> None:
    client.sendall(framed("W0"))
    assert read_acks(client, 1) == [("AA", "W0")]
    twin.set_behaviour("ack", delay=0.2)
    client.sendall(framed("W1"))
    time.sleep(0.05)  # read and waiting (closing with unread bytes would reset instead)
    twin.hang_up()
    assert client.recv(65536) == b""
    # The message whose delay was running is still recorded, as a handler did.
    wait_until(lambda: len(twin.received()) == 2)
    assert [r.control_id for r in twin.received()] == ["W0", "W1"]


class _FakeTransport:
    """Just what _Connection calls, to watch flow control without filling kernel buffers."""

    def __init__(self) -> None:
        self.reading = True
        self.closing = False
        self.written: list[bytes] = []

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def test_a_client_that_does_not_read_stops_the_twin_reading() -> None:
    async def scenario() -> None:
        his = HisTwin()
        his._server = cast(Any, object())  # as if listening
        connection = _Connection(his)
        transport = _FakeTransport()
        connection.connection_made(cast(asyncio.Transport, transport))
        connection.pause_writing()  # the write buffer passed its high-water mark
        assert not transport.reading
        connection.data_received(framed("F1"))  # what was already read is answered
        assert len(transport.written) == 1
        connection.resume_writing()
        assert transport.reading
        # Reading stays paused while a delayed answer is pending, whatever the writes do.
        his.set_behaviour("ack", delay=0.01, count=1)
        connection.data_received(framed("F2") + framed("F3"))
        connection.pause_writing()
        connection.resume_writing()
        assert not transport.reading
        await asyncio.sleep(0.1)
        assert transport.reading
        assert len(transport.written) == 3
        assert his.accepted_ids() == ["F1", "F2", "F3"]

    asyncio.run(scenario())
