"""The MLLP listener end to end: real sockets, the real runtime and store.

Senders are python-hl7's MLLP client (the ``mllp_send`` logic) and a small raw-socket
client for what a well-behaved client cannot send (garbage, truncated frames).
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import hl7.client
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.config.plan import ConfigError, plan_from_mapping
from hub.connectors.base import Outcome, SendResult
from hub.connectors.mllp import MllpConnector, MllpSettings, TlsClientSettings
from hub.hl7v2.ack import AckResult, read_ack
from hub.hl7v2.er7 import Er7Writer
from hub.hl7v2.framing import FrameError, MllpDecoder, frame
from hub.listeners.mllp import MllpListener, MllpMessageHandler
from hub.registry import lookup
from hub.runtime import HubRuntime
from hub.testing.conformance import make_outbound
from hub.testing.hl7v2 import sample_adt
from hub.testing.process import free_port, start_hub, write_config

T = TypeVar("T")


def adt(control_id: str, **changes: Any) -> Er7Writer:
    """The shared sample ADT as a HIS sends it to the hub."""
    sent = {"name": ("欧阳", "娜娜"), "incident": "TJ120-0001", **changes}
    return sample_adt(control_id, sender=("HIS", "H1"), receiver=("HUB", "120"), **sent)


class RunningHub:
    """A HubRuntime with its listeners on an event loop in a background thread."""

    def __init__(self, database_url: str, **listener: Any) -> None:
        config = {
            "database_url": database_url,
            "listeners": {"his-a": {"type": "mllp", "port": 0, **listener}},
        }
        self.plan = plan_from_mapping(config, env={})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runtime = HubRuntime(self.plan, with_worker=False)
        self.call(self.runtime.start())
        self.listener = self.runtime.listeners["his-a"]
        self.port = self.listener.port
        self.store = self.runtime.store

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        self.call(self.runtime.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def messages(self, status: str | None = None) -> list[dict[str, Any]]:
        return self.store.list_messages(status=status, limit=500).items

    def message(self, inbound_id: str) -> dict[str, Any]:
        found = self.store.get_message(inbound_id, actor="test")
        assert found is not None
        return found


@pytest.fixture
def hub(database_url: str) -> Iterator[RunningHub]:
    running = RunningHub(database_url, charset="GB 18030-2000")
    try:
        yield running
    finally:
        running.stop()


class RawClient:
    """A blocking MLLP client that can send anything and read several replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.decoder = MllpDecoder()
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def replies(self, count: int) -> list[AckResult]:
        while len(self.pending) < count:
            data = self.sock.recv(65536)
            assert data, "the listener closed the connection"
            for item in self.decoder.feed(data):
                assert not isinstance(item, FrameError), item
                self.pending.append(item)
        taken, self.pending = self.pending[:count], self.pending[count:]
        return [read_ack(item, default_charset="gb18030") for item in taken]

    def closed_by_peer(self) -> bool:
        return self.sock.recv(65536) == b""

    def close(self) -> None:
        self.sock.close()


def exchange(port: int, data: bytes, count: int = 1) -> list[AckResult]:
    client = RawClient(port)
    try:
        client.send(data)
        return client.replies(count)
    finally:
        client.close()


def test_registered() -> None:
    assert lookup("listener", "mllp") is MllpListener


def test_python_hl7_client_sends_a_file_and_gets_one_ack_per_message(
    hub: RunningHub, tmp_path: Path
) -> None:
    messages = [adt(f"F{n}", incident=f"TJ120-000{n}").encode("utf-8") for n in range(4)]
    path = tmp_path / "batch.hl7"
    path.write_bytes(b"".join(frame(m) for m in messages))
    acks = []
    with hl7.client.MLLPClient("127.0.0.1", hub.port) as client, path.open("rb") as f:
        for message in hl7.client.read_stream(io.BytesIO(f.read())):
            acks.append(client.send_message(message))
    results = [read_ack(MllpDecoder().feed(a)[0]) for a in acks]  # type: ignore[arg-type]
    assert [(r.code, r.control_id) for r in results] == [("AA", f"F{n}") for n in range(4)]
    accepted = hub.messages("accepted")
    assert len(accepted) == 4
    assert {m["channel"] for m in accepted} == {"mllp"}
    assert {m["incident_id"] for m in accepted} == {f"TJ120-000{n}" for n in range(4)}
    stored = hub.message(accepted[0]["id"])
    # read_stream strips the final segment's CR: what was sent is what is kept.
    assert stored["raw"] in [m.rstrip(b"\r") for m in messages]
    assert stored["content_type"] == "application/hl7-v2"
    (event,) = stored["events"]
    assert event["type"] == "patient.identified"
    assert event["body"]["data"]["name"] == "欧阳娜娜"
    assert event["source"] == "his-a"


@pytest.mark.parametrize("end", [b"\r", b"\n", b"\r\n"])
def test_cr_lf_crlf_segment_ends(hub: RunningHub, end: bytes) -> None:
    raw = adt("E-" + str(len(end)) + end.hex()).encode("utf-8").replace(b"\r", end)
    (result,) = exchange(hub.port, frame(raw))
    assert result.code == "AA", result


def test_gb18030_with_msh18_and_by_default(hub: RunningHub) -> None:
    declared = adt("G1", charset="GB 18030-2000", name=("欧阳", "娜娜")).encode("gb18030")
    undeclared = adt("G2", charset=None, name=("张", "三丰")).encode("gb18030")
    first, second = exchange(hub.port, frame(declared) + frame(undeclared), 2)
    assert (first.code, second.code) == ("AA", "AA")
    names = {
        e["event_id"]: e["data"]["name"]
        for e in hub.store.incident_events("TJ120-0001", until=time.time() + 60)
    }
    assert names == {"his-a-G1-1": "欧阳娜娜", "his-a-G2-1": "张三丰"}


def test_resend_is_idempotent(hub: RunningHub) -> None:
    raw = adt("DUP-1").encode()
    client = RawClient(hub.port)
    try:
        client.send(frame(raw))
        client.send(frame(raw))
        first, second = client.replies(2)
    finally:
        client.close()
    assert (first.code, second.code) == ("AA", "AA")
    assert first.control_id == second.control_id == "DUP-1"
    assert len(hub.messages()) == 1
    assert len(hub.store.incident_events("TJ120-0001", until=time.time() + 60)) == 1


def test_same_control_id_different_content_is_refused(hub: RunningHub) -> None:
    (first,) = exchange(hub.port, frame(adt("C-1").encode()))
    (second,) = exchange(hub.port, frame(adt("C-1", name=("李", "四")).encode()))
    assert first.code == "AA"
    assert (second.code, second.error_codes) == ("AE", ("205",))
    assert len(hub.messages("rejected")) == 1


def test_enhanced_mode_commit_then_application_ack(hub: RunningHub) -> None:
    commit, application = exchange(hub.port, frame(adt("ENH", ack=("AL", "AL")).encode()), 2)
    assert (commit.code, application.code) == ("CA", "AA")
    assert commit.enhanced and not application.enhanced
    (only,) = exchange(hub.port, frame(adt("ENH2", ack=("AL", "NE")).encode()))
    assert only.code == "CA"


@pytest.mark.parametrize(
    ("raw", "code", "error", "where"),
    [
        (b"this is not HL7", "AE", "100", "MSH^1"),
        (b"MSH|^~\\&|A|B|C|D|20261125||ADT^A04||P|2.5.1", "AE", "101", "MSH^1^10"),
        (b"MSH|^~\\&|A|B|C|D|20261125|||X1|P|2.5.1", "AE", "101", "MSH^1^9"),
        (
            adt("ENC", charset="UNICODE UTF-8").text().encode("gb18030"),
            "AE",
            "102",
            "MSH^1^18",
        ),
        (adt("UNS", kind=("SIU", "S12")).encode(), "AR", "200", "MSH^1^9"),
        (adt("A03", kind=("ADT", "A03")).encode(), "AR", "201", "MSH^1^9"),
        (adt("NOINC", incident="").encode(), "AE", "101", "PV1^1^19^^1"),
        (adt("BADID", resident_id="110101199003070019").encode(), "AE", "102", "PID^1^3^2"),
    ],
)
def test_what_cannot_be_taken_gets_a_nak_and_is_stored_as_rejected(
    hub: RunningHub, raw: bytes, code: str, error: str, where: str | None
) -> None:
    (result,) = exchange(hub.port, frame(raw))
    assert result.code == code, result
    assert result.error_codes[:1] == (error,)
    assert result.error_text
    (rejected,) = hub.messages("rejected")
    stored = hub.message(rejected["id"])
    assert stored["raw"] == raw
    assert stored["channel"] == "mllp"
    assert stored["source"] == "his-a"
    if where is not None and where.startswith("PID"):
        # Refused by the canonical model: the record keeps the model's own error.
        assert stored["error"][0]["path"] == "events[0].data.resident_id"
    else:
        assert stored["error"][0]["type"] == f"hl7_{error}"
        assert stored["error"][0]["path"] == (where or "")
    assert hub.messages("accepted") == []


def test_a_bug_costs_one_message_not_the_listener(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("converter bug")

    monkeypatch.setattr("hub.listeners.mllp.convert", broken)
    (result,) = exchange(hub.port, frame(adt("BUG-1").encode()))
    assert (result.code, result.control_id, result.error_codes) == ("AR", "BUG-1", ("207",))
    (rejected,) = hub.messages("rejected")
    assert hub.message(rejected["id"])["raw"] == adt("BUG-1").encode()
    monkeypatch.undo()
    (result,) = exchange(hub.port, frame(adt("BUG-1").encode()))
    assert result.code == "AA"


def test_unsupported_type_text(hub: RunningHub) -> None:
    (result,) = exchange(hub.port, frame(adt("UNS2", kind=("SIU", "S12")).encode()))
    assert result.error_text is not None
    assert "unsupported message type" in result.error_text


def test_frame_errors(hub: RunningHub) -> None:
    good = adt("OK-1").encode()
    client = RawClient(hub.port)
    try:
        # A message without its start block, one cut short by the next, then a good one.
        client.send(adt("NOSTART").encode() + b"\x1c\x0d")
        client.send(b"\x0b" + adt("CUT").encode()[:80] + frame(good))
        unstarted, truncated, accepted = client.replies(3)
        # Bytes before a start block are stored, not answered (the answer would be taken
        # for the next frame's): the good frame after them gets the one reply.
        client.send(b"noise" + frame(adt("OK-2").encode()))
        (after_noise,) = client.replies(1)
        # A frame cut off by the sender hanging up: stored, connection closed.
        client.send(b"\x0bMSH|^~\\&|half a message")
        client.sock.shutdown(socket.SHUT_WR)
        assert client.closed_by_peer()
    finally:
        client.close()
    assert (unstarted.code, unstarted.control_id, unstarted.error_codes) == (
        "AE",
        "NOSTART",
        ("100",),
    )
    assert (truncated.code, truncated.control_id) == ("AE", "CUT")
    assert (accepted.code, accepted.control_id) == ("AA", "OK-1")
    assert (after_noise.code, after_noise.control_id) == ("AA", "OK-2")
    _wait_for(lambda: len(hub.messages("rejected")) == 4)
    raws = {hub.message(m["id"])["raw"] for m in hub.messages("rejected")}
    assert raws == {
        adt("NOSTART").encode(),
        adt("CUT").encode()[:80],
        b"noise",
        b"MSH|^~\\&|half a message",
    }


def test_oversize_frame(database_url: str) -> None:
    running = RunningHub(database_url, max_frame=1024)
    try:
        big = adt("BIG").encode() + b"NTE|1||" + b"x" * 2000 + b"\r"
        (result,) = exchange(running.port, frame(big) + frame(adt("SMALL").encode()), 1)
        assert (result.code, result.control_id, result.error_codes) == ("AE", "BIG", ("102",))
        (rejected,) = running.messages("rejected")
        stored = running.message(rejected["id"])
        assert stored["raw"] == big[:1024]
        assert "kept 1024 of" in stored["error"][-1]["reason"]
    finally:
        running.stop()


def test_an_idle_connection_is_closed_and_a_busy_one_is_not(database_url: str) -> None:
    running = RunningHub(database_url, idle_timeout=0.3)
    try:
        client = RawClient(running.port)
        # Busy: one message every 0.1 s for longer than the idle timeout, all answered.
        for n in range(6):
            client.send(frame(adt(f"BUSY-{n}").encode()))
            (result,) = client.replies(1)
            assert (result.code, result.control_id) == ("AA", f"BUSY-{n}")
            time.sleep(0.1)
        started = time.monotonic()
        assert client.closed_by_peer()  # then idle: closed by the listener
        assert 0.1 < time.monotonic() - started < 5
        client.close()
        (result,) = exchange(running.port, frame(adt("AFTER").encode()))
        assert result.code == "AA"  # the listener itself goes on
    finally:
        running.stop()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(noise=st.lists(st.binary(max_size=200), min_size=1, max_size=4))
def test_random_bytes_never_take_the_listener_down(hub: RunningHub, noise: list[bytes]) -> None:
    client = RawClient(hub.port)
    try:
        for chunk in noise:
            client.send(chunk)
    finally:
        client.close()
    (result,) = exchange(hub.port, frame(adt("ALIVE").encode()))
    assert result.code == "AA"


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    item=st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=200).map(lambda b: b"MSH|^~\\&|" + b),
        st.text(max_size=200).map(
            lambda t: ("MSH|^~\\&|A|B|C|D|2026||ADT^A04|1|P|2.5.1\r" + t).encode()
        ),
    )
)
def test_handler_never_raises_and_always_answers_a_frame(hub: RunningHub, item: bytes) -> None:
    listener = hub.listener
    assert isinstance(listener, MllpListener)
    handler: MllpMessageHandler = listener.handler
    replies = hub.call(handler.handle(item))
    assert len(replies) == 1
    (reply,) = MllpDecoder().feed(replies[0])
    assert isinstance(reply, bytes)
    assert read_ack(reply, default_charset="gb18030").code in ("AA", "AE", "AR")


def test_hub_connector_to_hub_listener_over_tls(
    database_url: str, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    running = RunningHub(database_url, tls={"cert_file": str(cert), "key_file": str(key)})
    try:
        settings = MllpSettings(
            host="127.0.0.1",
            port=running.port,
            tls=TlsClientSettings(ca_file=cert),
            require_application_ack=True,
        )
        payload = adt("TLS-1", ack=("AL", "AL")).encode()
        message = make_outbound("TLS-1", payload=payload, content_type="application/hl7-v2")

        async def send() -> SendResult:
            connector = MllpConnector("hub-b", settings)
            try:
                return await connector.send(message)
            finally:
                await connector.close()

        result = asyncio.run(send())
        assert (result.outcome, result.status) == (Outcome.DELIVERED, "AA"), result
        (accepted,) = running.messages("accepted")
        assert running.message(accepted["id"])["raw"] == payload
        # A plain-TCP sender gets no answer from a TLS listener, just a closed connection.
        client = RawClient(running.port)
        try:
            client.send(frame(adt("PLAIN").encode()))
            try:
                closed = client.closed_by_peer()
            except ConnectionError:
                closed = True
            assert closed
        finally:
            client.close()
        assert len(running.messages()) == 1
    finally:
        running.stop()


def test_listener_settings_are_checked() -> None:
    with pytest.raises(ConfigError) as info:
        plan_from_mapping(
            {
                "listeners": {
                    "HIS A": {"type": "mllp", "port": 0},
                    "b": {"type": "smtp"},
                    "c": {"type": "mllp", "port": 0, "charset": "EBCDIC", "surprise": 1},
                    "d": {"type": "mllp", "port": 0, "incident_field": "PV1.19"},
                }
            },
            env={},
        )
    paths = {p.path for p in info.value.problems}
    assert {
        "listeners.HIS A",
        "listeners.b.type",
        "listeners.c.charset",
        "listeners.c.surprise",
        "listeners.d.incident_field",
    } <= paths


def test_hub_run_starts_listeners_from_hub_yaml(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path,
        {
            "database_url": f"sqlite:///{tmp_path / 'hub.db'}",
            "listeners": {"his-a": {"type": "mllp", "port": port}},
        },
    )
    with start_hub(config, worker=False) as process:
        (result,) = exchange(port, frame(adt("RUN-1").encode()))
        assert result.code == "AA"
        assert process.alive


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    # Rejected bodies of a closed connection are stored after the close is seen.
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_commits_run_on_the_loop_on_sqlite_and_on_the_writer_thread_on_postgresql(
    hub: RunningHub,
) -> None:
    """One connection (committed at once) and two (committed as a group): on SQLite on
    the event loop, on PostgreSQL on the group-commit writer's thread, whose outage must
    never hold the loop."""
    store = hub.store
    committed_in: list[str] = []
    ingest = store.ingest

    def watched(jobs: Any) -> Any:
        committed_in.append(threading.current_thread().name)
        return ingest(jobs)

    store.ingest = watched  # type: ignore[method-assign]
    try:
        (alone,) = exchange(hub.port, frame(adt("ALONE-1").encode()))
        other = RawClient(hub.port)
        try:
            other.send(frame(adt("TWO-1").encode()))
            (first,) = other.replies(1)
            (second,) = exchange(hub.port, frame(adt("TWO-2").encode()))
        finally:
            other.close()
    finally:
        del store.ingest
    assert [a.code for a in (alone, first, second)] == ["AA", "AA", "AA"]
    where = hub.thread.name if store.sqlite else "hub-ingest-writer"
    assert committed_in == [where] * len(committed_in)
    assert {m["status"] for m in hub.messages()} == {"accepted"}
    assert len(hub.messages()) == 3
