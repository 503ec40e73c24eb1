"""The MLLP connector against the HIS twin, over real loopback sockets."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import pytest

from hub.connectors.base import Connector, Outbound, Outcome, SendResult
from hub.connectors.mllp import MllpConnector, MllpSettings, _Link
from hub.deadlines import fail_reads
from hub.hl7v2.framing import frame
from hub.ids import new_id
from hub.registry import lookup
from hub.testing.conformance import ConformanceTwin, ConnectorConformance, make_outbound, started
from hub.testing.hl7v2 import sample_adt
from sandbox.his_twin import HisTwin

adt = sample_adt  # the hub sending an ADT^A04 to a HIS
T = TypeVar("T")
HL7 = "application/hl7-v2"


def outbound(payload: bytes, message_id: str = "M1", attempt: int = 1) -> Outbound:
    return make_outbound(message_id, payload=payload, content_type=HL7, attempt=attempt)


_LOOP = {"name": "asyncio"}


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test on asyncio's loop and on uvloop, which the hub's workers run on: the
    connector's protocol sees uvloop's transports there (not asyncio.Transport)."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    _LOOP["name"] = request.param
    try:
        yield request.param
    finally:
        _LOOP["name"] = "asyncio"


def run(coro: Coroutine[Any, Any, T]) -> T:
    if _LOOP["name"] == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


async def send_and_close(connector: Connector, *messages: Outbound) -> list[SendResult]:
    try:
        return [await connector.send(m) for m in messages]
    finally:
        await connector.close()


def mllp(port: int, **settings: object) -> MllpConnector:
    return MllpConnector(
        "his", MllpSettings.model_validate({"host": "127.0.0.1", "port": port, **settings})
    )


@pytest.fixture
def twin() -> Iterator[HisTwin]:
    his = HisTwin().start_in_thread()
    try:
        yield his
    finally:
        his.stop_thread()


def test_registered() -> None:
    assert lookup("connector", "mllp") is MllpConnector


def test_aa_is_delivered(twin: HisTwin) -> None:
    payload = adt("CTL-1").encode()
    (result,) = run(send_and_close(mllp(twin.port), outbound(payload)))
    assert result.outcome is Outcome.DELIVERED, result
    assert result.status == "AA"
    assert result.response is not None and "MSA|AA|CTL-1" in result.response
    assert twin.accepted("CTL-1") == [payload]
    assert twin.received()[0].text.startswith("MSH|")


def test_a_payload_of_several_messages_sends_each_and_awaits_each_ack(twin: HisTwin) -> None:
    """One delivery of an ADT per patient (mother and newborn): every message is framed
    and acknowledged on its own, in order, on one connection."""
    first, second = adt("P1-A").encode(), adt("P1-B", name=("李", "四")).encode()
    (result,) = run(send_and_close(mllp(twin.port), outbound(first + second)))
    assert result.outcome is Outcome.DELIVERED, result
    assert result.response is not None and "MSA|AA|P1-B" in result.response
    assert twin.accepted_ids() == ["P1-A", "P1-B"]
    assert twin.accepted("P1-A") == [first] and twin.accepted("P1-B") == [second]
    assert twin.connections == 1


def test_the_first_refused_message_of_several_ends_the_send(twin: HisTwin) -> None:
    twin.nak("AR", count=1)
    payload = adt("P2-A").encode() + adt("P2-B").encode()
    first, retry = run(
        send_and_close(mllp(twin.port), outbound(payload), outbound(payload, attempt=2))
    )
    assert first.outcome is Outcome.TRANSIENT and first.status == "AR"
    assert retry.outcome is Outcome.DELIVERED
    # A refused: B not sent; the retry sends both again (the HIS dedupes on MSH-10).
    assert [r.text.split("|")[9] for r in twin.received()] == ["P2-A", "P2-A", "P2-B"]
    assert twin.accepted_ids() == ["P2-A", "P2-B"]


def test_connection_is_reused(twin: HisTwin) -> None:
    messages = [outbound(adt(f"R{n}").encode(), f"R{n}") for n in range(3)]
    results = run(send_and_close(mllp(twin.port), *messages))
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 3
    assert twin.connections == 1


@pytest.mark.parametrize(
    ("code", "settings", "outcome"),
    [
        ("AE", {}, Outcome.PERMANENT),
        ("AE", {"ae_is_permanent": False}, Outcome.TRANSIENT),
        ("AR", {}, Outcome.TRANSIENT),
        ("AR", {"ar_is_permanent": True}, Outcome.PERMANENT),
        ("CE", {}, Outcome.PERMANENT),
        ("CR", {}, Outcome.TRANSIENT),
    ],
)
def test_nak_classification(
    twin: HisTwin, code: str, settings: dict[str, object], outcome: Outcome
) -> None:
    twin.nak(code)
    (result,) = run(send_and_close(mllp(twin.port, **settings), outbound(adt("N1").encode())))
    assert result.outcome is outcome, result
    assert result.status == code
    assert result.error_class == f"ack_{code.lower()}"
    assert result.error is not None and "twin told to refuse" in result.error
    assert twin.accepted("N1") == []


def test_nak_for_next_n_then_aa(twin: HisTwin) -> None:
    twin.nak("AR", count=1)
    payload = adt("N2").encode()
    first, second = run(
        send_and_close(mllp(twin.port), outbound(payload), outbound(payload, attempt=2))
    )
    assert (first.outcome, second.outcome) == (Outcome.TRANSIENT, Outcome.DELIVERED)
    assert twin.accepted("N2") == [payload]


def test_mismatched_msa2_is_never_accepted(twin: HisTwin) -> None:
    twin.set_behaviour("wrong_id", count=1)
    connector = mllp(twin.port, ack_timeout=0.3)
    first, second = run(
        send_and_close(connector, outbound(adt("W1").encode()), outbound(adt("W2").encode(), "W2"))
    )
    assert first.outcome is Outcome.TRANSIENT, first
    assert first.error_class == "ack_mismatch"
    assert "W1-OTHER" in (first.error or "")
    # The out-of-step connection was dropped; the next message goes on a fresh one.
    assert second.outcome is Outcome.DELIVERED, second
    assert twin.connections == 2


def test_no_answer_times_out_transiently(twin: HisTwin) -> None:
    twin.set_behaviour("silent", count=1)
    first, second = run(
        send_and_close(
            mllp(twin.port, ack_timeout=0.2),
            outbound(adt("T1").encode()),
            outbound(adt("T2").encode()),
        )
    )
    assert first.outcome is Outcome.TRANSIENT
    assert first.error_class == "ack_timeout"
    assert second.outcome is Outcome.DELIVERED
    assert twin.connections == 2


def test_twin_drops_connection_without_answer_on_fresh_connection(twin: HisTwin) -> None:
    twin.set_behaviour("drop", count=1)
    (result,) = run(send_and_close(mllp(twin.port), outbound(adt("D1").encode())))
    assert result.outcome is Outcome.TRANSIENT, result
    assert result.error_class == "connection_closed"


def test_reused_connection_dropped_by_partner_is_replaced_once(twin: HisTwin) -> None:
    async def scenario() -> list[SendResult]:
        connector = mllp(twin.port)
        try:
            first = await connector.send(outbound(adt("D2").encode()))
            twin.set_behaviour("drop", count=1)  # hangs up on the next message, unanswered
            second = await connector.send(outbound(adt("D3").encode()))
            twin.hang_up()  # and closes idle connections
            third = await connector.send(outbound(adt("D4").encode()))
            return [first, second, third]
        finally:
            await connector.close()

    results = run(scenario())
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 3, results
    assert twin.accepted_ids() == ["D2", "D3", "D4"]
    assert [r.control_id for r in twin.received()].count("D3") == 2  # resent once
    assert twin.connections == 3


def test_small_pool_sends_in_parallel(twin: HisTwin) -> None:
    async def scenario() -> list[SendResult]:
        connector = mllp(twin.port, connections=3)
        try:
            messages = [outbound(adt(f"P{n}").encode(), f"P{n}") for n in range(9)]
            return list(await asyncio.gather(*(connector.send(m) for m in messages)))
        finally:
            await connector.close()

    results = run(scenario())
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 9
    assert sorted(twin.accepted_ids()) == sorted(f"P{n}" for n in range(9))
    assert 1 <= twin.connections <= 3


def test_late_ack_within_timeout_is_delivered(twin: HisTwin) -> None:
    twin.set_behaviour("ack", delay=0.05)
    (result,) = run(send_and_close(mllp(twin.port), outbound(adt("L1").encode())))
    assert result.outcome is Outcome.DELIVERED


def test_late_application_ack_is_not_a_mismatch(twin: HisTwin) -> None:
    # CA delivers the first message; its AA follows on the connection, before or while
    # the next message waits, and must not be reported as an out-of-step reply.
    async def scenario() -> list[SendResult]:
        connector = mllp(twin.port, ack_timeout=0.3)
        try:
            first = await connector.send(outbound(adt("LA1", ack=("AL", "AL")).encode()))
            twin.set_behaviour("silent", count=1)
            second = await connector.send(outbound(adt("LA2").encode()))
            return [first, second]
        finally:
            await connector.close()

    first, second = run(scenario())
    assert (first.outcome, first.status) == (Outcome.DELIVERED, "CA")
    assert (second.outcome, second.error_class) == (Outcome.TRANSIENT, "ack_timeout")


def test_refused_is_transient(closed_port: int) -> None:
    (result,) = run(send_and_close(mllp(closed_port), outbound(adt("X").encode())))
    assert result.outcome is Outcome.TRANSIENT
    assert result.error_class == "refused"


def test_payload_without_control_id_is_permanent() -> None:
    (result,) = run(send_and_close(mllp(1), outbound(b"MSH|^~\\&|A|B|C|D|||ADT^A04|")))
    assert result.outcome is Outcome.PERMANENT
    assert result.error_class == "invalid_payload"
    (result,) = run(send_and_close(mllp(1), outbound(b'{"json": true}')))
    assert result.error_class == "invalid_payload"


def test_commit_ack_is_delivered_unless_application_ack_required(twin: HisTwin) -> None:
    payload = adt("E1", ack=("AL", "AL")).encode()
    (result,) = run(send_and_close(mllp(twin.port), outbound(payload)))
    assert (result.outcome, result.status) == (Outcome.DELIVERED, "CA")
    (result,) = run(
        send_and_close(mllp(twin.port, require_application_ack=True), outbound(payload))
    )
    assert (result.outcome, result.status) == (Outcome.DELIVERED, "AA")
    commit_only = adt("E2", ack=("AL", "NE")).encode()
    connector = mllp(twin.port, require_application_ack=True, ack_timeout=0.3)
    (result,) = run(send_and_close(connector, outbound(commit_only)))
    assert (result.outcome, result.status, result.error_class) == (
        Outcome.TRANSIENT,
        "CA",
        "ack_timeout",
    )


def test_gb18030_peer() -> None:
    his = HisTwin(charset="GB 18030-2000").start_in_thread()
    try:
        payload = adt("G1", name=("欧", "阳娜"), charset=None).encode("gb18030")
        connector = mllp(his.port, charset="GB 18030-2000")
        (result,) = run(send_and_close(connector, outbound(payload)))
        assert result.outcome is Outcome.DELIVERED, result
        (received,) = his.received()
        assert received.codec == "gb18030"
        assert "欧^阳娜" in received.text
    finally:
        his.stop_thread()


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        MllpSettings.model_validate({"host": "h", "port": 1, "charset": "EBCDIC-ish"})
    with pytest.raises(ValueError):
        MllpSettings.model_validate({"host": "h", "port": 0})
    with pytest.raises(ValueError):
        MllpSettings.model_validate({"host": "h", "port": 1, "tls": {"key_file": __file__}})
    with pytest.raises(ValueError):
        MllpSettings.model_validate({"host": "h", "port": 1, "retries": 3})


# ------------------------------------------------------------------ TLS


def test_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    his = HisTwin(ssl_context=context).start_in_thread()
    try:
        payload = adt("S1").encode()
        connector = mllp(his.port, tls={"ca_file": str(cert)})
        (result,) = run(send_and_close(connector, outbound(payload)))
        assert result.outcome is Outcome.DELIVERED, result
        assert his.accepted("S1") == [payload]
        # A partner whose certificate we cannot verify is not sent to.
        (result,) = run(send_and_close(mllp(his.port, tls={}), outbound(payload)))
        assert (result.outcome, result.error_class) == (Outcome.TRANSIENT, "tls")
        # verify: false is the operator's explicit choice.
        (result,) = run(send_and_close(mllp(his.port, tls={"verify": False}), outbound(payload)))
        assert result.outcome is Outcome.DELIVERED
    finally:
        his.stop_thread()


def test_unreadable_tls_files_are_reported_per_send(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    (result,) = run(send_and_close(mllp(1, tls={"ca_file": str(bad)}), outbound(adt("B").encode())))
    assert (result.outcome, result.error_class) == (Outcome.TRANSIENT, "config")


# ------------------------------------------------------------------ conformance


class HisConformanceTwin:
    """The HIS twin seen through the conformance suite's protocol."""

    def __init__(self) -> None:
        self.his = HisTwin().start_in_thread()

    def received(self, message_id: str) -> list[bytes]:
        return self.his.accepted(message_id)

    def message_ids(self) -> list[str]:
        return self.his.accepted_ids()

    def fail_transiently(self) -> None:
        self.his.nak("AR")

    def refuse_permanently(self) -> None:
        self.his.nak("AE")

    def heal(self) -> None:
        self.his.heal()

    def stop(self) -> None:
        self.his.stop_thread()

    def restart(self) -> None:
        self.his.start_in_thread()


class TestMllpConformance(ConnectorConformance):
    content_type: ClassVar[str] = HL7

    def _message(self, message_id: str | None = None, **kwargs: Any) -> Outbound:
        # The suite's payloads are JSON: carry each in an ADT whose MSH-10 is the id.
        message_id = message_id or new_id()
        text = kwargs.pop("payload", b"sample").decode()
        writer = adt(message_id)
        writer.segment("NTE", "1", None, text)
        return make_outbound(message_id, content_type=HL7, payload=writer.encode(), **kwargs)

    @pytest.fixture
    def twin(self) -> Iterator[ConformanceTwin]:
        his = HisConformanceTwin()
        try:
            yield his
        finally:
            his.stop()

    @pytest.fixture
    def connector(
        self, loop_runner: asyncio.Runner, twin: HisConformanceTwin
    ) -> Iterator[Connector]:
        yield from started(loop_runner, mllp(twin.his.port, ack_timeout=5))

    @pytest.fixture
    def unreachable_connector(
        self, loop_runner: asyncio.Runner, closed_port: int
    ) -> Iterator[Connector]:
        yield from started(loop_runner, mllp(closed_port, connect_timeout=2))


class _QuietWriter:
    """Stands in for a connection's writer where nothing is written."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        return None


_ACK_M1 = frame(b"MSH|^~\\&|HIS|H|HUB|120|20261205120000||ACK^R01^ACK|A1|P|2.5.1\rMSA|AA|M1\r")


def _open_link() -> tuple[_Link, asyncio.StreamReader, _QuietWriter]:
    """A link as after a connect, reading from a bare StreamReader."""
    link = _Link(1 << 20)
    reader, writer = asyncio.StreamReader(), _QuietWriter()
    link.reader, link.writer = reader, cast(asyncio.StreamWriter, writer)
    return link, reader, writer


def test_an_ack_timer_firing_in_the_turn_the_ack_came_closes_the_connection() -> None:
    """The ACK wakes the read and the deadline passes in the same loop turn: the ACK
    counts, but the reader is failed for good, so the connection is closed rather than
    handed to the next send, whose first read would fail at once."""

    async def scenario() -> tuple[SendResult, bool, bool]:
        link, reader, writer = _open_link()

        def ack_then_deadline() -> None:
            reader.feed_data(_ACK_M1)
            fail_reads(reader)

        asyncio.get_running_loop().call_soon(ack_then_deadline)
        result = await mllp(9, ack_timeout=5)._await_ack(link, "M1")
        return result, writer.closed, link.usable

    result, closed, usable = run(scenario())
    assert result.outcome is Outcome.DELIVERED
    assert closed and not usable


def test_an_ack_in_time_keeps_the_connection() -> None:
    async def scenario() -> tuple[SendResult, bool]:
        link, reader, writer = _open_link()
        asyncio.get_running_loop().call_soon(reader.feed_data, _ACK_M1)
        result = await mllp(9, ack_timeout=5)._await_ack(link, "M1")
        await asyncio.sleep(0)
        return result, writer.closed

    result, closed = run(scenario())
    assert result.outcome is Outcome.DELIVERED
    assert not closed
