"""OpenAI wire format for the fake provider: answer bodies, errors, framing. No IO.

Response shapes follow the SDK's response models (`ChatCompletion`, `ChatCompletionChunk`,
`Completion`, `CreateEmbeddingResponse`, `Model`) and the API reference examples. What the fake
accepts is in `openai_checks`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from tests.fakes.text import split_chars, split_text, words

__all__ = [
    "STREAM_ERROR",
    "Reply",
    "chat_completion",
    "chat_reply_text",
    "chat_stream",
    "embedding_response",
    "embedding_vector",
    "error_body",
    "legacy_completion",
    "legacy_prompt_text",
    "legacy_stream",
    "mask_key",
    "model_object",
    "no_key_error",
    "split_chars",
    "split_text",
    "sse",
    "status_error",
    "truncate",
    "unknown_model_error",
    "unknown_route_error",
    "usage_object",
    "words",
    "wrong_key_error",
]

SYSTEM_FINGERPRINT = "fp_fake0001"
MODEL_CREATED = 1_700_000_000  # fixed so that model listings compare equal across runs


# ---------------------------------------------------------------------------------------------
# Deterministic content and token counts
# ---------------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def chat_reply_text(body: dict[str, Any]) -> tuple[str, int]:
    """`("echo: <last user text>", prompt_tokens)` for a chat request."""
    messages = body.get("messages", [])
    prompt_tokens = sum(words(_text_of(m.get("content"))) for m in messages)
    last_user: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    return f"echo: {_text_of(last_user.get('content'))}", prompt_tokens


def legacy_prompt_text(body: dict[str, Any]) -> tuple[str, int]:
    """`("echo: <prompt>", prompt_tokens)`; token-id prompts count one token per id."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return f"echo: {prompt}", words(prompt)
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        return f"echo: {prompt[0]}", sum(words(p) for p in prompt)
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], list):
        return "echo: ", sum(len(p) for p in prompt)
    return "echo: ", len(prompt) if isinstance(prompt, list) else 0


def embedding_vector(text_or_tokens: Any, dim: int) -> list[float]:
    """Deterministic vector; every value k/128 is exact in float32, so base64 round-trips."""
    seed = json.dumps(text_or_tokens).encode()
    raw = b""
    counter = 0
    while len(raw) < dim:
        raw += hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        counter += 1
    return [(b - 128) / 128 for b in raw[:dim]]


def mask_key(key: str) -> str:
    # As OpenAI prints it: "Incorrect API key provided: sk-proj-****...MxYA."
    if len(key) <= 12:
        return key
    return key[:8] + "*" * (len(key) - 12) + key[-4:]


def truncate(text: str, body: dict[str, Any]) -> tuple[str, str]:
    """Honour `max_completion_tokens`/`max_tokens` in words: `(text, finish_reason)`."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and words(text) > limit:
        return " ".join(text.split()[:limit]), "length"
    return text, "stop"


# ---------------------------------------------------------------------------------------------
# Errors, in OpenAI's words
# ---------------------------------------------------------------------------------------------


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
    "username) if you're accessing the API from your browser and are prompted for a username. You "
    "can obtain an API key from https://platform.openai.com/account/api-keys."
)
_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"
# Bodies for a forced status without an explicit body: (message, type, code).
_STATUS_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request (fake).", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to access this resource.", "invalid_request_error", None),
    404: ("The model does not exist.", "invalid_request_error", "model_not_found"),
    429: (
        "Rate limit reached for requests per min (RPM). Please try again in 1s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (_SERVER_ERROR, "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
}
STREAM_ERROR = error_body(_SERVER_ERROR, "server_error", None, None)


def no_key_error() -> dict[str, Any]:
    return error_body(_NO_KEY, "invalid_request_error", None, None)


def wrong_key_error(token: str) -> dict[str, Any]:
    msg = (
        f"Incorrect API key provided: {mask_key(token)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )
    return error_body(msg, "invalid_request_error", None, "invalid_api_key")


def status_error(status: int) -> dict[str, Any]:
    fallback = (
        f"Fake error {status}.",
        "server_error" if status >= 500 else "invalid_request_error",
        None,
    )
    message, type_, code = _STATUS_ERRORS.get(status, fallback)
    return error_body(message, type_, None, code)


def unknown_route_error(method: str, path: str) -> dict[str, Any]:
    return error_body(f"Invalid URL ({method} {path})", "invalid_request_error", None, None)


def unknown_model_error(model_id: str) -> dict[str, Any]:
    msg = f"The model '{model_id}' does not exist"
    return error_body(msg, "invalid_request_error", "model", "model_not_found")


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------


def usage_object(prompt: int, completion: int, *, details: bool = True) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if details:  # chat completions carry the breakdown; legacy completions do not
        usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


@dataclass(frozen=True)
class Reply:
    """Everything one answer says, streamed or not."""

    id: str
    created: int
    model: str
    text: str  # ignored when tool_call is set
    finish_reason: str
    usage: dict[str, Any]
    tool_call: dict[str, str] | None = None  # {"id", "name", "arguments"}
    include_usage: bool = False  # stream_options.include_usage
    chunks: int | None = None  # content deltas; None: one per word


def _chat_head(r: Reply, obj: str) -> dict[str, Any]:
    return {
        "id": r.id,
        "object": obj,
        "created": r.created,
        "model": r.model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def chat_completion(r: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": r.text}
    if r.tool_call is not None:
        function = {"name": r.tool_call["name"], "arguments": r.tool_call["arguments"]}
        message["content"] = None
        message["tool_calls"] = [
            {"id": r.tool_call["id"], "type": "function", "function": function}
        ]
    message["refusal"] = None
    message["annotations"] = []
    body = _chat_head(r, "chat.completion")
    body["choices"] = [
        {"index": 0, "message": message, "logprobs": None, "finish_reason": r.finish_reason}
    ]
    body["usage"] = r.usage
    return body


def chat_stream(r: Reply) -> list[dict[str, Any]]:
    """The `chat.completion.chunk`s of one answer, [DONE] not included.

    Role chunk, content (or tool-call) deltas, a finish chunk with an empty delta, then — only
    with `stream_options.include_usage` — a usage chunk with `choices: []`, every other chunk then
    carrying `"usage": null` (API reference, `stream_options.include_usage`).
    """

    def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        body = _chat_head(r, "chat.completion.chunk")
        body["choices"] = (
            []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        if r.include_usage:
            body["usage"] = r.usage if delta is None else None
        return body

    if r.tool_call is None:
        out = [chunk({"role": "assistant", "content": "", "refusal": None})]
        out += [chunk({"content": piece}) for piece in split_text(r.text, r.chunks)]
    else:
        call = r.tool_call
        head = {
            "index": 0,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": ""},
        }
        out = [chunk({"role": "assistant", "content": None, "tool_calls": [head], "refusal": None})]
        # Real streams cut arguments anywhere, mid-token included; so does this.
        for piece in split_chars(call["arguments"], r.chunks or 4):
            out.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    out.append(chunk({}, r.finish_reason))
    if r.include_usage:
        out.append(chunk(None))
    return out


def _legacy(r: Reply, text: str | None, finish: str | None) -> dict[str, Any]:
    return {
        "id": r.id,
        "object": "text_completion",
        "created": r.created,
        "model": r.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": []
        if text is None
        else [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
    }


def legacy_completion(r: Reply) -> dict[str, Any]:
    return {**_legacy(r, r.text, r.finish_reason), "usage": r.usage}


def legacy_stream(r: Reply) -> list[dict[str, Any]]:
    """Streamed `text_completion`s: text deltas, an empty finish delta, the optional usage chunk."""
    out = [_legacy(r, piece, None) for piece in split_text(r.text, r.chunks)]
    out.append(_legacy(r, "", r.finish_reason))
    if r.include_usage:
        out = [{**c, "usage": None} for c in out]
        out.append({**_legacy(r, None, None), "usage": r.usage})
    return out


def embedding_response(
    model: str, vectors: list[list[float]], *, base64_format: bool, prompt_tokens: int
) -> dict[str, Any]:
    data = []
    for i, vec in enumerate(vectors):
        value: Any = vec
        if base64_format:
            # The SDK decodes this with numpy.frombuffer(dtype="float32") or array("f"):
            # little-endian float32, packed.
            value = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": "system"}


def sse(obj: dict[str, Any] | str) -> bytes:
    """One SSE event as OpenAI frames it: compact JSON on a single `data:` line."""
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
