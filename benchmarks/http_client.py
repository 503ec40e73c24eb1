"""CPU per webhook POST of the delivery path's HTTP client, against the webhook twin.

    python -m benchmarks.http_client [--requests N] [--concurrency C]

Runs ``benchmarks/twin.py`` in its own process and, in this one (uvloop, as ``hub run``),
POSTs a signed-sized JSON body N times from C concurrent senders with each client:

* ``hub`` — :class:`hub.connectors.httpclient.HttpClient`, what the connectors use;
* ``connector`` — the whole :class:`hub.connectors.http.HttpConnector` send (headers,
  HMAC signature, classification) on top of it;
* ``httpx`` — one single-connection ``httpx.AsyncClient`` per concurrent send, as the
  connector did before;
* ``aiohttp`` — one ``aiohttp.ClientSession``, if aiohttp is installed.

It reports this process's CPU (user + system) per request in microseconds: the figure
that decides how many deliveries a small machine can make, little disturbed by other load.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import webhook_twin
from hub.connectors.base import Outbound, Outcome
from hub.connectors.http import HttpConnector, HttpSettings
from hub.connectors.httpclient import HttpClient, Target

HERE = Path(__file__).resolve().parent

BODY = b'{"event":{"type":"unit.status","data":{"unit_id":"AMB-1","status":"en_route"}}}' * 4
HEADERS = {
    "Content-Type": "application/json",
    "X-Hub-Message-Id": "MSG-1",
    "X-Hub-Timestamp": "1700000000",
    "X-Hub-Event-Type": "unit.status",
    "X-Hub-Attempt": "1",
}

Send = Callable[[int], Awaitable[None]]


async def measure(send: Send, requests: int, concurrency: int) -> float:
    """CPU microseconds per request over ``requests`` sends (after a warm-up)."""
    for i in range(concurrency * 2):
        await send(i)
    next_index = 0

    async def sender() -> None:
        nonlocal next_index
        while next_index < requests:
            next_index += 1
            await send(next_index)

    cpu = time.process_time()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return (time.process_time() - cpu) / requests * 1e6


async def with_hub(url: str, requests: int, concurrency: int) -> float:
    client = HttpClient(timeout=10, proxy="none")  # loopback: never through a proxy
    target = Target.parse(url)

    async def send(i: int) -> None:
        reply = await client.request("POST", target, body=BODY, headers=HEADERS)
        assert reply.status_code == 200, reply

    try:
        return await measure(send, requests, concurrency)
    finally:
        await client.close()


async def with_connector(url: str, requests: int, concurrency: int) -> float:
    connector = HttpConnector(
        "bench", HttpSettings.model_validate({"url": url, "secret": "k", "proxy": "none"})
    )

    async def send(i: int) -> None:
        message = Outbound(i, f"MSG-{i}", "bench", BODY, "application/json", 1, "I", None, "x")
        result = await connector.send(message)
        assert result.outcome is Outcome.DELIVERED, result

    try:
        return await measure(send, requests, concurrency)
    finally:
        await connector.close()


async def with_httpx(url: str, requests: int, concurrency: int) -> float:
    idle: list[httpx.AsyncClient] = []
    clients: list[httpx.AsyncClient] = []

    async def send(i: int) -> None:
        if idle:
            client = idle.pop()
        else:
            client = httpx.AsyncClient(
                timeout=10, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)
            )
            clients.append(client)
        try:
            reply = await client.post(url, content=BODY, headers=HEADERS)
        finally:
            idle.append(client)
        assert reply.status_code == 200

    try:
        return await measure(send, requests, concurrency)
    finally:
        for client in clients:
            await client.aclose()


async def with_aiohttp(url: str, requests: int, concurrency: int) -> float:
    import aiohttp

    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def send(i: int) -> None:
        async with session.post(url, data=BODY, headers=HEADERS) as reply:
            await reply.read()
            assert reply.status == 200

    try:
        return await measure(send, requests, concurrency)
    finally:
        await session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs each")
    args = parser.parse_args(argv)
    import uvloop

    clients: dict[str, Callable[[str, int, int], Coroutine[Any, Any, float]]] = {
        "hub": with_hub,
        "connector": with_connector,
        "httpx": with_httpx,
    }
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        print("aiohttp is not installed: skipped")
    else:
        clients["aiohttp"] = with_aiohttp
    with webhook_twin() as twin:
        url = f"{twin.url}/hook"
        for name, run in clients.items():
            best = min(
                uvloop.run(run(url, args.requests, args.concurrency)) for _ in range(args.rounds)
            )
            print(f"{name:>10}: {best:7.1f} µs CPU per POST", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
