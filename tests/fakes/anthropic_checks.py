"""Anthropic Messages request checks for the fake provider: the SDK's types, the API's rules. No IO.

Requests are validated against the installed SDK's own request TypedDicts
(`anthropic.types.MessageCreateParams`, `MessageCountTokensParams`, and their `anthropic.types.beta`
twins for `?beta=true` / `anthropic-beta` requests), rewritten into eager twins (`eager_types`:
lists checked item by item, unknown keys refused as the API refuses them, with `<path>: Extra
inputs are not permitted`: `messages.65.content.1.tool_use.text: ...`,
anthropics/claude-code#4378). The SDK's types are wider than the API in two more ways: content
unions accept the SDK's response models and file objects too, and `betas`, `user_profile_id`,
`workspace_id` are header parameters typed next to the body fields. So the twins drop
Python-only members and header parameters, and their unions are discriminated on `type` (or
`role`) where every member has one: that gives the API's own wording ("Input tag 'x' found using
'type' does not match any of the expected tags: ...") and paths that name the block type. Bodies
are validated in pydantic's strict mode on the raw JSON.

The SDK (2.x) pins `anthropic-version: 2026-10-21`, the version that removed `temperature`,
`top_p` and `top_k` (they are then "Extra inputs are not permitted", even at 1.0). Under
`2023-06-01`, which older clients and Claude Code send, they are accepted in [0, 1] / >= 0.

Rules the types cannot express, each with the API's error text where it is on record, are in
`check_rules`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import orjson
import typing_extensions as te
from anthropic.types import MessageCountTokensParams as _CountParams
from anthropic.types import MessageCreateParams as _CreateParams
from anthropic.types.beta import MessageCountTokensParams as _BetaCountParams
from anthropic.types.beta import MessageCreateParams as _BetaCreateParams
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from tests.fakes.eager_types import EagerRewrite

__all__ = [
    "API_VERSIONS",
    "LATEST_VERSION",
    "BodyProblem",
    "check_rules",
    "content_blocks",
    "media_of",
    "thinking_signature",
    "validate_body",
]

LATEST_VERSION = "2026-10-21"
# Versions the API answers; the sampling parameters exist only before 2026-10-21.
API_VERSIONS = frozenset({"2023-01-01", "2023-06-01", LATEST_VERSION})
_SAMPLING_VERSIONS = frozenset({"2023-01-01", "2023-06-01"})
# Parameters the SDK types next to body fields but sends as headers (resources/messages.py).
_HEADER_PARAMS = frozenset({"betas", "user_profile_id", "workspace_id"})
_THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"


# ---------------------------------------------------------------------------------------------
# Request types: eager twins of the SDK's TypedDicts
# ---------------------------------------------------------------------------------------------


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


class _Rewrite(EagerRewrite):
    """Unions without the members a JSON body cannot be, discriminated on a tag where they can."""

    def union(self, args: tuple[Any, ...]) -> Any:
        members = [a for a in args if not _python_only(a)]
        new = tuple(self(a) for a in members)
        if len(new) == 1:
            return new[0]
        if all(te.is_typeddict(m) for m in members):
            for key in ("type", "role"):
                tags = [_tag(m, key) for m in members]
                if None not in tags and len(set(tags)) == len(tags):
                    return Annotated[Union[new], Field(discriminator=key)]  # noqa: UP007
        return Union[new]  # noqa: UP007


# Removed in 2026-10-21; before it, temperature and top_p in [0, 1], top_k a count.
_SAMPLING: dict[str, Any] = {
    "temperature": te.NotRequired[Annotated[float, Field(ge=0, le=1)]],
    "top_p": te.NotRequired[Annotated[float, Field(ge=0, le=1)]],
    "top_k": te.NotRequired[Annotated[int, Field(ge=0)]],
}


@functools.cache
def _adapter(endpoint: str, *, beta: bool, stream: bool, sampling: bool, forbid: bool) -> Any:
    """The TypeAdapter for one kind of body; built on first use, kept for the process."""
    eager = _Rewrite(forbid=forbid)
    if endpoint == "count_tokens":
        top = _BetaCountParams if beta else _CountParams
    else:
        # The SDK's union is {stream absent/false} | {stream: true}; validating the branch the
        # body asks for keeps pydantic's error list free of the other branch.
        top = get_args(_BetaCreateParams if beta else _CreateParams)[1 if stream else 0]
    fields = {k: v for k, v in eager.fields(top).items() if k not in _HEADER_PARAMS}
    if sampling and endpoint == "messages":
        fields.update(_SAMPLING)
    return TypeAdapter(eager.twin(top.__name__, fields))


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


def content_blocks(content: Any) -> list[dict[str, Any]]:
    """A message's content as blocks: a string is one text block."""
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
        for j, block in enumerate(content_blocks(m["content"])):
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
                and (content_blocks(prev["content"]) or [{}])[-1].get("type") == "server_tool_use"
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
    return [b[key] for b in content_blocks(message["content"]) if b.get("type") == type_]


def _tool_pairing(messages: list[dict[str, Any]]) -> str | None:
    """Each tool_result answers a tool_use of the message just before, and every tool_use is
    answered in the next message (wording from anthropics/claude-code#13460 and #8210)."""
    for i, m in enumerate(messages):
        prev = messages[i - 1] if i else None
        asked = _ids(prev, "assistant", "tool_use", "id")
        for j, b in enumerate(content_blocks(m["content"]) if m["role"] == "user" else []):
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
            for j, b in enumerate(content_blocks(m["content"])):
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
        last_blocks = content_blocks(messages[-1]["content"])
        prev = messages[-2]
        prev_blocks = content_blocks(prev["content"])
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
                visit(content_blocks(b.get("content", [])), f"{path}.{j}.content")

    for i, m in enumerate(body.get("messages", [])):
        visit(content_blocks(m.get("content")), f"messages.{i}.content")
    return found


def thinking_signature(thinking: str) -> str:
    """The fake's signature of a thinking text: base64 of its SHA-256. Deterministic, so a test
    can build valid history; the fake refuses any other signature, as the API does."""
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()
