"""An upstream answer: status and headers, and its body read out of the connection."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Final

from proxy.errors import (
    UpstreamError,
    UpstreamProtocolError,
)
from proxy.upstream.connection import _BODY, _DONE, _Conn

if TYPE_CHECKING:
    from proxy.upstream.pool import UpstreamPool

# Most bytes one inflate step may produce: gzip can expand ~1000x, so decoding is metered.
_MAX_DECODED_CHUNK: Final = 1 << 20
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS


class _Decoder:
    """Incremental gzip/deflate inflation with metered output."""

    __slots__ = ("_raw_fallback", "_z")

    def __init__(self, gzip: bool) -> None:
        self._z = zlib.decompressobj(_GZIP_WBITS if gzip else zlib.MAX_WBITS)
        # RFC 9110 §8.4.1.2: deflate is zlib-wrapped, but some servers send raw RFC 1951 data.
        self._raw_fallback = not gzip

    @property
    def pending(self) -> bool:
        return bool(self._z.unconsumed_tail)

    def feed(self, data: bytes) -> bytes:
        z = self._z
        if z.unconsumed_tail:
            data = z.unconsumed_tail + data
        try:
            out = z.decompress(data, _MAX_DECODED_CHUNK)
        except zlib.error:
            if not self._raw_fallback:
                raise
            self._z = z = zlib.decompressobj(-zlib.MAX_WBITS)
            out = z.decompress(data, _MAX_DECODED_CHUNK)
        self._raw_fallback = False
        return out

    def flush(self) -> bytes:
        return self._z.flush()


class UpstreamResponse:
    """Status and headers of an upstream answer; the body is read through it, then close() it.

    When Content-Encoding is gzip or deflate the body is inflated here, so a caller forwarding
    headers downstream must drop Content-Encoding and Content-Length. Other codings are passed
    through as received.
    """

    __slots__ = ("__weakref__", "_conn", "_decoder", "_error", "_pool", "headers", "status")

    def __init__(self, pool: UpstreamPool, conn: _Conn) -> None:
        self.status = conn._status
        self.headers = conn._headers  # names lower-cased, in order received
        self._pool = pool
        self._conn: _Conn | None = conn
        self._error: UpstreamError | None = None
        self._decoder: _Decoder | None = None
        coding = self.header(b"content-encoding")
        if coding is not None:
            coding = coding.strip().lower()
            if coding == b"gzip" or coding == b"x-gzip":
                self._decoder = _Decoder(gzip=True)
            elif coding == b"deflate":
                self._decoder = _Decoder(gzip=False)

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (given lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def read(self) -> bytes:
        """The whole body, decoded, at most `PoolLimits.max_response_body` bytes."""
        limit = self._pool._limits.max_response_body
        conn = self._conn
        if conn is not None and conn._state == _BODY:  # HEAD/304 lengths describe no body here
            length = self.header(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                self._abort()
                raise self._too_large(limit)
        parts: list[bytes] = []
        size = 0
        async for chunk in self:
            size += len(chunk)
            if size > limit:
                self._abort()
                raise self._too_large(limit)
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        """Whatever body arrived since the last call, decoded; waits only when there is none."""
        while True:
            conn = self._conn
            if conn is None:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            decoder = self._decoder
            if conn._chunks:
                data = conn._take()
            elif decoder is not None and decoder.pending:
                data = b""
            elif conn._error is not None:
                self._error = conn._error
                self._abort()
                raise self._error
            elif conn._state == _DONE:
                self._conn = None
                self._pool._release(conn)
                if decoder is not None and (data := self._decode(decoder, b"", flush=True)):
                    return data
                raise StopAsyncIteration
            else:
                try:
                    await conn._wait()
                except BaseException:
                    self._abort()  # cancelled mid-body: this connection's state is unknown
                    raise
                continue
            if decoder is None:
                return data
            if data := self._decode(decoder, data):
                return data

    def _decode(self, decoder: _Decoder, data: bytes, flush: bool = False) -> bytes:
        try:
            return decoder.flush() if flush else decoder.feed(data)
        except zlib.error:
            self._error = UpstreamProtocolError(
                f"upstream {self._pool.origin} sent a body that does not inflate"
            )
            self._abort()
            raise self._error from None

    def close(self) -> None:
        """Hand the connection back if the whole body arrived and keep-alive holds, else cut it.

        Cutting at once is what ends an upstream stream the caller abandoned. Idempotent.
        """
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._pool._release(conn)

    def abort(self, error: UpstreamError) -> None:
        """End the answer from outside (the gateway drains): its reader gets `error` next."""
        if self._conn is not None:
            self._error = error
            self._abort()

    def _abort(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._pool._drop(conn)

    def _too_large(self, limit: int) -> UpstreamProtocolError:
        self._error = UpstreamProtocolError(
            f"upstream {self._pool.origin} sent a response body over the {limit}-byte limit"
        )
        return self._error

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        conn = self._conn
        if self._error is not None:
            state = "failed"
        elif conn is None:
            state = "closed"
        else:
            state = "complete" if conn._state == _DONE else "streaming"
        return f"<UpstreamResponse {self.status} {self._pool.origin} {state}>"


