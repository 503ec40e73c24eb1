"""HTTP webhook connector: JSON POST signed with HMAC-SHA256.

The receiver verifies ``X-Hub-Signature-256: sha256=<hex>`` computed over
``<timestamp>.<body>`` with the shared secret, and drops repeats of ``X-Hub-Message-Id``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from email.utils import parsedate_to_datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, HttpUrl, SecretStr

from hub.connectors.base import (
    Connector,
    ConnectorSettings,
    Outbound,
    Outcome,
    SendResult,
    truncate,
)
from hub.connectors.httpclient import HttpClient, HttpClientError, Target, check_proxy_setting
from hub.registry import register

__all__ = [
    "HttpConnector",
    "HttpSettings",
    "ProxySetting",
    "failure",
    "parse_retry_after",
    "proxy_of",
    "sign",
]

SIGNATURE_HEADER = "X-Hub-Signature-256"
TIMESTAMP_HEADER = "X-Hub-Timestamp"
MESSAGE_ID_HEADER = "X-Hub-Message-Id"

# Statuses worth retrying: the partner is busy, down or timed out, not refusing the message.
_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def _proxy_before(value: Any) -> Any:
    if value is False:  # YAML `proxy: false`
        return "none"
    if value is True:
        raise ValueError("give a proxy URL, none or false")
    return value


def _proxy_after(value: SecretStr | None) -> SecretStr | None:
    check_proxy_setting(None if value is None else value.get_secret_value())
    return value


# The `proxy` key of the http and fhir connectors (one definition for both).
ProxySetting = Annotated[
    SecretStr | None,
    BeforeValidator(_proxy_before),
    AfterValidator(_proxy_after),
    Field(
        description=(
            "Forward proxy for every request of the destination (fhir: the OAuth2 token"
            " endpoint too): unset uses the environment as httpx and curl do (`HTTPS_PROXY`"
            " for https URLs, `HTTP_PROXY` for http, `ALL_PROXY` otherwise, lower-case"
            " names first; `NO_PROXY` exempts hosts: `*`, domains and their subdomains,"
            " `host:port`, IP addresses and CIDR ranges, with no implicit exemption for"
            " localhost); `http://[user:password@]host:port` (port 80 if absent) for that"
            " proxy whatever the environment says; `none` or `false` for none even if the"
            " environment names one. Only plain http:// proxies: https targets go through"
            " an HTTP CONNECT tunnel (TLS end to end with the partner), http targets are"
            " sent in absolute form; credentials go in `Proxy-Authorization: Basic` (use"
            " ${ENV_VAR}). A proxy that cannot be reached or refuses (407, 403, 502 on"
            " CONNECT; 407 on plain http) is a transient failure of class `proxy`, 407"
            " included: fixing the credentials lets the same message through."
        )
    ),
]


def proxy_of(setting: SecretStr | None) -> str | None:
    """The ``proxy`` setting as :class:`HttpClient` takes it."""
    return None if setting is None else setting.get_secret_value()


class HttpSettings(ConnectorSettings):
    url: HttpUrl = Field(description="Where each message is POSTed.")
    secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key; use ${ENV_VAR} in hub.yaml, never a literal."
    )
    timeout: float = Field(default=10.0, gt=0, description="Seconds for the whole request.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    transient_statuses: frozenset[int] = Field(
        default=_TRANSIENT_STATUSES,
        description="HTTP statuses retried; every other non-2xx status is a permanent failure.",
    )
    proxy: ProxySetting = None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Signature header value; the timestamp binds it in time so a replay can be refused."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit also accepts "²", which float refuses
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


@register("connector", "http")
class HttpConnector(Connector):
    settings_model = HttpSettings
    settings: HttpSettings

    def __init__(self, name: str, settings: HttpSettings) -> None:
        super().__init__(name, settings)
        self._target = Target.parse(str(settings.url))
        self._client = HttpClient(timeout=settings.timeout, proxy=proxy_of(settings.proxy))

    async def send(self, message: Outbound) -> SendResult:
        timestamp = str(int(time.time()))
        headers = {
            **self.settings.headers,
            "Content-Type": message.content_type,
            MESSAGE_ID_HEADER: message.message_id,
            TIMESTAMP_HEADER: timestamp,
            "X-Hub-Event-Type": message.event_type,
            "X-Hub-Attempt": str(message.attempt),
        }
        if message.correlation_id:
            headers["X-Correlation-Id"] = message.correlation_id
        if self.settings.secret is not None:
            secret = self.settings.secret.get_secret_value()
            headers[SIGNATURE_HEADER] = sign(secret, timestamp, message.payload)
        try:
            reply = await self._client.request(
                "POST", self._target, body=message.payload, headers=headers
            )
        except HttpClientError as exc:
            return failure(exc)
        status = f"HTTP {reply.status_code}"
        body = truncate(reply.content)
        if 200 <= reply.status_code < 300:
            return SendResult(Outcome.DELIVERED, status=status, response=body)
        retry_after = parse_retry_after(reply.headers.get("retry-after"))
        if reply.status_code in self.settings.transient_statuses:
            return SendResult(
                Outcome.TRANSIENT,
                status=status,
                response=body,
                error=f"receiver answered {reply.status_code}",
                error_class=f"http_{reply.status_code // 100}xx",
                retry_after=retry_after,
            )
        return SendResult(
            Outcome.PERMANENT,
            status=status,
            response=body,
            error=f"receiver refused the message with {reply.status_code}",
            error_class=f"http_{reply.status_code // 100}xx",
        )

    async def close(self) -> None:
        await self._client.close()


_FAILURE_TEXT = {
    "timeout": "timed out",
    "network": "transport",
    "proxy": "proxy",
    "protocol": "reply",
}


def failure(exc: HttpClientError) -> SendResult:
    """A request that got no usable reply, as a transient result with its error class."""
    label = _FAILURE_TEXT.get(exc.error_class, exc.error_class)
    return SendResult(Outcome.TRANSIENT, error=f"{label}: {exc!r}", error_class=exc.error_class)
