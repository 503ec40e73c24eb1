"""FHIR REST connector: POST a transaction Bundle to a FHIR server's base URL.

Authentication is none, a static bearer token, or OAuth2 client credentials (the token
is cached until shortly before it expires and fetched again after a 401). Replies:
2xx delivered, with a summary of the transaction-response kept in the attempt; 408,
429 and 5xx transient (honouring Retry-After); any other 4xx permanent. An
OperationOutcome in a failure reply is summarised into the error text.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import orjson
from pydantic import Field, HttpUrl, SecretStr

from hub.connectors.base import (
    Connector,
    ConnectorSettings,
    Outbound,
    Outcome,
    SendResult,
    truncate,
)
from hub.connectors.http import (
    MESSAGE_ID_HEADER,
    ProxySetting,
    failure,
    parse_retry_after,
    proxy_of,
)
from hub.connectors.httpclient import HttpClient, HttpClientError, HttpReply, Target
from hub.registry import register

__all__ = [
    "BearerAuth",
    "FhirConnector",
    "FhirSettings",
    "NoAuth",
    "OAuth2ClientCredentials",
    "summarise_operation_outcome",
    "summarise_transaction_response",
]

FHIR_JSON = "application/fhir+json"
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_TOKEN_MARGIN = 30.0  # seconds before expiry at which a cached token is renewed


class NoAuth(ConnectorSettings):
    type: Literal["none"] = "none"


class BearerAuth(ConnectorSettings):
    type: Literal["bearer"]
    token: SecretStr = Field(description="Static bearer token; use ${ENV_VAR}.")


class OAuth2ClientCredentials(ConnectorSettings):
    type: Literal["oauth2"]
    token_url: HttpUrl = Field(description="Token endpoint (client credentials grant).")
    client_id: str = Field(min_length=1)
    client_secret: SecretStr = Field(description="Use ${ENV_VAR}, never a literal.")
    scope: str | None = Field(default=None, description="Space-separated scopes to ask for.")


Auth = Annotated[NoAuth | BearerAuth | OAuth2ClientCredentials, Field(discriminator="type")]


class FhirSettings(ConnectorSettings):
    base_url: HttpUrl = Field(description="FHIR server base; transactions are POSTed here.")
    auth: Auth = Field(default_factory=NoAuth, description="none, bearer or oauth2.")
    timeout: float = Field(default=15.0, gt=0, description="Seconds for the whole request.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    proxy: ProxySetting = None  # also used for the OAuth2 token endpoint


class _AuthFailed(Exception):
    def __init__(self, result: SendResult) -> None:
        super().__init__(result.error)
        self.result = result


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def summarise_operation_outcome(document: Any) -> str | None:
    """``severity/code: diagnostics at expression`` per issue, or None if not an outcome."""
    if not isinstance(document, dict) or document.get("resourceType") != "OperationOutcome":
        return None
    parts = []
    for issue in document.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        text = f"{issue.get('severity', '?')}/{issue.get('code', '?')}"
        detail = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
        if detail:
            text += f": {detail}"
        expression = issue.get("expression") or issue.get("location")
        if expression:
            text += f" at {', '.join(str(e) for e in expression)}"
        parts.append(text)
    return "; ".join(parts) or "OperationOutcome without issues"


def summarise_transaction_response(document: Any) -> str | None:
    """``<status> <location>`` per entry of a transaction-response Bundle, or None."""
    if not isinstance(document, dict) or document.get("type") != "transaction-response":
        return None
    parts = []
    for entry in document.get("entry") or []:
        response = entry.get("response") if isinstance(entry, dict) else None
        if isinstance(response, dict):
            parts.append(f"{response.get('status', '?')} {response.get('location', '')}".strip())
    return f"transaction-response ({len(parts)} entries): " + "; ".join(parts)


@register("connector", "fhir")
class FhirConnector(Connector):
    settings_model = FhirSettings
    settings: FhirSettings

    def __init__(self, name: str, settings: FhirSettings) -> None:
        super().__init__(name, settings)
        self._client = HttpClient(timeout=settings.timeout, proxy=proxy_of(settings.proxy))
        self._target = Target.parse(str(settings.base_url))
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()

    async def close(self) -> None:
        await self._client.close()

    async def _authorization(self) -> str | None:
        auth = self.settings.auth
        if isinstance(auth, BearerAuth):
            return f"Bearer {auth.token.get_secret_value()}"
        if isinstance(auth, OAuth2ClientCredentials):
            async with self._token_lock:
                if self._token is None or time.monotonic() >= self._token_expires:
                    await self._fetch_token(auth)
                return f"Bearer {self._token}"
        return None

    async def _fetch_token(self, auth: OAuth2ClientCredentials) -> None:
        form = {"grant_type": "client_credentials"}
        if auth.scope:
            form["scope"] = auth.scope
        userpass = f"{auth.client_id}:{auth.client_secret.get_secret_value()}".encode()
        try:
            reply = await self._client.request(
                "POST",
                str(auth.token_url),
                body=urlencode(form).encode(),
                headers={
                    "Accept": "application/json",
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Authorization": "Basic " + base64.b64encode(userpass).decode(),
                },
            )
        except HttpClientError as exc:
            raise _AuthFailed(
                SendResult(Outcome.TRANSIENT, error=f"token endpoint: {exc!r}", error_class="auth")
            ) from None
        document = _parse_json(reply.content)
        token = document.get("access_token") if isinstance(document, dict) else None
        if reply.status_code != 200 or not isinstance(token, str):
            transient = reply.status_code in _TRANSIENT_STATUSES
            raise _AuthFailed(
                SendResult(
                    Outcome.TRANSIENT if transient else Outcome.PERMANENT,
                    status=f"HTTP {reply.status_code}",
                    response=truncate(reply.content),
                    error=f"token endpoint answered {reply.status_code}",
                    error_class="auth",
                    retry_after=parse_retry_after(reply.headers.get("retry-after")),
                )
            )
        expires_in = document.get("expires_in", 300)
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 300.0
        self._token = token
        self._token_expires = time.monotonic() + max(0.0, lifetime - _TOKEN_MARGIN)

    async def send(self, message: Outbound) -> SendResult:
        headers = {
            **self.settings.headers,
            "Content-Type": message.content_type or FHIR_JSON,
            "Accept": FHIR_JSON,
            MESSAGE_ID_HEADER: message.message_id,
            "X-Request-Id": message.message_id,
        }
        try:
            authorization = await self._authorization()
        except _AuthFailed as failed:
            return failed.result
        if authorization is not None:
            headers["Authorization"] = authorization
        try:
            reply = await self._client.request(
                "POST", self._target, body=message.payload, headers=headers
            )
        except HttpClientError as exc:
            return failure(exc)
        return self._classify(reply)

    def _classify(self, reply: HttpReply) -> SendResult:
        code = reply.status_code
        status = f"HTTP {code}"
        document = _parse_json(reply.content)
        if 200 <= code < 300:
            summary = summarise_transaction_response(document)
            return SendResult(
                Outcome.DELIVERED, status=status, response=truncate(summary or reply.content)
            )
        outcome = summarise_operation_outcome(document)
        error = f"FHIR server answered {code}" + (f": {outcome}" if outcome else "")
        if code == 401 and isinstance(self.settings.auth, OAuth2ClientCredentials):
            # The cached token may have been revoked or expired early: fetch a new one.
            self._token = None
            return SendResult(
                Outcome.TRANSIENT,
                status=status,
                response=truncate(reply.content),
                error=error,
                error_class="auth",
            )
        transient = code in _TRANSIENT_STATUSES
        return SendResult(
            Outcome.TRANSIENT if transient else Outcome.PERMANENT,
            status=status,
            response=truncate(reply.content),
            error=error,
            error_class=f"http_{code // 100}xx",
            retry_after=parse_retry_after(reply.headers.get("retry-after")) if transient else None,
        )
