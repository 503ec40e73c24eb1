"""Twin of a webhook partner: verifies signatures, dedupes by message id, misbehaves on
request (fail the first N calls, fail everything with a status, answer slowly).

Control endpoints under ``/_twin`` let a test or a developer steer and inspect it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["Behaviour", "HttpReceiverTwin", "Received", "ServerThread"]


@dataclass
class Behaviour:
    fail_first: int = 0  # answer fail_status to this many calls, then succeed
    fail_status: int = 503
    always_status: int | None = None  # answer this to every call (permanent failure)
    delay: float = 0.0  # seconds before answering
    retry_after: int | None = None


@dataclass(frozen=True, slots=True)
class Received:
    message_id: str
    attempt: int
    event_type: str
    body: bytes
    at: float


@dataclass
class _State:
    behaviour: Behaviour = field(default_factory=Behaviour)
    calls: int = 0
    accepted: dict[str, Received] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # message ids in the order first accepted
    duplicates: dict[str, int] = field(default_factory=dict)
    bad_signatures: int = 0


class HttpReceiverTwin:
    """An ASGI app; ``secret`` set means unsigned or mis-signed calls get 401."""

    def __init__(self, secret: str | None = None, max_skew: float = 300.0) -> None:
        self.secret = secret
        self.max_skew = max_skew
        self.state = _State()
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/hook", self._hook, methods=["POST"]),
                Route("/_twin/received", self._received, methods=["GET"]),
                Route("/_twin/behaviour", self._behaviour, methods=["POST"]),
                Route("/_twin/reset", self._reset, methods=["POST"]),
            ]
        )

    def set_behaviour(self, **changes: Any) -> None:
        with self._lock:
            self.state.behaviour = Behaviour(**changes)
            self.state.calls = 0

    def reset(self) -> None:
        with self._lock:
            self.state = _State()

    def accepted_ids(self) -> list[str]:
        with self._lock:
            return list(self.state.order)

    def accepted(self) -> list[Received]:
        with self._lock:
            return [self.state.accepted[m] for m in self.state.order]

    def duplicates(self) -> dict[str, int]:
        with self._lock:
            return dict(self.state.duplicates)

    def _signature_ok(self, request: Request, body: bytes) -> bool:
        if self.secret is None:
            return True
        stamp = request.headers.get("x-hub-timestamp", "")
        given = request.headers.get("x-hub-signature-256", "")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > self.max_skew:
            return False
        # Computed here from the documented contract, not with the hub's own sign(): a
        # partner verifies independently, so a bug in sign() must fail the tests.
        mac = hmac.new(self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
        return hmac.compare_digest(given, "sha256=" + mac.hexdigest())

    async def _hook(self, request: Request) -> Response:
        try:
            body = await request.body()
        except ClientDisconnect:  # the sender died mid-request (crash tests do this)
            return Response(b"", 499)
        with self._lock:
            self.state.calls += 1
            calls, behaviour = self.state.calls, self.state.behaviour
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if not self._signature_ok(request, body):
            with self._lock:
                self.state.bad_signatures += 1
            return Response(b'{"error":"bad signature"}', 401, media_type="application/json")
        headers = {}
        if behaviour.retry_after is not None:
            headers["Retry-After"] = str(behaviour.retry_after)
        if behaviour.always_status is not None:
            return Response(b'{"error":"refused"}', behaviour.always_status, headers)
        if calls <= behaviour.fail_first:
            return Response(b'{"error":"busy"}', behaviour.fail_status, headers)
        message_id = request.headers.get("x-hub-message-id", "")
        item = Received(
            message_id=message_id,
            attempt=int(request.headers.get("x-hub-attempt", "1")),
            event_type=request.headers.get("x-hub-event-type", ""),
            body=body,
            at=time.time(),
        )
        with self._lock:
            if message_id in self.state.accepted:
                self.state.duplicates[message_id] = self.state.duplicates.get(message_id, 0) + 1
            else:
                self.state.accepted[message_id] = item
                self.state.order.append(message_id)
        return Response(b'{"ok":true}', 200, media_type="application/json")

    async def _received(self, _request: Request) -> Response:
        with self._lock:
            content = {
                "calls": self.state.calls,
                "accepted": len(self.state.order),
                "duplicates": self.state.duplicates,
                "bad_signatures": self.state.bad_signatures,
                "message_ids": list(self.state.order),
            }
        return Response(orjson.dumps(content), media_type="application/json")

    async def _behaviour(self, request: Request) -> Response:
        self.set_behaviour(**orjson.loads(await request.body() or b"{}"))
        return Response(b'{"ok":true}', media_type="application/json")

    async def _reset(self, _request: Request) -> Response:
        self.reset()
        return Response(b'{"ok":true}', media_type="application/json")


class ServerThread:
    """Serve an ASGI app on a loopback port in a background thread; port 0 picks a free one."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, *, lifespan: bool = False
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on" if lifespan else "off",
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self.host = host

    @property
    def port(self) -> int:
        sockets = self.server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
