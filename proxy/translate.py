"""Answers from a provider of another dialect, carried through the adapters to the caller.

Non-stream: provider body -> canonical Response -> the caller's body. Stream: upstream bytes ->
SSE events -> the provider's stream decoder -> canonical events -> the caller's stream encoder ->
bytes written with backpressure, one write per upstream chunk. A failure mid-stream becomes the
caller dialect's stream error event.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from adapters.canonical import (
    Event,
    StreamEnd,
    StreamError,
    StreamStart,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    TranslationError,
    Usage,
)
from adapters.dialects import ADAPTERS, StreamEncoderLike
from adapters.sse import SSEDecoder, SSEError
from proxy.cache import Collector
from proxy.calls import Call
from proxy.dispatch import Exchange
from proxy.errors import SluiceError, UpstreamError, UpstreamProtocolError, canonical_error
from proxy.metering import count_text, estimate_usage
from proxy.runtime import UpstreamAnswer

__all__ = ["answer_translated"]


async def answer_translated(request: web.Request, ex: Exchange, call: Call,
                            answer: UpstreamAnswer, headers: dict[str, str],
                            keep: Collector | None = None) -> web.StreamResponse:
    """`keep` (a cacheable request only) gets the bytes written and the canonical finish."""
    assert ex.provider is not None
    provider = ADAPTERS[ex.provider.provider.spec.dialect]
    caller = ADAPTERS[call.dialect]
    if call.stream:
        return await _pipe(request, ex, call, answer, headers, keep)
    body = await ex.read_whole(answer)
    try:
        resp = provider.to_canonical_response(body, model=ex.upstream_model)
    except (TranslationError, ValueError) as err:
        raise UpstreamProtocolError(
            f"Provider '{ex.provider.name}' sent an answer that cannot be read: {err}") from None
    ex.usage = resp.usage
    resp.created = int(time.time())
    headers["Content-Type"] = "application/json"
    data = caller.from_canonical_response(resp, model=call.model)
    if keep is not None:
        keep.add(data)
        keep.finish = resp.finish
    return web.Response(body=data, headers=headers)


class _Seen:
    """What a translated stream told its caller, for its usage: the counts the provider
    reported (input up front, the whole at the end) and the text given, kept as the strings
    the events already hold and counted only if the provider's counts never came whole."""

    __slots__ = ("broken", "end", "finish", "said", "start")

    def __init__(self) -> None:
        self.said: list[str] = []
        self.start: Usage | None = None
        self.end: Usage | None = None
        self.finish = "error"  # until the provider's end event says otherwise
        self.broken = False  # the provider's stream ended on an error of its own

    def see(self, event: Event) -> None:
        match event:  # the deltas first: nearly every event is one
            case TextDelta(text=text) | ThinkingDelta(text=text):
                self.said.append(text)
            case ToolArgsDelta(partial_json=text):
                self.said.append(text)
            case StreamStart():
                event.created = int(time.time())
                self.start = event.usage
            case StreamEnd():
                self.end = event.usage
                self.finish = event.finish
            case StreamError():
                self.broken = True

    def settle(self, ex: Exchange, call: Call) -> None:
        if self.broken and ex.outcome == "ok":
            ex.outcome = "cut"
        if self.end is not None:
            ex.usage = self.end
            return
        ex.usage = estimate_usage(self.start, call, count_text(self.said))
        ex.estimated = True


async def _pipe(request: web.Request, ex: Exchange, call: Call, answer: UpstreamAnswer,
                headers: dict[str, str], keep: Collector | None) -> web.StreamResponse:
    assert ex.provider is not None
    caller = ADAPTERS[call.dialect]
    events = SSEDecoder()
    decoder = ADAPTERS[ex.provider.provider.spec.dialect].StreamDecoder(model=ex.upstream_model)
    encoder = caller.StreamEncoder(model=call.model, include_usage=call.include_usage,
                                   sse=call.sse)
    json_array = call.dialect == "gemini" and not call.sse
    headers["Content-Type"] = "application/json" if json_array else "text/event-stream"
    headers["Cache-Control"] = "no-cache"
    resp = web.StreamResponse(status=200, headers=headers)
    seen = _Seen()
    reading: float | None = None
    try:
        await resp.prepare(request)
        first = True
        reading = time.monotonic()
        try:
            async for chunk in answer:
                out = []
                for sse_event in events.feed(chunk):
                    for event in decoder.feed(sse_event):
                        seen.see(event)
                        out.append(encoder.feed(event))
                if out:
                    data = b"".join(out)
                    await resp.write(data)
                    if keep is not None:
                        keep.add(data)
                    if first:
                        first = False
                        ex.first_byte = time.monotonic()
            tail = []
            for event in decoder.close():
                seen.see(event)
                tail.append(encoder.feed(event))
            data = b"".join(tail) + encoder.close()
            await resp.write(data)
            if keep is not None:
                keep.add(data)
        except (SSEError, TranslationError, ValueError) as err:
            ex.outcome = "cut"
            broken = UpstreamProtocolError(f"Provider '{ex.provider.name}' broke its stream: {err}")
            await resp.write(_ended_by(encoder, broken))
        except UpstreamError as err:
            ex.outcome = "cut"
            await resp.write(_ended_by(encoder, err))
        if first:  # the first bytes were the stream's end or an error event
            ex.first_byte = time.monotonic()
        await resp.write_eof()
    except ConnectionResetError:
        _gone(ex)  # closing the answer aborts the upstream request
    except asyncio.CancelledError:
        _gone(ex)  # the handler is cancelled when its client disconnects
        raise
    finally:
        answer.close()
        if reading is not None:
            ex.body_wait += time.monotonic() - reading
        seen.settle(ex, call)
        if keep is not None:
            keep.finish = "error" if seen.broken else seen.finish
    return resp


def _gone(ex: Exchange) -> None:
    if ex.outcome == "ok":  # an upstream that broke first stays the cause
        ex.outcome = "client_closed"


def _ended_by(encoder: StreamEncoderLike, err: SluiceError) -> bytes:
    """The caller's stream error event, and whatever closes its framing (Gemini's JSON array)."""
    return encoder.feed(StreamError(canonical_error(err))) + encoder.close()
