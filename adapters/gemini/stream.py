"""Gemini streams <-> canonical stream events.

A `streamGenerateContent?alt=sse` stream is a series of `data:` events, each a whole
`GenerateContentResponse` chunk: parts carry new text (never cumulative), thought parts come
before the answer, a `functionCall` part always arrives whole (Gemini does not stream partial
arguments), every chunk repeats `usageMetadata` as counted so far (the last one holds the
totals) along with `modelVersion` and `responseId`, and the last chunk has the candidate's
`finishReason`. A failure midway is one more event holding `{"error": {...}}`.

Without `alt=sse` the same chunks form one JSON array streamed element by element, framed as
Gemini frames it: `[{...}` first, `\\r\\n,\\r\\n{...}` for each next one, `\\r\\n]` at the end.
SSE events end with `\\r\\n\\r\\n`, as Gemini's do.
"""

from __future__ import annotations

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
    Thinking,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCall,
    Usage,
)
from adapters.gemini import wire
from adapters.gemini.errors import error_chunk, to_canonical_error
from adapters.gemini.response import (
    call_part,
    canonical_usage,
    finish_reason,
    gemini_finish,
    gemini_usage,
    synth_id,
)
from adapters.gemini.wire import Candidate, Content, GenerateContentResponse, Part, pick
from adapters.sse import SSEEvent

__all__ = ["StreamDecoder", "StreamEncoder"]

_OPEN_KINDS = ("text", "thinking")


class StreamDecoder:
    """A Gemini provider's stream -> canonical events.

    Ends with `StreamEnd` on the chunk that carries `finishReason` (or a prompt block with no
    candidate), with that chunk's usage: Gemini sends nothing after it, and ending there lets
    the caller's stream finish without waiting for the connection to close. A stream that
    closes without one yields `StreamError`.
    """

    __slots__ = ("_calls", "_done", "_id", "_index", "_model", "_open", "_usage")

    def __init__(self, *, model: str) -> None:
        self._model = model
        self._id: str | None = None  # set by the first chunk
        self._open: str | None = None  # kind of the open text/thinking block
        self._index = 0  # index of the open block, or of the next one when none is open
        self._calls = 0
        self._usage: Usage | None = None
        self._done = False

    def __repr__(self) -> str:
        return (f"<gemini.StreamDecoder id={self._id!r} open={self._open!r} "
                f"blocks={self._index} calls={self._calls} done={self._done}>")

    def feed(self, event: SSEEvent) -> list[Event]:
        if self._done or not event.data.strip():
            return []
        try:
            chunk = wire.RESPONSE.decode(event.data)
        except msgspec.DecodeError as exc:
            self._done = True
            return [_error(f"Gemini sent a stream chunk that cannot be read: {exc}")]
        if chunk.error is not None:
            self._done = True
            status = chunk.error.code or 500
            return [StreamError(to_canonical_error(status, event.data.encode()))]
        out: list[Event] = []
        if self._id is None:
            self._id = chunk.response_id or synth_id("stream", self._model, event.data[:128])
            start_usage = None
            if chunk.usage_metadata is not None and chunk.usage_metadata.prompt_token_count:
                start_usage = Usage(input_tokens=chunk.usage_metadata.prompt_token_count)
            out.append(StreamStart(self._id, chunk.model_version or self._model, start_usage))
        if chunk.usage_metadata is not None:
            self._usage = canonical_usage(chunk.usage_metadata)
        self._chunk(chunk, out)
        return out

    def _chunk(self, chunk: GenerateContentResponse, out: list[Event]) -> None:
        if not chunk.candidates:
            feedback = chunk.prompt_feedback
            if feedback is not None and feedback.block_reason:
                self._end("content_filter", out)
            return
        cand = chunk.candidates[0]
        for part in (cand.content.parts if cand.content else None) or ():
            self._part(part, out)
        if cand.finish_reason:
            self._end(finish_reason(cand.finish_reason, self._calls > 0), out)

    def _part(self, part: Part, out: list[Event]) -> None:
        sig = pick(part.thought_signature, part.thought_signature_)
        call = pick(part.function_call, part.function_call_)
        if call is not None:
            self._close(out)
            i = self._index
            args = bytes(call.args).decode() if call.args else "{}"
            call_id = call.id or synth_id(self._id, self._calls, call.name)
            data = {"thoughtSignature": sig} if sig else None
            out += [BlockStart(i, "tool_call", call_id, call.name, data),
                    ToolArgsDelta(i, "{}" if args == "null" else args), BlockStop(i)]
            self._index += 1
            self._calls += 1
        elif part.text is not None and part.thought:
            if part.text or sig:
                self._open_block("thinking", out)
                out.append(ThinkingDelta(self._index, part.text, sig, "gemini"))
        elif part.text is not None:
            if part.text:
                self._open_block("text", out)
                out.append(TextDelta(self._index, part.text))
            if sig:  # kept as a signature-only thinking block after the text (response.py)
                self._open_block("thinking", out)
                out.append(ThinkingDelta(self._index, "", sig, "gemini"))
                self._close(out)

    def _open_block(self, kind: str, out: list[Event]) -> None:
        if self._open == kind:
            return
        self._close(out)
        self._open = kind
        out.append(BlockStart(self._index, "text" if kind == "text" else "thinking"))

    def _close(self, out: list[Event]) -> None:
        if self._open is not None:
            out.append(BlockStop(self._index))
            self._open = None
            self._index += 1

    def _end(self, finish: FinishReason, out: list[Event]) -> None:
        self._close(out)
        out.append(StreamEnd(finish, usage=self._usage))
        self._done = True

    def close(self) -> list[Event]:
        if self._done:
            return []
        self._done = True
        if self._id is None:
            return [_error("Gemini closed the stream before sending any chunk.")]
        return [_error("Gemini closed the stream before its finishReason: the answer is cut.")]


def _error(message: str) -> StreamError:
    return StreamError(CanonicalError(502, message, "server"))


class _Call:
    __slots__ = ("args", "id", "name", "provider_data")

    def __init__(self, start: BlockStart) -> None:
        self.id = start.tool_id or ""
        self.name = start.tool_name or ""
        self.provider_data = start.provider_data
        self.args: list[str] = []


class StreamEncoder:
    """Canonical events -> a Gemini caller's stream: SSE events, or the streamed JSON array.

    Each text or thinking delta is one chunk with one part, sent at once; a tool call is held
    until its block stops and sent as one whole functionCall part. The last chunk carries
    `finishReason` and `usageMetadata`. Thinking from another dialect is shown as thought
    text and wrapped into the `thoughtSignature` of the next text or functionCall part, the
    one field Gemini clients keep (see `wire.wrap_thinking`).
    """

    __slots__ = ("_calls", "_carried", "_id", "_model", "_sent", "_sse", "_start_usage",
                 "_thinking")

    def __init__(self, *, model: str, include_usage: bool = False, sse: bool = True) -> None:
        # include_usage is OpenAI's option: every Gemini stream reports usage.
        self._model = model
        self._sse = sse
        self._id = ""
        self._start_usage: Usage | None = None
        self._sent = 0  # chunks written
        self._calls: dict[int, _Call] = {}
        self._thinking: dict[int, Thinking] = {}  # foreign thinking blocks being streamed
        self._carried: list[Thinking] = []  # finished foreign thinking, awaiting a carrier

    def __repr__(self) -> str:
        return (f"<gemini.StreamEncoder id={self._id!r} sse={self._sse} sent={self._sent} "
                f"pending_calls={len(self._calls)}>")

    def feed(self, event: Event) -> bytes:
        match event:
            case TextDelta(text=text):
                return self._parts([self._carry(Part(text=text))]) if text else b""
            case ThinkingDelta():
                return self._thought(event)
            case ToolArgsDelta(index=index):
                if (call := self._calls.get(index)) is not None:
                    call.args.append(event.partial_json)
                return b""
            case BlockStart(kind="tool_call"):
                self._calls[event.index] = _Call(event)
            case BlockStop(index=index):
                return self._stop(index)
            case StreamStart():
                self._id, self._start_usage = event.id, event.usage
            case StreamEnd():
                return self._end(event)
            case StreamError(error=err):
                return self._frame(error_chunk(err))
        return b""

    def _thought(self, event: ThinkingDelta) -> bytes:
        if event.source == "gemini":
            if not (event.text or event.signature):
                return b""
            return self._parts([Part(text=event.text, thought=True,
                                     thought_signature=event.signature)])
        block = self._thinking.get(event.index) or Thinking(source=event.source)
        self._thinking[event.index] = Thinking(block.text + event.text,
                                               event.signature or block.signature, event.source)
        return self._parts([Part(text=event.text, thought=True)]) if event.text else b""

    def _stop(self, index: int) -> bytes:
        if (block := self._thinking.pop(index, None)) is not None:
            self._carried.append(block)
            return b""
        call = self._calls.pop(index, None)
        if call is None:
            return b""
        tool = ToolCall(call.id, call.name, "".join(call.args), call.provider_data)
        return self._parts([self._carry(call_part(tool))])

    def _carry(self, part: Part) -> Part:
        if self._carried and part.thought_signature is None:
            part.thought_signature = wire.wrap_thinking(self._carried)
            self._carried = []
        return part

    def _end(self, event: StreamEnd) -> bytes:
        usage = event.usage or self._start_usage or Usage()
        finish = gemini_finish(event.finish)
        content = None if finish == "SAFETY" else Content(role="model")
        cand = Candidate(content=content, finish_reason=finish, index=0)
        return self._chunk(cand, usage)

    def _parts(self, parts: list[Part]) -> bytes:
        return self._chunk(Candidate(content=Content(role="model", parts=parts), index=0))

    def _chunk(self, cand: Candidate, usage: Usage | None = None) -> bytes:
        chunk = GenerateContentResponse(
            candidates=[cand],
            usage_metadata=gemini_usage(usage) if usage is not None else None,
            model_version=self._model,
            response_id=self._id or None,
        )
        return self._frame(wire.ENCODER.encode(chunk))

    def _frame(self, data: bytes) -> bytes:
        self._sent += 1
        if self._sse:
            return b"data: " + data + b"\r\n\r\n"
        return (b"[" if self._sent == 1 else b"\r\n,\r\n") + data

    def close(self) -> bytes:
        if self._sse:
            return b""
        return b"[]" if self._sent == 0 else b"\r\n]"
