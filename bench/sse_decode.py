"""Micro-bench of adapters/sse.py: µs per event through SSEDecoder, beside a naive baseline.

Run: `.venv/bin/python bench/sse_decode.py`. The baseline is the usual line-by-line decoder
(incremental UTF-8 decode of each chunk, `splitlines`, a str per field), as an SSE client
library writes it; it shows what the bytes-level core and its one-event fast path buy.
"""

from __future__ import annotations

import codecs
import timeit
from collections.abc import Callable

from adapters.sse import SSEDecoder

__all__ = ["main"]

_OPENAI = (
    b'data: {"id":"chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012","object":"chat.completion.chunk",'
    b'"created":1732800000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1",'
    b'"choices":[{"index":0,"delta":{"content":" hello there, friend"},"logprobs":null,'
    b'"finish_reason":null}],"usage":null,"service_tier":"default"}\n\n'
)
_ANTHROPIC = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":" hello there, friend, how are you doing on this fine day? I am well."}}\n\n'
)
_NUMBER = 20_000
_REPEAT = 40


class _Baseline:
    """A straightforward str decoder (the shape of httpx-sse's), for comparison only."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._tail = ""
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        text = self._tail + self._utf8.decode(chunk)
        lines = text.splitlines(keepends=True)
        self._tail = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
        out: list[tuple[str, str]] = []
        for raw in lines:
            line = raw.rstrip("\r\n")
            if not line:
                if self._data:
                    out.append((self._event or "message", "\n".join(self._data)))
                self._data, self._event = [], ""
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
        return out


def _best_us(rows: list[tuple[str, Callable[[bytes], object], bytes, int]]) -> list[float]:
    # Interleaved, best of many: on a shared box the rows see the same noise, and the minimum
    # is the run least disturbed by it.
    best = [float("inf")] * len(rows)
    for _ in range(_REPEAT):
        for i, (_, fn, chunk, events) in enumerate(rows):
            seconds = timeit.timeit(lambda fn=fn, chunk=chunk: fn(chunk), number=_NUMBER)
            best[i] = min(best[i], seconds / (_NUMBER * events) * 1e6)
    return best


def main() -> None:
    warm = SSEDecoder()
    warm.feed(_OPENAI)  # decides the BOM check, as any stream past its first chunk
    base = _Baseline()
    four = _OPENAI * 4
    rows = [
        ("OpenAI 1 event/chunk   feed()", warm.feed, _OPENAI, 1),
        ("OpenAI 1 event/chunk   feed_data()", warm.feed_data, _OPENAI, 1),
        ("OpenAI 1 event/chunk   core, fast path", warm._parse, _OPENAI, 1),
        ("OpenAI 1 event/chunk   core, general path", warm._parse_any, _OPENAI, 1),
        ("OpenAI 1 event/chunk   baseline", base.feed, _OPENAI, 1),
        ("OpenAI 4 events/chunk  feed()", warm.feed, four, 4),
        ("OpenAI 4 events/chunk  baseline", base.feed, four, 4),
        ("Anthropic 1 event/chunk feed()", warm.feed, _ANTHROPIC, 1),
        ("Anthropic 1 event/chunk core, fast path", warm._parse, _ANTHROPIC, 1),
        ("Anthropic 1 event/chunk core, general path", warm._parse_any, _ANTHROPIC, 1),
        ("Anthropic 1 event/chunk baseline", base.feed, _ANTHROPIC, 1),
    ]
    print(f"{len(_OPENAI)}-byte OpenAI event, {len(_ANTHROPIC)}-byte Anthropic event")
    for (name, *_), us in zip(rows, _best_us(rows), strict=True):
        print(f"{name:42s} {us:6.2f} µs/event")


if __name__ == "__main__":
    main()
