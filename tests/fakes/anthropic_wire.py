"""Anthropic Messages wire format for the fake provider: request checks and answer bodies. No IO.

Requests are validated against the installed SDK's own request TypedDicts
(`anthropic.types.MessageCreateParams`, `MessageCountTokensParams`, and their `anthropic.types.beta`
twins for `?beta=true` / `anthropic-beta` requests). A plain `TypeAdapter` over them is too lax:
lists are `Iterable[...]`, which pydantic checks lazily, so `messages: [{"bad": 1}]` would pass;
TypedDicts ignore unknown keys, where the API answers 400 `<path>: Extra inputs are not permitted`
(`messages.65.content.1.tool_use.text: ...`, anthropics/claude-code#4378); content unions accept
the SDK's response models and file objects too; and `betas`, `user_profile_id`, `workspace_id`
are header parameters typed next to the body fields. So the types are rewritten once into eager
twins (`list`, `extra="forbid"`, Python-only members dropped) whose unions are discriminated on
`type` (or `role`) where every member has one: that gives the API's own wording ("Input tag 'x'
found using 'type' does not match any of the expected tags: ...") and paths that name the block
type. Bodies are validated in pydantic's strict mode on the raw JSON.

The SDK (2.x) pins `anthropic-version: 2026-10-21`, the version that removed `temperature`,
`top_p` and `top_k` (they are then "Extra inputs are not permitted", even at 1.0). Under
`2023-06-01`, which older clients and Claude Code send, they are accepted in [0, 1] / >= 0.

Rules the types cannot express, each with the API's error text where it is on record, are in
`check_rules`. Answer shapes follow the SDK's response models (`Message`, `RawMessageStreamEvent`,
`MessageTokensCount`, `ModelInfo`) and the streaming reference.

Past the ~600-line guide on purpose: the fake is two modules, as the OpenAI one is; if it grows,
the seam to split along is `check_rules` (the API's rules beyond its types).
"""

from __future__ import annotations

import base64
import collections.abc as cabc
import functools
import hashlib
import json
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import orjson
import typing_extensions as te
from anthropic.types import MessageCountTokensParams as _CountParams
from anthropic.types import MessageCreateParams as _CreateParams
from anthropic.types.beta import MessageCountTokensParams as _BetaCountParams
from anthropic.types.beta import MessageCreateParams as _BetaCreateParams
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

__all__ = [
    "API_VERSIONS",
    "LATEST_VERSION",
    "BodyProblem",
    "Reply",
    "check_rules",
    "error_body",
    "input_tokens",
    "last_user_text",
    "media_of",
    "message_body",
    "model_info",
    "sse",
    "status_error",
    "stream_error",
    "stream_events",
    "thinking_signature",
    "truncate",
    "validate_body",
    "words",
]

LATEST_VERSION = "2026-10-21"
# Versions the API answers; the sampling parameters exist only before 2026-10-21.
API_VERSIONS = frozenset({"2023-01-01", "2023-06-01", LATEST_VERSION})
_SAMPLING_VERSIONS = frozenset({"2023-01-01", "2023-06-01"})
# Parameters the SDK types next to body fields but sends as headers (resources/messages.py).
_HEADER_PARAMS = frozenset({"betas", "user_profile_id", "workspace_id"})
_THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
MODEL_CREATED_AT = "2025-01-01T00:00:00Z"  # fixed so that model listings compare equal


# ---------------------------------------------------------------------------------------------
# Request types: eager twins of the SDK's TypedDicts
# ---------------------------------------------------------------------------------------------

# The functional TypedDict form with a computed name; typed Any because mypy only accepts literals.
_make_typeddict: Any = te.TypedDict


def _python_only(tp: Any) -> bool:
    """Union members a JSON body can never be: response models, file objects, paths."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return True
    origin = get_origin(tp)
    if origin in (typing.Annotated, te.Annotated):
        return _python_only(get_args(tp)[0])
    if origin is Union:
        return all(_python_only(a) for a in get_args(tp))
    return (origin or tp) in (typing.IO, os.PathLike)


def _tag(td: Any, key: str) -> str | None:
    """The single literal value of a required `key` field of TypedDict `td`, if it has one."""
    hint = get_type_hints(td, include_extras=True).get(key)
    if hint is None or get_origin(hint) is te.NotRequired:
        return None
    if get_origin(hint) is te.Required:
        hint = get_args(hint)[0]
    elif key not in td.__required_keys__:
        return None
    args = get_args(hint)
    literal = get_origin(hint) in (typing.Literal, te.Literal)
    return args[0] if literal and len(args) == 1 and isinstance(args[0], str) else None


def _fields(td: Any, memo: dict[Any, Any], forbid: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, hint in get_type_hints(td, include_extras=True).items():
        origin = get_origin(hint)
        inner = get_args(hint)[0] if origin in (te.Required, te.NotRequired) else hint
        # The SDK modules use `from __future__ import annotations`, so `__required_keys__`
        # cannot see `Required[...]` in string annotations; the resolved hint can.
        required = origin is te.Required or (
            origin is not te.NotRequired and name in td.__required_keys__
        )
        new = _eager(inner, memo, forbid)
        fields[name] = te.Required[new] if required else te.NotRequired[new]
    return fields


def _twin(name: str, fields: dict[str, Any], forbid: bool) -> Any:
    twin = _make_typeddict(name, fields, total=False)
    twin.__pydantic_config__ = {"extra": "forbid" if forbid else "ignore"}
    return twin


def _eager(tp: Any, memo: dict[Any, Any], forbid: bool) -> Any:
    """Rewrite an SDK param type into one pydantic validates eagerly (see module docstring)."""
    if te.is_typeddict(tp):
        if tp not in memo:
            memo[tp] = _twin(tp.__name__, _fields(tp, memo, forbid), forbid)
        return memo[tp]
    origin = get_origin(tp)
    if origin is None:
        return tp
    args = get_args(tp)
    if origin in (cabc.Iterable, cabc.Sequence, list):
        return list[_eager(args[0], memo, forbid)]  # type: ignore[misc]
    if origin is Union:
        members = [a for a in args if not _python_only(a)]
        new = tuple(_eager(a, memo, forbid) for a in members)
        if len(new) == 1:
            return new[0]
        if all(te.is_typeddict(m) for m in members):
            for key in ("type", "role"):
                tags = [_tag(m, key) for m in members]
                if None not in tags and len(set(tags)) == len(tags):
                    return Annotated[Union[new], Field(discriminator=key)]  # noqa: UP007
        return Union[new]  # noqa: UP007
    if origin in (dict, cabc.Mapping):
        key_t, value_t = (_eager(a, memo, forbid) for a in args)
        return dict[key_t, value_t]  # type: ignore[valid-type]
    if origin in (typing.Literal, te.Literal):
        return tp
    if origin in (typing.Annotated, te.Annotated):
        return Annotated[(_eager(args[0], memo, forbid), *tp.__metadata__)]
    raise TypeError(f"fake anthropic: no eager rewrite for {tp!r}")


# Removed in 2026-10-21; before it, temperature and top_p in [0, 1], top_k a count.
_SAMPLING: dict[str, Any] = {
    "temperature": te.NotRequired[Annotated[float, Field(ge=0, le=1)]],
    "top_p": te.NotRequired[Annotated[float, Field(ge=0, le=1)]],
    "top_k": te.NotRequired[Annotated[int, Field(ge=0)]],
}


@functools.cache
def _adapter(endpoint: str, *, beta: bool, stream: bool, sampling: bool, forbid: bool) -> Any:
    """The TypeAdapter for one kind of body; built on first use, kept for the process."""
    memo: dict[Any, Any] = {}
    if endpoint == "count_tokens":
        top = _BetaCountParams if beta else _CountParams
    else:
        # The SDK's union is {stream absent/false} | {stream: true}; validating the branch the
        # body asks for keeps pydantic's error list free of the other branch.
        top = get_args(_BetaCreateParams if beta else _CreateParams)[1 if stream else 0]
    fields = {k: v for k, v in _fields(top, memo, forbid).items() if k not in _HEADER_PARAMS}
    if sampling and endpoint == "messages":
        fields.update(_SAMPLING)
    return TypeAdapter(_twin(top.__name__, fields, forbid))


@dataclass(frozen=True)
class BodyProblem:
    """Why a body was refused: the API's `error.message`, plus the full detail for the record."""

    message: str
    detail: str


_TYPE_LABELS = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "bytes"})


def _param_path(loc: tuple[int | str, ...], data: Any) -> str:
    """`messages.0.content.1.tool_use.text`: the API's dotted path, walked along the body.

    pydantic's `loc` mixes body keys with union labels; a discriminated union puts the tag in
    (kept, as the API shows `tool_use` above), a message's `role` tag is dropped, as are type
    labels (`str`, `list[...]`, TypedDict names).
    """
    out: list[str] = []
    node, tag_used = data, False
    for part in loc:
        if isinstance(part, int):
            out.append(str(part))
            node = node[part] if isinstance(node, list) and part < len(node) else None
            tag_used = False
        elif isinstance(node, dict) and not tag_used and node.get("type") == part:
            out.append(part)
            tag_used = True
        elif isinstance(node, dict) and not tag_used and node.get("role") == part:
            tag_used = True
        elif isinstance(node, dict) and part in node:
            out.append(part)
            node, tag_used = node[part], False
            if part == "cache_control" and isinstance(node, dict) and "type" in node:
                # A union of one member in the API's schema, so it shows the tag
                # (`system.1.cache_control.ephemeral.scope`, caozhiyuan/copilot-api#145).
                out.append(str(node["type"]))
                tag_used = True
        elif re.fullmatch(r"[a-z_][a-z0-9_]*", part) and part not in _TYPE_LABELS:
            out.append(part)  # a missing field
            node = None
    return ".".join(out)


def _problem_from(exc: ValidationError, data: Any) -> BodyProblem:
    errors = exc.errors(include_url=False)
    # A block that fails several union branches on their literal `type`/`name` was not meant
    # to be those branches; the deepest remaining error is the telling one (the `str` branch of
    # `content: str | list[...]` fails shallowly and loses).
    telling = [
        e
        for e in errors
        if not (e["type"] == "literal_error" and e["loc"] and e["loc"][-1] in ("type", "name"))
    ] or errors
    first = max(telling, key=lambda e: len(e["loc"]))
    path = _param_path(first["loc"], data)
    message = f"{path}: {first['msg']}" if path else first["msg"]
    return BodyProblem(message, str(exc))


def validate_body(
    endpoint: str, raw: bytes, *, beta: bool, version: str, forbid_extra: bool, signed: bool
) -> tuple[Any, BodyProblem | None]:
    """Parse and check one body for `endpoint` ('messages' or 'count_tokens').

    Returns the parsed JSON (None when it is not JSON) and the problem, if any. `signed`: thinking
    blocks must carry this fake's signature (`thinking_signature`).
    """
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # The API appends its parser's error, worded as orjson words it ("The request body is not
        # valid JSON: unexpected character: line 8 column 316 (char 466)", promptfoo/promptfoo#4489).
        return None, BodyProblem(f"The request body is not valid JSON: {exc}", str(exc))
    if not isinstance(parsed, dict):
        msg = "Input should be a valid dictionary or instance of the model"
        return parsed, BodyProblem(msg, f"top-level JSON is {type(parsed).__name__}")
    adapter = _adapter(
        endpoint,
        beta=beta,
        stream=parsed.get("stream") is True,
        sampling=version in _SAMPLING_VERSIONS,
        forbid=forbid_extra,
    )
    try:
        adapter.validate_json(raw, strict=True)
    except ValidationError as exc:
        return parsed, _problem_from(exc, parsed)
    message = check_rules(parsed, endpoint=endpoint, version=version, signed=signed)
    return parsed, None if message is None else BodyProblem(message, message)


# ---------------------------------------------------------------------------------------------
# Rules beyond the types
# ---------------------------------------------------------------------------------------------


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _content_rules(messages: list[dict[str, Any]], version: str) -> str | None:
    last = len(messages) - 1
    for i, m in enumerate(messages):
        final_assistant = i == last and m["role"] == "assistant"
        if m["content"] in ("", []) and not final_assistant:
            return (
                f"messages.{i}: all messages must have non-empty content except for the "
                "optional final assistant message"
            )
        for j, block in enumerate(_blocks(m["content"])):
            if block.get("type") == "text" and not final_assistant:
                if block["text"] == "":
                    return "messages: text content blocks must be non-empty"
                if not block["text"].strip():
                    return "messages: text content blocks must contain non-whitespace text"
            if version == LATEST_VERSION:
                # Migration guide for 2026-10-21; the wording of these two is the fake's own.
                if block.get("type") == "document" and m["role"] == "assistant":
                    return f"messages.{i}.content.{j}: `document` blocks are not allowed in `assistant` messages"
                if block.get("type") == "text" and block.get("citations") and m["role"] == "user":
                    return f"messages.{i}.content.{j}.text.citations: citations are not allowed in `user` messages"
    return None


def _system_placement(messages: list[dict[str, Any]]) -> str | None:
    """Mid-conversation system messages (docs: build-with-claude/mid-conversation-system-messages):
    never first; right after a user message or an assistant message ending in server tool use;
    last, or followed by an assistant message. The wording is the fake's own."""
    for i, m in enumerate(messages):
        if m["role"] != "system":
            continue
        prev = messages[i - 1] if i else None
        prev_ok = prev is not None and (
            prev["role"] == "user"
            or (
                prev["role"] == "assistant"
                and (_blocks(prev["content"]) or [{}])[-1].get("type") == "server_tool_use"
            )
        )
        next_ok = i == len(messages) - 1 or messages[i + 1]["role"] == "assistant"
        if not (prev_ok and next_ok):
            return (
                f"messages.{i}: a `system` message must immediately follow a `user` message (or an "
                "`assistant` message ending in server tool use) and be the last message or be "
                "followed by an `assistant` message"
            )
    return None


def _ids(message: dict[str, Any] | None, role: str, type_: str, key: str) -> list[str]:
    """The `key` of every `type_` block of `message`, if it has role `role`."""
    if message is None or message["role"] != role:
        return []
    return [b[key] for b in _blocks(message["content"]) if b.get("type") == type_]


def _tool_pairing(messages: list[dict[str, Any]]) -> str | None:
    """Each tool_result answers a tool_use of the message just before, and every tool_use is
    answered in the next message (wording from anthropics/claude-code#13460 and #8210)."""
    for i, m in enumerate(messages):
        prev = messages[i - 1] if i else None
        asked = _ids(prev, "assistant", "tool_use", "id")
        for j, b in enumerate(_blocks(m["content"]) if m["role"] == "user" else []):
            if b.get("type") == "tool_result" and b["tool_use_id"] not in asked:
                return (
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {b['tool_use_id']}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
        if i + 1 < len(messages):
            answered = _ids(messages[i + 1], "user", "tool_result", "tool_use_id")
            missing = [u for u in _ids(m, "assistant", "tool_use", "id") if u not in answered]
            if missing:
                return (
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                    "corresponding `tool_result` block in the next message."
                )
    return None


def _thinking_rules(body: dict[str, Any], endpoint: str, signed: bool) -> str | None:
    messages: list[dict[str, Any]] = body["messages"]
    if signed:
        for i, m in enumerate(messages):
            for j, b in enumerate(_blocks(m["content"])):
                if b.get("type") == "thinking" and b["signature"] != thinking_signature(
                    b["thinking"]
                ):
                    # anthropics/claude-code#10627
                    return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
    thinking = body.get("thinking") or {}
    if thinking.get("type") != "enabled":
        return None
    budget = thinking["budget_tokens"]
    if budget < 1024:
        return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    if endpoint == "messages" and body["max_tokens"] <= budget:
        return (
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
            f"documentation at {_THINKING_DOCS}#max-tokens-and-context-window-size"
        )
    # In a tool loop the assistant turn being answered must start with its thinking block
    # (quoted in lbjlaq/Antigravity-Manager#139): a translator that drops it breaks here.
    if len(messages) >= 2 and messages[-1]["role"] == "user":
        last_blocks = _blocks(messages[-1]["content"])
        prev = messages[-2]
        prev_blocks = _blocks(prev["content"])
        loop = any(b.get("type") == "tool_result" for b in last_blocks) and any(
            b.get("type") == "tool_use" for b in prev_blocks
        )
        first = prev_blocks[0].get("type") if prev_blocks else None
        if loop and prev["role"] == "assistant" and first not in ("thinking", "redacted_thinking"):
            return (
                f"messages.{len(messages) - 2}.content.0.type: Expected `thinking` or "
                f"`redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final "
                "`assistant` message must start with a thinking block (preceeding the lastmost set "
                "of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks "
                "from previous turns. To avoid this requirement, disable `thinking`. Please consult "
                f"our documentation at {_THINKING_DOCS}"
            )
    return None


def check_rules(body: dict[str, Any], *, endpoint: str, version: str, signed: bool) -> str | None:
    """What the API refuses beyond the types; the first `error.message`, or None."""
    messages = body["messages"]
    if not messages:
        return "messages: at least one message is required"
    return (
        _content_rules(messages, version)
        or _system_placement(messages)
        or _tool_pairing(messages)
        or _thinking_rules(body, endpoint, signed)
    )


def media_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every image and document in the messages (tool results included), by path and source."""
    found: list[dict[str, Any]] = []

    def visit(blocks: list[dict[str, Any]], path: str) -> None:
        for j, b in enumerate(blocks):
            if b.get("type") in ("image", "document"):
                src = b.get("source", {})
                data = src.get("data")
                found.append(
                    {
                        "path": f"{path}.{j}",
                        "type": b["type"],
                        "source": src.get("type"),
                        "media_type": src.get("media_type"),
                        "url": src.get("url"),
                        "data_len": len(data) if isinstance(data, str) else None,
                    }
                )
            elif b.get("type") == "tool_result":
                visit(_blocks(b.get("content", [])), f"{path}.{j}.content")

    for i, m in enumerate(body.get("messages", [])):
        visit(_blocks(m.get("content")), f"messages.{i}.content")
    return found


# ---------------------------------------------------------------------------------------------
# Deterministic content and token counts
# ---------------------------------------------------------------------------------------------


def words(text: str) -> int:
    """The fake's token count: whitespace-separated words (as in the OpenAI fake)."""
    return len(text.split())


def _groups(items: list[str], n: int) -> list[str]:
    """`items` joined into `n` runs as even as possible, padded with empty runs if short."""
    q, r = divmod(len(items), n)
    bounds = [i * q + min(i, r) for i in range(n + 1)]
    return ["".join(items[bounds[i] : bounds[i + 1]]) for i in range(n)]


def split_text(text: str, n: int | None) -> list[str]:
    """Deltas whose concatenation is `text`: one per word (leading whitespace attached, like
    model tokens), or exactly `n`, words grouped evenly, else cut between characters. (The OpenAI
    fake has the same helper; importing it would load the `openai` SDK into every Anthropic test.)"""
    pieces = re.findall(r"\s*\S+", text)
    if len("".join(pieces)) < len(text):
        pieces.append(text[len("".join(pieces)) :])
    if n is None:
        return pieces
    return _groups(pieces, n) if len(pieces) >= n else split_chars(text, n)


def split_chars(text: str, n: int) -> list[str]:
    """`n` fragments cut at character positions (mid-word, mid-token)."""
    return _groups(list(text), n)


def _text_of(content: Any, *, tool_results: bool) -> str:
    parts = []
    for b in _blocks(content):
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


def thinking_signature(thinking: str) -> str:
    """The fake's signature of a thinking text: base64 of its SHA-256. Deterministic, so a test
    can build valid history; the fake refuses any other signature, as the API does."""
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()


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
