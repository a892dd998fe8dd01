"""A fake OpenAI and Anthropic upstream that costs next to nothing, so it is never what the bench
measures.

Raw asyncio Protocol + httptools: no framework, canned bytes built once, one `transport.write` per
response (per chunk for streams). It answers `POST /v1/chat/completions` with a `chat.completion`
(with usage), or, when the body asks for `"stream": true`, a 20-chunk `chat.completion.chunk` SSE
stream in chunked transfer-encoding, plus the usage chunk (`"choices": []`) when the body asks for
`"include_usage": true`, then `data: [DONE]`. It answers `POST /v1/messages` in Anthropic's wire
format (as tests/fakes/anthropic_wire.py writes it): a `message` with usage, or a stream of
`message_start`, `content_block_start`, `ping`, 20 `content_block_delta` text deltas,
`content_block_stop`, `message_delta` (end_turn, usage) and `message_stop`, one event per HTTP
chunk. Neither answer echoes the requested model: the canned bytes are never patched.
`GET /health` answers 200 for readiness polls.

For the chaos run, `--rate-limit-ratio R` answers that share of the calls with a 429 and a
`Retry-After` of one of the `--retry-after` seconds (drawn by a random generator seeded with
`--seed`, so runs repeat), in the caller's dialect; `--log FILE` writes one line per call,
`<monotonic seconds> <status> <retry-after>`, unbuffered, so the lines survive a killed process.

Run: `python -m bench.upstream --port P [--chunk-delay S] [--first-byte-delay S]
[--rate-limit-ratio R --retry-after 1,2 --seed N] [--log FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import time
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
_MSG_ID = "msg_bench00000000000000000000"
_CLAUDE = "claude-sonnet-4-6"
# message_delta's usage is cumulative and carries only these keys (streaming reference).
_DELTA_USAGE_KEYS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)
_HAIKU = "Wooden gate lifts slow / the river keeps its own time / light slides through the gap"


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
                        "content": _HAIKU,
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


def _anthropic_usage(output_tokens: int) -> dict[str, object]:
    return {
        "input_tokens": 24,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _message(content: list[dict[str, str]], final: bool) -> dict[str, object]:
    return {
        "id": _MSG_ID,
        "type": "message",
        "role": "assistant",
        "model": _CLAUDE,
        "content": content,
        "stop_reason": "end_turn" if final else None,
        "stop_sequence": None,
        "stop_details": None,
        # message_start carries the real input count and a placeholder output count of 1, as in
        # the streaming reference's example.
        "usage": _anthropic_usage(CHUNKS if final else 1),
    }


def _anthropic_message() -> bytes:
    body = orjson.dumps(_message([{"type": "text", "text": _HAIKU}], final=True))
    head = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: application/json\r\n"
        b"request-id: req_bench\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


def _named_sse(data: dict[str, object]) -> bytes:
    """Anthropic frames every event with its name, equal to the data's `type`."""
    name = str(data["type"]).encode()
    return _http_chunk(b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n")


def _anthropic_stream() -> list[bytes]:
    """The stream as a list of HTTP chunks: the first carries the response head too."""
    events: list[dict[str, object]] = [
        {"type": "message_start", "message": _message([], final=False)},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
        for t in (f"tok{i} " for i in range(1, CHUNKS + 1))
    ]
    usage = _anthropic_usage(CHUNKS)
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None, "stop_details": None},
            "usage": {k: usage[k] for k in _DELTA_USAGE_KEYS},
        },
        {"type": "message_stop"},
    ]
    chunks = [_named_sse(e) for e in events]
    chunks[-1] += b"0\r\n\r\n"
    head = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/event-stream; charset=utf-8\r\n"
        b"Cache-Control: no-cache\r\n"
        b"request-id: req_bench\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunks[0] = head + chunks[0]
    return chunks


_COMPLETION = _completion()
_STREAM = _stream_events(with_usage=False)
_STREAM_USAGE = _stream_events(with_usage=True)
_MESSAGE = _anthropic_message()
_MESSAGE_STREAM = _anthropic_stream()
_HEALTH = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

def _rate_limited(body: object, retry_after: int) -> bytes:
    data = orjson.dumps(body)
    return (
        b"HTTP/1.1 429 Too Many Requests\r\n"
        b"Content-Type: application/json\r\n"
        b"Retry-After: " + str(retry_after).encode() + b"\r\n"
        b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data
    )


# Each provider's own 429 body (OpenAI's error object; Anthropic's `rate_limit_error`).
_OPENAI_429 = {
    "error": {
        "message": "Rate limit reached for requests (bench fake upstream).",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
_ANTHROPIC_429 = {
    "type": "error",
    "error": {"type": "rate_limit_error", "message": "Rate limited (bench fake upstream)."},
}
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


class _Chaos:
    """The 429 switch and the call log; one per process, shared by its connections."""

    def __init__(self, ratio: float, retry_after: list[int], seed: int, log: str | None) -> None:
        self._ratio = ratio
        self._choices = retry_after
        self._random = random.Random(seed)
        self._openai = {ra: _rate_limited(_OPENAI_429, ra) for ra in retry_after}
        self._anthropic = {ra: _rate_limited(_ANTHROPIC_429, ra) for ra in retry_after}
        # O_APPEND and one write per line: nothing is held in a buffer a kill would lose.
        self._log = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if log else -1

    def call(self, anthropic: bool) -> bytes | None:
        """The 429 to answer this call with, or None to answer it normally; logs the call."""
        retry_after = 0
        if self._ratio > 0 and self._random.random() < self._ratio:
            retry_after = self._random.choice(self._choices)
        if self._log >= 0:
            status = 429 if retry_after else 200
            os.write(self._log, b"%.6f %d %d\n" % (time.monotonic(), status, retry_after))
        if not retry_after:
            return None
        return (self._anthropic if anthropic else self._openai)[retry_after]


class _UpstreamProtocol(asyncio.Protocol):
    """One connection; requests are answered in order (pipelined ones wait in `_pending`).

    A paced answer is a list of pieces written by loop callbacks, not a task per request: the
    upstream shares its core with the load generator, so it must stay cheap."""

    def __init__(self, delays: _Delays, chaos: _Chaos | None) -> None:
        self._delays = delays
        self._chaos = chaos
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
            if (
                self._chaos is not None
                and request.method == b"POST"
                and request.url.startswith((b"/v1/chat/completions", b"/v1/messages"))
                and (refusal := self._chaos.call(request.url.startswith(b"/v1/m"))) is not None
            ):
                self._finish(refusal, request.keep_alive)
            elif request.method == b"POST" and request.url.startswith(b"/v1/chat/completions"):
                if _STREAM_RE.search(request.body) is not None:
                    events = _STREAM_USAGE if _USAGE_RE.search(request.body) else _STREAM
                    self._begin(events, request.keep_alive)
                else:
                    self._whole(_COMPLETION, request.keep_alive)
            elif request.method == b"POST" and request.url.startswith(b"/v1/messages"):
                if _STREAM_RE.search(request.body) is not None:
                    self._begin(_MESSAGE_STREAM, request.keep_alive)
                else:
                    self._whole(_MESSAGE, request.keep_alive)
            elif request.method == b"GET" and request.url in (b"/health", b"/ping"):
                self._finish(_HEALTH, request.keep_alive)
            else:
                self._finish(_NOT_FOUND, request.keep_alive)

    def _whole(self, data: bytes, keep_alive: bool) -> None:
        if self._delays.first_byte > 0:
            self._begin([data], keep_alive)
        else:
            self._finish(data, keep_alive)

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


async def serve(host: str, port: int, delays: _Delays, chaos: _Chaos | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _UpstreamProtocol(delays, chaos), host, port, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--first-byte-delay", type=float, default=0.0, help="seconds")
    parser.add_argument(
        "--rate-limit-ratio", type=float, default=0.0, help="share of calls answered 429"
    )
    parser.add_argument(
        "--retry-after",
        default="1",
        help="comma-separated Retry-After seconds the 429s draw from (default 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the 429 draws")
    parser.add_argument("--log", help="append one line per call: monotonic s, status, retry-after")
    args = parser.parse_args(argv)
    retry_after = [int(x) for x in args.retry_after.split(",")]
    if not 0.0 <= args.rate_limit_ratio <= 1.0 or min(retry_after) < 1:
        parser.error("--rate-limit-ratio must be in [0, 1] and each --retry-after >= 1")
    delays = _Delays(first_byte=args.first_byte_delay, chunk=args.chunk_delay)
    chaos = None
    if args.rate_limit_ratio > 0 or args.log:
        chaos = _Chaos(args.rate_limit_ratio, retry_after, args.seed, args.log)
    uvloop.run(serve(args.host, args.port, delays, chaos))


if __name__ == "__main__":
    main()
