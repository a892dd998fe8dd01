"""Outbound proxies of an upstream pool: HTTP(S) CONNECT tunnels and SOCKS5(h), in rotation.

Every proxy hop is a tunnel, opened once per pooled connection; the requests sent through it are
byte for byte those of a direct connection, so a proxy costs nothing per request. Plain http://
upstreams are tunnelled too, rather than sent to the proxy in absolute form: a proxy's own errors
then come back as the CONNECT reply (a connect failure, safe to try elsewhere) instead of passing
for the provider's answer, keep-alive holds end to end, and the proxy cannot buffer a stream. The
price: a proxy that allows CONNECT to port 443 only (Squid's default `SSL_ports` rule) cannot
reach an http:// upstream on another port.

- http://  CONNECT, then TLS to the upstream inside the tunnel for https:// upstreams.
- https:// TLS to the proxy itself, CONNECT inside it, then TLS to the upstream inside that.
- socks5:// and socks5h:// through python-socks, which hands back the connected socket;
  socks5 resolves the upstream's name here, socks5h leaves it to the proxy.

A proxy that cannot give us a tunnel (unreachable, slow, 4xx to CONNECT, a refused SOCKS login or
a broken handshake) rests for `_REST_FIRST` seconds, doubling per failure in a row up to
`_REST_MAX`, and the next one is tried in the same connect. A proxy that did its part but could
not reach the upstream (CONNECT answered 5xx, SOCKS "host unreachable") is not rested: the next
proxy would fail the same way, so the error goes to the caller, who may try another target.

Passwords: a proxy is named by its redacted URL (`user:***@host:port`) everywhere, in messages,
logs and reprs, and the error raised is built outside any `except` block, so that it carries no
chained exception (nor frames) from the library that held the password.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar, cast
from urllib.parse import unquote, urlsplit

from proxy.errors import UpstreamConnectError, UpstreamConnectTimeout
from proxy.log import event, redact_url

__all__ = ["ProxyRotation", "ProxyURL", "UpstreamProxies", "parse_proxy_url"]

# A proxy that failed rests this long, twice as long after each further failure in a row.
_REST_FIRST: Final = 30.0
# ...but never longer: a proxy back up is found again within five minutes.
_REST_MAX: Final = 300.0
# A CONNECT reply is a status line and a few headers; a proxy sending more before the blank line
# is not speaking HTTP to us.
_MAX_REPLY_HEAD: Final = 16 * 1024
# SOCKS5 replies (RFC 1928 §6) that say the proxy could not reach the destination, as opposed to
# refusing us: network unreachable, host unreachable, connection refused, TTL expired.
_SOCKS_DESTINATION_CODES: Final = frozenset((3, 4, 5, 6))
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}

P = TypeVar("P", bound=asyncio.BaseProtocol)


@dataclass(frozen=True, slots=True)
class ProxyURL:
    """One proxy, parsed once: where it is, how to log in, and the name it goes by."""

    scheme: str  # http, https, socks5, socks5h
    host: str
    port: int
    label: str  # the URL with its password masked: the only way a proxy is ever named
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    # `Proxy-Authorization: Basic ...\r\n` for CONNECT, or b"".
    auth_header: bytes = field(default=b"", repr=False)

    def __repr__(self) -> str:
        return f"<ProxyURL {self.label}>"


def parse_proxy_url(url: str) -> ProxyURL:
    """A proxy URL as config resolution leaves it; ValueError names it redacted."""
    label = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bad IPv6 literal, a port out of range or not a number
        parts, port = urlsplit(""), -1
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or port == -1:
        # Raised here, not in the except: no chained exception quoting the URL.
        raise ValueError(f"{_mask_unparsed(url)!r} is not a proxy URL (http, https, socks5 or"
                         " socks5h://host:port, with user:password@ if the proxy wants them)")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    auth = b""
    if username is not None or password is not None:
        if scheme.startswith("socks") and not _fits_socks_login(username or "", password or ""):
            # RFC 1929: each is 1-255 bytes; python-socks sends them as ASCII.
            raise ValueError(f"{label!r}: a SOCKS5 user name and password must be ASCII, "
                             "1-255 characters each")
        token = base64.b64encode(f"{username or ''}:{password or ''}".encode())
        auth = b"Proxy-Authorization: Basic " + token + b"\r\n"
    return ProxyURL(scheme=scheme, host=parts.hostname, port=port or _DEFAULT_PORTS[scheme],
                    label=label, username=username, password=password, auth_header=auth)


def _mask_unparsed(url: str) -> str:
    """`redact_url` for a URL that does not parse: a password with a `/` or `#` that was not
    percent-encoded ends the authority early, so everything before the last `@` is masked."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, _ = head.partition("://")
    return f"{scheme}://***@{tail}" if sep else f"***@{tail}"


def _fits_socks_login(username: str, password: str) -> bool:
    return all(s.isascii() and 0 < len(s) <= 255 for s in (username, password))


# --- which proxy next: pure, `now` is the caller's monotonic clock ----------------------------


class ProxyRotation:
    """Round robin over a pool's proxies, resting those that fail.

    `order()` gives the proxies to try for one new connection, the rotation's next one first and
    resting ones left out; when all rest, the one that failed longest ago is tried anyway,
    so a pool whose proxies all failed once still finds the first one back.
    """

    __slots__ = ("_failed_at", "_failures", "_next", "_rest_until", "_total", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a proxy rotation needs at least one proxy")
        self.size = size
        self._next = 0
        self._failures = [0] * size  # failures in a row
        self._total = [0] * size  # failures ever: what an attempt saw when it began
        self._rest_until = [0.0] * size
        self._failed_at = [0.0] * size

    def order(self, now: float) -> list[int]:
        n = self.size
        start = self._next
        self._next = (start + 1) % n
        ready = [i % n for i in range(start, start + n) if self._rest_until[i % n] <= now]
        if ready:
            return ready
        return [min(range(n), key=self._failed_at.__getitem__)]

    def seen(self, index: int) -> int:
        """To give `failed()`: taken when an attempt through proxy `index` begins."""
        return self._total[index]

    def failed(self, index: int, now: float, seen: int) -> float | None:
        """Rest proxy `index` after an attempt failed; returns for how long, or None when it
        failed already since that attempt began (`seen`): concurrent connects meeting the same
        outage count once, or a burst of them would rest it for `_REST_MAX` at once."""
        if self._total[index] != seen:
            return None
        self._total[index] += 1
        self._failures[index] += 1
        rest = min(_REST_FIRST * 2.0 ** min(self._failures[index] - 1, 16), _REST_MAX)
        self._rest_until[index] = now + rest
        self._failed_at[index] = now
        return rest

    def succeeded(self, index: int) -> None:
        self._failures[index] = 0
        self._rest_until[index] = 0.0

    def resting(self, now: float) -> int:
        return sum(1 for until in self._rest_until if until > now)


# --- opening a connection through a proxy -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Failure:
    """Why one proxy gave no connection; `proxy_fault`: rest it and try the next one."""

    why: str
    proxy_fault: bool
    timeout: bool = False


class UpstreamProxies:
    """The proxies of one pool and their rotation; `connect()` opens one tunnelled connection."""

    __slots__ = ("_proxy_ssl", "_rotation", "proxies")

    def __init__(self, urls: Sequence[str], proxy_ssl: ssl.SSLContext | None = None) -> None:
        self.proxies = tuple(parse_proxy_url(u) for u in urls)
        self._rotation = ProxyRotation(len(self.proxies))
        if proxy_ssl is None and any(p.scheme == "https" for p in self.proxies):
            proxy_ssl = ssl.create_default_context()
        self._proxy_ssl = proxy_ssl

    def __repr__(self) -> str:
        return f"<UpstreamProxies {', '.join(p.label for p in self.proxies)}>"

    async def connect(
        self,
        factory: Callable[[], P],
        host: str,
        port: int,
        origin: str,
        upstream_ssl: ssl.SSLContext | None,
        connect_timeout: float,
    ) -> P:
        """A connection to `host:port` through the first proxy that gives one.

        `connect_timeout` bounds each proxy tried: its tunnel and the TLS handshake through it.
        """
        loop = asyncio.get_running_loop()
        rotation = self._rotation
        failures: list[tuple[ProxyURL, _Failure]] = []
        for index in rotation.order(loop.time()):
            proxy = self.proxies[index]
            seen = rotation.seen(index)
            result = await self._through(proxy, factory, host, port, origin, upstream_ssl,
                                         connect_timeout)
            if not isinstance(result, _Failure):
                rotation.succeeded(index)
                return result
            failures.append((proxy, result))
            if not result.proxy_fault:
                break  # the proxy reached out and the upstream did not answer: so would the next
            rest = rotation.failed(index, loop.time(), seen)
            if rest is not None:
                event("outbound proxy failed; resting it", logging.WARNING, proxy=proxy.label,
                      upstream=origin, reason=result.why, seconds=rest)
        raise _error(origin, failures)

    async def _through(
        self,
        proxy: ProxyURL,
        factory: Callable[[], P],
        host: str,
        port: int,
        origin: str,
        upstream_ssl: ssl.SSLContext | None,
        connect_timeout: float,
    ) -> P | _Failure:
        loop = asyncio.get_running_loop()
        tunnel_up = False
        hostname = host if upstream_ssl is not None else None
        try:
            async with asyncio.timeout(connect_timeout):
                if proxy.scheme in ("socks5", "socks5h"):
                    sock = await _socks_tunnel(proxy, host, port, loop, connect_timeout)
                    if isinstance(sock, _Failure):
                        return sock
                    tunnel_up = True
                    _, protocol = await loop.create_connection(
                        factory, sock=sock, ssl=upstream_ssl, server_hostname=hostname)
                    return protocol
                transport = await _http_tunnel(proxy, origin, loop, self._proxy_ssl)
                if isinstance(transport, _Failure):
                    return transport
                tunnel_up = True
                return await _hand_over(transport, factory, loop, upstream_ssl, hostname)
        except TimeoutError:
            if not tunnel_up:
                return _Failure(f"no tunnel within {connect_timeout:g} s (connect timeout)",
                                proxy_fault=True, timeout=True)
            return _Failure(f"the TLS handshake with the upstream took over {connect_timeout:g} s"
                            " (connect timeout)", proxy_fault=False, timeout=True)
        except ssl.SSLError as exc:  # (only after the tunnel: _http_tunnel keeps its own)
            return _Failure(f"TLS handshake with the upstream failed: {_ssl_why(exc)}",
                            proxy_fault=False)
        except OSError as exc:
            where = "the upstream through the tunnel" if tunnel_up else "the proxy"
            return _Failure(f"connection to {where} failed: {_os_why(exc)}",
                            proxy_fault=not tunnel_up)


def _error(origin: str, failures: list[tuple[ProxyURL, _Failure]]) -> UpstreamConnectError:
    timeout = all(f.timeout for _, f in failures)
    kind = UpstreamConnectTimeout if timeout else UpstreamConnectError
    if len(failures) == 1:
        proxy, failure = failures[0]
        return kind(f"could not connect to upstream {origin} through proxy {proxy.label}:"
                    f" {failure.why}")
    tried = "; ".join(f"{proxy.label}: {failure.why}" for proxy, failure in failures)
    return kind(f"could not connect to upstream {origin} through any of {len(failures)}"
                f" proxies: {tried}")


async def _hand_over(
    transport: asyncio.Transport,
    factory: Callable[[], P],
    loop: asyncio.AbstractEventLoop,
    upstream_ssl: ssl.SSLContext | None,
    hostname: str | None,
) -> P:
    """Give the tunnel's transport to a new protocol, after a TLS handshake for https."""
    protocol = factory()
    if upstream_ssl is None:
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        transport.resume_reading()  # paused by _Tunnel once the reply was in
        return protocol
    # start_tls closes the transport if the handshake fails or is cancelled.
    tls = await loop.start_tls(transport, protocol, upstream_ssl, server_hostname=hostname)
    if tls is None:  # only for a transport lost during the handshake, which raised above
        raise ConnectionResetError("the tunnel closed during the TLS handshake")
    protocol.connection_made(tls)
    return protocol


# --- HTTP CONNECT -----------------------------------------------------------------------------


class _Tunnel(asyncio.Protocol):
    """Collects the proxy's reply to CONNECT, then stops reading until the transport passes on."""

    __slots__ = ("_buffer", "_done", "_transport")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._done: asyncio.Future[None] = loop.create_future()
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n\r\n" in self._buffer or len(self._buffer) > _MAX_REPLY_HEAD:
            if self._transport is not None:
                self._transport.pause_reading()
            if not self._done.done():
                self._done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self._done.done():
            self._done.set_result(None)

    async def reply(self) -> tuple[bytes, bool]:
        """What the proxy sent, and whether the connection is still open."""
        await self._done
        return bytes(self._buffer), self._transport is not None


async def _http_tunnel(
    proxy: ProxyURL, origin: str, loop: asyncio.AbstractEventLoop,
    proxy_ssl: ssl.SSLContext | None,
) -> asyncio.Transport | _Failure:
    """A transport through which bytes reach `origin`, or why the proxy gave none."""
    tunnel = _Tunnel(loop)
    tls = proxy_ssl if proxy.scheme == "https" else None
    try:
        transport, _ = await loop.create_connection(
            lambda: tunnel, proxy.host, proxy.port, ssl=tls,
            server_hostname=proxy.host if tls is not None else None)
    except ssl.SSLError as exc:
        return _Failure(f"TLS handshake with the proxy failed: {_ssl_why(exc)}", proxy_fault=True)
    except OSError as exc:
        return _Failure(f"connection to the proxy failed: {_os_why(exc)}", proxy_fault=True)
    target = origin.encode("ascii")
    try:
        transport.write(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n"
                        + proxy.auth_header + b"\r\n")
        data, open_ = await tunnel.reply()
    except BaseException:
        transport.abort()
        raise
    failure = _reply_failure(data, open_, bool(proxy.auth_header))
    if failure is not None:
        transport.abort()
        return failure
    return transport


def _reply_failure(data: bytes, still_open: bool, sent_auth: bool) -> _Failure | None:
    """None when `data` is a whole 2xx reply to CONNECT and nothing more, else what went wrong."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        if len(data) > _MAX_REPLY_HEAD:
            return _Failure(f"the proxy's CONNECT reply head is over {_MAX_REPLY_HEAD} bytes",
                            proxy_fault=True)
        return _Failure("the proxy closed the connection before answering CONNECT",
                        proxy_fault=True)
    version, _, status_reason = head.split(b"\r\n", 1)[0].partition(b" ")
    code, _, reason = status_reason.partition(b" ")
    if not (version.startswith(b"HTTP/1.") and len(code) == 3 and code.isdigit()):
        return _Failure("the proxy did not answer CONNECT in HTTP/1.x", proxy_fault=True)
    status = int(code)
    # The reason phrase is the proxy's own text; keep it short and printable in our message.
    said = f"{status} {_printable(reason)}".rstrip()
    if 200 <= status < 300:
        if rest or not still_open:
            what = "sent bytes after" if rest else "closed the tunnel right after"
            return _Failure(f"the proxy {what} its CONNECT reply ({said})", proxy_fault=True)
        return None
    if status in (401, 407):
        # tinyproxy 1.11 answers a CONNECT with wrong credentials 401, not 407.
        why = "refused our credentials" if sent_auth else "requires credentials"
        return _Failure(f"the proxy {why} ({said})", proxy_fault=True)
    if status >= 500:
        # tinyproxy: "500 Unable to connect"; Squid and others: 502/503/504.
        return _Failure(f"the proxy could not reach the upstream ({said})", proxy_fault=False)
    return _Failure(f"the proxy refused the tunnel ({said})", proxy_fault=True)


def _printable(text: bytes) -> str:
    return "".join(c for c in text.decode("latin-1")[:80] if c.isprintable())


# --- SOCKS5 -----------------------------------------------------------------------------------


async def _socks_tunnel(
    proxy: ProxyURL, host: str, port: int, loop: asyncio.AbstractEventLoop,
    connect_timeout: float,
) -> socket.socket | _Failure:
    """A socket connected through the SOCKS5 proxy to host:port, or why there is none."""
    # Imported here so that a gateway without SOCKS proxies never loads the library.
    from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError, ProxyType
    from python_socks.async_.asyncio import Proxy

    client = Proxy(ProxyType.SOCKS5, proxy.host, proxy.port, username=proxy.username,
                   password=proxy.password, rdns=proxy.scheme == "socks5h", loop=loop)
    try:
        return await client.connect(host, port, timeout=connect_timeout)
    except ProxyTimeoutError:
        return _Failure(f"no tunnel within {connect_timeout:g} s (connect timeout)",
                        proxy_fault=True, timeout=True)
    except ProxyConnectionError as exc:
        return _Failure(f"connection to the proxy failed: {_os_why(exc)}", proxy_fault=True)
    except ProxyError as exc:
        # python-socks' messages are fixed texts ("Username and password authentication
        # failure", "Host unreachable"), never the credentials.
        if exc.error_code in _SOCKS_DESTINATION_CODES:
            return _Failure(f"the proxy could not reach the upstream ({exc})", proxy_fault=False)
        return _Failure(f"SOCKS5 handshake failed: {exc}", proxy_fault=True)
    except socket.gaierror as exc:  # socks5: we resolve the upstream's name
        return _Failure(f"could not resolve the upstream's name: {exc.strerror}",
                        proxy_fault=False)
    except OSError as exc:
        return _Failure(f"the proxy dropped the SOCKS5 handshake: {_os_why(exc)}",
                        proxy_fault=True)


# --- messages ---------------------------------------------------------------------------------


def _os_why(exc: OSError) -> str:
    # python-socks wraps the OSError of its connect in one of its own, with the errno kept.
    if isinstance(exc.__cause__, OSError):
        exc = exc.__cause__
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the name ({exc.strerror})"
    if exc.errno and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or type(exc).__name__


def _ssl_why(exc: ssl.SSLError) -> str:
    return getattr(exc, "verify_message", None) or exc.reason or type(exc).__name__
