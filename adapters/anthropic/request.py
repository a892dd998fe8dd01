"""Anthropic Messages requests: a caller's body -> canonical, canonical -> a provider's body.

Caller side (`to_canonical_request`): what has an equivalent is mapped, hints that mean nothing
elsewhere (`cache_control`, `metadata`, `context_management`, `service_tier`, `container`,
`speed`, `inference_geo`, citations) are dropped quietly, and what another provider cannot do
(server tools, Files API ids, MCP servers) is refused with `Unsupported` naming the field in the
API's own dotted style (`messages.3.content.1`, `tools.12`).

Provider side (`from_canonical_request`): a body the API accepts. Rules it enforces beyond the
types are met here, each with the API's error text:
- `max_tokens` is required; a default is supplied (`DEFAULT_MAX_TOKENS`).
- "stop_sequences: each stop sequence must contain non-whitespace" -> such a stop is refused
  (`Unsupported`) rather than dropped, since the model would then not stop where asked.
- the rules on turns and blocks are met in `content.py`.
- thinking: "`max_tokens` must be greater than `thinking.budget_tokens`", budget >= 1024,
  "Thinking may not be enabled when tool_choice forces tool use", and in a tool loop "a final
  `assistant` message must start with a thinking block" (see `_thinking`).
- "`temperature` and `top_p` cannot both be specified for this model" (Sonnet 4.5 and later);
  Claude 4.7 and later take no sampling parameters at all ("`temperature` is deprecated for this
  model") and only adaptive thinking, and models before 4.6 only budgeted thinking: the form is
  chosen from the version in the upstream model's name (`_generation`).

The body assumes `anthropic-version: 2023-06-01` (`API_VERSION`), which the registry sends:
version 2026-10-21 refuses `temperature`, `top_p` and `top_k` outright.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from adapters import canonical
from adapters.anthropic import wire
from adapters.anthropic.content import (
    KNOWN_BLOCKS,
    blocks_to_canonical,
    turns_from_canonical,
    unsupported_block,
)
from adapters.canonical import TranslationError, Unsupported

__all__ = [
    "API_VERSION",
    "DEFAULT_MAX_TOKENS",
    "from_canonical_request",
    "request_path",
    "to_canonical_request",
]

API_VERSION = "2023-06-01"

# `max_tokens` is required by the API and optional in OpenAI and Gemini. 4096 is within the
# output limit of every Claude model (Claude 3 Haiku's 4096 is the smallest), so the default never
# causes "max_tokens: N > M, which is the maximum allowed".
DEFAULT_MAX_TOKENS = 4096
# Adaptive thinking exists only on models with output limits of 64K and more, and its thinking
# counts against max_tokens: 4096 would leave little room for the answer after it.
_ADAPTIVE_MAX_TOKENS = 16384
# "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024".
_MIN_BUDGET = 1024
# Extended thinking allows top_p only in [0.95, 1] ("Thinking isn't compatible with temperature
# or top_k modifications"; docs: extended-thinking, feature compatibility).
_THINKING_MIN_TOP_P = 0.95

# Claude generations that change what a request may hold (see `_thinking`, `_sampling`).
_Gen = tuple[int, int]
_ADAPTIVE_FROM: _Gen = (4, 6)
_ADAPTIVE_ONLY: _Gen = (4, 7)
# Numbers in a model id that are versions: one or two digits between separators, so neither a
# date (20250219) nor a digit inside a word.
_VERSION_NUMBERS = re.compile(r"(?<![0-9A-Za-z])([0-9]{1,2})(?![0-9A-Za-z])")
# For models that know only budgets, an effort as a budget (LiteLLM's low/medium/high scale,
# stretched: thinking within max_tokens still fits every such model's output limit).
_BUDGET_FOR = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
_EFFORT_IN: dict[str, Literal["low", "medium", "high"]] = {
    "low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high",
}
_EFFORT_OUT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high"}
_ROLES: dict[str, canonical.Role] = {"user": "user", "assistant": "assistant"}
_JSON_OBJECT_HINT = "Respond with one valid JSON object only, with no text before or after it."
_NO_SERVERS = frozenset({b"", b"null", b"[]"})
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def request_path(*, model: str, stream: bool) -> bytes:
    return b"/v1/messages"


# --- caller side -------------------------------------------------------------------------------


def to_canonical_request(body: bytes, *, model: str | None = None,
                         stream: bool | None = None) -> canonical.Request:
    """A caller's Messages body. `model` and `stream` come from the body; the arguments only
    stand in when the body lacks them."""
    try:
        b = wire.BODY.decode(body)
    except msgspec.ValidationError as exc:
        raise _diagnose(body, exc) from None
    except msgspec.DecodeError as exc:
        raise TranslationError(f"The request body is not valid JSON: {exc}") from None
    if bytes(b.mcp_servers) not in _NO_SERVERS:
        raise Unsupported("mcp_servers: the MCP connector runs inside Anthropic's API; this "
                          "model's provider cannot reach MCP servers", param="mcp_servers")
    system = _system(b.system, "system")
    messages: list[canonical.Message] = []
    for i, turn in enumerate(b.messages):
        role = _ROLES.get(turn.role)
        if role is not None:
            messages.append(canonical.Message(role, blocks_to_canonical(turn.content, i)))
        elif turn.role == "system":
            # A mid-conversation system entry (Claude Code sends one): canonical has a single
            # system prompt, so it joins it, in order.
            system.extend(_system(turn.content, f"messages.{i}.content"))
        else:
            raise TranslationError(f"messages.{i}.role: unknown role {turn.role!r}",
                                   f"messages.{i}.role")
    is_stream = b.stream if b.stream is not None else bool(stream)
    return canonical.Request(
        model=b.model or model or "",
        messages=messages,
        system=system,
        max_tokens=b.max_tokens,
        temperature=b.temperature,
        top_p=b.top_p,
        top_k=b.top_k,
        stop=b.stop_sequences or [],
        stream=is_stream,
        tools=_tools(b.tools) if b.tools else [],
        tool_choice=_tool_choice(b.tool_choice) if b.tool_choice is not None else None,
        response_format=_response_format(b),
        reasoning=_reasoning(b),
        # An Anthropic stream always reports usage (message_start, message_delta), so a
        # provider that reports it only on request must be asked to.
        stream_usage=is_stream,
    )


def _diagnose(body: bytes, exc: msgspec.ValidationError) -> TranslationError:
    """The typed decode failed: name the block at fault if one is (a server-tool block whose
    fields have other JSON types), else pass msgspec's message with its path."""
    try:
        loose = wire.LOOSE_BODY.decode(body)
    except msgspec.DecodeError:
        return TranslationError(f"Invalid request body: {exc}")
    for i, turn in enumerate(loose.messages):
        if isinstance(turn.content, str):
            continue
        for j, raw in enumerate(turn.content):
            try:
                wire.BLOCK.decode(raw)
            except msgspec.DecodeError as err:
                path = f"messages.{i}.content.{j}"
                try:
                    kind = wire.BLOCK_TYPE.decode(raw).type
                except msgspec.DecodeError:
                    kind = ""
                if kind and kind not in KNOWN_BLOCKS:
                    return unsupported_block(kind, path)
                return TranslationError(f"{path}: {err}", path)
    return TranslationError(f"Invalid request body: {exc}")


def _system(content: str | list[wire.Block] | None, path: str) -> list[canonical.Text]:
    if not content:
        return []
    if isinstance(content, str):
        return [canonical.Text(content)]
    out = []
    for j, block in enumerate(content):
        if block.type != "text":
            raise TranslationError(f"{path}.{j}: a system prompt holds text blocks only, "
                                   f"not `{block.type}`", f"{path}.{j}")
        out.append(canonical.Text(block.text or ""))
    return out


def _tools(tools: list[wire.Tool]) -> list[canonical.Tool]:
    out = []
    for i, t in enumerate(tools):
        if t.type is not None and t.type != "custom":
            # Server tools (web_search_*, code_execution_*, bash_*, text_editor_*, ...) run
            # inside Anthropic's API; canonical has no notion of them and no other provider
            # runs them.
            raise Unsupported(f"tools.{i}: `{t.type}` is an Anthropic server tool, which this "
                              "model's provider cannot run", param=f"tools.{i}")
        out.append(canonical.Tool(t.name, t.description, t.input_schema))
    return out


def _tool_choice(tc: wire.ToolChoice) -> canonical.ToolChoice:
    parallel = False if tc.disable_parallel_tool_use else None
    match tc.type:
        case "auto":
            return canonical.ToolChoice("auto", parallel=parallel)
        case "any":
            return canonical.ToolChoice("required", parallel=parallel)
        case "tool":
            return canonical.ToolChoice("tool", tc.name, parallel)
        case "none":
            return canonical.ToolChoice("none")
        case _:
            raise TranslationError(f"tool_choice.type: unknown value {tc.type!r}",
                                   "tool_choice.type")


def _response_format(b: wire.Body) -> canonical.ResponseFormat | None:
    fmt = b.output_config.format if b.output_config is not None else None
    fmt = fmt or b.output_format
    if fmt is None or fmt.type != "json_schema":
        return None
    # Anthropic constrains decoding to the schema, but its schema rules are not OpenAI's strict
    # mode's (optional properties are allowed), so strictness is left to the target's default.
    return canonical.ResponseFormat("json_schema", fmt.schema)


def _reasoning(b: wire.Body) -> canonical.Reasoning | None:
    effort_name = b.output_config.effort if b.output_config is not None else None
    # xhigh and max have no canonical word; high is the nearest.
    effort = _EFFORT_IN.get(effort_name) if effort_name else None
    t = b.thinking
    if t is None:
        return canonical.Reasoning(effort=effort) if effort else None
    show = t.display != "omitted"
    match t.type:
        case "disabled":
            return canonical.Reasoning(enabled=False)
        case "enabled":
            return canonical.Reasoning(budget_tokens=t.budget_tokens, effort=effort,
                                       include_thoughts=show)
        case _:  # adaptive, between_tools, and any later mode that turns thinking on
            return canonical.Reasoning(effort=effort, include_thoughts=show)


# --- provider side -----------------------------------------------------------------------------


def from_canonical_request(req: canonical.Request, *, model: str) -> bytes:
    messages = turns_from_canonical(req.messages)
    gen = _generation(model)
    thinking, effort, max_tokens = _thinking(req, messages, gen)
    thinks = thinking is not None and thinking.type != "disabled"
    temperature, top_p, top_k = _sampling(req, thinks, gen)
    tools = [_tool(t) for t in req.tools] or None
    out = wire.OutRequest(
        model=model,
        max_tokens=max_tokens,
        messages=messages,
        system=_system_out(req),
        stop_sequences=_stops(req.stop),
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        tools=tools,
        # "tool_choice may only be specified while providing tools".
        tool_choice=_tool_choice_out(req.tool_choice) if tools else None,
        thinking=thinking,
        output_config=_output_config(req.response_format, effort),
        stream=True if req.stream else None,
    )
    return wire.ENCODER.encode(out)


def _output_config(fmt: canonical.ResponseFormat | None, effort: str | None
                   ) -> wire.OutOutputConfig | None:
    schema = None
    if fmt is not None and fmt.type == "json_schema" and fmt.schema:
        schema = wire.OutFormat(fmt.schema)
    if effort is None and schema is None:
        return None
    return wire.OutOutputConfig(effort, schema)


def _system_out(req: canonical.Request) -> str | list[wire.OutText] | None:
    texts = [t.text for t in req.system if t.text.strip()]
    fmt = req.response_format
    if fmt is not None and (fmt.type == "json_object"
                            or (fmt.type == "json_schema" and not fmt.schema)):
        # Anthropic has no "any JSON object" mode (output_config.format takes a schema, and an
        # empty object schema would allow only `{}`); the instruction is what JSON mode means.
        texts.append(_JSON_OBJECT_HINT)
    if not texts:
        return None
    return texts[0] if len(texts) == 1 else [wire.OutText(t) for t in texts]


def _stops(stop: list[str]) -> list[str] | None:
    for s in stop:
        if not s.strip():
            raise Unsupported(f"stop: Anthropic refuses the stop sequence {s!r} (each stop "
                              "sequence must contain non-whitespace)", param="stop")
    return stop or None


def _sampling(req: canonical.Request, thinks: bool, gen: _Gen | None
              ) -> tuple[float | None, float | None, int | None]:
    if gen is not None and gen >= _ADAPTIVE_ONLY:
        # Claude 4.7 and later fix their own sampling ("`temperature` is deprecated for this
        # model"); a caller's setting is a hint they cannot take, so it is left out.
        return None, None, None
    # OpenAI and Gemini take temperature in [0, 2], Anthropic in [0, 1]: values above 1 are
    # clamped rather than scaled, so that the common 0-1 settings mean the same everywhere.
    temperature = None if req.temperature is None else min(max(req.temperature, 0.0), 1.0)
    top_p, top_k = req.top_p, req.top_k
    if thinks:
        # With thinking on, temperature must stay 1 and top_k unset; top_p only in [0.95, 1].
        top_p = None if top_p is None else min(max(top_p, _THINKING_MIN_TOP_P), 1.0)
        return None, top_p, None
    if temperature is not None and top_p is not None:
        top_p = None  # recent models refuse both; temperature is the one callers set
    return temperature, top_p, top_k


def _tool(t: canonical.Tool) -> wire.OutTool:
    schema = t.parameters
    if not schema:
        schema = _EMPTY_SCHEMA
    elif "type" not in schema:
        schema = {"type": "object", **schema}
    return wire.OutTool(t.name, schema, t.description)


def _tool_choice_out(tc: canonical.ToolChoice | None) -> wire.OutToolChoice | None:
    if tc is None:
        return None
    no_parallel = True if tc.parallel is False else None
    match tc.mode:
        case "none":
            return wire.OutToolChoice("none")
        case "required":
            return wire.OutToolChoice("any", None, no_parallel)
        case "tool":
            return wire.OutToolChoice("tool", tc.name, no_parallel)
        case _:
            return wire.OutToolChoice("auto", None, no_parallel)


def _thinking(req: canonical.Request, messages: list[wire.OutMessage], gen: _Gen | None
              ) -> tuple[wire.OutThinkingConfig | None, str | None, int]:
    """`(thinking, effort, max_tokens)` for the provider."""
    r = req.reasoning
    max_tokens = req.max_tokens
    if r is None:
        return None, None, max_tokens or DEFAULT_MAX_TOKENS
    budget = r.budget_tokens
    off = wire.OutThinkingConfig("disabled")
    if not r.enabled or budget == 0:
        return off, None, max_tokens or DEFAULT_MAX_TOKENS
    forced = req.tool_choice is not None and req.tool_choice.mode in ("required", "tool")
    if (forced and req.tools) or _turn_lacks_thinking(messages):
        # "Thinking may not be enabled when tool_choice forces tool use"; and a tool loop whose
        # assistant turn does not start with its thinking block (the caller's dialect could not
        # hold it, or it came from another provider) is refused with "a final `assistant`
        # message must start with a thinking block". The docs' own remedy is to turn thinking
        # off for that request; the turn still gets its answer.
        return off, None, max_tokens or DEFAULT_MAX_TOKENS
    budget = budget if budget is not None and budget > 0 else None
    # Which form the model takes (docs: extended-thinking, adaptive-thinking): Claude 4.7 and
    # later refuse `enabled` with a budget, models before 4.6 know only that form, and 4.6 (or
    # a name without a version) takes the form the caller used.
    if gen is not None and (gen >= _ADAPTIVE_ONLY or (gen < _ADAPTIVE_FROM and budget is None)):
        budget = None if gen >= _ADAPTIVE_ONLY else _BUDGET_FOR.get(r.effort or "medium")
    if budget is None:
        effort = r.effort or (_effort_for(r.budget_tokens) if r.budget_tokens else None)
        return (wire.OutThinkingConfig("adaptive"), _EFFORT_OUT.get(effort) if effort else None,
                max_tokens or _ADAPTIVE_MAX_TOKENS)
    budget = max(budget, _MIN_BUDGET)
    if max_tokens is None:
        max_tokens = budget + DEFAULT_MAX_TOKENS
    elif max_tokens <= budget:
        # Read the caller's limit as the answer's allowance, as it is where the budget is a
        # separate setting; Anthropic counts thinking within max_tokens.
        max_tokens += budget
    return wire.OutThinkingConfig("enabled", budget), None, max_tokens


def _effort_for(budget: int) -> str:
    return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


def _generation(model: str) -> _Gen | None:
    """(major, minor) of a Claude model id: `claude-opus-4-7`, `claude-haiku-4-5-20251001`,
    `claude-3-7-sonnet-20250219`, `claude-sonnet-5`; None when the name has no version (an
    alias of the user's own). A trailing date is not a version."""
    nums = [int(n) for n in _VERSION_NUMBERS.findall(model)]
    if not nums:
        return None
    return (nums[0], nums[1] if len(nums) > 1 else 0)


def _turn_lacks_thinking(messages: list[wire.OutMessage]) -> bool:
    """The request continues a tool loop whose assistant turn does not open with thinking.

    The turn starts at the first assistant message after the last user message that holds no
    tool_result; without interleaved thinking only that first message has a thinking block
    (docs: "Claude will not output another thinking block until after the next non-tool_result
    user turn")."""
    if not messages or messages[-1].role != "user":
        return False
    if not any(isinstance(b, wire.OutToolResult) for b in messages[-1].content):
        return False
    start = 0
    for k in range(len(messages) - 2, -1, -1):
        m = messages[k]
        if m.role == "user" and not any(isinstance(b, wire.OutToolResult) for b in m.content):
            start = k + 1
            break
    if start >= len(messages) - 1 or messages[start].role != "assistant":
        return False
    return not isinstance(messages[start].content[0], wire.OutThinking | wire.OutRedacted)
