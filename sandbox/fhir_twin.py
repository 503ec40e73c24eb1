"""Twin of a hospital FHIR server: transactions with conditional updates, read and search.

``POST /`` takes a transaction Bundle; ``PUT <Type>?identifier=sys|value`` entries
update the one matching resource or create it (412 when more than one matches), and
``urn:uuid:`` references between entries are rewritten to the ids assigned. The answer
is a transaction-response Bundle. ``GET /<Type>/<id>`` reads, ``GET /<Type>?identifier=``
searches. ``POST /token`` is an OAuth2 client-credentials endpoint. A test steers it with
:meth:`FhirServerTwin.fail` and :meth:`FhirServerTwin.require_token`.
"""

from __future__ import annotations

import base64
import copy
import itertools
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["FhirServerTwin"]

FHIR_JSON = "application/fhir+json"


class _Refused(Exception):
    def __init__(self, status: int, code: str, diagnostics: str, expression: str | None) -> None:
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics, self.expression = (
            status,
            code,
            diagnostics,
            expression,
        )


def outcome(code: str, diagnostics: str, expression: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def _json(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(document), status, headers, media_type=FHIR_JSON)


@dataclass
class _Failure:
    status: int
    remaining: int
    retry_after: int | None
    body: dict[str, Any] | None


@dataclass
class _State:
    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    transactions: int = 0
    token_requests: int = 0
    tokens: set[str] = field(default_factory=set)
    failure: _Failure | None = None
    # Raw bodies of applied transactions by X-Hub-Message-Id, first-seen order kept.
    bodies: dict[str, list[bytes]] = field(default_factory=dict)


class FhirServerTwin:
    """An ASGI app (``.app``) holding resources in memory; thread-safe for tests."""

    def __init__(
        self,
        *,
        bearer_token: str | None = None,
        client_id: str = "hub",
        client_secret: str = "secret",
        token_lifetime: int = 3600,
    ) -> None:
        self.bearer_token = bearer_token
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.state = _State()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route("/", self._transaction, methods=["POST"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/{type}", self._search, methods=["GET"]),
                Route("/{type}/{id}", self._read, methods=["GET"]),
            ]
        )

    # ------------------------------------------------------------------ steering

    def fail(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: int | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next ``count`` transactions with status (and body, Retry-After)."""
        with self._lock:
            self.state.failure = _Failure(status, count, retry_after, body)

    def require_token(self, token: str | None) -> None:
        """Accept only ``Bearer <token>`` (or a token issued by /token); None: open."""
        self.bearer_token = token

    def revoke_tokens(self) -> None:
        with self._lock:
            self.state.tokens.clear()

    def resources(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for r in self.state.resources.get(kind, {}).values()]

    def received(self, message_id: str) -> list[bytes]:
        """Bodies of the transactions applied under message_id (X-Hub-Message-Id)."""
        with self._lock:
            return list(self.state.bodies.get(message_id, []))

    def message_ids(self) -> list[str]:
        with self._lock:
            return list(self.state.bodies)

    @property
    def transactions(self) -> int:
        return self.state.transactions

    @property
    def token_requests(self) -> int:
        return self.state.token_requests

    # ------------------------------------------------------------------ handlers

    def _authorised(self, request: Request) -> bool:
        if self.bearer_token is None:
            return True
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer "):
            return False
        token = given[len("Bearer ") :]
        with self._lock:
            return secrets.compare_digest(token, self.bearer_token) or token in self.state.tokens

    async def _token(self, request: Request) -> Response:
        form = parse_qs((await request.body()).decode())
        client_id = (form.get("client_id") or [""])[0]
        client_secret = (form.get("client_secret") or [""])[0]
        basic = request.headers.get("authorization", "")
        if basic.startswith("Basic "):
            decoded = base64.b64decode(basic[6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
            client_id, client_secret = unquote(client_id), unquote(client_secret)
        with self._lock:
            self.state.token_requests += 1
        if (form.get("grant_type") or [""])[0] != "client_credentials":
            return Response(b'{"error":"unsupported_grant_type"}', 400)
        if client_id != self.client_id or client_secret != self.client_secret:
            return Response(b'{"error":"invalid_client"}', 401)
        token = secrets.token_urlsafe(16)
        with self._lock:
            self.state.tokens.add(token)
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime}
        return Response(orjson.dumps(answer), media_type="application/json")

    async def _transaction(self, request: Request) -> Response:
        if not self._authorised(request):
            return _json(outcome("login", "a valid bearer token is required"), 401)
        with self._lock:
            failure = self.state.failure
            if failure is not None and failure.remaining > 0:
                failure.remaining -= 1
                headers = {}
                if failure.retry_after is not None:
                    headers["Retry-After"] = str(failure.retry_after)
                body = failure.body or outcome("transient", "the twin was told to fail")
                return _json(body, failure.status, headers)
        raw = await request.body()
        try:
            bundle = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _json(outcome("structure", f"not JSON: {exc}"), 400)
        try:
            with self._lock:
                answer = self._apply(bundle)
                message_id = request.headers.get("x-hub-message-id", "")
                self.state.bodies.setdefault(message_id, []).append(raw)
        except _Refused as refused:
            body = outcome(refused.code, refused.diagnostics, refused.expression)
            return _json(body, refused.status)
        return _json(answer)

    def _apply(self, bundle: Any) -> dict[str, Any]:
        """Apply a transaction atomically (on a copy of the store); called under the lock."""
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise _Refused(400, "structure", "the body must be a Bundle", "Bundle")
        if bundle.get("type") != "transaction":
            raise _Refused(400, "value", "Bundle.type must be transaction", "Bundle.type")
        entries = bundle.get("entry") or []
        store = copy.deepcopy(self.state.resources)
        targets: list[tuple[str, str, bool]] = []  # type, id, created
        ids: dict[str, str] = {}
        for index, entry in enumerate(entries):
            where = f"Bundle.entry[{index}]"
            request = entry.get("request") or {}
            resource = entry.get("resource")
            if not isinstance(resource, dict) or "resourceType" not in resource:
                raise _Refused(400, "required", "entry without a resource", f"{where}.resource")
            kind = str(resource["resourceType"])
            method, url = request.get("method"), str(request.get("url", ""))
            if method != "PUT" or "?" not in url:
                raise _Refused(
                    400, "not-supported", "only conditional PUT is supported", f"{where}.request"
                )
            path, _, query = url.partition("?")
            if path != kind:
                raise _Refused(400, "value", f"url type {path} is not {kind}", f"{where}.request")
            matches = self._match(store, kind, query)
            if len(matches) > 1:
                raise _Refused(
                    412, "multiple-matches", f"{len(matches)} {kind} match {query}", where
                )
            created = not matches
            resource_id = matches[0] if matches else f"{next(self._ids)}"
            targets.append((kind, resource_id, created))
            if entry.get("fullUrl"):
                ids[str(entry["fullUrl"])] = f"{kind}/{resource_id}"
        response_entries = []
        for entry, (kind, resource_id, created) in zip(entries, targets, strict=True):
            resource = _rewrite(copy.deepcopy(entry["resource"]), ids)
            old = store.setdefault(kind, {}).get(resource_id)
            version = 1 if old is None else int(old["meta"]["versionId"]) + 1
            resource["id"] = resource_id
            resource["meta"] = {**resource.get("meta", {}), "versionId": str(version)}
            store[kind][resource_id] = resource
            response_entries.append(
                {
                    "response": {
                        "status": "201 Created" if created else "200 OK",
                        "location": f"{kind}/{resource_id}/_history/{version}",
                    }
                }
            )
        self.state.resources = store
        self.state.transactions += 1
        return {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": response_entries,
        }

    @staticmethod
    def _match(store: dict[str, dict[str, dict[str, Any]]], kind: str, query: str) -> list[str]:
        params = parse_qs(query)
        wanted = (params.get("identifier") or [""])[0]
        system, bar, value = wanted.partition("|")
        if not bar:
            system, value = "", wanted
        return [
            resource_id
            for resource_id, resource in store.get(kind, {}).items()
            if any(
                i.get("value") == value and (not system or i.get("system") == system)
                for i in resource.get("identifier") or []
            )
        ]

    async def _read(self, request: Request) -> Response:
        if not self._authorised(request):
            return _json(outcome("login", "a valid bearer token is required"), 401)
        kind, resource_id = request.path_params["type"], request.path_params["id"]
        with self._lock:
            resource = self.state.resources.get(kind, {}).get(resource_id)
        if resource is None:
            return _json(outcome("not-found", f"{kind}/{resource_id} is not known"), 404)
        return _json(resource)

    async def _search(self, request: Request) -> Response:
        if not self._authorised(request):
            return _json(outcome("login", "a valid bearer token is required"), 401)
        kind = request.path_params["type"]
        with self._lock:
            if "identifier" in request.query_params:
                found = self._match(self.state.resources, kind, request.url.query)
            else:
                found = list(self.state.resources.get(kind, {}))
            items = [copy.deepcopy(self.state.resources[kind][i]) for i in found]
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(items),
            "entry": [{"fullUrl": f"{kind}/{r['id']}", "resource": r} for r in items],
        }
        return _json(bundle)


def _rewrite(node: Any, ids: dict[str, str]) -> Any:
    """node with every ``reference`` to a bundle fullUrl replaced by Type/id."""
    for item in _walk(node):
        reference = item.get("reference")
        if isinstance(reference, str) and reference in ids:
            item["reference"] = ids[reference]
    return node


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)
