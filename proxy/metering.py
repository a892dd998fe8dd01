"""What a request cost in tokens: read from the provider's own bytes, or estimated.

Same-dialect answers are forwarded as bytes, so their usage is read from those bytes:
- a non-stream body: `body_usage` decodes its usage object alone (msgspec skips the rest in C);
- a stream: a `StreamTap` keeps references to the chunks it forwards (no copy, up to
  `KEEP_BYTES`) and, once the stream is over, finds the usage objects with `find`/`rfind` and
  decodes only those, with Structs that read only the usage fields. Nothing is scanned per
  chunk: Anthropic's two usage objects sit at the stream's two ends (message_start,
  message_delta) and Gemini repeats its running totals on every chunk (the last one holds the
  totals), so one look at the ends reads everything. Measured (`python -m
  tests.unit.test_metering`): +7 to 9 µs on a 20-chunk stream, ~0.2 µs per chunk and the rest
  once at its end; a string-aware JSON scan, or a decode per event, would cost several times that.

A stream that ends without its final usage (cut, the client gone, a provider that never sends
it) gets an estimate and `Exchange.estimated`: the prompt counted from the request, the output
from the text the caller received, both with tiktoken's cl100k_base; what the provider did report
(Anthropic's message_start input, Gemini's running totals) is kept.

No IO and no clock: the pipes (stream.py, translate.py) pass in the times and the outcome.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

import msgspec

from adapters.anthropic import wire as anthropic_wire
from adapters.anthropic.response import to_canonical_usage as anthropic_usage
from adapters.canonical import Event, StreamError, TextDelta, ThinkingDelta, ToolArgsDelta, Usage
from adapters.dialects import ADAPTERS
from adapters.gemini import wire as gemini_wire
from adapters.gemini.response import canonical_usage as gemini_usage
from adapters.openai.envelope import canonical_usage as openai_usage
from adapters.openai.envelope import decode_usage
from adapters.providers import Dialect
from adapters.sse import MAX_EVENT_BYTES, SSEDecoder, SSEError, SSEEvent
from proxy.calls import Call
from proxy.counting import _encoding, estimate_tokens
from proxy.dispatch import Exchange
from proxy.errors import SluiceError
from proxy.limits import estimate_prompt_tokens

__all__ = [
    "KEEP_BYTES",
    "PROMPT_COUNT_MAX",
    "TEXT_COUNT_MAX",
    "AnthropicTap",
    "GeminiTap",
    "StreamTap",
    "body_usage",
    "count_text",
    "estimate_input",
    "estimate_usage",
    "said_text",
]

# The forwarded chunks kept, by reference, to estimate a stream that ends without its usage;
# the output past them is extrapolated from their byte count. (Decoding 4 MB for an estimate
# takes ~60 ms, only for a stream that long that ended without its usage.)
KEEP_BYTES = 4 << 20
# Past KEEP_BYTES, the last bytes still kept, so the final usage can be read: it is in the last
# event, and an upstream event is bounded by the SSE decoder's bound.
_TAIL_BYTES = MAX_EVENT_BYTES
# A usage object is ~200 bytes; its scan gives up here, so a malformed stream cannot make it
# walk megabytes.
_OBJECT_MAX = 64 << 10
# tiktoken counts ~15 MB/s, on the event loop: text past this is extrapolated from the tokens
# per character of the part counted, which bounds one count to ~20 ms.
TEXT_COUNT_MAX = 256 << 10
# A request body past this is estimated from its size (limits.estimate_prompt_tokens) instead
# of being decoded and tokenized, for the same reason.
PROMPT_COUNT_MAX = 256 << 10
# Anthropic's message_delta names itself (event line, type) just before its usage object.
_DELTA_NAME_WINDOW = 1 << 10

# A JSON string (escapes included) or a brace: braces matched outside strings split Gemini's
# streamed array into its elements, whatever text they hold.
_STRING_OR_BRACE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}]', re.DOTALL)
_OBJECT_VALUE = re.compile(rb"\s*:\s*\{")
_ARRAY_START = re.compile(rb"\s*\[")
# Inside a JSON string a quote is always escaped, so a key followed by `:` and an object is
# never text a model wrote.
_ANTHROPIC_KEY = b'"usage"'
_GEMINI_KEY = b'"usageMetadata"'
# The last chunk of a Gemini stream that ended as it should (a blocked prompt has no candidate).
_GEMINI_FINISH = b'"finishReason"'
_GEMINI_BLOCKED = b'"blockReason"'


class _AnthropicBody(msgspec.Struct, gc=False):
    usage: anthropic_wire.Usage | None = None


class _GeminiBody(msgspec.Struct, rename="camel", gc=False):
    usage_metadata: gemini_wire.UsageMetadata | None = None


_ANTHROPIC_USAGE = msgspec.json.Decoder(anthropic_wire.Usage)
_GEMINI_USAGE = msgspec.json.Decoder(gemini_wire.UsageMetadata)
_ANTHROPIC_BODY = msgspec.json.Decoder(_AnthropicBody)
# generateContent answers an object; a streamed array read whole is a list of chunks.
_GEMINI_BODY = msgspec.json.Decoder(_GeminiBody | list[_GeminiBody])


# --- non-stream bodies ------------------------------------------------------------------------


def body_usage(dialect: Dialect, body: bytes) -> Usage | None:
    """The usage a provider reported in a non-stream answer of its dialect; None when the body
    has none or cannot be read."""
    return _BODY_USAGE[dialect](body)


def _openai_body(body: bytes) -> Usage | None:
    usage = decode_usage(body)[0]
    return openai_usage(usage) if usage is not None else None


def _anthropic_body(body: bytes) -> Usage | None:
    try:
        usage = _ANTHROPIC_BODY.decode(body).usage
    except msgspec.DecodeError:
        return None
    return anthropic_usage(usage) if usage is not None else None


def _gemini_body(body: bytes) -> Usage | None:
    try:
        answer = _GEMINI_BODY.decode(body)
    except msgspec.DecodeError:
        return None
    if isinstance(answer, list):  # every chunk has the running totals: the last one is whole
        metas = [chunk.usage_metadata for chunk in answer if chunk.usage_metadata is not None]
        meta = metas[-1] if metas else None
    else:
        meta = answer.usage_metadata
    return gemini_usage(meta) if meta is not None else None


_BODY_USAGE: dict[Dialect, Callable[[bytes], Usage | None]] = {
    "openai": _openai_body,
    "anthropic": _anthropic_body,
    "gemini": _gemini_body,
}


# --- estimates --------------------------------------------------------------------------------


def count_text(texts: Iterable[str]) -> int:
    """Tokens of text with cl100k_base; past TEXT_COUNT_MAX characters, extrapolated."""
    text = "".join(texts)
    if len(text) <= TEXT_COUNT_MAX:
        return len(_encoding().encode_ordinary(text)) if text else 0
    counted = len(_encoding().encode_ordinary(text[:TEXT_COUNT_MAX]))
    return math.ceil(counted * len(text) / TEXT_COUNT_MAX)


def estimate_input(call: Call | None) -> int:
    """Tokens of the caller's prompt, counted from its canonical form; from the body's size
    when it is large or cannot be read."""
    if call is None:
        return 0
    if len(call.body) > PROMPT_COUNT_MAX:
        return estimate_prompt_tokens(len(call.body))
    try:
        return estimate_tokens(call.canonical())
    except (SluiceError, ValueError):  # canonical() refuses what it cannot read with a 400
        return estimate_prompt_tokens(len(call.body))


def estimate_usage(reported: Usage | None, call: Call | None, said: int) -> Usage:
    """The usage of a stream whose provider never reported the whole of it: what it did report
    (input counts up front, running totals) kept, the rest estimated; `said` is the output
    counted from the text the caller was given."""
    if reported is None:
        return Usage(input_tokens=estimate_input(call), output_tokens=said)
    return Usage(
        input_tokens=reported.input_tokens or estimate_input(call),
        # A running total (Gemini) also counts reasoning the text never showed.
        output_tokens=max(said, reported.output_tokens),
        cached_tokens=reported.cached_tokens,
        cache_write_tokens=reported.cache_write_tokens,
        reasoning_tokens=reported.reasoning_tokens,
    )


def said_text(event: Event, said: list[str]) -> None:
    """Append what a canonical event gave the caller to read (text, thinking, tool arguments)."""
    match event:
        case TextDelta(text=text) | ThinkingDelta(text=text):
            said.append(text)
        case ToolArgsDelta(partial_json=text):
            said.append(text)


# --- reading usage out of raw stream bytes ---------------------------------------------------


def _object_at(buf: bytes, key_end: int) -> bytes | None:
    """The JSON object that is the value of the key ending at `key_end`; None when the value
    is not an object or is cut short.

    Braces are matched without regard to strings: a usage object holds numbers and enum names
    only, and a cut that fools the count still fails to decode. (A string-aware scan costs
    ~4 µs per object in Python; this one ~0.5 µs.)
    """
    if buf.startswith(b":{", key_end):  # compact JSON (Anthropic), then Gemini's spacing
        start = key_end + 1
    elif buf.startswith(b": {", key_end):
        start = key_end + 2
    else:
        m = _OBJECT_VALUE.match(buf, key_end)
        if m is None:
            return None
        start = m.end() - 1
    pos = start + 1
    limit = start + _OBJECT_MAX
    depth = 1
    while depth:
        close = buf.find(b"}", pos, limit)
        if close < 0:
            return None
        depth += buf.count(b"{", pos, close) - 1
        pos = close + 1
    return buf[start:pos]


def _first_object(buf: bytes, key: bytes) -> tuple[int, bytes] | None:
    """(position, object) of the first `key` in `buf` whose value is an object."""
    at = buf.find(key)
    while at >= 0:
        obj = _object_at(buf, at + len(key))
        if obj is not None:
            return at, obj
        at = buf.find(key, at + 1)
    return None


def _last_object(buf: bytes, key: bytes) -> tuple[int, bytes] | None:
    """(position, object) of the last `key` in `buf` whose value is a whole object."""
    at = buf.rfind(key)
    while at >= 0:
        obj = _object_at(buf, at + len(key))
        if obj is not None:
            return at, obj
        at = buf.rfind(key, 0, at)
    return None


def _array_elements(data: bytes) -> Iterator[bytes]:
    """The top-level objects of a streamed JSON array, whatever its whitespace; a last one cut
    short is left out."""
    depth = start = 0
    for token in _STRING_OR_BRACE.finditer(data):
        brace = data[token.start()]
        if brace == 0x7B:
            if depth == 0:
                start = token.start()
            depth += 1
        elif brace == 0x7D and depth > 0:
            depth -= 1
            if depth == 0:
                yield data[start:token.end()]


def _events(head: bytes, chunks: list[bytes]) -> Iterator[SSEEvent]:
    """The events of a same-dialect stream's kept bytes, as its dialect's decoder takes them."""
    if _ARRAY_START.match(head):  # Gemini without ?alt=sse: one JSON array
        for element in _array_elements(head):
            yield SSEEvent(element.decode("utf-8", "replace"))
        return
    events = SSEDecoder()
    try:
        for chunk in chunks:
            yield from events.feed(chunk)
    except SSEError:
        return  # the framing broke here; what came before was still given


# --- the taps ---------------------------------------------------------------------------------


class StreamTap:
    """Watches a same-dialect stream on its way to the caller: the bytes pass untouched and are
    kept by reference; at the end, `finish` puts time, outcome and usage on the exchange.

    A subclass per dialect reads that dialect's usage (`_reported`); the OpenAI one
    (stream.UsageTap) also frames the stream to cut the usage chunk the gateway asked for.
    """

    __slots__ = ("_call", "_kept", "_size", "_tail", "_tail_size", "ex")
    dialect: ClassVar[Dialect]

    def __init__(self, ex: Exchange, call: Call | None = None) -> None:
        self.ex = ex
        self._call = call
        self._kept: list[bytes] = []
        self._size = 0  # every byte fed
        self._tail: deque[bytes] = deque()  # past KEEP_BYTES: the last _TAIL_BYTES or so
        self._tail_size = 0

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.ex.request_id} bytes={self._size} "
                f"kept={len(self._kept)} tail={self._tail_size}>")

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to forward now: `chunk` itself."""
        self._size += len(chunk)
        if self._size <= KEEP_BYTES:
            self._kept.append(chunk)
        else:
            self._keep_tail(chunk)
        return chunk

    def _keep_tail(self, chunk: bytes) -> None:
        tail = self._tail
        tail.append(chunk)
        self._tail_size += len(chunk)
        while self._tail_size - len(tail[0]) >= _TAIL_BYTES:
            self._tail_size -= len(tail.popleft())

    def close(self) -> bytes:
        """Bytes still held back at the end of the stream (none: nothing is held)."""
        return b""

    def first_byte(self, now: float) -> None:
        self.ex.first_byte = now

    def finish(self, outcome: str, read_for: float) -> None:
        """The stream is over: `read_for` seconds were spent reading it, and it ended `outcome`
        (ok, cut, client_closed). Synchronous, as it runs in the pipe's `finally`, also when
        the handler is cancelled."""
        ex = self.ex
        ex.body_wait += read_for
        if outcome != "ok":
            ex.outcome = outcome
        head = b"".join(self._kept)
        last = b"".join(self._tail) if self._tail else head
        reported, final = self._reported(head, last)
        if final:
            ex.usage = reported
            return
        said, broken = self._said(head)
        if broken and ex.outcome == "ok":
            ex.outcome = "cut"  # the provider's own error event, or no end at all
        ex.usage = estimate_usage(reported, self._call, said)
        ex.estimated = True

    def _reported(self, head: bytes, last: bytes) -> tuple[Usage | None, bool]:
        """(usage the provider reported, whether it is the whole of it). `head` is the start of
        the stream, `last` its end (the same bytes unless it outgrew KEEP_BYTES)."""
        return None, False

    def _said(self, head: bytes) -> tuple[int, bool]:
        """(tokens the caller was given, whether the stream broke): the kept bytes decoded with
        the dialect's stream decoder, the bytes past them counted in proportion."""
        decoder = ADAPTERS[self.dialect].StreamDecoder(model=self.ex.upstream_model)
        said: list[str] = []
        broken = False
        for sse_event in _events(head, self._kept):
            for event in decoder.feed(sse_event):
                broken = broken or isinstance(event, StreamError)
                said_text(event, said)
        rest = self._size - len(head)
        if not rest:  # the whole stream was kept: an unfinished one ends in StreamError
            broken = broken or any(isinstance(e, StreamError) for e in decoder.close())
        tokens = count_text(said)
        if rest:
            tokens += math.ceil(rest * tokens / len(head)) if tokens else math.ceil(rest / 4)
        return tokens, broken


class AnthropicTap(StreamTap):
    """Anthropic: usage in message_start (input and cache counts, a placeholder output count)
    and in message_delta (cumulative counts: output, and sometimes input and cache again)."""

    __slots__ = ()
    dialect = "anthropic"

    def _reported(self, head: bytes, last: bytes) -> tuple[Usage | None, bool]:
        first = _first_object(head, _ANTHROPIC_KEY)
        end = _last_object(last, _ANTHROPIC_KEY)
        if end is not None and first is not None and last is head and end[0] == first[0]:
            end = None  # one usage object in all
        usage = anthropic_wire.Usage()
        got = final = False
        for buf, hit in ((head, first), (last, end)):
            if hit is None:
                continue
            at, obj = hit
            try:
                counts = _ANTHROPIC_USAGE.decode(obj)
            except msgspec.DecodeError:
                continue
            got = True
            # message_start is the first event, so nothing names message_delta before its
            # usage; message_delta's own event line and type come before its usage.
            final = final or buf.find(b"message_delta", max(0, at - _DELTA_NAME_WINDOW), at) >= 0
            _merge(usage, counts)
        if not got:
            return None, False
        if not final:
            usage.output_tokens = 0  # message_start's output count is a placeholder
        return anthropic_usage(usage), final


def _merge(into: anthropic_wire.Usage, counts: anthropic_wire.Usage) -> None:
    # message_delta's counts are cumulative: each one given replaces the earlier value.
    if counts.input_tokens is not None:
        into.input_tokens = counts.input_tokens
    if counts.output_tokens is not None:
        into.output_tokens = counts.output_tokens
    if counts.cache_creation_input_tokens is not None:
        into.cache_creation_input_tokens = counts.cache_creation_input_tokens
    if counts.cache_read_input_tokens is not None:
        into.cache_read_input_tokens = counts.cache_read_input_tokens
    if counts.output_tokens_details is not None:
        into.output_tokens_details = counts.output_tokens_details


class GeminiTap(StreamTap):
    """Gemini (SSE, or the streamed JSON array without ?alt=sse): every chunk carries
    usageMetadata with the counts so far; the last one, with the finishReason, the totals."""

    __slots__ = ()
    dialect = "gemini"

    def _reported(self, head: bytes, last: bytes) -> tuple[Usage | None, bool]:
        buf = last
        found = _last_object(buf, _GEMINI_KEY)
        if found is None and last is not head:
            buf, found = head, _last_object(head, _GEMINI_KEY)
        if found is None:
            return None, False
        at, obj = found
        try:
            meta = _GEMINI_USAGE.decode(obj)
        except msgspec.DecodeError:
            return None, False
        # The counts are whole when their chunk is the last one; the chunk began after the
        # previous chunk's usage.
        begin = buf.rfind(_GEMINI_KEY, 0, at) + 1
        final = buf.find(_GEMINI_FINISH, begin) >= 0 or buf.find(_GEMINI_BLOCKED, begin) >= 0
        return gemini_usage(meta), final
