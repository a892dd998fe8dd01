"""SSE piping: upstream chunks to the client as they come, with backpressure.

The same-dialect path forwards the upstream's bytes untouched. Only events that carry a usage
object are looked at: the usage is captured for accounting, and when the gateway (not the
caller) asked for it, that extra chunk is cut so the caller sees exactly what the provider
would have sent it. A client that goes away cancels the handler, and `finally` closes the
upstream response, which aborts the upstream connection at once.
"""

from __future__ import annotations

from aiohttp import web

from adapters.openai.envelope import canonical_usage, decode_usage, encode_error
from adapters.sse import (
    MAX_EVENT_BYTES,
    EventTooLarge,
    event_data,
    events_end,
    first_event_end,
)
from proxy.dispatch import Exchange
from proxy.errors import SluiceError, UpstreamError, UpstreamProtocolError
from proxy.runtime import UpstreamAnswer

__all__ = ["UsageTap", "pipe_raw", "pipe_sse"]

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


class UsageTap:
    """Frames an SSE byte stream into whole events and watches them for the usage object."""

    __slots__ = ("_ex", "_pending")

    def __init__(self, ex: Exchange) -> None:
        self._ex = ex
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to forward now: whole events only, the injected usage chunk cut out."""
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
        if self._ex.strip_usage and _USAGE_NULL in chunk:
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
                    self._ex.usage = canonical_usage(usage)
                    if self._ex.strip_usage and not has_choices:
                        continue
            kept.append(event)
        return b"".join(kept)

    def close(self) -> bytes:
        """Whatever trailing bytes never formed a whole event (forwarded as they are)."""
        rest, self._pending = self._pending, b""
        return rest


def _error_event(err: SluiceError) -> bytes:
    # OpenAI streams report a failure as a data event holding an error object; the SDKs raise
    # APIError on it.
    return b"data: " + encode_error(err.message, err.type, err.param, err.code) + b"\n\n"


async def pipe_sse(request: web.Request, ex: Exchange, answer: UpstreamAnswer,
                   headers: dict[str, str]) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers=headers)
    tap = UsageTap(ex)
    try:
        await resp.prepare(request)
        try:
            async for chunk in answer:
                out = tap.feed(chunk)
                if out:
                    await resp.write(out)
            tail = tap.close()
            if tail:
                await resp.write(tail)
        except EventTooLarge as err:
            await resp.write(_error_event(UpstreamProtocolError(str(err))))
        except UpstreamError as err:
            await resp.write(_error_event(err))
        await resp.write_eof()
    except ConnectionResetError:
        # The client went away; closing the answer below aborts the upstream request.
        pass
    finally:
        answer.close()
    return resp


async def pipe_raw(request: web.Request, answer: UpstreamAnswer,
                   headers: dict[str, str]) -> web.StreamResponse:
    """A same-dialect stream the gateway only forwards (Anthropic, Gemini): bytes as they come."""
    resp = web.StreamResponse(status=200, headers=headers)
    try:
        await resp.prepare(request)
        try:
            async for chunk in answer:
                await resp.write(chunk)
        except UpstreamError:
            # The bytes already sent are the provider's own; cutting the stream short is the
            # honest signal (each SDK raises on a stream that ends without its final event).
            pass
        await resp.write_eof()
    except ConnectionResetError:
        pass
    finally:
        answer.close()
    return resp
