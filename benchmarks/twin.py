"""The webhook twin as its own process, for benchmarks: ``python -m benchmarks.twin PORT``.

Serves sandbox.http_receiver.HttpReceiverTwin on 127.0.0.1:PORT (uvloop, httptools) and
adds ``GET /_bench/arrivals``: ``{message_id: arrival time (epoch seconds)}`` for every
message first accepted, so a benchmark can measure POST-to-partner latency by message id.
Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from sandbox.http_receiver import HttpReceiverTwin

__all__ = ["build_app", "main"]


def build_app(twin: HttpReceiverTwin) -> Starlette:
    async def arrivals(_request: Request) -> Response:
        body = {r.message_id: r.at for r in twin.accepted()}
        return Response(orjson.dumps(body), media_type="application/json")

    async def count(_request: Request) -> Response:
        return Response(orjson.dumps(len(twin.accepted_ids())), media_type="application/json")

    return Starlette(
        routes=[
            Route("/_bench/arrivals", arrivals, methods=["GET"]),
            Route("/_bench/count", count, methods=["GET"]),
            Mount("/", app=twin.app),
        ]
    )


def main(argv: list[str]) -> int:
    port = int(argv[1])
    uvicorn.run(
        build_app(HttpReceiverTwin()),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
