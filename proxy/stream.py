"""SSE piping: upstream chunks to the client as they come, with backpressure.

The same-dialect path forwards the upstream's bytes untouched, through a tap of the caller's
dialect (proxy.metering) that keeps them by reference and reads the usage out of them once the
stream is over. OpenAI's tap also frames the stream to capture the usage chunk and, when the
gateway (not the caller) asked for it, to cut it, so the caller sees exactly what the provider
would have sent it. A client that goes away cancels the handler, and `finally` closes the
upstream response, which aborts the upstream connection at once.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from adapters.canonical import Usage
from adapters.dialects import ADAPTERS
from adapters.openai.envelope import canonical_usage, decode_usage, encode_error
from adapters.providers import Dialect
from adapters.sse import (
    MAX_EVENT_BYTES,
    EventTooLarge,
    event_data,
    events_end,
    first_event_end,
)
from proxy.cache import Collector
from proxy.calls import Call
from proxy.dispatch import Exchange
from proxy.errors import SluiceError, UpstreamError, UpstreamProtocolError, canonical_error
from proxy.metering import AnthropicTap, GeminiTap, StreamTap
from proxy.runtime import UpstreamAnswer

__all__ = ["UsageTap", "pipe_stream", "stream_tap"]

# Cheap pre-filter: OpenAI-compatible providers put `"usage":null` on ordinary chunks when usage
# was requested and a usage object only on the last one; only chunks holding an object are
# decoded. (Both spacings occur: OpenAI writes compact JSON, some servers add a space.)
_USAGE_MARK = b'"usage":{'
# With usage requested, OpenAI also adds `"usage":null` to every other chunk, a key it leaves out
# when the caller did not ask; when the gateway asked, that key is removed too. A quoted key
# inside a JSON string is escaped (\"usage\"), so this byte run only ever is the key itself.
_USAGE_NULL = b'"usage":null'
_USAGE_MARK_SPACED = b'"usage": {'


def _has_usage(data: bytes) -> bool:
    return _USAGE_MARK in data or _USAGE_MARK_SPACED in data


class UsageTap(StreamTap):
    """OpenAI: frames an SSE byte stream into whole events and watches them for the usage
    object."""

    __slots__ = ("_pending",)
    dialect = "openai"

    def __init__(self, ex: Exchange, call: Call | None = None) -> None:
        super().__init__(ex, call)
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to forward now: whole events only, the injected usage chunk cut out."""
        StreamTap.feed(self, chunk)
        if self._pending:
            chunk = self._pending + chunk
        end = events_end(chunk)
        if end < len(chunk):
            self._pending = chunk[end:]
            if len(self._pending) > MAX_EVENT_BYTES:
                raise EventTooLarge(MAX_EVENT_BYTES)
            chunk = chunk[:end]
        else:
            self._pending = b""
        if self.ex.strip_usage and _USAGE_NULL in chunk:
            chunk = chunk.replace(b"," + _USAGE_NULL, b"").replace(_USAGE_NULL + b",", b"")
        if not (_USAGE_MARK in chunk or _USAGE_MARK_SPACED in chunk):
            return chunk
        return self._inspect(chunk)

    def _inspect(self, whole: bytes) -> bytes:
        kept = []
        start = 0
        while start < len(whole):
            end = first_event_end(whole, start)
            event = whole[start:end]
            start = end
            if _has_usage(event):
                usage, has_choices = decode_usage(event_data(event))
                if usage is not None:
                    self.ex.usage = canonical_usage(usage)
                    if self.ex.strip_usage and not has_choices:
                        continue
            kept.append(event)
        return b"".join(kept)

    def close(self) -> bytes:
        """Whatever trailing bytes never formed a whole event (forwarded as they are)."""
        rest, self._pending = self._pending, b""
        return rest

    def _reported(self, head: bytes, last: bytes) -> tuple[Usage | None, bool]:
        return self.ex.usage, self.ex.usage is not None  # OpenAI sends its usage whole, last


_TAPS: dict[Dialect, type[StreamTap]] = {
    "openai": UsageTap,
    "anthropic": AnthropicTap,
    "gemini": GeminiTap,
}


def stream_tap(ex: Exchange, call: Call) -> StreamTap:
    """The tap for a same-dialect stream of `call`'s dialect."""
    return _TAPS[call.dialect](ex, call)


async def pipe_stream(request: web.Request, answer: UpstreamAnswer, headers: dict[str, str],
                      dialect: Dialect, meter: StreamTap,
                      keep: Collector | None = None) -> web.StreamResponse:
    """Forward a same-dialect stream as it comes, through `meter` (`stream_tap`), which accounts
    for it on its exchange: first byte, time reading, outcome and usage. `keep` (a cacheable
    request only) gets every byte written, for the response cache.

    An upstream failure after the first byte ends the stream with the dialect's own stream
    error event, which each SDK raises on.
    """
    resp = web.StreamResponse(status=200, headers=headers)
    outcome = "ok"
    reading: float | None = None
    try:
        await resp.prepare(request)
        first = True
        reading = time.monotonic()
        try:
            async for chunk in answer:
                out = meter.feed(chunk)
                if out:
                    await resp.write(out)
                    if keep is not None:
                        keep.add(out)
                    if first:
                        first = False
                        meter.first_byte(time.monotonic())
            tail = meter.close()
            if tail:
                await resp.write(tail)
                if keep is not None:
                    keep.add(tail)
        except EventTooLarge as err:
            outcome = "cut"
            await resp.write(_error_event(dialect, UpstreamProtocolError(str(err))))
        except UpstreamError as err:
            outcome = "cut"
            await resp.write(_error_event(dialect, err))
        if first:  # the first bytes were the tail or an error event, or there were none
            meter.first_byte(time.monotonic())
        await resp.write_eof()
    except ConnectionResetError:
        # The client went away; closing the answer below aborts the upstream request. (An
        # upstream that broke first stays the cause.)
        outcome = "client_closed" if outcome == "ok" else outcome
    except asyncio.CancelledError:
        outcome = "client_closed" if outcome == "ok" else outcome  # the handler is cancelled
        raise
    finally:
        answer.close()
        meter.finish(outcome, time.monotonic() - reading if reading is not None else 0.0)
    return resp


def _error_event(dialect: Dialect, err: SluiceError) -> bytes:
    if dialect == "openai":
        # OpenAI streams report a failure as a data event holding an error object; keeping
        # our own type and code (e.g. upstream_read_timeout) says more than the neutral form.
        return b"data: " + encode_error(err.message, err.type, err.param, err.code) + b"\n\n"
    return ADAPTERS[dialect].stream_error_event(canonical_error(err))
