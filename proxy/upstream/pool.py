"""A keep-alive pool of connections to one upstream origin."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Final, cast
from urllib.parse import urlsplit

from proxy.errors import (
    BadRequest,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamPoolTimeout,
    UpstreamWriteTimeout,
)
from proxy.upstream.connection import _DONE, _IDLE, _WAIT_HEAD, _Conn
from proxy.upstream.limits import DEFAULT_LIMITS, DEFAULT_TIMEOUTS, PoolLimits, Timeouts
from proxy.upstream.proxies import UpstreamProxies
from proxy.upstream.response import UpstreamResponse

# How long aclose() lets idle TLS connections send close_notify before aborting them.
_CLOSE_GRACE: Final = 1.0
_BODY_METHODS: Final = frozenset((b"POST", b"PUT", b"PATCH"))


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections to one origin.

    `request()` adds Host, Content-Length (when there is a body, or for POST/PUT/PATCH) and
    Accept-Encoding; the caller's headers must not repeat those, nor Connection or
    Transfer-Encoding. HTTP/1.1 keeps connections alive by default, so no Connection header is
    sent. Always close the response (`async with`): a response never closed holds its
    connection slot.

    With `proxies` (URLs: http, https, socks5, socks5h), every connection is a tunnel through
    one of them, taken in rotation (`proxies.py`); the pool's connections stay its own.
    """

    __slots__ = (
        "_accept", "_closed", "_closed_waiter", "_host", "_idle", "_limits", "_live", "_port",
        "_proxies", "_slots_used", "_ssl", "_tick", "_timeouts", "_url", "_waiters", "base_path",
        "host_header", "origin",
    )  # fmt: skip

    def __init__(
        self,
        base_url: str,
        *,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        limits: PoolLimits = DEFAULT_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
        accept_gzip: bool = False,
        proxies: Sequence[str] = (),
        proxy_ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("upstream base_url must be http:// or https:// with a host")
        if url.username or url.password or url.query or url.fragment:
            raise ValueError("upstream base_url must not carry credentials, query or fragment")
        if limits.max_connections < 1 or limits.max_idle < 0:
            raise ValueError("max_connections must be >= 1 and max_idle >= 0")
        if min(timeouts.connect, timeouts.read, timeouts.write, timeouts.pool) <= 0:
            raise ValueError("upstream timeouts must be positive")
        if min(limits.idle_timeout, limits.max_connection_age) <= 0:
            raise ValueError("idle_timeout and max_connection_age must be positive")
        tls = url.scheme == "https"
        default_port = 443 if tls else 80
        self._host = url.hostname
        self._port = url.port or default_port
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.origin = f"{host}:{self._port}"  # what error messages name
        self.host_header = (host if self._port == default_port else self.origin).encode("ascii")
        self.base_path = url.path.rstrip("/").encode("ascii")
        self._url = f"{url.scheme}://{self.host_header.decode('ascii')}"
        self._ssl: ssl.SSLContext | None = None
        if tls:
            if ssl_context is None:
                ssl_context = ssl.create_default_context()
                ssl_context.set_alpn_protocols(["http/1.1"])
            self._ssl = ssl_context
        self._timeouts = timeouts
        self._limits = limits
        # None, not an empty rotation: the direct path tests one attribute per new connection.
        self._proxies = UpstreamProxies(proxies, proxy_ssl_context) if proxies else None
        self._tick = min(timeouts.read, limits.idle_timeout)  # see _Conn._on_timer
        coding = b"gzip" if accept_gzip else b"identity"
        self._accept = b"Accept-Encoding: " + coding + b"\r\n\r\n"
        self._idle: list[_Conn] = []  # a stack: the most recently used connection is reused first
        self._live: set[_Conn] = set()  # transports not lost yet, for aclose()
        self._slots_used = 0  # connections open or opening, <= max_connections
        self._waiters: deque[asyncio.Future[_Conn | None]] = deque()
        self._closed = False
        self._closed_waiter: asyncio.Future[None] | None = None

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes = b"",
    ) -> UpstreamResponse:
        """Send one request; return once the status line and headers are parsed.

        A reused keep-alive connection that the upstream closed before sending any byte of the
        response is retried once on a fresh connection: nothing of the answer can be duplicated.
        """
        data = self._encode(method, target, headers, body)
        head_only = method == b"HEAD"
        conn = self._pop_idle() or await self._acquire(fresh=False)
        may_retry = conn._requests > 0
        while True:
            conn._begin(head_only)
            conn._transport.write(data)
            try:
                if conn._write_paused:
                    await self._drain(conn)
                while conn._state == _WAIT_HEAD and conn._error is None:
                    await conn._wait()
            except BaseException:
                self._drop(conn)
                raise
            if conn._state != _WAIT_HEAD:
                return UpstreamResponse(self, conn)
            self._drop(conn)
            error = cast(UpstreamError, conn._error)
            if not (may_retry and conn._stale):
                raise error
            may_retry = False
            conn = await self._acquire(fresh=True)

    async def aclose(self) -> None:
        """Close idle connections, abort active ones, and fail everyone waiting for a slot."""
        if self._closed:
            return
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self._closed_error())
        for conn in list(self._live):
            if conn._state == _IDLE:
                self._drop(conn, graceful=True)
            else:
                conn._fail(UpstreamError(f"upstream pool for {self.origin} was closed"))
        for _ in range(2):  # first a grace period for graceful closes, then after abort()
            if not self._live:
                break
            self._closed_waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(_CLOSE_GRACE):
                    await self._closed_waiter
            except TimeoutError:
                for conn in list(self._live):
                    conn._transport.abort()
        self._closed_waiter = None

    def __repr__(self) -> str:
        idle = len(self._idle)
        extra = f" waiting={len(self._waiters)}" if self._waiters else ""
        extra += " closed" if self._closed else ""
        via = f" proxies={len(self._proxies.proxies)}" if self._proxies is not None else ""
        return (
            f"<UpstreamPool {self._url}{via} idle={idle} active={self._slots_used - idle}"
            f" max={self._limits.max_connections}{extra}>"
        )

    # --- request encoding ---------------------------------------------------------------------

    def _encode(
        self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> bytes:
        parts = [method, b" ", target, b" HTTP/1.1\r\nHost: ", self.host_header, b"\r\n"]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        # Lines: request line, Host, caller headers, [Content-Length], Accept-Encoding, blank.
        lines = len(headers) + 4
        if body or method in _BODY_METHODS:
            parts += (b"Content-Length: ", b"%d" % len(body), b"\r\n")
            lines += 1
        parts.append(self._accept)
        head = b"".join(parts)
        # A CR or LF inside a target or header (e.g. a model name taken from a caller's URL) would
        # let the caller write its own request lines: count them, two C-speed scans of the head.
        if head.count(b"\n") != lines or head.count(b"\r") != lines or b" " in target:
            raise BadRequest("request target or header contains a space, CR or LF")
        return head + body if body else head

    # --- connections and slots ----------------------------------------------------------------

    def _pop_idle(self) -> _Conn | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            conn._in_idle = False
            now = conn._loop.time()
            if (
                now - conn._idle_since < self._limits.idle_timeout
                and now - conn._created < self._limits.max_connection_age
                and not conn._transport.is_closing()
            ):
                return conn
            self._drop(conn, graceful=True)
        return None

    async def _acquire(self, *, fresh: bool) -> _Conn:
        """A connection to use: an idle one (unless `fresh`), a new one, or one handed over."""
        while True:
            if self._closed:
                raise self._closed_error()
            if not fresh and (conn := self._pop_idle()) is not None:
                return conn
            if self._slots_used < self._limits.max_connections:
                self._slots_used += 1
                return await self._open_slot()
            handed = await self._wait_for_slot()
            if handed is None:
                return await self._open_slot()
            if self._closed:
                self._drop(handed)
                raise self._closed_error()
            if handed._alive and not handed._transport.is_closing():
                return handed  # just released by a finished response, so not stale
            # It died in transit; its slot went on through _drop(). Try again.

    async def _wait_for_slot(self) -> _Conn | None:
        """Wait FIFO for a released connection (or None: a freed slot that is now ours)."""
        waiter: asyncio.Future[_Conn | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._timeouts.pool):
                return await waiter
        except BaseException as exc:
            if waiter.cancelled() or not waiter.done():  # cancelling us cancels `waiter` too
                waiter.cancel()
                self._waiters.remove(waiter)
            elif waiter.exception() is None:
                # Handed something just as we timed out or were cancelled: pass it on.
                handed = waiter.result()
                if handed is None:
                    self._free_slot()
                elif handed._alive:  # (if it died, its slot was freed already)
                    self._park(handed)
            if isinstance(exc, TimeoutError):
                raise UpstreamPoolTimeout(
                    f"all {self._limits.max_connections} connections to upstream {self.origin}"
                    f" stayed busy for {self._timeouts.pool:g} s (pool timeout)"
                ) from None
            raise

    async def _open_slot(self) -> _Conn:
        """Open a connection in the slot the caller already holds."""
        try:
            conn = await self._open()
        except BaseException:
            self._free_slot()
            raise
        conn._counted = True
        if self._closed or not conn._alive:
            self._drop(conn)
            if self._closed:
                raise self._closed_error()
            raise UpstreamConnectError(f"upstream {self.origin} closed the connection at once")
        return conn

    async def _open(self) -> _Conn:
        """Connect to the origin (TCP, then TLS), or through a proxy's tunnel."""
        loop = asyncio.get_running_loop()
        if self._proxies is not None:
            return await self._proxies.connect(
                lambda: _Conn(self, loop), self._host, self._port, self.origin, self._ssl,
                self._timeouts.connect,
            )
        try:
            async with asyncio.timeout(self._timeouts.connect):
                _, conn = await loop.create_connection(
                    lambda: _Conn(self, loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except TimeoutError:
            raise UpstreamConnectTimeout(
                f"connecting to upstream {self.origin} took over"
                f" {self._timeouts.connect:g} s (connect timeout)"
            ) from None
        except ssl.SSLError as exc:
            why = getattr(exc, "verify_message", None) or exc.reason or type(exc).__name__
            raise UpstreamConnectError(
                f"TLS handshake with upstream {self.origin} failed: {why}"
            ) from exc
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise UpstreamConnectError(
                f"could not connect to upstream {self.origin}: {why}"
            ) from exc
        return conn

    async def _drain(self, conn: _Conn) -> None:
        """The request did not fit the socket buffer: wait for it to leave, or for an answer."""
        try:
            async with asyncio.timeout(self._timeouts.write):
                while conn._write_paused and conn._state == _WAIT_HEAD and conn._error is None:
                    await conn._wait()
        except TimeoutError:
            raise UpstreamWriteTimeout(
                f"upstream {self.origin} did not take the request within"
                f" {self._timeouts.write:g} s (write timeout)"
            ) from None
        conn._last_rx = conn._loop.time()

    def _release(self, conn: _Conn) -> None:
        """A response is done with: keep the connection for the next request, or cut it."""
        now = conn._loop.time()
        if (
            self._closed
            or conn._state != _DONE
            or conn._error is not None
            or not conn._alive
            or not conn._keep_alive
            or conn._transport.is_closing()
            or conn._transport.get_write_buffer_size()  # the request was not even fully sent
            or now - conn._created >= self._limits.max_connection_age
        ):
            self._drop(conn, graceful=conn._state == _DONE and conn._error is None)
            return
        conn._to_idle(now)
        self._park(conn)

    def _park(self, conn: _Conn) -> None:
        """Hand an idle connection to the first waiter, else keep it on the idle stack."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if len(self._idle) >= self._limits.max_idle:
            self._drop(conn, graceful=True)
            return
        conn._in_idle = True
        self._idle.append(conn)

    def _drop(self, conn: _Conn, graceful: bool = False) -> None:
        """Close or abort the connection and free its slot; safe to call more than once."""
        if conn._in_idle:
            conn._in_idle = False
            self._idle.remove(conn)
        if conn._alive:
            if graceful:
                conn._transport.close()
            else:
                conn._transport.abort()
        if conn._counted:
            conn._counted = False
            self._free_slot()

    def _free_slot(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the first waiter, FIFO
                return
        self._slots_used -= 1

    def _closed_error(self) -> UpstreamConnectError:
        return UpstreamConnectError(f"upstream pool for {self.origin} is closed")
