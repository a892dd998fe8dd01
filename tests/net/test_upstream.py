"""proxy/upstream.py against real sockets on 127.0.0.1, with small scripted servers.

Each scenario runs on the default asyncio loop (pytest-asyncio) and again on uvloop, which the
gateway runs on (`test_on_uvloop`). Warnings are errors, so a leaked transport or a task
destroyed while pending fails the run.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import trustme
import uvloop

from proxy.errors import (
    BadRequest,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamPoolTimeout,
    UpstreamProtocolError,
    UpstreamReadTimeout,
    UpstreamWriteTimeout,
)
from proxy.upstream import PoolLimits, Timeouts, UpstreamPool
from proxy.upstream.connection import _HIGH_WATER
from tests.net.raw_server import RawServer

pytestmark = pytest.mark.timeout(20)

SECRET = b"Bearer sk-secret-value"
AUTH = [(b"Authorization", SECRET)]

Handler = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server(RawServer["Server"]):
    """The upstream a test scripts, byte for byte."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(handler, ssl_context)
        self.requests: list[bytes] = []  # request heads, in arrival order

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request, head and Content-Length body; returns the head."""
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                await reader.readexactly(int(value))
        return head

    async def wait_eof(self, reader: asyncio.StreamReader) -> None:
        """Park until the client closes its end, then note it."""
        await reader.read()
        self.eof.set()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def answer(response: bytes) -> Handler:
    """Answer every request on a connection with `response`."""

    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await srv.read_request(reader)
            w.write(response)
            await w.drain()

    return handler


@asynccontextmanager
async def pool_for(url: str, **kwargs: Any) -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(url, **kwargs)
    try:
        yield pool
    finally:
        await pool.aclose()


async def get(pool: UpstreamPool, target: bytes = b"/", method: bytes = b"GET") -> bytes:
    async with await pool.request(method, target, AUTH) as resp:
        return await resp.read()


def set_rst_on_close(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --- framing ------------------------------------------------------------------------------------


async def test_content_length_body_and_request_encoding() -> None:
    async with (
        Server(answer(ok(b"hello", b"X-Trace: abc\r\n"))) as srv,
        pool_for(srv.url + "/v1/") as pool,
    ):
        assert pool.base_path == b"/v1"
        assert pool.host_header == b"127.0.0.1:%d" % srv.port
        target = pool.base_path + b"/chat/completions?x=1"
        async with await pool.request(b"POST", target, AUTH, b'{"a":1}') as resp:
            assert resp.status == 200
            assert resp.headers == [(b"content-length", b"5"), (b"x-trace", b"abc")]
            assert resp.header(b"x-trace") == b"abc"
            assert resp.header(b"missing") is None
            assert await resp.read() == b"hello"
        assert await get(pool) == b"hello"
        async with await pool.request(b"PUT", b"/empty", AUTH) as resp:
            assert await resp.read() == b"hello"
    post, plain_get, put = srv.requests
    assert post == (
        b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Authorization: %s\r\nContent-Length: 7\r\nAccept-Encoding: identity\r\n\r\n"
        % (srv.port, SECRET)
    )
    assert b"Content-Length" not in plain_get  # GET without a body carries no length
    assert b"Content-Length: 0\r\n" in put  # PUT always does, so the server does not wait


async def test_chunked_body_with_extensions_and_trailers() -> None:
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    async with Server(answer(response)) as srv, pool_for(srv.url) as pool:
        assert await get(pool) == b"hello world"
        assert await get(pool) == b"hello world"  # the parser is ready for the next message
    assert srv.connections == 1


async def test_stream_yields_each_chunk_before_the_end() -> None:
    release = asyncio.Event()

    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        w.write(STREAM_HEAD + chunk(b"data: 1\n\n"))
        await w.drain()
        await release.wait()
        w.write(chunk(b"data: 2\n\n") + b"0\r\n\r\n")
        await w.drain()
        await srv.wait_eof(reader)

    async with Server(handler) as srv, pool_for(srv.url) as pool:
        async with await pool.request(b"POST", b"/stream", AUTH, b"{}") as resp:
            stream = aiter(resp)
            assert await anext(stream) == b"data: 1\n\n"  # the server is still holding the rest
            release.set()
            assert [c async for c in stream] == [b"data: 2\n\n"]
        assert repr(pool).endswith("idle=1 active=0 max=512>")


async def test_interim_1xx_responses_are_skipped() -> None:
    response = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n" + ok(b"final")
    )
    async with (
        Server(answer(response)) as srv,
        pool_for(srv.url) as pool,
        await pool.request(b"GET", b"/", AUTH) as resp,
    ):
        assert resp.status == 200
        assert resp.headers == [(b"content-length", b"5")]
        assert await resp.read() == b"final"


async def test_head_204_and_304_have_no_body_and_keep_the_connection() -> None:
    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            head = await srv.read_request(reader)
            if head.startswith(b"HEAD"):
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            elif b" /204 " in head:
                w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            elif b" /304 " in head:
                w.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n")
            else:
                w.write(ok(b"body"))
            await w.drain()

    limits = PoolLimits(max_response_body=50)  # below the lengths HEAD and 304 announce
    async with Server(handler) as srv, pool_for(srv.url, limits=limits) as pool:
        assert await get(pool, b"/", b"HEAD") == b""
        assert await get(pool, b"/204") == b""
        assert await get(pool, b"/304") == b""
        assert await get(pool) == b"body"
    assert srv.connections == 1


async def test_connection_close_from_server_is_honoured() -> None:
    closing = ok(b"bye", b"Connection: close\r\n")
    async with Server(answer(closing)) as srv, pool_for(srv.url) as pool:
        assert await get(pool) == b"bye"
        assert "idle=0 active=0" in repr(pool)
        assert await get(pool) == b"bye"
    assert srv.connections == 2


async def test_bodies_without_length_are_read_until_eof() -> None:
    for status_line in (b"HTTP/1.0 200 OK", b"HTTP/1.1 200 OK"):

        async def handler(s: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await s.read_request(reader)
            w.write(status_line + b"\r\nContent-Type: text/plain\r\n\r\nuntil ")  # noqa: B023
            await w.drain()
            await asyncio.sleep(0.02)
            w.write(b"eof")

        async with Server(handler) as srv, pool_for(srv.url) as pool:
            assert await get(pool) == b"until eof"
            assert "idle=0 active=0" in repr(pool)


async def test_eof_in_the_middle_of_the_body_is_a_protocol_error() -> None:
    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")

    async with Server(handler) as srv, pool_for(srv.url) as pool:
        async with await pool.request(b"GET", b"/", AUTH) as resp:
            with pytest.raises(UpstreamProtocolError, match=f"127.0.0.1:{srv.port}.*middle"):
                await resp.read()
        assert "idle=0 active=0" in repr(pool)


async def test_malformed_response_and_oversized_headers_are_protocol_errors() -> None:
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 4096 + b"\r\nContent-Length: 0\r\n\r\n"
    for response in (b"HTTP/1.1 2x0 OK\r\n\r\n", big):
        async with Server(answer(response)) as srv:
            limits = PoolLimits(max_header_bytes=1024)
            async with pool_for(srv.url, limits=limits) as pool:
                with pytest.raises(UpstreamProtocolError, match=r"127\.0\.0\.1"):
                    await pool.request(b"GET", b"/", AUTH)
                assert "idle=0 active=0" in repr(pool)


async def test_cr_lf_in_target_or_header_is_refused_before_sending() -> None:
    async with Server(answer(ok(b""))) as srv, pool_for(srv.url) as pool:
        for target, headers in (
            (b"/x\r\nX-Injected: 1", AUTH),
            (b"/x HTTP/1.1", AUTH),
            (b"/x", [(b"X-A", b"1\nX-Injected: 1")]),
        ):
            with pytest.raises(BadRequest):
                await pool.request(b"GET", target, headers)
    assert srv.connections == 0


# --- keep-alive and the stale-connection retry --------------------------------------------------


async def test_sequential_requests_reuse_one_connection() -> None:
    async with Server(answer(ok(b"x"))) as srv, pool_for(srv.url) as pool:
        for _ in range(10):
            assert await get(pool) == b"x"
        assert repr(pool) == f"<UpstreamPool {srv.url} idle=1 active=0 max=512>"
    assert (srv.connections, len(srv.requests)) == (1, 10)


async def test_idle_connections_are_reused_most_recent_first() -> None:
    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        number = srv.connections
        while True:
            await srv.read_request(reader)
            w.write(ok(b"conn%d" % number))

    async with Server(handler) as srv, pool_for(srv.url) as pool:
        first = await pool.request(b"GET", b"/", AUTH)
        second = await pool.request(b"GET", b"/", AUTH)  # the first is busy: a new connection
        assert (await first.read(), await second.read()) == (b"conn1", b"conn2")
        assert repr(pool).endswith("idle=2 active=0 max=512>")
        assert await get(pool) == b"conn2"  # released last, so reused first
        assert await get(pool) == b"conn2"


async def test_reused_connection_closed_before_any_response_byte_is_retried_once() -> None:
    for reset in (False, True):

        async def handler(s: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            number = s.connections
            while True:
                await s.read_request(reader)
                if number == 1 and len(s.requests) == 2:
                    if reset:  # noqa: B023
                        set_rst_on_close(w)
                    return  # close as an upstream's idle timeout would, request unanswered
                w.write(ok(b"conn%d" % number))
                await w.drain()

        async with Server(handler) as srv, pool_for(srv.url) as pool:
            assert await get(pool) == b"conn1"
            assert await get(pool) == b"conn2"  # resent on a fresh connection
        assert (srv.connections, len(srv.requests)) == (2, 3)


async def test_no_retry_once_response_bytes_arrived() -> None:
    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        w.write(ok(b"first"))
        await srv.read_request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await w.drain()

    async with Server(handler) as srv, pool_for(srv.url) as pool:
        assert await get(pool) == b"first"
        with pytest.raises(UpstreamProtocolError, match="before the response headers"):
            await get(pool)
    assert (srv.connections, len(srv.requests)) == (1, 2)


async def test_no_retry_on_a_fresh_connection() -> None:
    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)

    async with Server(handler) as srv, pool_for(srv.url) as pool:
        with pytest.raises(UpstreamProtocolError):
            await get(pool)
        assert "idle=0 active=0" in repr(pool)
    assert (srv.connections, len(srv.requests)) == (1, 1)


async def test_idle_connection_closed_by_server_is_dropped_from_the_pool() -> None:
    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        w.write(ok(b"once"))
        await w.drain()

    async with Server(handler) as srv, pool_for(srv.url) as pool:
        assert await get(pool) == b"once"
        for _ in range(100):
            if "idle=0" in repr(pool):
                break
            await asyncio.sleep(0.01)
        assert "idle=0 active=0" in repr(pool)
        assert await get(pool) == b"once"
    assert (srv.connections, len(srv.requests)) == (2, 2)


async def test_idle_timeout_and_max_age_retire_connections() -> None:
    async with Server(answer(ok(b"x"))) as srv:
        async with pool_for(srv.url, limits=PoolLimits(idle_timeout=0.1)) as pool:
            await get(pool)
            await asyncio.wait_for(srv.eof.wait(), 2)  # closed by the pool's timer, unasked
            assert "idle=0 active=0" in repr(pool)
        async with pool_for(srv.url, limits=PoolLimits(max_connection_age=0.1)) as pool:
            await get(pool)
            await asyncio.sleep(0.15)
            await get(pool)
    assert srv.connections == 3


# --- content coding -----------------------------------------------------------------------------


async def test_gzip_and_deflate_bodies_are_decoded() -> None:
    text = b'{"choices":[{"text":"hello"}]}' * 50
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    codings = {
        b"gzip": gzip.compress(text),
        b"deflate": zlib.compress(text),
        b"Deflate": raw.compress(text) + raw.flush(),  # raw RFC 1951, as some servers send
    }
    for coding, encoded in codings.items():
        response = ok(encoded, b"Content-Encoding: " + coding + b"\r\n")
        async with Server(answer(response)) as srv, pool_for(srv.url, accept_gzip=True) as pool:
            assert await get(pool) == text
        assert b"Accept-Encoding: gzip\r\n" in srv.requests[0]


async def test_gzip_stream_is_decoded_chunk_by_chunk() -> None:
    release = asyncio.Event()
    z = zlib.compressobj(wbits=31)
    first = z.compress(b"data: 1\n\n") + z.flush(zlib.Z_SYNC_FLUSH)
    rest = z.compress(b"data: 2\n\n") + z.flush()

    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        w.write(STREAM_HEAD[:-2] + b"Content-Encoding: gzip\r\n\r\n" + chunk(first))
        await release.wait()
        w.write(chunk(rest) + b"0\r\n\r\n")
        await srv.wait_eof(reader)

    async with (
        Server(handler) as srv,
        pool_for(srv.url, accept_gzip=True) as pool,
        await pool.request(b"GET", b"/", AUTH) as resp,
    ):
        stream = aiter(resp)
        assert await anext(stream) == b"data: 1\n\n"
        release.set()
        assert b"".join([c async for c in stream]) == b"data: 2\n\n"


async def test_gzip_bomb_is_bounded_and_corrupt_gzip_fails() -> None:
    bomb = gzip.compress(b"\0" * (8 << 20))  # ~8 KiB on the wire, 8 MiB inflated
    async with Server(answer(ok(bomb, b"Content-Encoding: gzip\r\n"))) as srv:
        limits = PoolLimits(max_response_body=1 << 20)
        async with pool_for(srv.url, limits=limits) as pool:
            with pytest.raises(UpstreamProtocolError, match="limit"):
                await get(pool)
            async with await pool.request(b"GET", b"/", AUTH) as resp:
                sizes = [len(c) async for c in resp]  # streaming is not bounded in total...
            assert sum(sizes) == 8 << 20
            assert max(sizes) <= 1 << 20  # ...but each inflate step is
    corrupt = ok(b"not gzip at all", b"Content-Encoding: gzip\r\n")
    async with Server(answer(corrupt)) as srv, pool_for(srv.url) as pool:
        with pytest.raises(UpstreamProtocolError, match="inflate"):
            await get(pool)
        assert "idle=0 active=0" in repr(pool)


# --- limits, flow control -----------------------------------------------------------------------


async def test_body_over_the_limit_is_refused() -> None:
    limits = PoolLimits(max_response_body=1000)
    declared = ok(b"x" * 2000)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += chunk(b"x" * 600) * 2 + b"0\r\n\r\n"
    for response in (declared, chunked):
        async with Server(answer(response)) as srv, pool_for(srv.url, limits=limits) as pool:
            with pytest.raises(UpstreamProtocolError, match="1000-byte limit"):
                await get(pool)
            assert "idle=0 active=0" in repr(pool)


async def test_reading_pauses_while_the_consumer_lags() -> None:
    body = bytes(range(256)) * (8 << 12)  # 8 MiB

    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        w.write(ok(body))
        await w.drain()
        await srv.wait_eof(reader)

    limits = PoolLimits(max_response_body=16 << 20)
    async with (
        Server(handler) as srv,
        pool_for(srv.url, limits=limits) as pool,
        await pool.request(b"GET", b"/", AUTH) as resp,
    ):
        await asyncio.sleep(0.2)  # the server would have sent everything by now
        conn = resp._conn
        assert conn is not None
        assert conn._paused
        assert conn._buffered <= 2 * _HIGH_WATER
        assert await resp.read() == body


# --- timeouts -----------------------------------------------------------------------------------


async def test_connect_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    async with pool_for(f"http://127.0.0.1:{port}") as pool:
        with pytest.raises(UpstreamConnectError, match=f"127.0.0.1:{port}") as info:
            await get(pool)
        assert type(info.value) is UpstreamConnectError
        assert "idle=0 active=0" in repr(pool)


async def test_connect_timeout() -> None:
    # Linux drops SYNs to a listener whose accept queue is full, so connect() hangs; a second
    # case times out in the TLS handshake against a server that never speaks.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            async with pool_for(f"http://127.0.0.1:{port}", timeouts=Timeouts(connect=0.2)) as p:
                with pytest.raises(UpstreamConnectTimeout, match=f"127.0.0.1:{port}"):
                    await get(p)
                assert "idle=0 active=0" in repr(p)
        finally:
            for filler in fillers:
                filler.close()

    async def silent(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.wait_eof(reader)

    async with Server(silent) as srv:
        url = srv.url.replace("http:", "https:")
        async with pool_for(url, timeouts=Timeouts(connect=0.2)) as pool:
            with pytest.raises(UpstreamConnectTimeout):
                await get(pool)


async def test_read_timeout_waiting_for_headers() -> None:
    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        await srv.wait_eof(reader)

    async with Server(handler) as srv, pool_for(srv.url, timeouts=Timeouts(read=0.2)) as pool:
        started = time.monotonic()
        with pytest.raises(UpstreamReadTimeout, match="headers") as info:
            await get(pool)
        assert 0.15 < time.monotonic() - started < 1.5
        assert f"127.0.0.1:{srv.port}" in str(info.value)
        assert "sk-secret" not in str(info.value)
        await asyncio.wait_for(srv.eof.wait(), 1)  # the connection was cut
        assert "idle=0 active=0" in repr(pool)


async def test_read_timeout_on_a_stalled_stream_but_not_on_a_long_one() -> None:
    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        w.write(STREAM_HEAD)
        for i in range(8):  # 0.8 s in all, never silent for 0.3 s
            w.write(chunk(b"data: %d\n\n" % i))
            await asyncio.sleep(0.1)
        w.write(b"0\r\n\r\n")
        await srv.read_request(reader)
        w.write(STREAM_HEAD + chunk(b"data: only\n\n"))  # then silence
        await srv.wait_eof(reader)

    async with Server(handler) as srv, pool_for(srv.url, timeouts=Timeouts(read=0.3)) as pool:
        async with await pool.request(b"GET", b"/", AUTH) as resp:
            assert (await resp.read()).count(b"data:") == 8
        async with await pool.request(b"GET", b"/", AUTH) as resp:
            stream = aiter(resp)
            assert await anext(stream) == b"data: only\n\n"
            with pytest.raises(UpstreamReadTimeout, match="body"):
                await anext(stream)
            assert "failed" in repr(resp)
        assert "idle=0 active=0" in repr(pool)


async def test_large_request_body_drains_then_write_timeout_if_never_read() -> None:
    big = b"x" * (64 << 20)  # far more than loopback socket buffers hold

    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if srv.connections == 1:
            await answer(ok(b"got it"))(srv, reader, w)
        await asyncio.sleep(30)  # the second connection is never read

    async with Server(handler) as srv:
        async with pool_for(srv.url) as pool:
            async with await pool.request(b"POST", b"/", AUTH, big) as resp:
                assert await resp.read() == b"got it"
            assert await get(pool) == b"got it"  # the request was fully written, so reused
        async with pool_for(srv.url, timeouts=Timeouts(write=0.3)) as pool:
            started = time.monotonic()
            with pytest.raises(UpstreamWriteTimeout, match=f"127.0.0.1:{srv.port}"):
                await pool.request(b"POST", b"/", AUTH, big)
            assert time.monotonic() - started < 1.5
            assert "idle=0 active=0" in repr(pool)
    assert srv.connections == 2


# --- closing and cancellation -------------------------------------------------------------------


async def stream_then_park(
    srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """Answer GETs at once; start a stream for a POST, then hold it until the client goes away."""
    while (await srv.read_request(reader)).startswith(b"GET"):
        w.write(ok(b"warm"))
    w.write(STREAM_HEAD + chunk(b"data: 1\n\n"))
    await w.drain()
    await srv.wait_eof(reader)


async def test_close_mid_stream_cuts_the_upstream_at_once() -> None:
    async with Server(stream_then_park) as srv, pool_for(srv.url) as pool:
        assert await get(pool) == b"warm"  # a reused connection must not go back mid-stream
        resp = await pool.request(b"POST", b"/", AUTH, b"{}")
        assert await anext(aiter(resp)) == b"data: 1\n\n"
        assert "streaming" in repr(resp)
        resp.close()
        resp.close()  # idempotent
        assert "closed" in repr(resp)
        await asyncio.wait_for(srv.eof.wait(), 1)
        assert "idle=0 active=0" in repr(pool)
        assert [c async for c in resp] == []


async def test_cancelled_reader_leaves_no_connection_behind() -> None:
    async with Server(stream_then_park) as srv, pool_for(srv.url) as pool:
        assert await get(pool) == b"warm"
        got_first = asyncio.Event()

        async def consume() -> None:
            resp = await pool.request(b"POST", b"/", AUTH, b"{}")  # not closed by the caller
            async for _ in resp:
                got_first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_first.wait(), 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert "idle=0 active=0" in repr(pool)
        await asyncio.wait_for(srv.eof.wait(), 1)

        # and while still waiting for the headers
        srv.eof.clear()

        async def handler(s: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await s.wait_eof(reader)

        srv.handler = handler
        request = asyncio.create_task(pool.request(b"GET", b"/", AUTH))
        await asyncio.sleep(0.05)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert "idle=0 active=0" in repr(pool)
        await asyncio.wait_for(srv.eof.wait(), 1)


async def test_aclose_aborts_active_and_closes_idle() -> None:
    async with Server(stream_then_park) as srv:
        pool = UpstreamPool(srv.url)
        streaming = await pool.request(b"POST", b"/", AUTH, b"{}")
        assert await get(pool) == b"warm"  # on a second connection, now idle
        assert repr(pool).endswith("idle=1 active=1 max=512>")
        started = time.monotonic()
        await pool.aclose()
        assert time.monotonic() - started < 0.5  # nothing waited for the close grace period
        assert repr(pool).endswith("idle=0 active=0 max=512 closed>")
        await asyncio.wait_for(srv.eof.wait(), 1)
        with pytest.raises(UpstreamError, match="closed"):
            await streaming.read()
        with pytest.raises(UpstreamConnectError, match="closed"):
            await pool.request(b"GET", b"/", AUTH)
        await pool.aclose()  # idempotent


# --- the pool bound -----------------------------------------------------------------------------


async def test_pool_bound_waits_fifo_and_times_out() -> None:
    limits = PoolLimits(max_connections=1)
    async with (
        Server(answer(ok(b"x"))) as srv,
        pool_for(srv.url, limits=limits, timeouts=Timeouts(pool=0.2)) as pool,
    ):
        held = await pool.request(b"GET", b"/", AUTH)
        started = time.monotonic()
        with pytest.raises(UpstreamPoolTimeout, match=f"127.0.0.1:{srv.port}"):
            await pool.request(b"GET", b"/", AUTH)
        assert time.monotonic() - started >= 0.15

        order: list[str] = []

        async def wait_turn(name: str) -> None:
            async with await pool.request(b"GET", b"/", AUTH) as resp:
                order.append(name)
                await resp.read()

        tasks = [asyncio.create_task(wait_turn(name)) for name in ("first", "second")]
        await asyncio.sleep(0.02)
        assert repr(pool).endswith("idle=0 active=1 max=1 waiting=2>")
        await held.read()
        held.close()
        await asyncio.gather(*tasks)
        assert order == ["first", "second"]

        # Handed the connection, then cancelled before running: the connection is re-pooled.
        held = await pool.request(b"GET", b"/", AUTH)
        waiting = asyncio.create_task(pool.request(b"GET", b"/", AUTH))
        await asyncio.sleep(0.02)
        await held.read()  # releases the connection to `waiting`...
        waiting.cancel()  # ...which is cancelled before it ever runs
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert repr(pool).endswith("idle=1 active=0 max=1>")
        assert await get(pool) == b"x"
    assert srv.connections == 1


# --- TLS ----------------------------------------------------------------------------------------


async def test_tls_with_a_private_ca_and_with_the_wrong_one() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    untrusted = ssl.create_default_context()
    trustme.CA().configure_trust(untrusted)

    async with Server(answer(ok(b"secure")), server_context) as srv:
        async with pool_for(srv.url + "/v1", ssl_context=trusted) as pool:
            assert repr(pool).startswith(f"<UpstreamPool https://127.0.0.1:{srv.port} ")
            assert await get(pool) == b"secure"
            assert await get(pool) == b"secure"
        async with pool_for(srv.url, ssl_context=untrusted) as pool:
            with pytest.raises(UpstreamConnectError, match="TLS") as info:
                await get(pool)
            assert type(info.value) is UpstreamConnectError
            assert "idle=0 active=0" in repr(pool)
    assert srv.connections == 1  # one kept alive; the refused handshake never got a handler


def test_base_url_parsing() -> None:
    pool = UpstreamPool("https://api.openai.com/v1")
    assert (pool.base_path, pool.host_header) == (b"/v1", b"api.openai.com")
    assert repr(pool) == "<UpstreamPool https://api.openai.com idle=0 active=0 max=512>"
    pool = UpstreamPool("http://[::1]:8080")
    assert (pool.base_path, pool.host_header, pool.origin) == (b"", b"[::1]:8080", "[::1]:8080")
    for bad in ("ftp://x", "http://user:pw@x/", "http://x/?key=1", "/relative"):
        with pytest.raises(ValueError, match="base_url"):
            UpstreamPool(bad)
    with pytest.raises(ValueError, match="positive"):
        UpstreamPool("http://x", timeouts=Timeouts(read=0))


# --- the same scenarios on uvloop ---------------------------------------------------------------

SCENARIOS = [
    value
    for name, value in list(globals().items())
    if name.startswith("test_") and asyncio.iscoroutinefunction(value)
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__.removeprefix("test_"))
def test_on_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    async def run() -> None:
        await scenario()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
