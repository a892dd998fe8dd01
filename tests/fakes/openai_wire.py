"""OpenAI wire format for the fake provider: request validation and response bodies. No IO.

Requests are validated against the official SDK's own request TypedDicts
(`openai.types.chat.CompletionCreateParams`, `openai.types.CompletionCreateParams`,
`openai.types.EmbeddingCreateParams`). Two things make a plain `TypeAdapter` over them too lax:

- the SDK annotates lists as `Iterable[...]`, which pydantic validates *lazily* (it returns a
  `ValidatorIterator` and checks the items only when iterated), so `messages: [{"bad": 1}]` passes;
- TypedDicts ignore unknown keys, while the OpenAI API answers 400 "Unrecognized request argument
  supplied".

So the types are rewritten once, at import, into eager twins (`Iterable`/`Sequence` -> `list`,
TypedDicts optionally `extra="forbid"`), and validated in pydantic's strict mode on the raw JSON
(`"5"` is not an integer on the wire).

Response shapes follow the SDK's response models (`ChatCompletion`, `ChatCompletionChunk`,
`Completion`, `CreateEmbeddingResponse`, `Model`) and the API reference examples.
"""

from __future__ import annotations

import base64
import collections.abc as cabc
import hashlib
import json
import re
import struct
import typing
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

import typing_extensions as te
from openai.types import CompletionCreateParams as _LegacyParams
from openai.types import EmbeddingCreateParams as _EmbeddingParams
from openai.types.chat import CompletionCreateParams as _ChatParams
from pydantic import TypeAdapter, ValidationError

__all__ = [
    "STREAM_ERROR",
    "BodyProblem",
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
    "validate_body",
    "words",
    "wrong_key_error",
]

SYSTEM_FINGERPRINT = "fp_fake0001"
MODEL_CREATED = 1_700_000_000  # fixed so that model listings compare equal across runs
JSON_PARSE_ERROR = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
    "valid JSON. If you have trouble figuring out how to fix this, please contact us through our "
    "help center at help.openai.com.)"
)


# ---------------------------------------------------------------------------------------------
# Request validation
# ---------------------------------------------------------------------------------------------


# The functional TypedDict form with a computed name; typed Any because mypy only accepts literals.
_make_typeddict: Any = te.TypedDict


def _eager(tp: Any, *, forbid: bool, memo: dict[Any, Any]) -> Any:
    """Rewrite an SDK param type into one pydantic validates eagerly (see module docstring)."""
    if te.is_typeddict(tp):
        if tp in memo:
            return memo[tp]
        fields: dict[str, Any] = {}
        for name, hint in get_type_hints(tp, include_extras=True).items():
            origin = get_origin(hint)
            inner = get_args(hint)[0] if origin in (te.Required, te.NotRequired) else hint
            # The SDK modules use `from __future__ import annotations`, so `__required_keys__`
            # cannot see `Required[...]` in string annotations; the resolved hint can.
            required = origin is te.Required or (
                origin is not te.NotRequired and name in tp.__required_keys__
            )
            new_inner = _eager(inner, forbid=forbid, memo=memo)
            fields[name] = te.Required[new_inner] if required else te.NotRequired[new_inner]
        twin = _make_typeddict(tp.__name__, fields, total=False)
        twin.__pydantic_config__ = {"extra": "forbid" if forbid else "ignore"}
        memo[tp] = twin
        return twin
    origin = get_origin(tp)
    if origin is None:
        return tp
    args = get_args(tp)
    if origin in (cabc.Iterable, cabc.Sequence, list):
        return list[_eager(args[0], forbid=forbid, memo=memo)]  # type: ignore[misc]
    if origin is Union:
        return Union[tuple(_eager(a, forbid=forbid, memo=memo) for a in args)]  # noqa: UP007
    if origin in (dict, cabc.Mapping):
        key, value = (_eager(a, forbid=forbid, memo=memo) for a in args)
        return dict[key, value]  # type: ignore[valid-type]
    if origin in (typing.Literal, te.Literal):
        return tp
    if origin in (typing.Annotated, te.Annotated):
        return te.Annotated[(_eager(args[0], forbid=forbid, memo=memo), *tp.__metadata__)]
    raise TypeError(f"fake openai: no eager rewrite for {tp!r}")


def _adapters(forbid: bool) -> dict[str, TypeAdapter[Any]]:
    memo: dict[Any, Any] = {}
    chat_plain, chat_stream = get_args(_ChatParams)
    legacy_plain, legacy_stream = get_args(_LegacyParams)
    # The SDK's unions are {stream absent/false/null} | {stream: true}; validating the branch the
    # body asks for is equivalent and keeps pydantic's error list free of the other branch.
    return {
        "chat": TypeAdapter(_eager(chat_plain, forbid=forbid, memo=memo)),
        "chat+stream": TypeAdapter(_eager(chat_stream, forbid=forbid, memo=memo)),
        "completions": TypeAdapter(_eager(legacy_plain, forbid=forbid, memo=memo)),
        "completions+stream": TypeAdapter(_eager(legacy_stream, forbid=forbid, memo=memo)),
        "embeddings": TypeAdapter(_eager(_EmbeddingParams, forbid=forbid, memo=memo)),
    }


_STRICT = _adapters(forbid=True)
_LENIENT = _adapters(forbid=False)


@dataclass(frozen=True)
class BodyProblem:
    """Why a request body was refused: the OpenAI-style error fields plus the full detail."""

    message: str
    param: str | None
    code: str | None
    detail: str


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _param_path(loc: tuple[int | str, ...]) -> str:
    # Union members show up in `loc` by type ('ChatCompletionUserMessageParam', 'list[int]',
    # 'str'); only the other names and the indexes are fields of the JSON body.
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[a-z_][a-z0-9_]*", part) and part not in _TYPE_TAGS:
            out += f".{part}" if out else part
    return out


def _problem_from(exc: ValidationError) -> BodyProblem:
    errors = exc.errors(include_url=False)
    # A message with role 'user' fails the 'developer', 'system', ... branches of the message
    # union on their `role` literal; those branches are not what the caller meant, so their
    # errors are dropped when another branch explains the failure.
    wrong_branches = [
        e["loc"][:-1]
        for e in errors
        if e["type"] == "literal_error" and e["loc"] and e["loc"][-1] in ("role", "type")
    ]
    telling = [
        e for e in errors if not any(e["loc"][: len(b)] == b for b in wrong_branches)
    ] or errors
    first = telling[0]
    param = _param_path(first["loc"]) or None
    detail = str(exc)
    match first["type"]:
        case "missing":
            return BodyProblem(
                f"Missing required parameter: '{param}'.",
                param,
                "missing_required_parameter",
                detail,
            )
        case "extra_forbidden":
            return BodyProblem(
                f"Unrecognized request argument supplied: {param}", None, None, detail
            )
        case kind if kind.endswith("_type"):
            msg = f"Invalid type for '{param}': {first['msg']}."
            return BodyProblem(msg, param, "invalid_type", detail)
        case _:
            msg = f"Invalid value for '{param}': {first['msg']}."
            return BodyProblem(msg, param, "invalid_value", detail)


def validate_body(
    endpoint: str, raw: bytes, *, forbid_extra: bool
) -> tuple[Any, BodyProblem | None]:
    """Parse and validate one request body for `endpoint` ('chat', 'completions', 'embeddings').

    Returns the parsed JSON (None when it is not JSON) and the problem, if any.
    """
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, BodyProblem(JSON_PARSE_ERROR, None, None, f"body is not JSON: {exc}")
    if not isinstance(parsed, dict):
        msg = "Invalid type for request body: expected an object."
        return parsed, BodyProblem(msg, None, "invalid_type", f"top-level JSON is {type(parsed)}")
    key = endpoint
    if endpoint != "embeddings" and parsed.get("stream") is True:
        key += "+stream"
    adapter = (_STRICT if forbid_extra else _LENIENT)[key]
    try:
        adapter.validate_json(raw, strict=True)
    except ValidationError as exc:
        return parsed, _problem_from(exc)
    if parsed.get("stream_options") is not None and parsed.get("stream") is not True:
        # The SDK's types allow it, the API does not (its body, quoted in BerriAI/litellm#5803).
        msg = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        return parsed, BodyProblem(msg, "stream_options", None, msg)
    return parsed, None


# ---------------------------------------------------------------------------------------------
# Deterministic content and token counts
# ---------------------------------------------------------------------------------------------


def words(text: str) -> int:
    """The fake's token count: whitespace-separated words."""
    return len(text.split())


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


def _even_groups(items: list[str], n: int) -> list[str]:
    q, r = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + q + (1 if i < r else 0)
        out.append("".join(items[start:end]))
        start = end
    return out


def split_text(text: str, n: int | None) -> list[str]:
    """Content deltas whose concatenation is exactly `text`.

    None: one delta per word (leading whitespace attached, like model tokens). n: exactly n deltas
    — words grouped evenly, else characters, else padded with empty deltas.
    """
    pieces = re.findall(r"\s*\S+", text)
    tail = text[len("".join(pieces)) :]
    if tail:
        pieces.append(tail)
    if n is None:
        return pieces
    if n < 1:
        raise ValueError("chunks must be >= 1")
    if len(pieces) >= n:
        return _even_groups(pieces, n)
    return split_chars(text, n)


def split_chars(text: str, n: int) -> list[str]:
    """`n` deltas cut at character positions (mid-word), padded with empty deltas if short."""
    if n < 1:
        raise ValueError("chunks must be >= 1")
    if len(text) >= n:
        return _even_groups(list(text), n)
    return [*text, *([""] * (n - len(text)))]


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
