"""Scripted turns for the fakes: what a real model would answer, decided from each request.

A `Script` is set as a fake's `behavior.script`; the fake calls it with every parsed request
body and applies the switches it returns to that request alone. It reads the body in the fake's
own dialect, because the CLI's request reaches the fake translated by the gateway:

- a request for JSON (OpenAI `response_format`, Anthropic `output_config.format`, Gemini
  `responseMimeType: application/json`) gets a JSON object matching its schema: Gemini CLI's
  model router asks so before every turn and retries on anything else;
- a request carrying tool results gets one answer quoting them, which proves the result crossed
  the translation both ways;
- a request offering the scripted tool, with no result yet, gets a call of it;
- anything else gets the fake's own echo of the last user message.

Pure code, no IO.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["FINAL_PREFIX", "Dialect", "Script", "sample", "tool_results"]

Dialect = Literal["openai", "anthropic", "gemini"]

FINAL_PREFIX = "the tool printed:"


@dataclass
class Script:
    dialect: Dialect  # the fake's dialect, so how the bodies it sees are shaped
    tool: str | None = None  # the tool to call once, e.g. "Bash" or "run_shell_command"
    command: str = ""  # its `command` argument
    steps: list[str] = field(default_factory=list)  # per request: json, tool_call, final, echo
    results: list[str] = field(default_factory=list)  # tool results seen, as text

    def __call__(self, body: Any) -> dict[str, Any] | None:
        schema = json_schema(body, self.dialect)
        if schema is not None:
            self.steps.append("json")
            return {"content": json.dumps(sample(schema))}
        results = tool_results(body, self.dialect)
        if results:
            self.steps.append("final")
            self.results.extend(results)
            return {"content": f"{FINAL_PREFIX} {' | '.join(r.strip() for r in results)}"}
        if self.tool is not None and self.tool in tool_names(body, self.dialect):
            self.steps.append("tool_call")
            return self._call({"command": self.command})
        self.steps.append("echo")
        return None

    def _call(self, args: dict[str, Any]) -> dict[str, Any]:
        match self.dialect:
            case "openai":
                return {"tool_call": {"name": self.tool, "arguments": json.dumps(args)}}
            case "anthropic":
                return {"tool_use": {"name": self.tool, "input": args}}
            case "gemini":
                return {"function_call": {"name": self.tool, "args": args}}


def json_schema(body: dict[str, Any], dialect: Dialect) -> dict[str, Any] | None:
    """The schema a request wants its answer to follow ({} for bare JSON mode), else None."""
    match dialect:
        case "openai":
            fmt = body.get("response_format") or {}
            if fmt.get("type") == "json_object":
                return {}
            if fmt.get("type") == "json_schema":
                return dict((fmt.get("json_schema") or {}).get("schema") or {})
        case "anthropic":
            fmt = (body.get("output_config") or {}).get("format") or body.get("output_format")
            if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
                return dict(fmt.get("schema") or {})
        case "gemini":
            gc = body.get("generationConfig") or body.get("generation_config") or {}
            mime = gc.get("responseMimeType") or gc.get("response_mime_type")
            if mime == "application/json":
                for key in ("responseJsonSchema", "response_json_schema", "responseSchema",
                            "response_schema"):
                    if isinstance(gc.get(key), dict):
                        return dict(gc[key])
                return {}
    return None


def sample(schema: dict[str, Any]) -> Any:
    """A value that fits `schema`: JSON Schema or Gemini's Schema (types in upper case)."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "string")
    match str(kind).lower():
        case "object":
            props = schema.get("properties") or {}
            return {name: sample(sub) for name, sub in props.items()}
        case "array":
            return [sample(schema["items"])] if isinstance(schema.get("items"), dict) else []
        case "integer" | "number":
            return max(1, int(schema.get("minimum", 1)))
        case "boolean":
            return False
    return "scripted"


def tool_names(body: dict[str, Any], dialect: Dialect) -> list[str]:
    tools = body.get("tools") or []
    match dialect:
        case "openai":
            return [(t.get("function") or {}).get("name", "") for t in tools]
        case "anthropic":
            return [t.get("name", "") for t in tools]
        case "gemini":
            return [d.get("name", "") for t in tools
                    for d in t.get("functionDeclarations") or t.get("function_declarations") or []]


def tool_results(body: dict[str, Any], dialect: Dialect) -> list[str]:
    """The text of every tool result in the request, in order."""
    out: list[str] = []
    match dialect:
        case "openai":
            for m in body.get("messages") or []:
                if m.get("role") == "tool":
                    out.append(_text(m.get("content")))
        case "anthropic":
            for m in body.get("messages") or []:
                content = m.get("content")
                for block in content if isinstance(content, list) else []:
                    if block.get("type") == "tool_result":
                        out.append(_text(block.get("content")))
        case "gemini":
            for turn in body.get("contents") or []:
                for part in turn.get("parts") or []:
                    fr = part.get("functionResponse") or part.get("function_response")
                    if fr is not None:
                        out.append(_text(fr.get("response")))
    return out


def _text(value: Any) -> str:
    """Every string inside a tool result (plain, content blocks or a JSON object), joined."""
    match value:
        case str():
            return value
        case list():
            return "\n".join(_text(v) for v in value)
        case dict():
            return "\n".join(_text(v) for k, v in value.items() if k not in ("type", "id"))
    return ""
