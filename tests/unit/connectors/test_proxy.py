"""Forward proxies for the http and fhir connectors, against a proxy twin on loopback:
absolute-form requests for http targets, CONNECT tunnels for https ones, the proxy
environment variables (NO_PROXY included), ``proxy: none``, refusals and credentials.

The root conftest clears every proxy variable before each test; these tests set the
ones they need with monkeypatch."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
from httpkit import read_request
from pydantic import ValidationError

from hub.connectors.base import Outcome, SendResult
from hub.connectors.fhir import FhirSettings
from hub.connectors.http import HttpConnector, HttpSettings
from hub.connectors.httpclient import (
    HttpClient,
    HttpNetworkError,
    HttpProxyError,
    ProxyRoutes,
    Target,
    no_proxy_matches,
)
from hub.testing.conformance import make_outbound

T = TypeVar("T")
USER, PASSWORD = "alice", "s3cr%t"  # as given in a URL: "s3cr%25t"
PROXY_CREDENTIALS = f"{USER}:s3cr%25t"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def header(head: bytes, name: str) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def request_line(head: bytes) -> str:
    return head.split(b"\r\n", 1)[0].decode()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@dataclass(frozen=True)
class Exchange:
    """One request read on a connection, and that connection's two ends."""

    head: bytes
    body: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class RecordingServer:
    """Reads requests on each connection, keeps their heads, and lets ``answer`` reply;
    ``answer`` returning False ends the connection."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head, body = await read_request(reader)
                except (asyncio.IncompleteReadError, OSError):
                    return
                self.heads.append(head)
                if not await self.answer(Exchange(head, body, reader, writer)):
                    return
        finally:
            writer.close()

    async def answer(self, exchange: Exchange) -> bool:
        raise NotImplementedError


class Origin(RecordingServer):
    """The partner: answers every request 200, keep-alive."""

    async def answer(self, exchange: Exchange) -> bool:
        exchange.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ndelivered")
        await exchange.writer.drain()
        return True


class ProxyTwin(RecordingServer):
    """A forward proxy: CONNECT pipes bytes to the target, absolute-form requests are
    forwarded in origin form; with ``credentials`` it answers 407 without them."""

    def __init__(self, *, credentials: str | None = None, connect_status: int = 200) -> None:
        super().__init__()
        self.expected = credentials
        self.connect_status = connect_status

    async def answer(self, exchange: Exchange) -> bool:
        head, body, reader, writer = exchange.head, exchange.body, exchange.reader, exchange.writer
        method, target, _ = request_line(head).split(" ")
        if self.expected and header(head, "proxy-authorization") != self.expected:
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="twin"\r\nContent-Length: 0\r\n\r\n'
            )
            await writer.drain()
            return False
        if method == "CONNECT":
            await self.tunnel(target, reader, writer)
            return False
        await self.forward(method, target, head, body, writer)
        return True

    async def tunnel(
        self, authority: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.connect_status != 200:
            writer.write(b"HTTP/1.1 %d Refused\r\nContent-Length: 0\r\n\r\n" % self.connect_status)
            await writer.drain()
            return
        host, _, port = authority.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def forward(
        self, method: str, target: str, head: bytes, body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        url = urlsplit(target)
        assert url.scheme == "http" and url.hostname == "127.0.0.1", target
        path = url.path + (f"?{url.query}" if url.query else "")
        lines = head.decode("latin-1").split("\r\n")[1:]
        kept = [line for line in lines if not line.lower().startswith("proxy-authorization:")]
        up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            up_writer.write("\r\n".join([f"{method} {path} HTTP/1.1", *kept]).encode() + body)
            reply_head, reply_body = await read_request(up_reader)  # same framing
        finally:
            up_writer.close()
        writer.write(reply_head + reply_body)
        await writer.drain()


@asynccontextmanager
async def serving(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    context: ssl.SSLContext | None = None,
) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def run(scenario: Callable[[], Coroutine[object, object, T]]) -> T:
    return asyncio.run(scenario())


async def post(client: HttpClient, url: str, count: int = 1) -> list[int]:
    try:
        return [(await client.request("POST", url, body=b"{}")).status_code for _ in range(count)]
    finally:
        await client.close()


async def deliver(connector: HttpConnector, count: int = 1) -> list[SendResult]:
    try:
        return [await connector.send(make_outbound(f"MSG-{i}")) for i in range(count)]
    finally:
        await connector.close()


def webhook(url: str, **settings: object) -> HttpConnector:
    return HttpConnector("twin", HttpSettings.model_validate({"url": url, **settings}))


def assert_no_credentials(text: str | None) -> None:
    assert text is not None
    for secret in (USER, PASSWORD, "s3cr", BASIC.split()[1]):
        assert secret not in text


# ------------------------------------------------------------------ http targets


def test_webhook_goes_through_http_proxy_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    origin, proxy = Origin(), ProxyTwin()

    async def scenario() -> tuple[list[SendResult], int]:
        async with serving(origin.handle) as origin_port, serving(proxy.handle) as proxy_port:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
            monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # not for http URLs
            results = await deliver(
                webhook(f"http://127.0.0.1:{origin_port}/hook?x=1", secret="k"), 2
            )
            return results, origin_port

    results, origin_port = run(scenario)
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 2
    assert [request_line(h) for h in proxy.heads] == [
        f"POST http://127.0.0.1:{origin_port}/hook?x=1 HTTP/1.1"
    ] * 2
    assert header(proxy.heads[0], "host") == f"127.0.0.1:{origin_port}"
    assert header(proxy.heads[0], "x-hub-signature-256") is not None
    assert header(proxy.heads[0], "proxy-authorization") is None
    assert proxy.connections == 1, "the connection to the proxy is kept alive"
    assert [request_line(h) for h in origin.heads] == ["POST /hook?x=1 HTTP/1.1"] * 2


def test_explicit_proxy_with_credentials_for_http(monkeypatch: pytest.MonkeyPatch) -> None:
    origin, proxy = Origin(), ProxyTwin(credentials=BASIC)

    async def scenario() -> list[SendResult]:
        async with serving(origin.handle) as origin_port, serving(proxy.handle) as proxy_port:
            monkeypatch.setenv("NO_PROXY", "*")  # the environment does not apply to a setting
            setting = f"http://{PROXY_CREDENTIALS}@127.0.0.1:{proxy_port}"
            return await deliver(webhook(f"http://127.0.0.1:{origin_port}/hook", proxy=setting))

    assert [r.outcome for r in run(scenario)] == [Outcome.DELIVERED]
    assert header(proxy.heads[0], "proxy-authorization") == BASIC
    assert header(origin.heads[0], "proxy-authorization") is None


# ------------------------------------------------------------------ https targets


def tls_origin(certificate: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting the test certificate)."""
    cert, key = certificate
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=cert)


def test_https_goes_through_a_connect_tunnel(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server_context, client_context = tls_origin(certificate)
    origin, proxy = Origin(), ProxyTwin(credentials=BASIC)

    async def scenario() -> tuple[list[int], int]:
        async with (
            serving(origin.handle, server_context) as origin_port,
            serving(proxy.handle) as proxy_port,
        ):
            monkeypatch.setenv("https_proxy", f"http://{PROXY_CREDENTIALS}@127.0.0.1:{proxy_port}")
            monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # lower-case wins
            client = HttpClient(timeout=5, ssl_context=client_context)
            return await post(client, f"https://localhost:{origin_port}/hook", 2), origin_port

    statuses, origin_port = run(scenario)
    assert statuses == [200, 200]
    (connect,) = proxy.heads  # one tunnel, kept alive for both requests
    assert request_line(connect) == f"CONNECT localhost:{origin_port} HTTP/1.1"
    assert header(connect, "host") == f"localhost:{origin_port}"
    assert header(connect, "proxy-authorization") == BASIC
    assert [request_line(h) for h in origin.heads] == ["POST /hook HTTP/1.1"] * 2
    assert header(origin.heads[0], "proxy-authorization") is None, "never sent to the partner"
    assert origin.connections == 1


def test_the_partner_certificate_is_verified_through_the_tunnel(
    certificate: tuple[Path, Path],
) -> None:
    server_context, _ = tls_origin(certificate)
    origin, proxy = Origin(), ProxyTwin()

    async def scenario() -> HttpNetworkError:
        async with (
            serving(origin.handle, server_context) as origin_port,
            serving(proxy.handle) as proxy_port,
        ):
            client = HttpClient(timeout=5, proxy=f"http://127.0.0.1:{proxy_port}")  # certifi
            with pytest.raises(HttpNetworkError) as info:
                await post(client, f"https://localhost:{origin_port}/hook")
            return info.value

    error = run(scenario)
    assert error.error_class == "network"
    assert "TLS handshake with localhost through proxy http://127.0.0.1:" in str(error)
    assert origin.heads == []


@pytest.mark.parametrize("status", [403, 407, 502])
def test_connect_refused_is_a_proxy_error_naming_the_proxy(status: int) -> None:
    proxy = ProxyTwin(connect_status=status)

    async def scenario() -> tuple[HttpProxyError, int]:
        async with serving(proxy.handle) as proxy_port:
            setting = f"http://{PROXY_CREDENTIALS}@127.0.0.1:{proxy_port}"
            client = HttpClient(timeout=5, proxy=setting)
            with pytest.raises(HttpProxyError) as info:
                await post(client, "https://partner.example:8443/hook")
            return info.value, proxy_port

    error, proxy_port = run(scenario)
    assert error.error_class == "proxy"
    assert str(error).startswith(
        f"proxy http://127.0.0.1:{proxy_port} refused CONNECT to partner.example:8443 with {status}"
    )
    assert_no_credentials(str(error))
    assert_no_credentials(repr(error))


# ------------------------------------------------------------------ refusals, credentials


def test_407_without_credentials_is_a_transient_proxy_failure(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client_context = tls_origin(certificate)
    proxy = ProxyTwin(credentials=BASIC)

    async def scenario() -> tuple[list[SendResult], HttpProxyError, int]:
        async with serving(proxy.handle) as proxy_port:
            monkeypatch.setenv("ALL_PROXY", f"127.0.0.1:{proxy_port}")  # no scheme: http
            http_results = await deliver(webhook("http://127.0.0.1:9/hook"))
            client = HttpClient(timeout=5, ssl_context=client_context)
            with pytest.raises(HttpProxyError) as info:
                await post(client, "https://localhost:9/hook")
            return http_results, info.value, proxy_port

    (result,), tunnel_error, proxy_port = run(scenario)
    assert (result.outcome, result.error_class) == (Outcome.TRANSIENT, "proxy")
    assert f"proxy http://127.0.0.1:{proxy_port} refused the request" in (result.error or "")
    assert "407" in (result.error or "")
    assert "refused CONNECT to localhost:9 with 407" in str(tunnel_error)
    assert len(proxy.heads) == 2


def test_wrong_credentials_never_appear_in_error_texts(closed_port: int) -> None:
    proxy = ProxyTwin(credentials="Basic c29tZW9uZTplbHNl")

    async def scenario() -> tuple[list[SendResult], list[SendResult]]:
        async with serving(proxy.handle) as proxy_port:
            refused = await deliver(
                webhook(
                    "http://127.0.0.1:9/hook",
                    proxy=f"http://{PROXY_CREDENTIALS}@127.0.0.1:{proxy_port}",
                )
            )
        unreachable = await deliver(
            webhook(
                "http://127.0.0.1:9/hook",
                proxy=f"http://{PROXY_CREDENTIALS}@127.0.0.1:{closed_port}",
            )
        )
        return refused, unreachable

    (refused,), (unreachable,) = run(scenario)
    assert header(proxy.heads[0], "proxy-authorization") == BASIC
    for result in (refused, unreachable):
        assert (result.outcome, result.error_class) == (Outcome.TRANSIENT, "proxy")
        assert_no_credentials(result.error)
    assert f"connect to proxy http://127.0.0.1:{closed_port}" in (unreachable.error or "")


def test_unusable_proxy_settings_are_configuration_errors() -> None:
    for bad in (
        f"socks5://{PROXY_CREDENTIALS}@proxy:1080",
        f"https://{PROXY_CREDENTIALS}@proxy:3128",
        True,
    ):
        for model, key in ((HttpSettings, "url"), (FhirSettings, "base_url")):
            with pytest.raises(ValidationError) as info:
                model.model_validate({key: "https://partner.example/", "proxy": bad})
            (error,) = info.value.errors()
            assert error["loc"] == ("proxy",)
            assert "only http:// proxies" in error["msg"] or bad is True
            assert_no_credentials(error["msg"])
    assert HttpSettings.model_validate({"url": "http://a/", "proxy": False}).proxy is not None


def test_unusable_proxy_in_the_environment_fails_instead_of_going_direct(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"socks5h://{PROXY_CREDENTIALS}@proxy:1080")
    routes = ProxyRoutes(None)
    with pytest.raises(HttpProxyError) as info:
        routes.for_target(Target.parse("https://partner.example/"))
    assert "HTTPS_PROXY is not a usable proxy: only http:// proxies" in str(info.value)
    assert_no_credentials(str(info.value))
    assert routes.for_target(Target.parse("http://partner.example/")) is None


# ------------------------------------------------------------------ bypassing the proxy


@pytest.mark.parametrize(
    "no_proxy",
    ["*", "127.0.0.1", "example.org, 127.0.0.0/8", "127.0.0.1:{port}", "[::1],127.0.0.1"],
)
def test_no_proxy_goes_direct(no_proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    origin, proxy = Origin(), ProxyTwin()

    async def scenario() -> list[SendResult]:
        async with serving(origin.handle) as origin_port, serving(proxy.handle) as proxy_port:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
            monkeypatch.setenv("no_proxy", no_proxy.format(port=origin_port))
            return await deliver(webhook(f"http://127.0.0.1:{origin_port}/hook"))

    assert [r.outcome for r in run(scenario)] == [Outcome.DELIVERED]
    assert proxy.connections == 0
    assert len(origin.heads) == 1


def test_no_proxy_for_another_port_still_uses_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    origin, proxy = Origin(), ProxyTwin()

    async def scenario() -> list[SendResult]:
        async with serving(origin.handle) as origin_port, serving(proxy.handle) as proxy_port:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
            monkeypatch.setenv("NO_PROXY", f"127.0.0.1:{origin_port + 1},localhost")
            return await deliver(webhook(f"http://127.0.0.1:{origin_port}/hook"))

    assert [r.outcome for r in run(scenario)] == [Outcome.DELIVERED]
    assert proxy.connections == 1, "localhost in NO_PROXY does not exempt 127.0.0.1"


@pytest.mark.parametrize("setting", ["none", "NONE", "false", False])
def test_proxy_none_overrides_the_environment(
    setting: object, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    origin = Origin()
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed_port}")

    async def scenario() -> tuple[list[SendResult], list[SendResult]]:
        async with serving(origin.handle) as origin_port:
            url = f"http://127.0.0.1:{origin_port}/hook"
            return await deliver(webhook(url, proxy=setting)), await deliver(webhook(url))

    direct, proxied = run(scenario)
    assert [r.outcome for r in direct] == [Outcome.DELIVERED]
    assert [(r.outcome, r.error_class) for r in proxied] == [(Outcome.TRANSIENT, "proxy")]


def test_no_proxy_matching_rules() -> None:
    assert no_proxy_matches("example.org", "example.org", 443)
    assert no_proxy_matches("example.org", "fhir.EXAMPLE.org", 443)
    assert no_proxy_matches(".example.org", "fhir.example.org", 443)
    assert no_proxy_matches("*.example.org", "fhir.example.org", 443)
    assert not no_proxy_matches("example.org", "badexample.org", 443)
    assert not no_proxy_matches("fhir.example.org", "example.org", 443)
    assert no_proxy_matches("example.org:8443", "example.org", 8443)
    assert not no_proxy_matches("example.org:8443", "example.org", 443)
    assert no_proxy_matches("10.0.0.0/8", "10.1.2.3", 80)
    assert not no_proxy_matches("10.0.0.0/8", "192.168.1.1", 80)
    assert no_proxy_matches("::1", "::1", 80) and no_proxy_matches("[::1]:80", "::1", 80)
    assert no_proxy_matches("fd00::/8", "fd12::1", 80)
    assert not no_proxy_matches("localhost", "127.0.0.1", 80)
    assert not no_proxy_matches("", "example.org", 80)
    assert no_proxy_matches(" a.test  example.org ", "example.org", 80)


def test_environment_choice_per_scheme() -> None:
    environ = {"ALL_PROXY": "http://all:1", "http_proxy": "http://plain:2", "NO_PROXY": "skip.test"}
    routes = ProxyRoutes(None, environ)
    https = routes.for_target(Target.parse("https://partner.example/"))
    http = routes.for_target(Target.parse("http://partner.example/"))
    assert https is not None and https.url == "http://all:1"
    assert http is not None and http.url == "http://plain:2"
    assert routes.for_target(Target.parse("https://api.skip.test/")) is None
    assert ProxyRoutes(None, {}).for_target(Target.parse("https://partner.example/")) is None
    explicit = ProxyRoutes("http://u:p@proxy.lan", environ)
    chosen = explicit.for_target(Target.parse("https://api.skip.test/"))
    assert chosen is not None and (chosen.url, chosen.authorization) == (
        "http://proxy.lan:80",
        "Basic dTpw",
    )
    assert "dTpw" not in repr(chosen)
