"""Anthropic non-stream answers: a provider's `Message` -> canonical, canonical -> a caller's.

Usage: Anthropic's `input_tokens` counts only the prompt tokens after the last cache
breakpoint; cache reads and writes are reported beside it. Canonical `input_tokens` is every
prompt token, so input = input_tokens + cache_read_input_tokens + cache_creation_input_tokens,
and the caller side subtracts them again.

Thinking for an Anthropic caller: blocks signed by Anthropic (or of unknown source) go out as
they came; thinking from another provider goes out as a `thinking` block too, so Claude Code and
the SDK show it, with a signature naming its source (`wire.pack_signature`), so that it comes
back tagged on the next turn and is never sent to Anthropic as if Anthropic had signed it.
"""

from __future__ import annotations

import msgspec

from adapters import canonical
from adapters.anthropic import wire
from adapters.canonical import TranslationError

__all__ = [
    "FINISH",
    "from_canonical_response",
    "message_id",
    "out_usage",
    "stop_reason",
    "to_canonical_response",
    "to_canonical_usage",
]

# stop_reason -> canonical finish. pause_turn (a long server-tool turn paused) ends this answer
# normally; model_context_window_exceeded is a length stop.
FINISH: dict[str | None, canonical.FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    None: "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "refusal",
}

# canonical finish -> stop_reason (adapters/README.md). An `error` finish (a provider that ended
# the answer on an error it reported in-band) has no stop reason of its own: end_turn.
_STOP_REASON: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "refusal": "refusal",
    "error": "end_turn",
}


# --- provider side -----------------------------------------------------------------------------


def to_canonical_response(body: bytes, *, model: str) -> canonical.Response:
    try:
        m = wire.RESPONSE.decode(body)
    except msgspec.DecodeError as exc:
        raise TranslationError(f"Invalid Anthropic message from the provider: {exc}") from None
    content: list[canonical.Block] = []
    for b in m.content:
        match b.type:
            case "text":
                content.append(canonical.Text(b.text or ""))
            case "tool_use":
                content.append(canonical.ToolCall(b.id or "", b.name or "",
                                                  bytes(b.input).decode()))
            case "thinking":
                content.append(canonical.Thinking(b.thinking or "", b.signature or None,
                                                  "anthropic"))
            case "redacted_thinking":
                content.append(canonical.Thinking(redacted=b.data or "", source="anthropic"))
            case _:
                # Server-tool blocks: the gateway never asks for server tools.
                pass
    return canonical.Response(
        id=m.id,
        model=m.model or model,
        content=content,
        finish=FINISH.get(m.stop_reason, "stop"),
        stop_sequence=m.stop_sequence,
        usage=to_canonical_usage(m.usage),
    )


def to_canonical_usage(u: wire.Usage | None) -> canonical.Usage:
    if u is None:
        return canonical.Usage()
    cached = u.cache_read_input_tokens or 0
    written = u.cache_creation_input_tokens or 0
    details = u.output_tokens_details
    return canonical.Usage(
        input_tokens=(u.input_tokens or 0) + cached + written,
        output_tokens=u.output_tokens or 0,
        cached_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=details.thinking_tokens if details is not None else 0,
    )


# --- caller side -------------------------------------------------------------------------------


def from_canonical_response(resp: canonical.Response, *, model: str) -> bytes:
    msg_id = message_id(resp.id)
    blocks: list[wire.OutBlock] = []
    calls = False
    for i, b in enumerate(resp.content):
        match b:
            case canonical.Text(text=text):
                if text:
                    blocks.append(wire.OutText(text))
            case canonical.ToolCall():
                calls = True
                call_id = canonical.pack_call_id(b.id, b.provider_data) or f"toolu_{msg_id}_{i}"
                blocks.append(wire.OutToolUse(call_id, b.name, answer_input(b.arguments)))
            case canonical.Thinking(redacted=str() as data) if b.source in (None, "anthropic"):
                blocks.append(wire.OutRedacted(data))
            case canonical.Thinking():
                blocks.append(wire.OutThinking(b.text, wire.pack_signature(b.source,
                                                                           b.signature)))
            case _:
                pass  # images and documents are never part of an answer
    out = wire.OutResponse(
        id=msg_id,
        model=model,
        content=blocks,
        stop_reason=stop_reason(resp.finish, resp.stop_sequence, calls),
        stop_sequence=resp.stop_sequence if resp.finish == "stop" else None,
        usage=out_usage(resp.usage),
    )
    return wire.ENCODER.encode(out)


def message_id(canonical_id: str) -> str:
    return canonical_id if canonical_id.startswith("msg_") else f"msg_{canonical_id}"


def stop_reason(finish: str, stop_sequence: str | None, calls: bool) -> str:
    if finish == "stop":
        if stop_sequence:
            return "stop_sequence"
        # A provider that says STOP for a turn of calls (Gemini) still ends in tool use, and
        # agents such as Claude Code run the tools only on `tool_use`.
        return "tool_use" if calls else "end_turn"
    return _STOP_REASON.get(finish, "end_turn")


def out_usage(u: canonical.Usage) -> wire.OutUsage:
    return wire.OutUsage(
        input_tokens=max(u.input_tokens - u.cached_tokens - u.cache_write_tokens, 0),
        cache_creation_input_tokens=u.cache_write_tokens,
        cache_read_input_tokens=u.cached_tokens,
        output_tokens=u.output_tokens,
        output_tokens_details=(wire.OutTokensDetails(u.reasoning_tokens)
                               if u.reasoning_tokens else None),
    )


def answer_input(arguments: str) -> msgspec.Raw:
    """A tool call's arguments as `input`. The model of another provider may have produced
    JSON that does not parse (cut by max_tokens) or is not an object; the answer is not failed
    for it: the text is handed to the tool wrapped in an object, so the tool's error can show
    the model what it sent."""
    text = arguments.strip()
    if not text:
        return msgspec.Raw(b"{}")
    if text[0] == "{":
        try:
            return wire.RAW.decode(text)
        except msgspec.DecodeError:
            pass
    return msgspec.Raw(wire.ENCODER.encode({"_raw_arguments": arguments}))
