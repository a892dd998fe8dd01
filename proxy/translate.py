"""Answers from a provider of another dialect, carried through the adapters to the caller.

Non-stream: provider body -> canonical Response -> the caller's body. Stream: upstream bytes ->
SSE events -> the provider's stream decoder -> canonical events -> the caller's stream encoder ->
bytes written with backpressure, one write per upstream chunk. A failure mid-stream becomes the
caller dialect's stream error event.
"""

from __future__ import annotations

import time

from aiohttp import web

from adapters.canonical import StreamEnd, StreamError, StreamStart, TranslationError, Usage
from adapters.dialects import ADAPTERS, StreamEncoderLike
from adapters.sse import SSEDecoder, SSEError
from proxy.calls import Call
from proxy.dispatch import Exchange
from proxy.errors import SluiceError, UpstreamError, UpstreamProtocolError, canonical_error
from proxy.runtime import UpstreamAnswer

__all__ = ["answer_translated"]


def _record_usage(ex: Exchange, usage: Usage | None) -> None:
    if usage is not None:
        ex.usage = usage


async def answer_translated(request: web.Request, ex: Exchange, call: Call,
                            answer: UpstreamAnswer, headers: dict[str, str]
                            ) -> web.StreamResponse:
    assert ex.provider is not None
    provider = ADAPTERS[ex.provider.provider.spec.dialect]
    caller = ADAPTERS[call.dialect]
    if call.stream:
        return await _pipe(request, ex, call, answer, headers)
    try:
        body = await answer.read()
    finally:
        answer.close()
    try:
        resp = provider.to_canonical_response(body, model=ex.upstream_model)
    except (TranslationError, ValueError) as err:
        raise UpstreamProtocolError(
            f"Provider '{ex.provider.name}' sent an answer that cannot be read: {err}") from None
    _record_usage(ex, resp.usage)
    resp.created = int(time.time())
    headers["Content-Type"] = "application/json"
    return web.Response(body=caller.from_canonical_response(resp, model=call.model),
                        headers=headers)


async def _pipe(request: web.Request, ex: Exchange, call: Call, answer: UpstreamAnswer,
                headers: dict[str, str]) -> web.StreamResponse:
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
    try:
        await resp.prepare(request)
        try:
            async for chunk in answer:
                out = []
                for sse_event in events.feed(chunk):
                    for event in decoder.feed(sse_event):
                        _watch(ex, event)
                        out.append(encoder.feed(event))
                if out:
                    await resp.write(b"".join(out))
            tail = [encoder.feed(e) for e in decoder.close()]
            await resp.write(b"".join(tail) + encoder.close())
        except (SSEError, TranslationError, ValueError) as err:
            broken = UpstreamProtocolError(f"Provider '{ex.provider.name}' broke its stream: {err}")
            await resp.write(_ended_by(encoder, broken))
        except UpstreamError as err:
            await resp.write(_ended_by(encoder, err))
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client went away; closing the answer aborts the upstream request
    finally:
        answer.close()
    return resp


def _watch(ex: Exchange, event: object) -> None:
    if isinstance(event, StreamStart):
        event.created = int(time.time())
        _record_usage(ex, event.usage)
    elif isinstance(event, StreamEnd):
        _record_usage(ex, event.usage)



def _ended_by(encoder: StreamEncoderLike, err: SluiceError) -> bytes:
    """The caller's stream error event, and whatever closes its framing (Gemini's JSON array)."""
    return encoder.feed(StreamError(canonical_error(err))) + encoder.close()
