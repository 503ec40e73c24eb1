"""The http connector against the webhook twin, on loopback, plus its own protocol rules."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from pydantic import ValidationError

from hub.connectors.base import Connector, Outcome
from hub.connectors.http import HttpConnector, HttpSettings, parse_retry_after, sign
from hub.testing.conformance import (
    ConformanceTwin,
    UrlConnectorConformance,
    make_outbound,
)
from sandbox.http_receiver import HttpReceiverTwin, ServerThread


class WebhookTwin:
    """The sandbox webhook twin served on a free loopback port, seen through ConformanceTwin."""

    def __init__(self, secret: str | None = None) -> None:
        self.app = HttpReceiverTwin(secret=secret)
        self.server = ServerThread(self.app.app).start()
        self.port = self.server.port
        self.url = f"{self.server.url}/hook"

    def received(self, message_id: str) -> list[bytes]:
        kept = [r.body for r in self.app.accepted() if r.message_id == message_id]
        return kept * (1 + self.app.duplicates().get(message_id, 0)) if kept else []

    def message_ids(self) -> list[str]:
        return self.app.accepted_ids()

    def fail_transiently(self) -> None:
        self.app.set_behaviour(always_status=503)

    def refuse_permanently(self) -> None:
        self.app.set_behaviour(always_status=400)

    def heal(self) -> None:
        self.app.set_behaviour()

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server.stop()
        self.server = ServerThread(self.app.app, port=self.port).start()


@pytest.fixture
def webhook() -> Iterator[WebhookTwin]:
    twin = WebhookTwin()
    try:
        yield twin
    finally:
        twin.stop()


def http(url: str, **settings: object) -> HttpConnector:
    return HttpConnector("twin", HttpSettings.model_validate({"url": url, **settings}))


class TestHttpConformance(UrlConnectorConformance):
    @pytest.fixture
    def twin(self, webhook: WebhookTwin) -> ConformanceTwin:
        return webhook

    def connector_at(self, url: str) -> Connector:
        return http(url, timeout=5)


# ---------------------------------------------------------------- signatures


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(b"k3y", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign("k3y", "1700000000", b"{}") == f"sha256={expected}"
    assert sign("k3y", "1700000001", b"{}") != sign("k3y", "1700000000", b"{}")


def test_signed_send_is_accepted_by_a_twin_with_the_same_secret() -> None:
    twin = WebhookTwin(secret="s3cret")
    try:
        with asyncio.Runner() as runner:
            connector = http(twin.url, secret="s3cret")
            result = runner.run(connector.send(make_outbound()))
            runner.run(connector.close())
        assert result.outcome is Outcome.DELIVERED
        assert twin.app.state.bad_signatures == 0
        assert len(twin.message_ids()) == 1
    finally:
        twin.stop()


@pytest.mark.parametrize("secret", ["wrong-secret", None], ids=["bad-signature", "unsigned"])
def test_twin_with_secret_rejects_a_bad_signature(secret: str | None) -> None:
    twin = WebhookTwin(secret="s3cret")
    try:
        with asyncio.Runner() as runner:
            connector = http(twin.url, secret=secret)
            result = runner.run(connector.send(make_outbound()))
            runner.run(connector.close())
        assert result.outcome is Outcome.PERMANENT
        assert result.status == "HTTP 401"
        assert result.error_class == "http_4xx"
        assert twin.app.state.bad_signatures == 1
        assert twin.message_ids() == []
    finally:
        twin.stop()


def test_secret_is_not_shown_in_settings() -> None:
    settings = HttpSettings.model_validate({"url": "http://127.0.0.1/hook", "secret": "s3cret"})
    assert "s3cret" not in repr(settings)


# ---------------------------------------------------------------- headers and statuses


def test_headers_carry_message_id_attempt_and_event_type(webhook: WebhookTwin) -> None:
    message = make_outbound(attempt=3)
    with asyncio.Runner() as runner:
        connector = http(webhook.url, headers={"X-Site": "tianjin"})
        assert runner.run(connector.send(message)).outcome is Outcome.DELIVERED
        runner.run(connector.close())
    [received] = webhook.app.accepted()
    assert received.message_id == message.message_id
    assert received.attempt == 3
    assert received.event_type == "assessment.updated"


@pytest.mark.parametrize(
    ("status", "outcome", "error_class"),
    [
        (408, Outcome.TRANSIENT, "http_4xx"),
        (500, Outcome.TRANSIENT, "http_5xx"),
        (502, Outcome.TRANSIENT, "http_5xx"),
        (400, Outcome.PERMANENT, "http_4xx"),
        (404, Outcome.PERMANENT, "http_4xx"),
        (422, Outcome.PERMANENT, "http_4xx"),
        (501, Outcome.PERMANENT, "http_5xx"),
    ],
)
def test_status_classification(
    webhook: WebhookTwin, status: int, outcome: Outcome, error_class: str
) -> None:
    webhook.app.set_behaviour(always_status=status)
    with asyncio.Runner() as runner:
        connector = http(webhook.url)
        result = runner.run(connector.send(make_outbound()))
        runner.run(connector.close())
    assert result.outcome is outcome
    assert result.status == f"HTTP {status}"
    assert result.error_class == error_class
    assert result.response == '{"error":"refused"}'


def test_transient_statuses_are_configurable(webhook: WebhookTwin) -> None:
    webhook.app.set_behaviour(always_status=409)
    with asyncio.Runner() as runner:
        connector = http(webhook.url, transient_statuses=[409, 503])
        result = runner.run(connector.send(make_outbound()))
        runner.run(connector.close())
    assert result.outcome is Outcome.TRANSIENT


def test_429_with_retry_after_gives_retry_after(webhook: WebhookTwin) -> None:
    webhook.app.set_behaviour(always_status=429, retry_after=7)
    with asyncio.Runner() as runner:
        connector = http(webhook.url)
        result = runner.run(connector.send(make_outbound()))
        runner.run(connector.close())
    assert result.outcome is Outcome.TRANSIENT
    assert result.status == "HTTP 429"
    assert result.retry_after == 7.0


def test_503_without_retry_after_has_none(webhook: WebhookTwin) -> None:
    webhook.app.set_behaviour(always_status=503)
    with asyncio.Runner() as runner:
        connector = http(webhook.url)
        result = runner.run(connector.send(make_outbound()))
        runner.run(connector.close())
    assert result.outcome is Outcome.TRANSIENT
    assert result.retry_after is None


def test_timeout_is_transient(webhook: WebhookTwin) -> None:
    webhook.app.set_behaviour(delay=0.5)
    with asyncio.Runner() as runner:
        connector = http(webhook.url, timeout=0.05)
        result = runner.run(connector.send(make_outbound()))
        runner.run(connector.close())
    assert result.outcome is Outcome.TRANSIENT
    assert result.error_class == "timeout"


def test_garbled_reply_is_reported_not_raised() -> None:
    """A partner whose reply cannot be decoded must not crash the worker's send."""

    async def scenario() -> Outcome:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n"
                b"Connection: close\r\n\r\nnot gzip!"
            )
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connector = http(f"http://127.0.0.1:{port}/hook")
        try:
            result = await connector.send(make_outbound())
        finally:
            await connector.close()
            server.close()
            await server.wait_closed()
        assert result.error_class
        return result.outcome

    assert asyncio.run(scenario()) is Outcome.TRANSIENT


def test_settings_reject_unknown_keys_and_bad_urls() -> None:
    with pytest.raises(ValidationError) as info:
        HttpSettings.model_validate({"url": "not a url", "retries": 3})
    locations = {err["loc"] for err in info.value.errors()}
    assert locations == {("url",), ("retries",)}


# ---------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 5 ", 5.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-3", None),
        ("1.5", None),
        ("²", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 11, 25, 0, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 11, 25, 0, 1, 30, tzinfo=UTC), usegmt=True)
    assert later == "Wed, 25 Nov 2026 00:01:30 GMT"
    assert parse_retry_after(later, now=now) == 90.0
    earlier = format_datetime(datetime(2026, 11, 24, 23, 0, 0, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0
