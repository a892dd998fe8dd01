"""Anthropic streams: a provider's SSE events -> canonical events -> a caller's SSE bytes.

The documented sequence (docs: build-with-claude/streaming): `message_start` (the Message with
empty content and the input usage), then per content block `content_block_start`, one or more
`content_block_delta`, `content_block_stop`; `message_delta` (stop_reason, stop_sequence and
cumulative usage); `message_stop`. `ping` may come anywhere, and `error` replaces the rest of the
stream when the API fails mid-way.
"""

from __future__ import annotations

from typing import Any

import msgspec

from adapters import canonical
from adapters.anthropic import wire
from adapters.anthropic.errors import error_from_type, stream_error_event
from adapters.anthropic.response import (
    FINISH,
    message_id,
    out_usage,
    stop_reason,
    to_canonical_usage,
)
from adapters.canonical import (
    BlockStart,
    BlockStop,
    CanonicalError,
    StreamEnd,
    StreamError,
    StreamStart,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
)
from adapters.sse import SSEEvent

__all__ = ["REDACTED_KEY", "StreamDecoder", "StreamEncoder"]

# canonical has no streamed form of a redacted_thinking block; its encrypted data rides in the
# provider_data of the thinking block's BlockStart, where this dialect's encoder finds it.
REDACTED_KEY = "redacted_thinking"


def _broken(message: str) -> StreamError:
    # The upstream broke its own framing: a bad gateway answer, not the caller's fault.
    return StreamError(CanonicalError(502, message, "server"))


class StreamDecoder:
    """Provider stream -> canonical events. Blocks the gateway never asks for (server-tool
    blocks) are skipped, and canonical indexes count only the blocks passed on."""

    __slots__ = ("_done", "_index", "_model", "_next", "_stop", "_stop_sequence", "_usage")

    def __init__(self, *, model: str) -> None:
        self._model = model
        self._index: dict[int, int] = {}  # provider index -> canonical index
        self._next = 0
        self._usage = wire.Usage()
        self._stop: str | None = None
        self._stop_sequence: str | None = None
        self._done = False

    def __repr__(self) -> str:
        return (f"<anthropic.StreamDecoder blocks={self._next} stop={self._stop!r} "
                f"done={self._done}>")

    def feed(self, event: SSEEvent) -> list[canonical.Event]:
        if self._done:
            return []
        name = event.event
        if name is None:  # the API always names its events; a relay may not
            try:
                name = wire.BLOCK_TYPE.decode(event.data).type
            except msgspec.DecodeError:
                return []
        if name == "message_stop":
            self._done = True
            return [StreamEnd(FINISH.get(self._stop, "stop"), self._stop_sequence,
                              to_canonical_usage(self._usage))]
        decoder = wire.STREAM_DECODERS.get(name)
        if decoder is None:
            return []  # ping, and event types added after this was written
        try:
            ev = decoder.decode(event.data)
        except msgspec.DecodeError as exc:
            self._done = True
            return [_broken(f"Malformed `{name}` event from the provider: {exc}")]
        match ev:
            case wire.DeltaEvent():
                return self._delta(ev)
            case wire.BlockStartEvent():
                return self._start(ev)
            case wire.BlockStopEvent():
                index = self._index.get(ev.index)
                return [] if index is None else [BlockStop(index)]
            case wire.MessageStartEvent():
                return self._message_start(ev.message)
            case wire.MessageDeltaEvent():
                self._message_delta(ev)
                return []
            case wire.ErrorBody():
                self._done = True
                err = ev.error or wire.ErrorObject("api_error", "Stream error")
                return [StreamError(error_from_type(err.type, err.message))]
        return []

    def close(self) -> list[canonical.Event]:
        if self._done:
            return []
        self._done = True
        return [_broken("The provider's stream ended before message_stop")]

    def _message_start(self, m: wire.WireMessage) -> list[canonical.Event]:
        usage = None
        if m.usage is not None:
            self._merge(m.usage)
            if m.usage.input_tokens is not None:
                usage = to_canonical_usage(m.usage)
                usage.output_tokens = 0  # message_start's output count is a placeholder
                usage.reasoning_tokens = 0
        return [StreamStart(m.id, m.model or self._model, usage)]

    def _start(self, ev: wire.BlockStartEvent) -> list[canonical.Event]:
        b = ev.content_block
        index = self._next
        out: list[canonical.Event]
        match b.type:
            case "text":
                out = [BlockStart(index, "text")]
                if b.text:
                    out.append(TextDelta(index, b.text))
            case "thinking":
                out = [BlockStart(index, "thinking")]
                if b.thinking or b.signature:
                    out.append(ThinkingDelta(index, b.thinking or "", b.signature or None,
                                             "anthropic"))
            case "redacted_thinking":
                out = [BlockStart(index, "thinking", provider_data={REDACTED_KEY: b.data or ""})]
            case "tool_use":
                out = [BlockStart(index, "tool_call", b.id, b.name)]
            case _:
                return []  # a server-tool block
        self._index[ev.index] = index
        self._next = index + 1
        return out

    def _delta(self, ev: wire.DeltaEvent) -> list[canonical.Event]:
        index = self._index.get(ev.index)
        if index is None:
            return []
        d = ev.delta
        match d.type:
            case "text_delta":
                return [TextDelta(index, d.text)] if d.text else []
            case "input_json_delta":
                return [ToolArgsDelta(index, d.partial_json)] if d.partial_json else []
            case "thinking_delta":
                return [ThinkingDelta(index, d.thinking, None, "anthropic")] if d.thinking else []
            case "signature_delta":
                return [ThinkingDelta(index, "", d.signature or None, "anthropic")]
        return []  # citations_delta: nothing canonical holds

    def _message_delta(self, ev: wire.MessageDeltaEvent) -> None:
        self._stop = ev.delta.stop_reason
        self._stop_sequence = ev.delta.stop_sequence
        if ev.usage is not None:
            self._merge(ev.usage)

    def _merge(self, u: wire.Usage) -> None:
        # message_delta counts are cumulative: each given one replaces the earlier value.
        mine = self._usage
        for field in ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                      "cache_read_input_tokens", "output_tokens_details"):
            value = getattr(u, field)
            if value is not None:
                setattr(mine, field, value)


# --- encoder ---------------------------------------------------------------------------------

_enc = wire.ENCODER.encode

# Every event is written as bytes around the few values that change, with no intermediate dict:
# the per-delta cost is one string encode.
_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
_START = b'event: content_block_start\ndata: {"type":"content_block_start","index":'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_TEXT_START = b',"content_block":{"type":"text","text":""}}\n\n'
_THINKING_START = b',"content_block":{"type":"thinking","thinking":"","signature":""}}\n\n'


class _Block:
    __slots__ = ("index", "kind", "signed", "source")

    def __init__(self, index: int, kind: str) -> None:
        self.index = index  # the caller's index: blocks renumbered from 0 in order
        self.kind = kind
        self.source: str | None = None
        self.signed = False


class StreamEncoder:
    """Canonical events -> the caller's `text/event-stream` bytes.

    - message_start carries the input usage from StreamStart. A provider that reports usage
      only at the end (OpenAI) leaves it at 0 there; the full usage (input and cache counts
      included) is then in message_delta, whose counts the SDKs take as cumulative totals.
    - Blocks are numbered from 0 in the order they start. A block that another one interleaves
      with stays open (the SDKs accumulate by index); every open block is stopped before
      message_delta, also when the provider never said so.
    - `include_usage` and `sse` are OpenAI and Gemini options; Anthropic streams always carry
      usage and are always SSE.
    """

    __slots__ = ("_blocks", "_calls", "_done", "_id", "_model", "_next", "_start_usage",
                 "_started")

    def __init__(self, *, model: str, include_usage: bool = False, sse: bool = True) -> None:
        self._model = model
        self._id = "msg_sluice"
        self._blocks: dict[int, _Block] = {}  # canonical index -> open block
        self._next = 0
        self._started = False
        self._start_usage: canonical.Usage | None = None
        self._calls = False
        self._done = False

    def __repr__(self) -> str:
        return (f"<anthropic.StreamEncoder started={self._started} open={len(self._blocks)} "
                f"blocks={self._next} done={self._done}>")

    def feed(self, event: canonical.Event) -> bytes:
        if self._done:
            return b""
        head = b"" if self._started or isinstance(event, StreamStart | StreamError) else (
            self._message_start(StreamStart("", self._model)))
        match event:
            case TextDelta():
                return head + self._text(event) if event.text else head
            case ToolArgsDelta():
                block = self._blocks.get(event.index)
                if block is None or not event.partial_json:
                    return head
                return head + (_DELTA + b"%d" % block.index
                               + b',"delta":{"type":"input_json_delta","partial_json":'
                               + _enc(event.partial_json) + b"}}\n\n")
            case ThinkingDelta():
                return head + self._thinking(event)
            case BlockStart():
                return head + self._block_start(event)
            case BlockStop():
                block = self._blocks.pop(event.index, None)
                return head + (self._close(block) if block is not None else b"")
            case StreamStart():
                return b"" if self._started else self._message_start(event)
            case StreamEnd():
                return head + self._end(event)
            case StreamError():
                self._done = True
                return stream_error_event(event.error)
        return head

    def close(self) -> bytes:
        return b""

    def _message_start(self, event: StreamStart) -> bytes:
        self._started = True
        self._start_usage = event.usage
        self._id = message_id(event.id or "sluice")
        msg = wire.OutResponse(self._id, self._model, [], None, None,
                               out_usage(event.usage or canonical.Usage()))
        return (b'event: message_start\ndata: {"type":"message_start","message":' + _enc(msg)
                + b"}\n\n")

    def _open(self, index: int, kind: str) -> tuple[bytes, _Block]:
        # A block restarted at an index still open is stopped first. So are open text blocks:
        # the API sends one block at a time, and a text delta that comes later for a stopped
        # text block opens a new one (`_text`), so nothing is lost. Thinking (a signature may
        # follow) and tool calls (arguments may interleave) stay open until stopped.
        prefix = b""
        old = self._blocks.pop(index, None)
        if old is not None:
            prefix = self._close(old)
        for other, block in list(self._blocks.items()):
            if block.kind == "text":
                del self._blocks[other]
                prefix += self._close(block)
        block = _Block(self._next, kind)
        self._next += 1
        self._blocks[index] = block
        return prefix, block

    def _block_start(self, event: BlockStart) -> bytes:
        prefix, block = self._open(event.index, event.kind)
        head = prefix + _START + b"%d" % block.index
        match event.kind:
            case "text":
                return head + _TEXT_START
            case "thinking":
                data = (event.provider_data or {}).get(REDACTED_KEY)
                if isinstance(data, str):
                    block.kind = "redacted"
                    return (head + b',"content_block":{"type":"redacted_thinking","data":'
                            + _enc(data) + b"}}\n\n")
                return head + _THINKING_START
            case _:
                self._calls = True
                call_id = canonical.pack_call_id(event.tool_id or "", event.provider_data)
                return (head + b',"content_block":{"type":"tool_use","id":'
                        + _enc(call_id or f"toolu_{self._id}_{block.index}") + b',"name":'
                        + _enc(event.tool_name or "") + b',"input":{}}}\n\n')

    def _text(self, event: TextDelta) -> bytes:
        block = self._blocks.get(event.index)
        prefix = b""
        if block is None:  # text for a block never started, or stopped: start one
            prefix, block = self._open(event.index, "text")
            prefix += _START + b"%d" % block.index + _TEXT_START
        elif block.kind != "text":
            return b""
        return (prefix + _DELTA + b"%d" % block.index + b',"delta":{"type":"text_delta","text":'
                + _enc(event.text) + b"}}\n\n")

    def _thinking(self, event: ThinkingDelta) -> bytes:
        block = self._blocks.get(event.index)
        if block is None or block.kind != "thinking":
            return b""
        if event.source is not None:
            block.source = event.source
        out = b""
        if event.text:
            out = (_DELTA + b"%d" % block.index + b',"delta":{"type":"thinking_delta","thinking":'
                   + _enc(event.text) + b"}}\n\n")
        if event.signature:
            block.signed = True
            out += self._signature(block, event.signature)
        return out

    def _signature(self, block: _Block, signature: str | None) -> bytes:
        return (_DELTA + b"%d" % block.index + b',"delta":{"type":"signature_delta","signature":'
                + _enc(wire.pack_signature(block.source, signature)) + b"}}\n\n")

    def _close(self, block: _Block) -> bytes:
        out = b""
        if block.kind == "thinking" and not block.signed and block.source not in (None,
                                                                                  "anthropic"):
            # Unsigned thinking of another provider still gets a signature naming its source.
            out = self._signature(block, None)
        return out + _STOP + b"%d}\n\n" % block.index

    def _end(self, event: StreamEnd) -> bytes:
        self._done = True
        out = b"".join(self._close(b) for b in sorted(self._blocks.values(),
                                                      key=lambda b: b.index))
        self._blocks.clear()
        usage = event.usage or self._start_usage or canonical.Usage()
        if event.usage is not None and not event.usage.input_tokens and self._start_usage:
            # The end reported output only: the input counts stay those of message_start.
            usage = canonical.Usage(self._start_usage.input_tokens, event.usage.output_tokens,
                                    self._start_usage.cached_tokens,
                                    self._start_usage.cache_write_tokens,
                                    event.usage.reasoning_tokens)
        delta: dict[str, Any] = {
            "stop_reason": stop_reason(event.finish, event.stop_sequence, self._calls),
            "stop_sequence": event.stop_sequence if event.finish == "stop" else None,
        }
        return (out + b'event: message_delta\ndata: {"type":"message_delta","delta":'
                + _enc(delta) + b',"usage":' + _enc(out_usage(usage)) + b"}\n\n" + _MESSAGE_STOP)
