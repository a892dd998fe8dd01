"""OpenAI chat completion streams to and from canonical stream events.

`StreamDecoder` (provider side) reads one `chat.completion.chunk` per SSE event:
- the first chunk starts the stream; `delta.reasoning_content` (DeepSeek, vLLM) or
  `delta.reasoning` (OpenRouter) feed a thinking block (its signature may come in a LiteLLM
  `thinking_blocks` entry, as this module's encoder sends it), `delta.content` (and
  `delta.refusal`) a text block, and `delta.tool_calls` one tool call block per `index`,
  started when the index is first seen (with its id and name) and fed its argument fragments;
- one block is open at a time: a block stops when one of another kind, or another tool call,
  starts, and at `finish_reason`. A fragment for a tool call that already stopped (a provider
  interleaving parallel calls; none we know of does) is a StreamError rather than a block
  reopened behind the caller's back;
- `finish_reason` and `usage` (the `choices: []` chunk that `stream_options.include_usage`
  asks for, or usage on any chunk) are kept until `data: [DONE]`, which ends the stream;
- an `error` key (OpenAI sends `{"error": {...}}` alone; OpenRouter puts it on a chunk) is a
  StreamError; so is an end of stream with neither `[DONE]` nor a finish reason.

`StreamEncoder` (caller side) writes the chunks OpenAI sends: a first chunk with
`delta.role: "assistant"`, `delta.content` for text, `delta.reasoning_content` for thinking,
`delta.tool_calls` with index, id, type and name and empty arguments when a call starts, then
its argument fragments; a chunk with `finish_reason`; with `include_usage`, `"usage": null` on
every chunk and a last `choices: []` chunk with the usage; `data: [DONE]` at close. A thinking
signature is sent as a LiteLLM `thinking_blocks` entry holding the whole block (its text and
signature), so that a client that keeps `thinking_blocks` echoes back a block its provider
accepts. After a mid-stream error event, close() writes nothing more: OpenAI ends its stream
with the error.

Chunks are framed from bytes built once per stream; a delta costs one msgspec string encode.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from adapters.canonical import (
    BlockStart,
    BlockStop,
    CanonicalError,
    Event,
    FinishReason,
    StreamEnd,
    StreamError,
    StreamStart,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    Usage,
    pack_call_id,
    unpack_call_id,
)
from adapters.openai.envelope import parse_error
from adapters.openai.errors import from_error_info, stream_error_event
from adapters.openai.response import (
    completion_id,
    finish_from_openai,
    finish_to_openai,
    usage_from_openai,
    usage_to_openai,
)
from adapters.openai.wire import CHUNK, ENCODE, DeltaIn, ToolCallDeltaIn
from adapters.sse import DONE, SSEEvent

__all__ = ["StreamDecoder", "StreamEncoder"]

_Kind = Literal["text", "thinking", "tool_call"]
_CUT: Final = "The upstream stream ended before it finished."


class StreamDecoder:
    """Provider chunks (already split into SSE events) -> canonical events."""

    __slots__ = (
        "_calls",
        "_finish",
        "_kind",
        "_model",
        "_next",
        "_open",
        "_refusal",
        "_started",
        "_state",
        "_usage",
    )

    def __init__(self, *, model: str) -> None:
        self._model = model
        self._started = False
        self._state: Literal["open", "done", "failed"] = "open"
        self._open: int | None = None  # the canonical index of the open block
        self._kind: _Kind | None = None
        self._next = 0  # the index the next block gets
        self._calls: dict[int, int] = {}  # the provider's tool call index -> block index
        self._finish: str | None = None
        self._refusal = False
        self._usage: Usage | None = None

    def __repr__(self) -> str:
        return (f"<openai.StreamDecoder state={self._state} open={self._open} kind={self._kind}"
                f" blocks={self._next} finish={self._finish!r}>")

    def feed(self, event: SSEEvent) -> list[Event]:
        if self._state != "open":
            return []
        data = event.data
        if data == "[DONE]":
            return self._end()
        try:
            chunk = CHUNK.decode(data)
        except msgspec.MsgspecError as err:
            return self._fail(CanonicalError(502, f"The upstream sent a chunk that is not a "
                                                  f"chat completion chunk: {err}", "server"))
        if chunk.error is not None:
            return self._fail(_stream_error(data))
        out: list[Event] = []
        if not self._started:
            self._started = True
            out.append(StreamStart(chunk.id, chunk.model or self._model))
        if chunk.usage is not None:
            self._usage = usage_from_openai(chunk.usage)
        for choice in chunk.choices or ():
            if choice.index != 0:
                continue  # the gateway asks for one choice; others are not this answer
            if choice.delta is not None and not self._delta(choice.delta, out):
                return out + self._fail(CanonicalError(
                    502, "The upstream interleaved the arguments of parallel tool calls.",
                    "server"))
            if choice.finish_reason is not None:
                self._finish = choice.finish_reason
                self._stop(out)
        return out

    def close(self) -> list[Event]:
        if self._state != "open":
            return []
        if self._finish is None:
            return self._fail(CanonicalError(502, _CUT, "server"))
        return self._end()  # finished without [DONE]: the answer is whole

    def _delta(self, delta: DeltaIn, out: list[Event]) -> bool:
        text = delta.content
        if text and self._kind == "text" and delta.tool_calls is None:
            # The usual chunk: one more piece of the open text block.
            out.append(TextDelta(self._open or 0, text))
            return True
        reasoning = delta.reasoning_content or delta.reasoning
        if reasoning:
            self._switch("thinking", out)
            out.append(ThinkingDelta(self._next - 1, reasoning))
        for block in delta.thinking_blocks or ():
            # Its text repeats reasoning_content; only the signature is news.
            if block.signature:
                self._switch("thinking", out)
                out.append(ThinkingDelta(self._next - 1, signature=block.signature))
        if delta.content:
            self._switch("text", out)
            out.append(TextDelta(self._next - 1, delta.content))
        if delta.refusal:
            self._refusal = True
            self._switch("text", out)
            out.append(TextDelta(self._next - 1, delta.refusal))
        if delta.tool_calls:
            for call in delta.tool_calls:
                if not self._tool(call, out):
                    return False
        return True

    def _switch(self, kind: _Kind, out: list[Event]) -> None:
        if self._kind == kind and kind != "tool_call":
            return
        self._stop(out)
        self._open = self._next
        self._kind = kind
        self._next += 1
        out.append(BlockStart(self._open, kind))

    def _tool(self, call: ToolCallDeltaIn, out: list[Event]) -> bool:
        key = call.index
        if key is None:  # servers that omit the index: a new id is a new call
            last = len(self._calls) - 1
            key = last + 1 if call.id or last < 0 else last
        block = self._calls.get(key)
        fn = call.function
        if block is None:
            self._stop(out)
            block = self._open = self._next
            self._kind = "tool_call"
            self._next += 1
            self._calls[key] = block
            call_id, data = unpack_call_id(call.id or f"call_{block}")
            name = fn.name if fn is not None and fn.name else ""
            out.append(BlockStart(block, "tool_call", call_id, name, data))
        elif block != self._open:
            return False
        if fn is not None and fn.arguments:
            out.append(ToolArgsDelta(block, fn.arguments))
        return True

    def _stop(self, out: list[Event]) -> None:
        if self._open is not None:
            out.append(BlockStop(self._open))
            self._open = None
            self._kind = None

    def _end(self) -> list[Event]:
        if not self._started:
            return self._fail(CanonicalError(502, "The upstream stream ended with no chunk.",
                                             "server"))
        out: list[Event] = []
        self._stop(out)
        self._state = "done"
        finish = finish_from_openai(self._finish, tool_calls=bool(self._calls),
                                    refusal=self._refusal)
        out.append(StreamEnd(finish, usage=self._usage))
        return out

    def _fail(self, error: CanonicalError) -> list[Event]:
        self._state = "failed"
        return [StreamError(error)]


def _stream_error(data: str) -> CanonicalError:
    info = parse_error(data.encode())
    # OpenRouter's mid-stream errors carry the HTTP status they would have had as `code`.
    status = 500
    if info is not None and info.code is not None and info.code.isdigit():
        status = int(info.code) if 400 <= int(info.code) <= 599 else 500
    return from_error_info(status, info)


class StreamEncoder:
    """Canonical events -> the bytes of an OpenAI chat completion stream."""

    __slots__ = (
        "_calls",
        "_closed",
        "_created",
        "_head",
        "_include_usage",
        "_model",
        "_tail",
        "_thinking",
        "_usage_head",
    )

    def __init__(self, *, model: str, include_usage: bool = False, sse: bool = True,
                 created: int = 0) -> None:
        # `sse` is for Gemini's JSON-array mode; OpenAI streams are always SSE.
        # `created` is the Unix time of the answer (adapters keep no clock).
        self._model = model
        self._include_usage = include_usage
        self._created = created
        self._head = b""  # `data: {...,"choices":[{"index":0,"delta":` once the id is known
        self._usage_head = b""
        self._tail = (b',"logprobs":null,"finish_reason":null}]'
                      + (b',"usage":null' if include_usage else b"") + b"}\n\n")
        self._calls: dict[int, int] = {}  # block index -> OpenAI tool_calls index
        self._thinking: dict[int, list[str]] = {}  # thinking text so far, for signatures
        self._closed = False

    def __repr__(self) -> str:
        return (f"<openai.StreamEncoder model={self._model!r} started={bool(self._head)} "
                f"calls={len(self._calls)} closed={self._closed}>")

    def feed(self, event: Event) -> bytes:
        if self._closed:
            return b""
        match event:
            case TextDelta(text=text):
                return self._chunk(b'{"content":' + ENCODE.encode(text) + b"}")
            case ToolArgsDelta(index=index, partial_json=fragment):
                n = self._calls.get(index)
                if n is None:
                    return b""
                return self._chunk(b'{"tool_calls":[{"index":%d,"function":{"arguments":%b}}]}'
                                   % (n, ENCODE.encode(fragment)))
            case ThinkingDelta():
                return self._thought(event)
            case BlockStart(kind="tool_call"):
                n = self._calls[event.index] = len(self._calls)
                call_id = ENCODE.encode(pack_call_id(event.tool_id or f"call_{event.index}",
                                                     event.provider_data))
                return self._chunk(b'{"tool_calls":[{"index":%d,"id":%b,"type":"function",'
                                   b'"function":{"name":%b,"arguments":""}}]}'
                                   % (n, call_id, ENCODE.encode(event.tool_name or "")))
            case BlockStart(kind="thinking"):
                self._thinking[event.index] = []
                return b""
            case BlockStart() | BlockStop():
                return b""
            case StreamStart():
                return self._start(event.id, event.created)
            case StreamEnd():
                return self._end(event.finish, event.usage)
            case StreamError(error=error):
                self._closed = True
                return stream_error_event(error)
        return b""

    def close(self) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        return DONE

    def _start(self, upstream_id: str, created: int = 0) -> bytes:
        if self._head:
            return b""
        base = (b'{"id":' + ENCODE.encode(completion_id(upstream_id))
                + b',"object":"chat.completion.chunk","created":%d,"model":'
                % (self._created or created)
                + ENCODE.encode(self._model))
        self._head = b"data: " + base + b',"choices":[{"index":0,"delta":'
        self._usage_head = b"data: " + base + b',"choices":[],"usage":'
        return self._head + b'{"role":"assistant","content":"","refusal":null}' + self._tail

    def _chunk(self, delta: bytes) -> bytes:
        if not self._head:  # no StreamStart came first; start one so the framing holds
            return self._start("") + self._head + delta + self._tail
        return self._head + delta + self._tail

    def _thought(self, event: ThinkingDelta) -> bytes:
        parts = self._thinking.get(event.index)
        fields: list[bytes] = []
        if event.text:
            if parts is not None:
                parts.append(event.text)
            fields.append(b'"reasoning_content":' + ENCODE.encode(event.text))
        if event.signature:
            text = "".join(parts or ())
            fields.append(b'"thinking_blocks":[{"type":"thinking","thinking":%b,"signature":%b}]'
                          % (ENCODE.encode(text), ENCODE.encode(event.signature)))
        if not fields:
            return b""
        return self._chunk(b"{" + b",".join(fields) + b"}")

    def _end(self, finish: FinishReason, usage: Usage | None) -> bytes:
        reason = finish_to_openai(finish).encode()
        out = b"" if self._head else self._start("")
        out += (self._head + b'{},"logprobs":null,"finish_reason":"' + reason + b'"}]'
               + (b',"usage":null' if self._include_usage else b"") + b"}\n\n")
        if self._include_usage:
            out += (self._usage_head + ENCODE.encode(usage_to_openai(usage or Usage()))
                    + b"}\n\n")
        return out
