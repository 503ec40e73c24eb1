"""The conformance suite every connector runs against its sandbox twin.

A connector is covered by subclassing :class:`ConnectorConformance` in a test module and
providing three fixtures; the cases are inherited, so a new connector never writes the
suite again::

    class TestHttpConformance(ConnectorConformance):
        @pytest.fixture
        def twin(self) -> Iterator[ConformanceTwin]:
            ...  # start the partner's twin, healthy; stop it afterwards

        @pytest.fixture
        def connector(self, loop_runner: asyncio.Runner, twin: MyTwin) -> Iterator[Connector]:
            yield from started(loop_runner, MyConnector("twin", MySettings(url=twin.url)))

        @pytest.fixture
        def unreachable_connector(self, loop_runner: asyncio.Runner) -> Iterator[Connector]:
            yield from started(loop_runner, MyConnector("gone", MySettings(url=CLOSED_PORT)))

A connector aimed at a URL can subclass :class:`UrlConnectorConformance` instead and
give just ``twin`` (with a ``url``) and ``connector_at(url)``.

Every coroutine of one test (start, sends, close) runs on the one event loop of the
``loop_runner`` fixture, as it would inside a worker. A case that cannot apply to a
transport (a folder cannot refuse a message for good) is named in ``not_applicable``
with the reason, and is reported as skipped with that reason. A twin that can also come
back after a stop (:class:`RestartableTwin`) covers delivery through a reconnect.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Iterator, Mapping
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import pytest

from hub.connectors.base import Connector, Outbound, Outcome, SendResult
from hub.ids import new_id

__all__ = [
    "CASES",
    "REQUIRED_FIXTURES",
    "ConformanceTwin",
    "ConnectorConformance",
    "RestartableTwin",
    "make_outbound",
    "started",
]

T = TypeVar("T")

CASES = frozenset(
    {
        "delivers",
        "transient",
        "permanent",
        "retry_keeps_message_id",
        "concurrent_sends",
        "close_twice",
        "twin_stopped",
        "reconnects",
        "unreachable",
    }
)
"""Names a subclass may use in ``not_applicable``."""

REQUIRED_FIXTURES = ("twin", "connector", "unreachable_connector")

SAMPLE_PAYLOAD = (
    '{"event":{"type":"assessment.updated","data":{"chief_complaint":"胸痛1小时，大汗"}}}'
).encode()


class ConformanceTwin(Protocol):
    """What the suite needs from a partner's twin; adapt the twin to it in the test module."""

    def received(self, message_id: str) -> list[bytes]:
        """Payloads the partner accepted under ``message_id``, one per accepted call.

        A partner that dedupes by overwriting (a folder) may return a single item.
        """
        ...

    def message_ids(self) -> list[str]:
        """Distinct message ids the partner kept: its deduplicated view, oldest first."""
        ...

    def fail_transiently(self) -> None:
        """Make every following send fail in a way worth retrying (busy, 503, not writable)."""
        ...

    def refuse_permanently(self) -> None:
        """Make every following send be refused for good (400, HL7 AR, schema error)."""
        ...

    def heal(self) -> None:
        """Undo :meth:`fail_transiently` and :meth:`refuse_permanently`."""
        ...

    def stop(self) -> None:
        """The partner goes away (server stopped, share gone); safe to call twice."""
        ...


@runtime_checkable
class RestartableTwin(Protocol):
    """A twin that can come back after :meth:`ConformanceTwin.stop`; enables "reconnects"."""

    def restart(self) -> None:
        """The partner is back at the same address, keeping what it had received."""
        ...


def make_outbound(
    message_id: str | None = None,
    *,
    payload: bytes = SAMPLE_PAYLOAD,
    content_type: str = "application/json",
    attempt: int = 1,
    delivery_id: int = 1,
) -> Outbound:
    """One attempt's input as the worker builds it."""
    return Outbound(
        delivery_id=delivery_id,
        message_id=message_id or new_id(),
        destination="conformance",
        payload=payload,
        content_type=content_type,
        attempt=attempt,
        incident_id="INC-CONFORMANCE-1",
        correlation_id="CALL-CONFORMANCE-1",
        event_type="assessment.updated",
    )


def started(runner: asyncio.Runner, connector: Connector) -> Iterator[Connector]:
    """Fixture body: start ``connector`` on the test's loop, yield it, close it after."""
    runner.run(connector.start())
    try:
        yield connector
    finally:
        runner.run(connector.close())


def _run(runner: asyncio.Runner, awaitable: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await awaitable

    return runner.run(wrapper())


class ConnectorConformance:
    """Cases every connector passes against its twin.

    Subclasses provide the fixtures ``twin`` (a running, healthy :class:`ConformanceTwin`,
    stopped at teardown), ``connector`` (a started connector aimed at that twin; use
    :func:`started`) and ``unreachable_connector`` (a started connector aimed where
    nothing answers). A class made only to be subclassed again passes ``abstract=True``.
    """

    not_applicable: ClassVar[Mapping[str, str]] = {}
    """Case name (see :data:`CASES`) → why it cannot apply to this transport."""

    content_type: ClassVar[str] = "application/json"
    """Content type of the messages the suite sends."""

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        missing = [name for name in REQUIRED_FIXTURES if not hasattr(cls, name)]
        if missing:
            raise TypeError(f"{cls.__name__} must provide the fixture(s): {', '.join(missing)}")

    @pytest.fixture
    def loop_runner(self) -> Iterator[asyncio.Runner]:
        """One event loop for the whole test, fixtures included."""
        with asyncio.Runner() as runner:
            yield runner

    def _require(self, case: str) -> None:
        reason = self.not_applicable.get(case)
        if reason is not None:
            pytest.skip(f"not applicable to {type(self).__name__}: {reason}")

    def _message(self, message_id: str | None = None, **kwargs: Any) -> Outbound:
        return make_outbound(message_id, content_type=self.content_type, **kwargs)

    def _send(self, runner: asyncio.Runner, connector: Connector, message: Outbound) -> SendResult:
        result = _run(runner, connector.send(message))
        assert isinstance(result, SendResult), f"send returned {result!r}, not a SendResult"
        return result

    # ------------------------------------------------------------------ cases

    def test_not_applicable_names_known_cases(self) -> None:
        unknown = set(self.not_applicable) - CASES
        assert not unknown, f"unknown case names in not_applicable: {sorted(unknown)}"

    def test_delivers_exact_payload_and_message_id(
        self, loop_runner: asyncio.Runner, connector: Connector, twin: ConformanceTwin
    ) -> None:
        self._require("delivers")
        message = self._message()
        result = self._send(loop_runner, connector, message)
        assert result.outcome is Outcome.DELIVERED, result
        assert result.error is None
        assert twin.received(message.message_id) == [message.payload]
        assert twin.message_ids() == [message.message_id]

    def test_transient_failure_is_transient_with_error_class(
        self, loop_runner: asyncio.Runner, connector: Connector, twin: ConformanceTwin
    ) -> None:
        self._require("transient")
        message = self._message()
        twin.fail_transiently()
        result = self._send(loop_runner, connector, message)
        assert result.outcome is Outcome.TRANSIENT, result
        assert result.error_class, f"a failure needs a machine label: {result}"
        assert result.error, f"a failure needs a reason for people: {result}"
        assert twin.received(message.message_id) == []
        twin.heal()
        retried = self._message(message.message_id, attempt=2)
        assert self._send(loop_runner, connector, retried).outcome is Outcome.DELIVERED
        assert twin.received(message.message_id) == [message.payload]

    def test_permanent_refusal_is_permanent(
        self, loop_runner: asyncio.Runner, connector: Connector, twin: ConformanceTwin
    ) -> None:
        self._require("permanent")
        message = self._message()
        twin.refuse_permanently()
        result = self._send(loop_runner, connector, message)
        assert result.outcome is Outcome.PERMANENT, result
        assert result.error_class, f"a failure needs a machine label: {result}"
        assert result.error
        assert twin.received(message.message_id) == []

    def test_retry_keeps_message_id(
        self, loop_runner: asyncio.Runner, connector: Connector, twin: ConformanceTwin
    ) -> None:
        self._require("retry_keeps_message_id")
        first = self._message()
        again = self._message(first.message_id, attempt=2)
        assert self._send(loop_runner, connector, first).outcome is Outcome.DELIVERED
        assert self._send(loop_runner, connector, again).outcome is Outcome.DELIVERED
        copies = twin.received(first.message_id)
        assert copies, "the partner kept nothing under the message id"
        assert all(copy == first.payload for copy in copies)
        assert twin.message_ids() == [first.message_id], "the partner could not dedupe"

    def test_concurrent_sends_each_arrive(
        self, loop_runner: asyncio.Runner, connector: Connector, twin: ConformanceTwin
    ) -> None:
        self._require("concurrent_sends")
        messages = [
            self._message(payload=f'{{"n":{n},"text":"第{n}条"}}'.encode(), delivery_id=n)
            for n in range(8)
        ]

        async def send_all() -> list[SendResult]:
            return list(await asyncio.gather(*(connector.send(m) for m in messages)))

        results = loop_runner.run(send_all())
        assert [r.outcome for r in results] == [Outcome.DELIVERED] * len(messages)
        assert sorted(twin.message_ids()) == sorted(m.message_id for m in messages)
        for m in messages:
            assert twin.received(m.message_id) == [m.payload]

    def test_close_twice_is_safe(self, loop_runner: asyncio.Runner, connector: Connector) -> None:
        self._require("close_twice")
        outcomes = [_run(loop_runner, connector.close()) for _ in range(2)]
        assert outcomes == [None, None]

    def test_send_after_twin_stopped_is_transient(
        self, loop_runner: asyncio.Runner, connector: Connector, twin: ConformanceTwin
    ) -> None:
        self._require("twin_stopped")
        assert self._send(loop_runner, connector, self._message()).outcome is Outcome.DELIVERED
        twin.stop()
        result = self._send(loop_runner, connector, self._message())
        assert result.outcome is Outcome.TRANSIENT, result
        assert result.error_class, result

    def test_reconnects_after_the_twin_comes_back(
        self, loop_runner: asyncio.Runner, connector: Connector, twin: ConformanceTwin
    ) -> None:
        """At least once through a partner restart: the retry of a failed send arrives."""
        self._require("reconnects")
        if not isinstance(twin, RestartableTwin):
            pytest.skip(f"{type(twin).__name__} has no restart(); add one to cover reconnects")
        before = self._message()
        assert self._send(loop_runner, connector, before).outcome is Outcome.DELIVERED
        twin.stop()
        lost = self._message()
        assert self._send(loop_runner, connector, lost).outcome is Outcome.TRANSIENT
        twin.restart()
        retried = self._message(lost.message_id, attempt=2)
        result = self._send(loop_runner, connector, retried)
        assert result.outcome is Outcome.DELIVERED, result
        assert twin.received(lost.message_id) == [lost.payload]
        assert twin.message_ids() == [before.message_id, lost.message_id]

    def test_send_to_unreachable_is_transient(
        self, loop_runner: asyncio.Runner, unreachable_connector: Connector
    ) -> None:
        self._require("unreachable")
        result = self._send(loop_runner, unreachable_connector, self._message())
        assert result.outcome is Outcome.TRANSIENT, result
        assert result.error_class, result
        assert result.error, result


class UrlConnectorConformance(ConnectorConformance, abstract=True):
    """The suite for a connector aimed at a URL (HTTP, FHIR, a SOAP gateway).

    Subclasses provide the ``twin`` fixture (a twin with a ``url``) and
    :meth:`connector_at`; the connector fixtures follow from them, the unreachable one
    aimed at a loopback port where nothing listens.
    """

    def connector_at(self, url: str) -> Connector:
        """A connector (not started) that sends to ``url``."""
        raise NotImplementedError

    @pytest.fixture
    def connector(self, loop_runner: asyncio.Runner, twin: ConformanceTwin) -> Iterator[Connector]:
        url = getattr(twin, "url", None)
        assert isinstance(url, str), f"{type(twin).__name__} needs a url for this suite"
        yield from started(loop_runner, self.connector_at(url))

    @pytest.fixture
    def unreachable_connector(self, loop_runner: asyncio.Runner) -> Iterator[Connector]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))  # bound, not listening: a connection is refused
            port = int(sock.getsockname()[1])
            yield from started(loop_runner, self.connector_at(f"http://127.0.0.1:{port}/"))
