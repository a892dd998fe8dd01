"""Anthropic Messages wire format for the fake provider: answer bodies, errors, framing. No IO.

Answer shapes follow the SDK's response models (`Message`, `RawMessageStreamEvent`,
`MessageTokensCount`, `ModelInfo`) and the streaming reference. What the fake accepts is in
`anthropic_checks`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.anthropic_checks import content_blocks, thinking_signature
from tests.fakes.text import split_chars, split_text, words

__all__ = [
    "Reply",
    "error_body",
    "input_tokens",
    "last_user_text",
    "message_body",
    "model_info",
    "sse",
    "status_error",
    "stream_error",
    "stream_events",
    "thinking_signature",
    "truncate",
    "words",
]

MODEL_CREATED_AT = "2025-01-01T00:00:00Z"  # fixed so that model listings compare equal


# ---------------------------------------------------------------------------------------------
# Deterministic content and token counts
# ---------------------------------------------------------------------------------------------


def _text_of(content: Any, *, tool_results: bool) -> str:
    parts = []
    for b in content_blocks(content):
        if b.get("type") == "text":
            parts.append(b["text"])
        elif tool_results and b.get("type") == "tool_result":
            parts.append(_text_of(b.get("content", ""), tool_results=False))
    return " ".join(p for p in parts if p)


def input_tokens(body: dict[str, Any]) -> int:
    """Words of the system prompt and of every message's text and tool results."""
    system = body.get("system", "")
    count = words(system if isinstance(system, str) else _text_of(system, tool_results=False))
    return count + sum(
        words(_text_of(m["content"], tool_results=True)) for m in body.get("messages", [])
    )


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message; its tool results when it has no text."""
    last = next((m for m in reversed(body["messages"]) if m["role"] == "user"), None)
    if last is None:
        return ""
    return _text_of(last["content"], tool_results=False) or _text_of(
        last["content"], tool_results=True
    )


# ---------------------------------------------------------------------------------------------
# Errors, in Anthropic's words
# ---------------------------------------------------------------------------------------------

# docs.claude.com/en/api/errors: status -> (error.type, message).
_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request (fake)."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per minute. "
        "For details, refer to: https://docs.claude.com/en/api/rate-limits.",
    ),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


def error_body(type_: str, message: str, request_id: str | None) -> dict[str, Any]:
    """`{"type":"error","error":{...},"request_id":...}`, as the API (and its 401) answers."""
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": request_id}


def status_error(status: int, request_id: str | None) -> dict[str, Any]:
    fallback = ("api_error" if status >= 500 else "invalid_request_error", f"Fake error {status}.")
    return error_body(*_STATUS_ERRORS.get(status, fallback), request_id)


def stream_error(type_: str) -> dict[str, Any]:
    """The mid-stream `event: error` payload (streaming docs: no request_id in it)."""
    message = next((m for t, m in _STATUS_ERRORS.values() if t == type_), "Fake stream error.")
    return {"type": "error", "error": {"type": type_, "message": message}}


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """Everything one answer says, streamed or not. Blocks in answer order."""

    id: str
    model: str
    thinking: str | None  # None: no thinking block
    text: str | None  # None: no text block
    tools: list[dict[str, Any]] = field(default_factory=list)  # {"id", "name", "input"}
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    usage_override: dict[str, Any] | None = None
    chunks: int | None = None  # text/thinking deltas; None: one per word


def _usage(r: Reply, output_tokens: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": r.input_tokens,
        "cache_creation_input_tokens": r.cache_creation,
        "cache_read_input_tokens": r.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": r.cache_creation,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    return {**usage, **(r.usage_override or {})}


def _stop_details(r: Reply) -> dict[str, Any] | None:
    if r.stop_reason == "refusal":
        return {"type": "refusal", "category": None, "explanation": None}
    return None


def _blocks_of(r: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if r.thinking is not None:
        blocks.append(
            {
                "type": "thinking",
                "thinking": r.thinking,
                "signature": thinking_signature(r.thinking),
            }
        )
    if r.text:
        blocks.append({"type": "text", "text": r.text})
    blocks += [
        {"type": "tool_use", "id": t["id"], "name": t["name"], "input": t["input"]} for t in r.tools
    ]
    return blocks


def _message(r: Reply, content: list[dict[str, Any]], *, final: bool) -> dict[str, Any]:
    return {
        "id": r.id,
        "type": "message",
        "role": "assistant",
        "model": r.model,
        "content": content,
        "stop_reason": r.stop_reason if final else None,
        "stop_sequence": r.stop_sequence if final else None,
        "stop_details": _stop_details(r) if final else None,
        # message_start carries the real input count and a placeholder output count of 1, as in
        # the streaming reference's example.
        "usage": _usage(r, r.output_tokens if final else 1),
    }


def message_body(r: Reply) -> dict[str, Any]:
    """The non-streamed `Message`."""
    return _message(r, _blocks_of(r), final=True)


def _event(name: str, **data: Any) -> tuple[str, dict[str, Any]]:
    """An event as `(SSE name, data)`; the data's `type` is always the event's name."""
    return name, {"type": name, **data}


def _block_events(index: int, block: dict[str, Any], r: Reply) -> list[tuple[str, dict[str, Any]]]:
    """content_block_start, one or more deltas, content_block_stop (a ping after the first start)."""
    start: dict[str, Any]
    deltas: list[dict[str, Any]]
    match block["type"]:
        case "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            pieces = split_text(block["thinking"], r.chunks)
            deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces]
            # The signature comes whole, just before the block's stop (SDK SignatureDelta).
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        case "text":
            start = {"type": "text", "text": ""}
            deltas = [
                {"type": "text_delta", "text": p} for p in split_text(block["text"], r.chunks)
            ]
        case _:
            start = {**block, "input": {}}
            # The reference's example opens with an empty fragment; real streams cut the JSON
            # anywhere, mid-token included.
            raw = json.dumps(block["input"], separators=(",", ":"))
            pieces = ["", *split_chars(raw, r.chunks or 4)]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    events = [_event("content_block_start", index=index, content_block=start)]
    if index == 0:
        events.append(_event("ping"))
    events += [_event("content_block_delta", index=index, delta=d) for d in deltas]
    return [*events, _event("content_block_stop", index=index)]


_DELTA_USAGE_KEYS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def stream_events(r: Reply) -> list[tuple[str, dict[str, Any]]]:
    """`(event name, data)` of one streamed answer, in the documented order: message_start (empty
    content), per block start / deltas / stop, message_delta with the stop reason and the
    cumulative usage, message_stop."""
    events = [_event("message_start", message=_message(r, [], final=False))]
    for index, block in enumerate(_blocks_of(r)):
        events += _block_events(index, block, r)
    usage = _usage(r, r.output_tokens)
    delta = {
        "stop_reason": r.stop_reason,
        "stop_sequence": r.stop_sequence,
        "stop_details": _stop_details(r),
    }
    usage = {k: usage[k] for k in _DELTA_USAGE_KEYS if k in usage}
    return [*events, _event("message_delta", delta=delta, usage=usage), _event("message_stop")]


def model_info(model_id: str) -> dict[str, Any]:
    """A `ModelInfo` as GET /v1/models lists it."""
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id.replace("-", " ").title(),
        "created_at": MODEL_CREATED_AT,
        "lifecycle": "active",
        "deprecated_at": None,
        "retires_at": None,
    }


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One SSE event as Anthropic frames it: a named `event:` line, then compact JSON `data:`."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def truncate(text: str, body: dict[str, Any]) -> tuple[str, str, str | None]:
    """`(text, stop_reason, stop_sequence)`: cut at the earliest stop sequence the text contains
    (the sequence itself is not returned), then to `max_tokens` words."""
    stop_reason, stop_sequence = "end_turn", None
    hits = [(text.find(s), s) for s in body.get("stop_sequences", []) if s and s in text]
    if hits:
        pos, stop_sequence = min(hits)
        text, stop_reason = text[:pos], "stop_sequence"
    limit = body.get("max_tokens")
    if isinstance(limit, int) and words(text) > limit:
        return " ".join(text.split()[:limit]), "max_tokens", None
    return text, stop_reason, stop_sequence
