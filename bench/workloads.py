"""The two workloads every target is loaded with: one chat request, streamed or not."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

__all__ = [
    "CLIENT_KEY",
    "MODEL",
    "NON_STREAM",
    "PATH",
    "STREAM",
    "WORKLOADS",
    "Workload",
    "raw_request",
]

MODEL = "gpt-4o-mini"
PATH = "/v1/chat/completions"
# Every target is sent the same caller credential, as the openai SDK always sends one.
CLIENT_KEY = "sk-bench-client"

_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a haiku about a sluice gate on a quiet river."},
]


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    stream: bool
    body: bytes


# Streams do not ask for `stream_options.include_usage`, as the openai SDK does not by default:
# the gateway asks upstream for it and strips the usage chunk, and that work is part of its cost.
NON_STREAM = Workload(
    "non-stream", False, orjson.dumps({"model": MODEL, "messages": _MESSAGES, "max_tokens": 64})
)
STREAM = Workload(
    "stream-20",
    True,
    orjson.dumps({"model": MODEL, "messages": _MESSAGES, "max_tokens": 64, "stream": True}),
)
WORKLOADS = (NON_STREAM, STREAM)


def raw_request(body: bytes, port: int, *, keep_alive: bool = True) -> bytes:
    """The whole HTTP/1.1 request as one buffer, so a client sends it with one write."""
    connection = b"keep-alive" if keep_alive else b"close"
    head = (
        b"POST " + PATH.encode() + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1:" + str(port).encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Accept: application/json\r\n"
        b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\n"
        b"Connection: " + connection + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body
