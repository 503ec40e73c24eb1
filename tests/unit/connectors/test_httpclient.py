"""The delivery path's HTTP/1.1 client against scripted servers on loopback: framing,
keep-alive, servers that close, bounded replies, and the error classes."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from httpkit import read_request

from hub.connectors.httpclient import (
    HttpClient,
    HttpNetworkError,
    HttpProtocolError,
    HttpReply,
    HttpTimeout,
    Target,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A scripted loopback server: ``answers`` are sent in turn, one per request."""

    def __init__(self, *answers: bytes, close_after: bool = False) -> None:
        self.answers = list(answers)
        self.close_after = close_after
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                try:
                    request = await read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                self.requests.append(request)
                writer.write(self.answers.pop(0))
                await writer.drain()
                if self.close_after:
                    return
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook?x=1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def ok(body: bytes = b"ok", *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


def post_once(answer: bytes, *, close_after: bool = False) -> HttpReply:
    """One POST from a fresh client to a :class:`Server` that sends ``answer``."""

    async def scenario() -> HttpReply:
        async with Server(answer, close_after=close_after) as url:
            client = HttpClient(timeout=5)
            try:
                return await client.request("POST", url)
            finally:
                await client.close()

    return asyncio.run(scenario())


def test_request_line_headers_and_body() -> None:
    async def scenario() -> tuple[HttpReply, Server]:
        server = Server(ok())
        async with server as url:
            client = HttpClient(timeout=5)
            try:
                headers = {"X-A": "1", "accept": "application/fhir+json", "Content-Length": "9"}
                reply = await client.request("POST", url, body=b"{}", headers=headers)
            finally:
                await client.close()
        return reply, server

    reply, server = asyncio.run(scenario())
    assert (reply.status_code, reply.content, reply.truncated) == (200, b"ok", False)
    head, body = server.requests[0]
    assert head.startswith(b"POST /hook?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nX-A: 1\r\n" in head
    assert head.count(b"ccept:") == 1 and b"\r\naccept: application/fhir+json\r\n" in head
    assert head.count(b"Content-Length") == 1 and b"\r\nContent-Length: 2\r\n" in head
    assert body == b"{}"


def test_keep_alive_connection_is_reused() -> None:
    async def scenario() -> Server:
        server = Server(ok(b"1"), ok(b"2"), ok(b"3"))
        async with server as url:
            client = HttpClient(timeout=5)
            try:
                for expected in (b"1", b"2", b"3"):
                    assert (await client.request("POST", url)).content == expected
            finally:
                await client.close()
        return server

    assert asyncio.run(scenario()).connections == 1


def test_concurrent_requests_open_one_connection_each_and_all_arrive() -> None:
    async def scenario() -> list[HttpReply]:
        server = Server(*[ok(b"x")] * 8, close_after=True)
        async with server as url:
            client = HttpClient(timeout=5)
            try:
                return list(await asyncio.gather(*(client.request("POST", url) for _ in range(8))))
            finally:
                await client.close()

    assert [r.status_code for r in asyncio.run(scenario())] == [200] * 8


def test_chunked_reply_and_repeated_headers() -> None:
    chunked = (
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n"
        b"Retry-After: 7\r\nVia: a\r\nVia: b\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )

    async def scenario() -> tuple[HttpReply, HttpReply, int]:
        server = Server(chunked, ok(b"after"))
        async with server as url:
            client = HttpClient(timeout=5)
            try:
                first = await client.request("POST", url)
                second = await client.request("POST", url)
            finally:
                await client.close()
        return first, second, server.connections

    first, second, connections = asyncio.run(scenario())
    assert (first.status_code, first.content) == (503, b"hello world")
    assert first.headers["retry-after"] == "7"
    assert first.headers["via"] == "a, b"
    assert second.content == b"after"
    assert connections == 1, "a chunked reply leaves the connection reusable"


def test_connection_close_reply_is_not_reused() -> None:
    async def scenario() -> int:
        server = Server(ok(b"1", b"Connection: close"), ok(b"2"), close_after=True)
        async with server as url:
            client = HttpClient(timeout=5)
            try:
                assert (await client.request("POST", url)).content == b"1"
                assert (await client.request("POST", url)).content == b"2"
            finally:
                await client.close()
        return server.connections

    assert asyncio.run(scenario()) == 2


def test_server_closing_a_kept_alive_connection_is_retried_on_a_new_one() -> None:
    """The server drops a kept-alive connection as the next request goes out on it (its
    idle timeout raced the request): the request is sent once more, on a new connection."""

    async def scenario() -> tuple[HttpReply, int, list[bytes]]:
        connections = 0
        bodies: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            first_connection = connections == 1
            try:
                _, body = await read_request(reader)
                bodies.append(body)
                writer.write(ok(b"1" if first_connection else b"2"))
                await writer.drain()
                if first_connection:
                    _, body = await read_request(reader)
                    bodies.append(body)  # read, then closed without an answer
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = HttpClient(timeout=5)
        try:
            await client.request("POST", f"http://127.0.0.1:{port}/", body=b"a")
            reply = await client.request("POST", f"http://127.0.0.1:{port}/", body=b"b")
        finally:
            await client.close()
            server.close()
            await server.wait_closed()
        return reply, connections, bodies

    reply, connections, bodies = asyncio.run(scenario())
    assert reply.content == b"2"
    assert connections == 2
    assert bodies == [b"a", b"b", b"b"]


def test_a_fresh_connection_closed_before_a_reply_is_not_retried() -> None:
    async def scenario() -> int:
        attempts = 0

        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal attempts
            attempts += 1
            await read_request(reader)
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = HttpClient(timeout=5)
        try:
            with pytest.raises(HttpNetworkError) as info:
                await client.request("POST", f"http://127.0.0.1:{port}/")
            assert info.value.error_class == "network"
        finally:
            await client.close()
            server.close()
            await server.wait_closed()
        return attempts

    assert asyncio.run(scenario()) == 1


def test_idle_connection_closed_by_server_is_dropped() -> None:
    async def scenario() -> int:
        server = Server(ok(b"1"), ok(b"2"), close_after=True)
        async with server as url:
            client = HttpClient(timeout=5)
            try:
                await client.request("POST", url)
                for _ in range(100):  # bounded: let the loop see the server's FIN
                    (idle,) = client._idle.values()
                    if not idle or not idle[0].usable:
                        break
                    await asyncio.sleep(0.01)
                assert (await client.request("POST", url)).content == b"2"
            finally:
                await client.close()
        return server.connections

    assert asyncio.run(scenario()) == 2


def test_reply_read_until_close() -> None:
    reply = post_once(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", close_after=True
    )
    assert reply.content == b"until the end"


def test_interim_100_continue_is_skipped() -> None:
    assert post_once(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"done")).content == b"done"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_reply_larger_than_the_bound_is_cut_and_not_reused(chunked: bool) -> None:
    big = b"x" * 5000
    if chunked:
        answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        answer += b"".join(b"3e8\r\n" + big[:1000] + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
    else:
        answer = ok(big)

    async def scenario() -> tuple[HttpReply, HttpReply, int]:
        server = Server(answer, ok(b"next"), close_after=True)
        async with server as url:
            client = HttpClient(timeout=5, max_response_bytes=1024)
            try:
                first = await client.request("POST", url)
                second = await client.request("POST", url)
            finally:
                await client.close()
        return first, second, server.connections

    first, second, connections = asyncio.run(scenario())
    assert (first.status_code, first.content, first.truncated) == (200, b"x" * 1024, True)
    assert second.content == b"next"
    assert connections == 2


def test_gzip_and_deflate_replies_are_decoded_and_bounded() -> None:
    text = b"transaction-response " * 100
    answers = [
        ok(gzip.compress(text), b"Content-Encoding: gzip"),
        ok(zlib.compress(text), b"Content-Encoding: deflate"),
        ok(gzip.compress(b"y" * 100_000), b"Content-Encoding: gzip"),
    ]

    async def scenario() -> list[HttpReply]:
        server = Server(*answers)
        async with server as url:
            client = HttpClient(timeout=5, max_response_bytes=4096)
            try:
                return [await client.request("POST", url) for _ in answers]
            finally:
                await client.close()

    plain, deflated, bomb = asyncio.run(scenario())
    assert plain.content == text and deflated.content == text
    assert (len(bomb.content), bomb.truncated) == (4096, True)


def test_garbled_gzip_is_a_protocol_error() -> None:
    with pytest.raises(HttpProtocolError) as info:
        post_once(ok(b"not gzip!", b"Content-Encoding: gzip"))
    assert info.value.error_class == "protocol"


def test_not_http_is_a_protocol_error() -> None:
    with pytest.raises(HttpProtocolError):
        post_once(b"MSH|^~\\&|not http\r\n\r\n", close_after=True)


def test_cut_in_the_middle_of_a_reply_is_a_protocol_error() -> None:
    with pytest.raises(HttpProtocolError):
        post_once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", close_after=True)


def test_silent_server_is_a_timeout() -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await release.wait()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = HttpClient(timeout=0.05)
        try:
            await client.request("POST", f"http://127.0.0.1:{port}/")
        finally:
            release.set()
            await client.close()
            server.close()
            await server.wait_closed()

    with pytest.raises(HttpTimeout) as info:
        asyncio.run(scenario())
    assert info.value.error_class == "timeout"


@pytest.mark.parametrize(
    "headers",
    [{"X-Evil": "a\r\nX-Injected: 1"}, {"Bad Name": "1"}, {"X-Name": "病人"}],
    ids=["crlf", "name", "non-ascii"],
)
def test_unsendable_headers_are_a_protocol_error(headers: dict[str, str]) -> None:
    async def scenario() -> None:
        client = HttpClient(timeout=5)
        await client.request("POST", "http://127.0.0.1:9/", headers=headers)

    with pytest.raises(HttpProtocolError):
        asyncio.run(scenario())


def test_target_parsing() -> None:
    plain = Target.parse("http://Example.org/fhir/")
    assert (plain.host, plain.port, plain.host_header, plain.path) == (
        "example.org",
        80,
        "example.org",
        "/fhir/",
    )
    tls = Target.parse("https://[::1]:8443/hook?a=1&b=2")
    assert (tls.host, tls.port, tls.host_header, tls.path) == (
        "::1",
        8443,
        "[::1]:8443",
        "/hook?a=1&b=2",
    )
    assert Target.parse("http://u%40x:p@h/").authorization == "Basic dUB4OnA="
    with pytest.raises(ValueError):
        Target.parse("ftp://example.org/")


def test_tls_verifies_the_partner(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def scenario() -> tuple[HttpReply, str]:
        server = Server(ok(b"secure"))
        server.server = await asyncio.start_server(
            server.handle, "127.0.0.1", 0, ssl=server_context
        )
        port = server.server.sockets[0].getsockname()[1]
        url = f"https://localhost:{port}/hook"
        trusting = HttpClient(timeout=5, ssl_context=ssl.create_default_context(cafile=cert))
        default = HttpClient(timeout=5)  # public roots only: the self-signed partner fails
        try:
            reply = await trusting.request("POST", url, body=b"{}")
            with pytest.raises(HttpNetworkError) as info:
                await default.request("POST", url, body=b"{}")
        finally:
            await trusting.close()
            await default.close()
            await server.__aexit__()
        return reply, info.value.error_class

    reply, error_class = asyncio.run(scenario())
    assert reply.content == b"secure"
    assert error_class == "network"
