"""The hub's HTTP API: ingest, message browser, operations.

The ingest handler reads raw bytes and answers with orjson: the sender waits on this
path, so it goes through no response-model validation. ``POST /v1/events`` is moreover
answered by :class:`HubApp` before FastAPI's middleware stack, router and dependency
machinery (about three quarters of the framework's CPU per request); the route stays
registered with FastAPI for the OpenAPI document and for anything the shortcut does not
take (a ``root_path``, a trailing slash). Both paths run :func:`create_app`'s one
``ingest`` coroutine and answer errors through FastAPI's own HTTPException handler, so
every answer is the same byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive, Scope, Send

from hub.api.auth import Gate
from hub.engine.metrics import QueueCollector
from hub.runtime import HubRuntime
from hub.store.records import EventAnswer
from hub.store.store import ResendError

__all__ = ["HubApp", "create_app"]

INGEST_PATH = "/v1/events"


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _answer(a: EventAnswer) -> dict[str, Any]:
    return {
        "event_id": a.event_id,
        "inbound_id": a.inbound_id,
        "deliveries": [{"message_id": m, "destination": d, "route": r} for m, d, r in a.deliveries],
    }


def _iso(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat()


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise HTTPException(422, "times need a timezone, e.g. 2026-11-25T08:00:00+08:00")
    return value.timestamp()


class HubApp(FastAPI):
    """FastAPI, with ``POST /v1/events`` answered before the middleware stack.

    What the shortcut leaves out does nothing for that route: routing (one exact path),
    dependency solving (the endpoint takes only the request), and the exception
    middlewares, whose two effects are reproduced here: an HTTPException is answered by
    FastAPI's default handler (the app installs no other), and any other exception gets
    ServerErrorMiddleware's plain 500 before it is raised on to the server's log.
    """

    ingest: Callable[[Request], Awaitable[Response]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ingest = self.ingest
        if (
            ingest is None
            or scope["type"] != "http"
            or scope["path"] != INGEST_PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
            or self.root_path
            or self.user_middleware  # middleware added later must see every request
        ):
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request = Request(scope, receive)
        try:
            response = await ingest(request)
        except HTTPException as exc:
            response = await http_exception_handler(request, exc)
        except Exception:
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
        await response(scope, receive, send)


def create_app(runtime: HubRuntime) -> FastAPI:
    """The ASGI app; the runtime starts and stops with the app's lifespan."""
    gate = Gate(runtime.plan.spec.clients)
    max_body = runtime.plan.spec.api.max_body_bytes
    store = runtime.store
    runtime.metrics.registry.register(QueueCollector(store.queue_stats))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = HubApp(
        title="Prehospital interoperability hub",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.runtime = runtime

    async def ingest(request: Request) -> Response:
        caller = gate.check(request, "ingest")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise HTTPException(413, f"body larger than {max_body} bytes")
        raw = await request.body()
        if len(raw) > max_body:
            raise HTTPException(413, f"body larger than {max_body} bytes")
        result = await runtime.ingestor.submit(
            raw,
            content_type=request.headers.get("content-type"),
            source=None if caller.name == "anonymous" else caller.name,
            allowed_sources=caller.sources,
        )
        if result.errors:
            forbidden = all(e["type"] == "forbidden" for e in result.errors)
            return _json(
                {
                    "error": "forbidden" if forbidden else "invalid",
                    "inbound_id": result.inbound_id,
                    "errors": list(result.errors),
                },
                403 if forbidden else 422,
            )
        assert result.outcome is not None
        if result.outcome.conflicts:
            return _json(
                {
                    "error": "conflict",
                    "inbound_id": result.inbound_id,
                    "errors": [
                        {
                            "path": "event_id",
                            "reason": f"event {c} was already accepted with a different body",
                            "type": "conflict",
                        }
                        for c in result.outcome.conflicts
                    ],
                },
                409,
            )
        answers = result.outcome.answers
        headers = {"Idempotent-Replayed": "true"} if all(a.replayed for a in answers) else None
        return _json({"accepted": [_answer(a) for a in answers]}, 202, headers)

    app.ingest = ingest

    @app.post(INGEST_PATH, status_code=202, summary="Submit one event or a batch")
    async def post_events(request: Request) -> Response:
        """202 only after the body and every delivery it causes are committed.

        Body: one event, an array, or ``{"events": [...]}``. A repeated event id answers
        as it was first answered and creates nothing (header ``Idempotent-Replayed``).
        422 names each invalid field; the raw body is kept as rejected either way.
        """
        return await ingest(request)

    @app.get("/v1/messages", summary="Browse received messages, newest first")
    async def list_messages(
        request: Request,
        incident_id: str | None = None,
        status: Annotated[str | None, Query(pattern="^(accepted|rejected)$")] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> Response:
        gate.check(request, "read")
        try:
            page = await _thread(
                store.list_messages,
                incident_id=incident_id,
                status=status,
                since=_epoch(since),
                until=_epoch(until),
                limit=limit,
                cursor=cursor,
            )
        except ValueError:  # a cursor this API did not hand out
            raise HTTPException(422, f"invalid cursor {cursor!r}") from None
        items = [{**m, "received_at": _iso(m["received_at"])} for m in page.items]
        return _json({"items": items, "next_cursor": page.next_cursor})

    @app.get("/v1/messages/{inbound_id}", summary="One message with its deliveries and attempts")
    async def get_message(request: Request, inbound_id: str) -> Response:
        caller = gate.check(request, "read")
        message = await _thread(store.get_message, inbound_id, actor=caller.name)
        if message is None:
            raise HTTPException(404, f"no message {inbound_id}")
        return _json(_present_message(message))

    @app.post("/v1/deliveries/{delivery_id}/resend", summary="Queue a dead delivery again")
    async def resend(request: Request, delivery_id: int, remap: bool = False) -> Response:
        caller = gate.check(request, "operate")
        try:
            await _thread(store.resend, delivery_id, actor=caller.name, remap=remap)
        except ResendError as exc:
            code = 404 if str(exc).startswith("no delivery") else 409
            raise HTTPException(code, str(exc)) from None
        runtime.wake_workers()
        return _json({"delivery_id": delivery_id, "status": "pending"}, 202)

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz", summary="The database answers")
    async def readyz() -> Response:
        try:
            await _thread(store.ping)
        except Exception as exc:
            return _json({"status": "unavailable", "reason": type(exc).__name__}, 503)
        return _json({"status": "ready"})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        body = await _thread(generate_latest, runtime.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


async def _thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


def _present_message(message: dict[str, Any]) -> dict[str, Any]:
    raw: bytes = message.pop("raw")
    try:
        message["raw_text"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        message["raw_base64"] = base64.b64encode(raw).decode()
    message["received_at"] = _iso(message["received_at"])
    for event in message["events"]:
        event["occurred_at"] = _iso(event["occurred_at"])
        event["received_at"] = _iso(event["received_at"])
    for d in message["deliveries"]:
        payload = d.pop("payload")
        d["payload_text"] = None if payload is None else payload.decode("utf-8", "replace")
        for key in ("created_at", "updated_at", "next_attempt_at", "lease_until", "delivered_at"):
            d[key] = _iso(d[key])
        for a in d["attempt_log"]:
            a["started_at"] = _iso(a["started_at"])
    return message
