"""A small HTTP/1.1 client for the delivery path, shared by the http and fhir connectors.

Every delivery is one request, so the client's own CPU per request is what limits a
destination's throughput on a small machine. httpx (with httpcore and anyio) spent
about 0.6 ms of CPU per webhook POST on this project's 2-core machine; this client is an
:class:`asyncio.Protocol` whose replies are parsed by httptools (llhttp, the parser
uvicorn already uses), and spends a fraction of that. What it does:

* a keep-alive pool per origin (scheme, host, port) and proxy, newest idle connection first;
  idle connections older than :data:`KEEPALIVE_EXPIRY` or closed by the server are
  dropped, and a request that fails on a reused connection before any reply byte
  arrived (the server closed it just as it was picked) is sent once more on a new one;
* request bodies with Content-Length; replies with Content-Length, chunked transfer
  encoding or read-until-close; ``Connection: close`` and HTTP/1.0 honoured; 1xx
  interim replies skipped; gzip and deflate reply bodies decoded (as httpx did);
* one timeout for the whole request (connect, send, reply);
* TLS through an :class:`ssl.SSLContext` (certifi's roots by default, as httpx);
* redirects are not followed (a 3xx is returned as it is);
* forward proxies, plain ``http://`` ones only (see :class:`ProxyRoutes`): an https
  target is reached through a ``CONNECT host:port`` tunnel and TLS inside it, an http
  target by sending the request in absolute form (``POST http://host/path``) to the
  proxy; ``Proxy-Authorization: Basic`` from the proxy URL's user and password. Without
  an explicit setting the environment decides, as with httpx and curl: ``HTTPS_PROXY``
  for https, ``HTTP_PROXY`` for http, ``ALL_PROXY`` otherwise, ``NO_PROXY`` exempting
  hosts (lower-case names win over upper-case ones);
* replies are bounded: past ``max_response_bytes`` the body is cut, marked
  :attr:`HttpReply.truncated`, and the connection is closed rather than reused.

Failures raise :class:`HttpTimeout`, :class:`HttpNetworkError` (:class:`HttpProxyError`
when the proxy is at fault) or :class:`HttpProtocolError`, each with the stable
``error_class`` the connectors record.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import os
import re
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import unquote, urlsplit

import httptools

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "KEEPALIVE_EXPIRY",
    "HttpClient",
    "HttpClientError",
    "HttpNetworkError",
    "HttpProtocolError",
    "HttpProxyError",
    "HttpReply",
    "HttpTimeout",
    "Proxy",
    "ProxyRoutes",
    "Target",
    "check_proxy_setting",
]

DEFAULT_MAX_RESPONSE_BYTES = 1 << 20  # 1 MiB: a reply is only summarised and kept truncated
KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default)
MAX_IDLE_PER_ORIGIN = 64
USER_AGENT = "prehospital-hub/0.1"
_MAX_HEAD_BYTES = 64 * 1024  # status line and headers of one reply
_BAD_NAME = re.compile(r"[^!#$%&'*+\-.^_`|~0-9A-Za-z]|^$")  # a header name is an RFC 9110 token
_FRAMING = frozenset({"content-length", "transfer-encoding"})  # the client frames the body
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # no CR, LF or other controls


class HttpClientError(Exception):
    """A request that got no usable reply; ``error_class`` is the connectors' label."""

    error_class = "network"


class HttpTimeout(HttpClientError):
    error_class = "timeout"


class HttpNetworkError(HttpClientError):
    error_class = "network"


class HttpProxyError(HttpNetworkError):
    """The forward proxy could not be reached or refused the request (407, 403, 502 on
    CONNECT...). Transient for the connectors: it is the hub's network or credentials
    that need fixing, not the message. The text names the proxy, never its credentials."""

    error_class = "proxy"


class HttpProtocolError(HttpClientError):
    """The partner answered something that is not a readable HTTP/1.1 reply."""

    error_class = "protocol"


@dataclass(frozen=True, slots=True)
class HttpReply:
    status_code: int
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    content: bytes
    truncated: bool = False  # the body went past the client's bound and was cut


@dataclass(frozen=True, slots=True)
class Target:
    """A URL parsed once: where to connect and what to put on the request line."""

    scheme: str
    host: str  # for connecting: no IPv6 brackets
    port: int
    host_header: str
    path: str  # path and query, as sent on the request line
    authorization: str | None = None  # Basic, from user:password in the URL

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {url!r}")
        host = parts.hostname
        if not host:
            raise ValueError(f"no host in {url!r}")
        default = 443 if scheme == "https" else 80
        port = parts.port or default
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default else f"{shown}:{port}"
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        authorization = None
        if parts.username is not None:
            userpass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(userpass.encode()).decode()
        return cls(scheme, host, port, host_header, path, authorization)

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


DISABLED_PROXY = frozenset({"none", "false"})  # setting values that turn proxies off
_PROXY_VARIABLES = {"http": "http_proxy", "https": "https_proxy"}


@dataclass(frozen=True, slots=True)
class Proxy:
    """A plain-HTTP forward proxy; ``url`` shows it without credentials."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)  # Proxy-Authorization value

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """``http://[user:password@]host[:port]`` (port 80 if absent, as with httpx; a
        bare ``host:port`` as in some environments means http). ValueError texts never
        quote the URL, which may hold a password."""
        text = url.strip()
        if "://" not in text:
            text = "http://" + text
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme != "http":
            raise ValueError(
                f"only http:// proxies are supported (CONNECT is used for https targets),"
                f" not {scheme}://"
            )
        try:
            host, port = parts.hostname, parts.port or 80
        except ValueError:
            raise ValueError("the proxy URL has an invalid port") from None
        if not host:
            raise ValueError("the proxy URL has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("the proxy URL must be http://[user:password@]host:port only")
        authorization = None
        if parts.username is not None:
            userpass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(userpass.encode()).decode()
        return cls(host, port, authorization)

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}"


def check_proxy_setting(value: str | None) -> str | None:
    """Validate a connector's ``proxy`` setting: None, ``none``/``false`` or a proxy URL."""
    if value is not None and value.strip().lower() not in DISABLED_PROXY:
        Proxy.parse(value)
    return value


def _split_host_port(entry: str) -> tuple[str, int | None]:
    """A NO_PROXY entry as (host, port or None); bare IPv6 addresses have no port."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:
        host, port = entry, ""
    return host, (int(port) if port.isdigit() else None)


def no_proxy_matches(no_proxy: str, host: str, port: int) -> bool:
    """Whether ``NO_PROXY`` exempts host:port, as curl and httpx read it: ``*`` for every
    host; ``example.org``, ``.example.org`` or ``*.example.org`` for that domain and its
    subdomains; ``host:port`` for one port only; IP addresses and CIDR ranges for those
    addresses (literally: names are not resolved, so ``localhost`` does not exempt
    ``127.0.0.1``)."""
    host = host.lower().rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        if not entry:
            continue
        name, entry_port = _split_host_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if address is not None:
            try:
                network = ipaddress.ip_network(name, strict=False)
            except ValueError:
                pass
            else:
                if address in network:
                    return True
                continue
        name = name.lstrip("*").lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


class ProxyRoutes:
    """Which proxy, if any, a target is reached through.

    ``setting`` is a connector's ``proxy``: None follows ``environ`` (read once, here),
    ``none``/``false`` never uses a proxy, a URL is used for every target (NO_PROXY does
    not apply to it). A proxy variable that is not a usable http:// proxy fails each
    request it would apply to with :class:`HttpProxyError` rather than going direct.
    """

    def __init__(self, setting: str | None, environ: Mapping[str, str] | None = None) -> None:
        self._fixed: Proxy | None = None
        self._env: dict[str, Proxy | str] = {}  # scheme -> its proxy, or why it is unusable
        self._no_proxy = ""
        self._use_env = setting is None
        if setting is not None:
            if setting.strip().lower() not in DISABLED_PROXY:
                self._fixed = Proxy.parse(setting)
            return
        env = os.environ if environ is None else environ
        for scheme in ("http", "https"):
            for name in (_PROXY_VARIABLES[scheme], "all_proxy"):
                found = _getenv(env, name)
                if found is not None:
                    try:
                        self._env[scheme] = Proxy.parse(found[1])
                    except ValueError as exc:
                        self._env[scheme] = f"{found[0]} is not a usable proxy: {exc}"
                    break
        self._no_proxy = (_getenv(env, "no_proxy") or ("", ""))[1]

    def for_target(self, target: Target) -> Proxy | None:
        if not self._use_env:
            return self._fixed
        found = self._env.get(target.scheme)
        if found is None or no_proxy_matches(self._no_proxy, target.host, target.port):
            return None
        if isinstance(found, str):
            raise HttpProxyError(found)
        return found


def _getenv(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """(name as found, value) of a non-empty variable; the lower-case spelling wins."""
    for key in (name, name.upper()):
        value = env.get(key, "").strip()
        if value:
            return key, value
    return None


@dataclass(slots=True)
class _Exchange:
    """One reply being read."""

    future: asyncio.Future[None]
    limit: int
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    head_bytes: int = 0
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    headers_done: bool = False
    truncated: bool = False
    keep_alive: bool = False


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.closed = False
        self.received_any = False  # reply bytes seen for the current exchange
        self.idle_since = 0.0
        self._header_name = b""

    # ----------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None or exchange.future.done():
            # Bytes nobody asked for (or after a cut reply): the connection is unusable.
            self.close()
            return
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HttpProtocolError("the partner switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(HttpProtocolError(f"unreadable reply: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self.exchange
        if exchange is None or exchange.future.done():
            return
        if exchange.headers_done and self._reads_until_close(exchange):
            exchange.keep_alive = False
            exchange.future.set_result(None)  # the body ended with the connection
        elif exchange.headers_done:
            self._fail(HttpProtocolError("the connection closed in the middle of the reply"))
        else:
            reason = f": {exc!r}" if exc is not None else ""
            self._fail(HttpNetworkError(f"the connection closed before a reply{reason}"))

    # ----------------------------------------------------------- httptools callbacks

    def on_message_begin(self) -> None:
        exchange = self.exchange
        if exchange is not None and not exchange.future.done():  # e.g. after a skipped 1xx
            exchange.headers.clear()
            exchange.chunks.clear()
            exchange.size = 0
            exchange.head_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.exchange
        if exchange is None or exchange.future.done():
            return  # bytes past the reply; the connection is closed after this feed
        exchange.head_bytes += len(name) + len(value)
        if exchange.head_bytes > _MAX_HEAD_BYTES:
            raise HttpProtocolError("reply headers too large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = exchange.headers.get(key)
        exchange.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is None or exchange.future.done():
            return
        exchange.status = self.parser.get_status_code()
        if exchange.status >= 200:
            exchange.headers_done = True

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is None or exchange.future.done():
            return
        room = exchange.limit - exchange.size
        if len(body) > room:
            body = body[:room]
            exchange.truncated = True
        exchange.chunks.append(body)
        exchange.size += len(body)
        if exchange.truncated and not exchange.future.done():
            exchange.keep_alive = False
            exchange.future.set_result(None)
            self.close()

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is None or exchange.future.done():
            self.close()  # a second reply nobody asked for: do not trust this connection
            return
        if exchange.status < 200:  # 100 Continue and friends: the real reply follows
            return
        if not exchange.future.done():
            exchange.keep_alive = self.parser.should_keep_alive()
            exchange.future.set_result(None)

    # ----------------------------------------------------------- helpers

    def _reads_until_close(self, exchange: _Exchange) -> bool:
        headers = exchange.headers
        return "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        )

    def _fail(self, error: HttpClientError) -> None:
        exchange = self.exchange
        if exchange is not None and not exchange.future.done():
            exchange.future.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()


class _TunnelSetup(asyncio.Protocol):
    """Reads the proxy's reply to CONNECT: its head, and any bytes after it."""

    def __init__(self, reply: asyncio.Future[tuple[bytes, bytes]], proxy: Proxy) -> None:
        self.reply = reply
        self.proxy = proxy
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        if self.reply.done():
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end >= 0:
            self.reply.set_result((bytes(self.buffer[:end]), bytes(self.buffer[end + 4 :])))
        elif len(self.buffer) > _MAX_HEAD_BYTES:
            self.reply.set_exception(
                HttpProxyError(f"proxy {self.proxy.url}: CONNECT reply headers too large")
            )

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            reason = f": {exc!r}" if exc is not None else ""
            self.reply.set_exception(
                HttpProxyError(
                    f"proxy {self.proxy.url} closed the connection during CONNECT{reason}"
                )
            )


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: ([^\r\n]*))?")


def _decode(body: bytes, encoding: str, limit: int, complete: bool) -> tuple[bytes, bool]:
    """Undo gzip or deflate like httpx did; (body, cut at the limit)."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        wbits = [zlib.MAX_WBITS | 16]
    elif encoding == "deflate":
        wbits = [zlib.MAX_WBITS, -zlib.MAX_WBITS]  # zlib-wrapped, else raw as some servers send
    else:
        return body, False  # identity, or a coding httpx did not decode either
    for attempt, bits in enumerate(wbits, 1):
        decoder = zlib.decompressobj(bits)
        try:
            out = decoder.decompress(body, limit + 1)
            if complete and len(out) <= limit and not decoder.eof:
                raise zlib.error("incomplete stream")
            break
        except zlib.error as exc:
            if attempt == len(wbits):
                raise HttpProtocolError(f"reply body is not valid {encoding}: {exc}") from None
    if len(out) > limit:
        return out[:limit], True
    return out, False


_PoolKey = tuple[Proxy | None, tuple[str, str, int]]


class HttpClient:
    """Keep-alive HTTP/1.1 connections per origin and proxy, for one event loop at a time.

    ``timeout`` bounds each whole request. ``proxy`` is a connector's setting (see
    :class:`ProxyRoutes`; raises ValueError when it is not a usable proxy URL).
    :meth:`close` drops every idle connection; the client can be used again afterwards
    (new connections are opened).
    """

    def __init__(
        self,
        *,
        timeout: float,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
        max_idle_per_origin: int = MAX_IDLE_PER_ORIGIN,
        proxy: str | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.keepalive_expiry = keepalive_expiry
        self.max_idle_per_origin = max_idle_per_origin
        self._ssl_context = ssl_context
        self._proxies = ProxyRoutes(proxy)  # the environment is read now, as httpx did
        self._idle: dict[_PoolKey, list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            try:
                import certifi

                self._ssl_context = ssl.create_default_context(cafile=certifi.where())
            except ImportError:  # pragma: no cover - certifi comes with httpx
                self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def request(
        self,
        method: str,
        target: Target | str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> HttpReply:
        """Send one request and read its reply; raises :class:`HttpClientError`."""
        if isinstance(target, str):
            try:
                target = Target.parse(target)
            except ValueError as exc:
                raise HttpProtocolError(str(exc)) from None
        proxy = self._proxies.for_target(target)
        forward = proxy if target.scheme == "http" else None  # absolute-form to the proxy
        head = self._head(method, target, body, headers or {}, forward)
        key = (proxy, target.origin)
        try:
            async with asyncio.timeout(self.timeout):
                conn, reused = await self._acquire(key, target)
                try:
                    reply = await self._exchange(conn, key, head, body)
                except HttpNetworkError:
                    if not reused or conn.received_any:
                        raise
                    # The server closed a kept-alive connection as we picked it: try a new one.
                    conn = await self._connect(target, proxy)
                    reply = await self._exchange(conn, key, head, body)
        except TimeoutError:
            raise HttpTimeout(f"no complete reply within {self.timeout:g} s") from None
        if forward is not None and reply.status_code == 407:
            raise HttpProxyError(
                f"proxy {forward.url} refused the request to {target.host_header}"
                " with 407 Proxy Authentication Required"
            )
        return reply

    def _head(
        self,
        method: str,
        target: Target,
        body: bytes,
        headers: Mapping[str, str],
        forward: Proxy | None = None,
    ) -> bytes:
        """Request line and headers; the caller's headers replace the defaults of the
        same name (as with httpx), and the body's length is always the client's own.
        Through a ``forward`` proxy the request line holds the absolute URL."""
        defaults = {
            "host": f"Host: {target.host_header}",
            "accept": "Accept: */*",
            "accept-encoding": "Accept-Encoding: gzip, deflate",
            "connection": "Connection: keep-alive",
            "user-agent": f"User-Agent: {USER_AGENT}",
        }
        if target.authorization is not None:
            defaults["authorization"] = f"Authorization: {target.authorization}"
        request_target = target.path
        if forward is not None:
            request_target = f"http://{target.host_header}{target.path}"
            if forward.authorization is not None:
                defaults["proxy-authorization"] = f"Proxy-Authorization: {forward.authorization}"
        given = []
        for name, value in headers.items():
            if _BAD_NAME.search(name) or _BAD_VALUE.search(value):
                raise HttpProtocolError(f"request header {name!r} has a forbidden character")
            key = name.lower()
            if key in _FRAMING:
                continue
            defaults.pop(key, None)
            given.append(f"{name}: {value}")
        text = "\r\n".join([f"{method} {request_target} HTTP/1.1", *defaults.values(), *given])
        try:
            return f"{text}\r\nContent-Length: {len(body)}\r\n\r\n".encode("ascii")
        except UnicodeEncodeError:
            raise HttpProtocolError("request headers must be ASCII") from None

    async def _acquire(self, key: _PoolKey, target: Target) -> tuple[_Connection, bool]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that opened them
            self._abandon()
            self._loop = loop
        idle = self._idle.get(key)
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if conn.usable and now - conn.idle_since < self.keepalive_expiry:
                    return conn, True
                conn.close()
        return await self._connect(target, key[0]), False

    async def _connect(self, target: Target, proxy: Proxy | None = None) -> _Connection:
        loop = asyncio.get_running_loop()
        if proxy is not None:
            if target.scheme == "https":
                return await self._tunnel(target, proxy)
            try:
                _, conn = await loop.create_connection(_Connection, proxy.host, proxy.port)
            except OSError as exc:
                raise HttpProxyError(f"connect to proxy {proxy.url}: {exc!r}") from None
            return conn
        try:
            if target.scheme == "https":
                _, conn = await loop.create_connection(
                    _Connection,
                    target.host,
                    target.port,
                    ssl=self._ssl(),
                    server_hostname=target.host,
                )
            else:
                _, conn = await loop.create_connection(_Connection, target.host, target.port)
        except ssl.SSLError as exc:
            raise HttpNetworkError(f"TLS handshake with {target.host}: {exc!r}") from None
        except OSError as exc:
            raise HttpNetworkError(f"connect to {target.host}:{target.port}: {exc!r}") from None
        return conn

    async def _tunnel(self, target: Target, proxy: Proxy) -> _Connection:
        """CONNECT through the proxy, then TLS with the target inside the tunnel."""
        loop = asyncio.get_running_loop()
        shown = f"[{target.host}]" if ":" in target.host else target.host
        authority = f"{shown}:{target.port}"
        reply: asyncio.Future[tuple[bytes, bytes]] = loop.create_future()
        try:
            transport, _ = await loop.create_connection(
                lambda: _TunnelSetup(reply, proxy), proxy.host, proxy.port
            )
        except OSError as exc:
            raise HttpProxyError(f"connect to proxy {proxy.url}: {exc!r}") from None
        try:
            lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
            lines.append(f"User-Agent: {USER_AGENT}")
            if proxy.authorization is not None:
                lines.append(f"Proxy-Authorization: {proxy.authorization}")
            transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
            head, extra = await reply
            match = _STATUS_LINE.match(head)
            if match is None:
                raise HttpProxyError(f"proxy {proxy.url} answered CONNECT with something not HTTP")
            status = int(match.group(1))
            if not 200 <= status < 300:
                reason = _BAD_VALUE.sub("", (match.group(2) or b"").decode("latin-1"))[:80]
                refused = f"proxy {proxy.url} refused CONNECT to {authority} with {status}"
                raise HttpProxyError(f"{refused} {reason}".rstrip())
            if extra:
                raise HttpProxyError(f"proxy {proxy.url} sent bytes after its CONNECT reply")
            conn = _Connection()
            try:
                tls = await loop.start_tls(
                    transport, conn, self._ssl(), server_hostname=target.host
                )
            except ssl.SSLError as exc:
                raise HttpNetworkError(
                    f"TLS handshake with {target.host} through proxy {proxy.url}: {exc!r}"
                ) from None
            except OSError as exc:
                raise HttpNetworkError(
                    f"TLS with {target.host} through proxy {proxy.url}: {exc!r}"
                ) from None
            if tls is None:  # pragma: no cover - only for a loop without TLS
                raise HttpNetworkError("the event loop cannot start TLS over a proxy tunnel")
        except BaseException:
            transport.close()
            raise
        conn.connection_made(tls)  # start_tls does not call it
        return conn

    async def _exchange(
        self, conn: _Connection, key: _PoolKey, head: bytes, body: bytes
    ) -> HttpReply:
        loop = asyncio.get_running_loop()
        exchange = _Exchange(loop.create_future(), self.max_response_bytes)
        conn.exchange = exchange
        conn.received_any = False
        self._busy.add(conn)
        reusable = False
        try:
            transport = conn.transport
            if transport is None or not conn.usable:
                raise HttpNetworkError("the connection is closed")
            if len(body) < 16384:
                transport.write(head + body)
            else:
                transport.writelines((head, body))
            await exchange.future
            reusable = exchange.keep_alive and not exchange.truncated and conn.usable
            content = b"".join(exchange.chunks)
            truncated = exchange.truncated
            encoding = exchange.headers.get("content-encoding")
            if encoding and content:
                content, cut = _decode(content, encoding, self.max_response_bytes, not truncated)
                truncated = truncated or cut
            return HttpReply(exchange.status, exchange.headers, content, truncated)
        finally:
            conn.exchange = None
            self._busy.discard(conn)
            if reusable:
                self._release(key, conn)
            else:
                conn.close()

    def _release(self, key: _PoolKey, conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        now = time.monotonic()
        while idle and now - idle[0].idle_since >= self.keepalive_expiry:
            idle.pop(0).close()  # the oldest idle ones are never picked while newer exist
        if len(idle) >= self.max_idle_per_origin:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    def _abandon(self) -> None:
        idle, self._idle = self._idle, {}
        busy, self._busy = self._busy, set()
        for conn in [c for connections in idle.values() for c in connections] + list(busy):
            with contextlib.suppress(Exception):  # e.g. the loop that owned it is closed
                conn.close()

    async def close(self) -> None:
        """Close every connection; safe to call twice."""
        self._abandon()
        await asyncio.sleep(0)  # let the transports run their close callbacks
