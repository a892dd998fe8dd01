"""A fake OpenAI upstream that costs next to nothing, so it is never what the bench measures.

Raw asyncio Protocol + httptools: no framework, canned bytes built once, one `transport.write` per
response (per chunk for streams). It answers `POST /v1/chat/completions` with a `chat.completion`
(with usage), or, when the body asks for `"stream": true`, a 20-chunk `chat.completion.chunk` SSE
stream in chunked transfer-encoding, plus the usage chunk (`"choices": []`) when the body asks for
`"include_usage": true`, then `data: [DONE]`. `GET /health` answers 200 for readiness polls.

Run: `python -m bench.upstream --port P [--chunk-delay S] [--first-byte-delay S]`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections import deque
from typing import NamedTuple, cast

import httptools
import orjson
import uvloop

__all__ = ["CHUNKS", "main"]

CHUNKS = 20  # content events per stream, the last one with finish_reason "stop"
# A search over the small request body is cheaper than decoding it; the gateway may re-serialise
# the body, so whitespace around the colon is allowed.
_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_USAGE_RE = re.compile(rb'"include_usage"\s*:\s*true')
_ID = "chatcmpl-bench0000000000000000000000"
_CREATED = 1_700_000_000
_USAGE = {"prompt_tokens": 28, "completion_tokens": CHUNKS - 2, "total_tokens": 28 + CHUNKS - 2}


def _completion() -> bytes:
    body = orjson.dumps(
        {
            "id": _ID,
            "object": "chat.completion",
            "created": _CREATED,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Wooden gate lifts slow / the river keeps its own time / "
                        "light slides through the gap",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
        }
    )
    head = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: application/json\r\n"
        b"x-request-id: req_bench\r\n"
        b"openai-processing-ms: 1\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


def _chunk(delta: dict[str, str], finish: str | None, with_usage: bool) -> dict[str, object]:
    event: dict[str, object] = {
        "id": _ID,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage:
        # OpenAI sends `"usage": null` on every chunk once include_usage is asked for.
        event["usage"] = None
    return event


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(event: object) -> bytes:
    return _http_chunk(b"data: " + orjson.dumps(event) + b"\n\n")


def _stream_events(with_usage: bool) -> list[bytes]:
    """The stream as a list of HTTP chunks: the first carries the response head too."""
    events = [_chunk({"role": "assistant", "content": ""}, None, with_usage)]
    events += [_chunk({"content": f"tok{i} "}, None, with_usage) for i in range(1, CHUNKS - 1)]
    events.append(_chunk({}, "stop", with_usage))
    chunks = [_sse(e) for e in events]
    if with_usage:
        usage = {**_chunk({}, None, False), "choices": [], "usage": _USAGE}
        chunks.append(_sse(usage))
    chunks.append(_http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    head = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/event-stream; charset=utf-8\r\n"
        b"Cache-Control: no-cache\r\n"
        b"x-request-id: req_bench\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunks[0] = head + chunks[0]
    return chunks


_COMPLETION = _completion()
_STREAM = _stream_events(with_usage=False)
_STREAM_USAGE = _stream_events(with_usage=True)
_HEALTH = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Request(NamedTuple):
    method: bytes
    url: bytes
    body: bytes
    keep_alive: bool


class _Delays(NamedTuple):
    first_byte: float
    chunk: float


class _UpstreamProtocol(asyncio.Protocol):
    """One connection; requests are answered in order (pipelined ones wait in `_pending`).

    A paced answer is a list of pieces written by loop callbacks, not a task per request: the
    upstream shares its core with the load generator, so it must stay cheap."""

    def __init__(self, delays: _Delays) -> None:
        self._delays = delays
        self._parser = httptools.HttpRequestParser(self)
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._pending: deque[_Request] = deque()
        # The answer being written: pieces left, whether to keep the connection, the next write.
        self._pieces: deque[bytes] | None = None
        self._keep_alive = True
        self._timer: asyncio.Handle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence a cast, not a check.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        # The caller went away mid-answer: stop writing to it.
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(_BAD_REQUEST)
                self._transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method()
        keep_alive = self._parser.should_keep_alive()
        self._pending.append(_Request(method, self._url, b"".join(self._body), keep_alive))
        self._answer_pending()

    def _answer_pending(self) -> None:
        while self._pending and self._pieces is None and self._transport is not None:
            request = self._pending.popleft()
            if request.method == b"POST" and request.url.startswith(b"/v1/chat/completions"):
                if _STREAM_RE.search(request.body) is not None:
                    events = _STREAM_USAGE if _USAGE_RE.search(request.body) else _STREAM
                    self._begin(events, request.keep_alive)
                elif self._delays.first_byte > 0:
                    self._begin([_COMPLETION], request.keep_alive)
                else:
                    self._finish(_COMPLETION, request.keep_alive)
            elif request.method == b"GET" and request.url in (b"/health", b"/ping"):
                self._finish(_HEALTH, request.keep_alive)
            else:
                self._finish(_NOT_FOUND, request.keep_alive)

    def _finish(self, data: bytes, keep_alive: bool) -> None:
        if self._transport is None:
            return
        self._transport.write(data)
        if not keep_alive:
            self._transport.close()
            self._transport = None  # anything pipelined after a close is dropped

    def _begin(self, pieces: list[bytes], keep_alive: bool) -> None:
        self._pieces = deque(pieces)
        self._keep_alive = keep_alive
        self._schedule(self._delays.first_byte)

    def _schedule(self, delay: float) -> None:
        # Even with no delay, the next piece waits one loop turn, so each leaves in its own send()
        # as a real token stream does, instead of 20 events in one segment.
        if delay > 0:
            self._timer = self._loop.call_later(delay, self._step)
        else:
            self._timer = self._loop.call_soon(self._step)

    def _step(self) -> None:
        self._timer = None
        pieces = self._pieces
        if pieces is None or self._transport is None:
            return
        piece = pieces.popleft()
        if pieces:
            self._transport.write(piece)
            self._schedule(self._delays.chunk)
            return
        self._pieces = None
        self._finish(piece, self._keep_alive)
        self._answer_pending()


async def serve(host: str, port: int, delays: _Delays) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _UpstreamProtocol(delays), host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--first-byte-delay", type=float, default=0.0, help="seconds")
    args = parser.parse_args(argv)
    delays = _Delays(first_byte=args.first_byte_delay, chunk=args.chunk_delay)
    uvloop.run(serve(args.host, args.port, delays))


if __name__ == "__main__":
    main()
