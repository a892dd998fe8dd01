"""Model names as users write them: aliases, then routing rules, before a route is resolved.

Aliases map a name to another (`claude-3-5-sonnet-latest: sonnet`, size classes such as
`small: cheap-group`). Rules, in the manner of Claude Code Router, are tried in order and the
first whose every condition holds sends the request to its `model` group: by estimated prompt
tokens, by the requested name (glob), by the presence of thinking or of a named tool, by gateway
key. The answer's `x-sluice-route` header names the rule that fired.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from proxy.calls import Call
from proxy.config import Rule

__all__ = ["Rules"]

_ANY: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
# Thinking as each dialect asks for it, at the top level of the body.
_THINKING_FIELDS = ("thinking", "reasoning_effort", "reasoning")
_OFF = frozenset({"disabled", "none", "off"})


class Rules:
    __slots__ = ("_aliases", "_patterns", "_rules")

    def __init__(self, aliases: Mapping[str, str], rules: tuple[Rule, ...]) -> None:
        self._aliases = dict(aliases)
        self._rules = rules
        self._patterns = [re.compile(fnmatch.translate(r.model_glob)) if r.model_glob else None
                          for r in rules]

    def __bool__(self) -> bool:
        return bool(self._aliases or self._rules)

    def apply(self, call: Call, caller: str, tokens: int) -> tuple[str, str | None]:
        """(the model to route, the rule that fired or None)."""
        model = self._aliases.get(call.model, call.model)
        for rule, pattern in zip(self._rules, self._patterns, strict=True):
            if rule.tokens_over is not None and tokens <= rule.tokens_over:
                continue
            if pattern is not None and not pattern.match(model):
                continue
            if rule.key is not None and rule.key != caller:
                continue
            if rule.thinking is not None and rule.thinking != _wants_thinking(call):
                continue
            if rule.tool is not None and rule.tool not in _tool_names(call):
                continue
            return self._aliases.get(rule.model, rule.model), rule.name
        return model, None


def _wants_thinking(call: Call) -> bool:
    if call.envelope is None:  # Gemini: generationConfig.thinkingConfig
        return b'"thinkingConfig"' in call.body and b'"thinkingBudget":0' not in call.body
    for field in _THINKING_FIELDS:
        raw = call.envelope.fields.get(field)
        if raw is None:
            continue
        value: Any = _ANY.decode(raw)
        if isinstance(value, dict):
            value = value.get("type") or value.get("effort") or "on"
        if value and str(value).lower() not in _OFF:
            return True
    return False


def _tool_names(call: Call) -> set[str]:
    """Every tool name the request offers, whichever dialect's shape it is in."""
    tools: Any
    if call.envelope is not None:
        raw = call.envelope.fields.get("tools")
        tools = _ANY.decode(raw) if raw is not None else []
    else:
        tools = _ANY.decode(call.body).get("tools") or []
    names: set[str] = set()
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        for item in (tool, tool.get("function") or {}, *(tool.get("functionDeclarations") or [])):
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                names.add(item["name"])
        if isinstance(tool.get("type"), str):  # Anthropic server tools: web_search_20250305
            names.add(tool["type"].rsplit("_", 1)[0])
    return names
