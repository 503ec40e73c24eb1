"""POST /v1/events answered before FastAPI's stack gives the very answers the FastAPI
route gives: status, headers in order, body; and the route stays in the OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from hub.api.app import HubApp, create_app
from hub.config.plan import plan_from_mapping
from hub.engine.ingest import IngestResult
from hub.runtime import HubRuntime
from hub.store.records import EventAnswer, IngestOutcome

TOKEN, READER = "dispatch-token", "reader-token"
ANSWERS: dict[bytes, IngestResult] = {
    b"accepted": IngestResult(
        "IN-1", IngestOutcome((EventAnswer("e1", "IN-1", (("M", "d", "r"),)),))
    ),
    b"replayed": IngestResult("IN-2", IngestOutcome((EventAnswer("e1", "IN-1", (), True),))),
    b"conflict": IngestResult("IN-3", IngestOutcome(conflicts=("e1",))),
    b"invalid": IngestResult("IN-4", errors=({"path": "type", "reason": "无效", "type": "enum"},)),
    b"forbidden": IngestResult(
        "IN-5", errors=({"path": "source", "reason": "no", "type": "forbidden"},)
    ),
}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[HubApp]:
    plan = plan_from_mapping(
        {
            "database_url": f"sqlite:///{tmp_path / 'hub.db'}",
            "api": {"max_body_bytes": 100},
            "clients": {
                "dispatch": {"token": TOKEN, "scopes": ["ingest"], "sources": ["dispatch"]},
                "reader": {"token": READER, "scopes": ["read"]},
            },
        },
        env={},
    )
    runtime = HubRuntime(plan)

    async def submit(raw: bytes, **_: object) -> IngestResult:
        if raw == b"boom":
            raise RuntimeError("the database went away")
        return ANSWERS[raw]

    runtime.ingestor.submit = submit  # type: ignore[method-assign]
    created = create_app(runtime)
    assert isinstance(created, HubApp)
    try:
        yield created
    finally:
        runtime.store.close()


Answer = tuple[int, list[tuple[str, str]], bytes]


def ask(app: HubApp, body: bytes, headers: dict[str, str], *, shortcut: bool) -> Answer:
    ingest = app.ingest
    if not shortcut:
        app.ingest = None  # the FastAPI route alone, as before the shortcut
    try:

        async def post() -> httpx.Response:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
                return await client.post("/v1/events", content=body, headers=headers)

        reply = asyncio.run(post())
    finally:
        app.ingest = ingest
    return reply.status_code, reply.headers.multi_items(), reply.content


CASES = {
    "accepted": (b"accepted", {"Authorization": f"Bearer {TOKEN}"}, 202),
    "replayed": (b"replayed", {"Authorization": f"Bearer {TOKEN}"}, 202),
    "conflict": (b"conflict", {"Authorization": f"Bearer {TOKEN}"}, 409),
    "invalid": (b"invalid", {"Authorization": f"Bearer {TOKEN}"}, 422),
    "forbidden-source": (b"forbidden", {"Authorization": f"Bearer {TOKEN}"}, 403),
    "no-token": (b"accepted", {}, 401),
    "unknown-token": (b"accepted", {"Authorization": "Bearer guess"}, 401),
    "wrong-scope": (b"accepted", {"Authorization": f"Bearer {READER}"}, 403),
    "too-large": (b"x" * 101, {"Authorization": f"Bearer {TOKEN}"}, 413),
    "too-large-declared": (
        b"accepted",
        {"Authorization": f"Bearer {TOKEN}", "Content-Length": "1000"},
        413,
    ),
    "server-error": (b"boom", {"Authorization": f"Bearer {TOKEN}"}, 500),
}


@pytest.mark.parametrize("case", list(CASES))
def test_shortcut_answers_as_the_fastapi_route(app: HubApp, case: str) -> None:
    body, headers, status = CASES[case]
    if case == "too-large-declared":  # a lying Content-Length cannot go over the wire
        scope_headers = {**headers}
        via_shortcut = _raw(app, body, scope_headers, shortcut=True)
        via_route = _raw(app, body, scope_headers, shortcut=False)
    else:
        via_shortcut = ask(app, body, headers, shortcut=True)
        via_route = ask(app, body, headers, shortcut=False)
    assert via_shortcut[0] == status, via_shortcut
    assert via_shortcut == via_route


def _raw(app: HubApp, body: bytes, headers: dict[str, str], *, shortcut: bool) -> Answer:
    """Call the ASGI app directly, headers exactly as given."""
    messages: list[dict[str, object]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/events",
        "raw_path": b"/v1/events",
        "root_path": "",
        "query_string": b"",
        "server": ("hub", 80),
        "client": ("127.0.0.1", 1),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        messages.append(message)

    ingest = app.ingest
    if not shortcut:
        app.ingest = None
    try:
        asyncio.run(app(scope, receive, send))
    finally:
        app.ingest = ingest
    start, end = messages
    raw_headers = start["headers"]
    assert isinstance(raw_headers, list)
    status, content = start["status"], end["body"]
    assert isinstance(status, int) and isinstance(content, bytes)
    return status, [(k.decode(), v.decode()) for k, v in raw_headers], content


def test_accepted_answer_body(app: HubApp) -> None:
    status, headers, body = ask(
        app, b"replayed", {"Authorization": f"Bearer {TOKEN}"}, shortcut=True
    )
    assert status == 202
    assert app.middleware_stack is None, "answered without building FastAPI's stack"
    assert ("idempotent-replayed", "true") in headers
    assert orjson.loads(body) == {
        "accepted": [{"event_id": "e1", "inbound_id": "IN-1", "deliveries": []}]
    }


def test_route_stays_in_the_openapi_document(app: HubApp) -> None:
    operation = app.openapi()["paths"]["/v1/events"]["post"]
    assert operation["summary"] == "Submit one event or a batch"
    assert "202 only after the body" in operation["description"]
