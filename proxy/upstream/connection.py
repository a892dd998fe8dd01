"""One keep-alive connection to an upstream: the asyncio protocol and llhttp callbacks."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Final, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from proxy.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamReadTimeout,
)

if TYPE_CHECKING:
    from proxy.upstream.pool import UpstreamPool

# Undelivered body bytes buffered per connection before we stop reading the socket: room for a
# burst of a few hundred SSE events while the caller is slow, and a fixed memory bound per stream.
_HIGH_WATER: Final = 256 * 1024
# uvloop keeps timers in whole milliseconds and may run one slightly early; a deadline this close
# counts as reached rather than re-arming the timer over and over.
_TIMER_SLACK: Final = 0.002

# Connection states; one exchange at a time (no pipelining).
_IDLE: Final = 0  # no request in flight (pooled, or handed to a waiter)
_WAIT_HEAD: Final = 1  # request written, final response head not parsed yet
_BODY: Final = 2  # head parsed, body arriving
_DONE: Final = 3  # whole response received (some body may still be buffered)


class _Conn(asyncio.Protocol):
    """One keep-alive connection: asyncio protocol and llhttp callbacks, one exchange at a time."""

    __slots__ = (
        "_alive", "_buffered", "_chunks", "_counted", "_created", "_error", "_head_bytes",
        "_head_only", "_headers", "_idle_since", "_in_idle", "_keep_alive", "_last_rx", "_loop",
        "_parser", "_paused", "_pool", "_requests", "_rx", "_stale", "_state", "_status", "_timer",
        "_transport", "_waiter", "_write_paused",
    )  # fmt: skip

    def __init__(self, pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._loop = loop
        self._transport: asyncio.Transport
        self._parser = HttpResponseParser(self)
        self._state = _IDLE
        self._alive = False  # transport made and not lost
        self._counted = False  # holds one of the pool's max_connections slots
        self._in_idle = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._write_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._error: UpstreamError | None = None
        self._stale = False  # lost before any byte of the response: safe to resend
        self._rx = False
        self._head_only = False
        self._keep_alive = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._requests = 0
        self._created = self._idle_since = self._last_rx = loop.time()
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._alive = True
        self._pool._live.add(self)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state not in (_WAIT_HEAD, _BODY):
            # Bytes nobody asked for (we never pipeline): the connection cannot be trusted again.
            self._keep_alive = False
            if state == _IDLE:
                self._pool._drop(self)
            return
        self._rx = True
        self._last_rx = self._loop.time()
        if state == _WAIT_HEAD:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            self._fail(UpstreamProtocolError(f"upstream {self._pool.origin} switched protocols"))
        except HttpParserError as exc:
            # llhttp's reasons are fixed texts ("Invalid header value char"), never the bytes.
            self._fail(
                UpstreamProtocolError(f"upstream {self._pool.origin} sent malformed HTTP: {exc}")
            )
        else:
            if self._state == _WAIT_HEAD and self._head_bytes > self._pool._limits.max_header_bytes:
                self._head_too_large(exact=True)  # no end of the head in sight yet
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._alive = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        state = self._state
        if self._error is None and state in (_WAIT_HEAD, _BODY):
            how = f" ({type(exc).__name__})" if exc is not None else ""
            origin = self._pool.origin
            if state == _WAIT_HEAD:
                self._stale = not self._rx
                self._error = UpstreamProtocolError(
                    f"upstream {origin} closed the connection before the response headers{how}"
                )
            elif self._ends_at_eof():
                self._state = _DONE
            else:
                self._error = UpstreamProtocolError(
                    f"upstream {origin} closed the connection in the middle of the body{how}"
                )
        self._keep_alive = False
        self._wake()
        pool = self._pool
        pool._drop(self)
        pool._live.discard(self)
        if not pool._live and pool._closed_waiter is not None:
            _resolve(pool._closed_waiter)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # --- llhttp callbacks (httptools looks them up by name) -----------------------------------

    def on_message_begin(self) -> None:
        if self._state != _WAIT_HEAD:
            self._keep_alive = False  # a second, unsolicited response

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._state == _WAIT_HEAD:
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self._state != _WAIT_HEAD:
            return
        status = self._parser.get_status_code()
        if status < 200:
            # Interim 1xx (100 Continue, 103 Early Hints): llhttp ends it as a bodiless message
            # and parses the final response next. 101 is refused by feed_data (upgrade).
            self._headers = []
            return
        self._status = status
        limit = self._pool._limits.max_header_bytes
        if self._head_bytes > limit and self._head_too_large(exact=False):
            return
        if self._head_only:
            # httptools cannot tell llhttp that the request was HEAD, so it would wait for
            # Content-Length bytes that never come: end the message here, parse the next one
            # with a fresh parser.
            self._state = _DONE
            self._keep_alive = self._parser.should_keep_alive()
            self._parser = HttpResponseParser(self)
        else:
            self._state = _BODY

    def on_body(self, body: bytes) -> None:
        if self._state != _BODY:
            self._keep_alive = False  # body bytes after a HEAD response or an unsolicited message
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._state == _BODY:  # 1xx completions arrive in _WAIT_HEAD and are ignored
            self._state = _DONE
            self._keep_alive = self._parser.should_keep_alive()

    # --- used by the pool and the response ----------------------------------------------------

    def _begin(self, head_only: bool) -> None:
        now = self._loop.time()
        self._state = _WAIT_HEAD
        self._head_only = head_only
        self._rx = self._stale = self._keep_alive = False
        self._headers = []
        self._head_bytes = 0
        self._last_rx = now
        self._requests += 1
        if self._timer is None:
            self._timer = self._loop.call_at(now + self._pool._tick, self._on_timer)

    def _to_idle(self, now: float) -> None:
        self._state = _IDLE
        self._idle_since = now
        if self._chunks:
            self._chunks.clear()
            self._buffered = 0
        if self._paused:
            self._paused = False
            self._transport.resume_reading()  # so a close by the server is noticed while idle
        if self._timer is None:
            self._timer = self._loop.call_at(now + self._pool._tick, self._on_timer)

    def _wait(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiter = fut
        return fut

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            _resolve(waiter)

    def _take(self) -> bytes:
        """Everything buffered, as one bytes; reading resumes since the buffer is now empty."""
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            if self._alive:
                self._last_rx = self._loop.time()  # the silence was ours, not the upstream's
                self._transport.resume_reading()
        return data

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        self._keep_alive = False
        self._wake()
        if self._alive:
            self._transport.abort()

    def _head_too_large(self, exact: bool) -> bool:
        """Fail if the head is over the limit; unless `exact`, the headers are counted.

        `_head_bytes` counts whole reads, so once the head ended it may include body bytes.
        """
        limit = self._pool._limits.max_header_bytes
        if exact or sum(len(n) + len(v) + 4 for n, v in self._headers) > limit:
            self._fail(
                UpstreamProtocolError(
                    f"upstream {self._pool.origin} sent response headers over {limit} bytes"
                )
            )
            return True
        return False

    def _ends_at_eof(self) -> bool:
        # RFC 9112 §6.3: with neither Content-Length nor chunked coding, the body runs to close.
        for name, value in self._headers:
            if name == b"content-length":
                return False
            if name == b"transfer-encoding" and b"chunked" in value.lower():
                return False
        return True

    def _on_timer(self) -> None:
        """The connection's one timer, for read silence and idle expiry alike.

        It is re-armed from timestamps (`_last_rx`, `_idle_since`) instead of a handle per chunk
        or per request, and never further than `_tick` ahead, so that a connection going idle is
        expired on time even though the pending timer was armed while it was busy.
        """
        self._timer = None
        if not self._alive:
            return
        now = self._loop.time()
        state = self._state
        if state in (_WAIT_HEAD, _BODY):
            read = self._pool._timeouts.read
            if self._paused or self._write_paused:
                deadline = now + read  # we are not reading, or still sending: not a silence
            else:
                deadline = self._last_rx + read
                if now >= deadline - _TIMER_SLACK:
                    where = "headers" if state == _WAIT_HEAD else "body"
                    self._fail(
                        UpstreamReadTimeout(
                            f"upstream {self._pool.origin} sent nothing for {read:g} s"
                            f" while we waited for the response {where} (read timeout)"
                        )
                    )
                    return
        elif state == _IDLE:
            idle_timeout = self._pool._limits.idle_timeout
            if not self._in_idle:
                deadline = now + idle_timeout  # being handed to a waiting request
            else:
                deadline = self._idle_since + idle_timeout
                if now >= deadline - _TIMER_SLACK:
                    self._pool._drop(self, graceful=True)
                    return
        else:
            return  # _DONE: re-armed when the response hands the connection back
        self._timer = self._loop.call_at(min(deadline, now + self._pool._tick), self._on_timer)

    def __repr__(self) -> str:
        return f"<_Conn state={self._state} alive={self._alive} requests={self._requests}>"


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


