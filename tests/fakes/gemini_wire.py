"""Gemini API (generativelanguage v1beta/v1) wire format for the fake provider. No IO.

Requests are validated against the official `google-genai` SDK's own pydantic types
(`types.Content`, `types.Tool`, `types.ToolConfig`, `types.SafetySetting`,
`types.GenerationConfig`), assembled into the request shapes the SDK itself puts on the wire
(`models._GenerateContentParameters_to_mldev`: `systemInstruction`, `tools`, `toolConfig`,
`safetySettings`, `cachedContent`, `labels`, `serviceTier`, `store` at the top level, the
sampling fields inside `generationConfig`). The SDK types are `extra="forbid"`, accept both
the camelCase and the snake_case name of a field (the API parses proto3 JSON, which accepts
both — and the SDK itself sends `thinkingConfig: {"include_thoughts": ...}` and
`parameters_json_schema` in snake_case), and decode `bytes` as base64.

The SDK types are wider than the Gemini Developer API in three ways, each closed here:
- fields the SDK only sends to Vertex AI (its `*_to_mldev` converters raise "only supported in
  Gemini Enterprise Agent Platform mode" for them) — `UNSUPPORTED`;
- `Schema.additionalProperties`, `ref`, `defs`: the Developer API's OpenAPI-subset `Schema`
  has no such fields and answers `Unknown name "additionalProperties" at
  'tools[0].function_declarations[0].parameters': Cannot find field.` (reported in
  zed-industries/zed#43231, ax-llm/ax#293); arbitrary JSON Schema goes in
  `parametersJsonSchema` / `responseJsonSchema` instead;
- enums: the SDK's `CaseInSensitiveEnum` accepts unknown values with a warning; the API does not.

Answers follow `GenerateContentResponse` as the API sends it (recorded streams of
gemini-2.5-flash in junjihashimoto/louter test-data): every chunk carries the cumulative
`usageMetadata`, `modelVersion` and the same `responseId`; zero counts are omitted (proto3
JSON); `totalTokenCount = prompt + candidates + thoughts`.

Longer than our ~600-line habit: the request checks (the first half) are the natural split,
into a `gemini_checks` module; the change that added this file was limited to it.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import json
import re
import types as pytypes
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin

from google.genai import types as gt
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from tests.fakes.openai_wire import split_text, words

__all__ = [
    "API_KEY_INVALID", "STREAM_ERROR", "UNREGISTERED_CALLER", "BodyProblem", "CountTokensRequest",
    "GenerateContentRequest", "Reply", "array_close", "array_element", "count_tokens_response",
    "duration", "error_body", "finish_text", "generate_response", "invalid_argument",
    "list_models", "model_not_found", "model_object", "not_found_html", "prompt_tokens",
    "reply_text", "sse", "status_error", "stream_chunks", "thought_signature", "usage_metadata",
    "validate_body", "words",
]

TYPE_URL = "type.googleapis.com/google.ai.generativelanguage.v1beta."
API_KEY_INVALID = "API key not valid. Please pass a valid API key."
UNREGISTERED_CALLER = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
INTERNAL_MESSAGE = (
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)
RPC = "type.googleapis.com/google.rpc."
RATE_LIMITS = "https://ai.google.dev/gemini-api/docs/rate-limits"
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)


# ---------------------------------------------------------------------------------------------
# Request shapes
# ---------------------------------------------------------------------------------------------

_WIRE = ConfigDict(
    alias_generator=to_camel, populate_by_name=True, extra="forbid", val_json_bytes="base64",
    protected_namespaces=(), arbitrary_types_allowed=True,
)


class WireGenerationConfig(gt.GenerationConfig):
    """`generationConfig` as the SDK builds it: `GenerationConfig` plus `imageConfig`."""

    image_config: gt.ImageConfig | None = None


class GenerateContentRequest(BaseModel):
    model_config = _WIRE

    model: str | None = None  # bound from the path; the body may name it too
    contents: list[gt.Content] | None = None  # absent is a 400 of its own, in the API's words
    system_instruction: gt.Content | None = None
    tools: list[gt.Tool] | None = None
    tool_config: gt.ToolConfig | None = None
    safety_settings: list[gt.SafetySetting] | None = None
    generation_config: WireGenerationConfig | None = None
    # Declared on GenerateContentConfig; the SDK moves them to the request's top level.
    cached_content: str | None = None
    labels: dict[str, str] | None = None
    service_tier: gt.ServiceTier | None = None
    store: bool | None = None
    continuation_token: bytes | None = None


class CountTokensRequest(BaseModel):
    """`contents`, or a whole `generateContentRequest` (with its `model`) — never both."""

    model_config = _WIRE

    contents: list[gt.Content] | None = None
    generate_content_request: GenerateContentRequest | None = None


_ROOTS: dict[str, type[BaseModel]] = {
    "generateContent": GenerateContentRequest,
    "streamGenerateContent": GenerateContentRequest,
    "countTokens": CountTokensRequest,
}

# Fields the SDK types carry but the Developer API does not accept. Vertex-only ones are those
# whose `_*_to_mldev` converter in google/genai/models.py raises "only supported in Gemini
# Enterprise Agent Platform mode"; GenerationConfig also lists the fields no mldev converter
# ever writes into `generationConfig`.
UNSUPPORTED: dict[type[BaseModel], frozenset[str]] = {
    gt.Schema: frozenset({"additional_properties", "defs", "ref"}),
    WireGenerationConfig: frozenset({
        "routing_config", "model_selection_config", "audio_timestamp", "response_format",
        "translation_config", "enable_affective_dialog",
    }),
    gt.Tool: frozenset({"retrieval", "enterprise_web_search", "parallel_ai_search", "exa_ai_search"}),
    gt.FunctionCall: frozenset({"partial_args", "will_continue"}),
    gt.FunctionCallingConfig: frozenset({"stream_function_call_arguments"}),
    gt.SafetySetting: frozenset({"method"}),
    gt.GoogleSearch: frozenset({"blocking_confidence", "exclude_domains"}),
    gt.GoogleMaps: frozenset({"grounding_types", "auth_config"}),
    gt.ImageConfig: frozenset({
        "person_generation", "prominent_people", "output_mime_type",
        "output_compression_quality", "image_output_options",
    }),
}

# Part's `data` oneof (content.proto); thought, thoughtSignature, videoMetadata, ... are not in it.
PART_DATA = (
    "text", "inline_data", "function_call", "function_response", "file_data", "executable_code",
    "code_execution_result", "tool_call", "tool_response",
)
FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,63}")
ROLES = ("user", "model")


# --- walking the JSON alongside the SDK types ------------------------------------------------


@functools.cache
def _aliases(cls: type[BaseModel]) -> dict[str, str]:
    """Field name by wire name: both the camelCase alias and the snake_case name."""
    out: dict[str, str] = {}
    for name, info in cls.model_fields.items():
        out[name] = name
        out[info.alias or name] = name
    return out


def _kind(ann: Any) -> tuple[str, Any]:
    """('model'|'list'|'map'|'enum'|'bytes'|'scalar'|'any', inner) for a field annotation."""
    origin = get_origin(ann)
    if origin in (Union, pytypes.UnionType):
        members = [a for a in get_args(ann) if a is not type(None)]
        return _kind(members[0]) if len(members) == 1 else ("any", None)
    if origin is list:
        return "list", get_args(ann)[0]
    if origin is dict:
        return "map", get_args(ann)[1]
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "model", ann
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return "enum", ann
    if ann is bytes:
        return "bytes", ann
    if ann in (str, int, float, bool):
        return "scalar", ann
    return "any", None


_SCALARS: dict[Any, str] = {str: "TYPE_STRING", int: "TYPE_INT32", float: "TYPE_FLOAT", bool: "TYPE_BOOL"}


def _type_label(ann: Any) -> str:
    kind, inner = _kind(ann)
    match kind:
        case "list" | "map":
            return _type_label(inner)
        case "model" | "enum":
            return TYPE_URL + str(inner.__name__).removeprefix("Wire")
        case "bytes":
            return "TYPE_BYTES"
        case "scalar":
            return _SCALARS[inner]
    return "TYPE_MESSAGE"


def _enum_ok(cls: type[enum.Enum], value: Any) -> bool:
    if not isinstance(value, str):
        return False  # proto3 JSON also takes enum numbers; the SDK types cannot check them
    names = {m.name for m in cls} | {str(m.value) for m in cls}
    return value in names or value.upper() in names or value.lower() in names


@dataclass(frozen=True)
class _Hit:
    path: str
    description: str


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _unknown(key: str, path: str) -> _Hit:
    at = f" at '{path}'" if path else ""
    return _Hit(path, f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.')


def _walk(ann: Any, node: Any, path: str, out: list[_Hit], enums: list[_Hit]) -> None:
    """Developer-API-unsupported fields and bad enum values, with the API's proto paths."""
    kind, inner = _kind(ann)
    if kind == "model" and isinstance(node, dict):
        names = _aliases(inner)
        banned = UNSUPPORTED.get(inner, frozenset())
        for key, value in node.items():
            name = names.get(key)
            if name is None or value is None:
                continue  # an unknown name is pydantic's to report
            if name in banned:
                out.append(_unknown(key, path))
            else:
                _walk(inner.model_fields[name].annotation, value, _join(path, name), out, enums)
    elif kind == "list" and isinstance(node, list):
        for i, item in enumerate(node):
            _walk(inner, item, f"{path}[{i}]", out, enums)
    elif kind == "map" and isinstance(node, dict):
        # The API names a map entry by its position: 'parameters.properties[3].value'.
        for i, value in enumerate(node.values()):
            _walk(inner, value, f"{path}[{i}].value", out, enums)
    elif kind == "enum" and not _enum_ok(inner, node):
        enums.append(_Hit(path, f"Invalid value at '{path}' ({_type_label(inner)}), {_show(node)}"))


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _proto_path(root: type[BaseModel], raw: Any, loc: tuple[int | str, ...]) -> tuple[str, Any]:
    """Turn a pydantic error location into the API's path, and the annotation found there."""
    path, ann, node = "", root, raw
    for seg in loc:
        kind, inner = _kind(ann)
        if kind == "list" and isinstance(seg, int):
            path, ann = f"{path}[{seg}]", inner
            node = node[seg] if isinstance(node, list) and seg < len(node) else None
        elif kind == "map" and isinstance(node, dict) and seg in node:
            path, ann, node = f"{path}[{list(node).index(seg)}].value", inner, node[seg]
        elif kind == "model" and isinstance(seg, str) and seg in _aliases(inner):
            name = _aliases(inner)[seg]
            path, ann = _join(path, name), inner.model_fields[name].annotation
            node = node.get(seg) if isinstance(node, dict) else None
        else:
            break  # the unknown key itself, or a union member's tag
    return path, ann


def _pydantic_hits(root: type[BaseModel], raw: Any, exc: ValidationError, forbid: bool) -> list[_Hit]:
    hits = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        if err["type"] == "extra_forbidden":
            if forbid:
                path, _ = _proto_path(root, raw, loc[:-1])
                hits.append(_unknown(str(loc[-1]), path))
            continue
        path, ann = _proto_path(root, raw, loc)
        if err["type"] == "bytes_invalid_encoding":
            desc = f"Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for {_show(err['input'])}"
        else:
            desc = f"Invalid value at '{path}' ({_type_label(ann)}), {_show(err['input'])}"
        hits.append(_Hit(path, desc))
    return hits


# --- the API's own rules ---------------------------------------------------------------------


@dataclass(frozen=True)
class BodyProblem:
    """Why a body was refused: Gemini's error message, its field violations, and the detail."""

    message: str
    violations: tuple[tuple[str | None, str], ...] = ()  # (field or None, description)
    detail: str = ""


def _from_hits(hits: list[_Hit]) -> BodyProblem:
    message = "\n".join(h.description for h in hits)
    return BodyProblem(message, tuple((h.path or None, h.description) for h in hits), message)


def _field_error(lines: list[str]) -> BodyProblem:
    # Validator errors read "* GenerateContentRequest.contents[0].parts: ...\n", one per line
    # (quoted in vercel/ai#3775, genkit-ai/genkit#3816, google-gemini/gemini-cli#9535).
    message = "".join(f"* {line}\n" for line in lines)
    return BodyProblem(message, (), message)


def _plain(message: str) -> BodyProblem:
    return BodyProblem(message, (), message)


def _structure(contents: list[gt.Content] | None, where: str) -> list[str]:
    if not contents:
        return [f"{where}.contents: contents is not specified"]
    lines = []
    for i, content in enumerate(contents):
        if not content.parts:
            lines.append(f"{where}.contents[{i}].parts: contents.parts must not be empty.")
            continue
        for j, part in enumerate(content.parts):
            if not any(getattr(part, name) is not None for name in PART_DATA):
                lines.append(
                    f"{where}.contents[{i}].parts[{j}].data: required oneof field 'data' must "
                    "have one initialized field"
                )
    return lines


def _oneof_twice(raw_contents: Any) -> str | None:
    # A proto oneof takes one member; the JSON parser refuses a second one. The wording is
    # the fake's: the API's own text for this case is not documented.
    for i, content in enumerate(raw_contents or []):
        for j, part in enumerate(content.get("parts") or [] if isinstance(content, dict) else []):
            if isinstance(part, dict):
                set_ = [k for k in part if _aliases(gt.Part).get(k) in PART_DATA]
                if len(set_) > 1:
                    return (
                        f"Invalid JSON payload received. Oneof field 'data' is already set. "
                        f"Cannot set '{set_[1]}' at 'contents[{i}].parts[{j}]'"
                    )
    return None


def _calls(content: gt.Content) -> list[gt.Part]:
    return [p for p in content.parts or [] if p.function_call is not None]


def _responses(content: gt.Content) -> list[gt.Part]:
    return [p for p in content.parts or [] if p.function_response is not None]


def _turns(contents: list[gt.Content], require_signatures: bool) -> str | None:
    """Role and function-turn rules, in the API's words (quoted in the issues cited)."""
    for content in contents:
        if content.role not in (None, "", *ROLES):
            # one-api#1385, CLIProxyAPI#2791: no "system", "assistant", "tool" or "function".
            return "Please use a valid role: user, model."
    for i, content in enumerate(contents):
        prev = contents[i - 1] if i else None
        if _calls(content) and (prev is None or prev.role == "model"):
            # google-gemini/gemini-cli#11814: a history that starts with a function call.
            return (
                "Please ensure that function call turn comes immediately after a user turn "
                "or after a function response turn."
            )
        if _responses(content):
            if prev is None or not _calls(prev):
                return (
                    "Please ensure that function response turn comes immediately after a "
                    "function call turn."
                )
            if len(_responses(content)) != len(_calls(prev)):
                return (
                    "Please ensure that the number of function response parts is equal to the "
                    "number of function call parts of the function call turn."
                )
    if require_signatures:
        return _signatures(contents)
    return None


def _signatures(contents: list[gt.Content]) -> str | None:
    # Gemini 3: in the current turn (since the last user turn that is not only function
    # responses) the first functionCall part of every model step must carry its signature
    # (ai.google.dev/gemini-api/docs/thought-signatures; wording as reported by users).
    start = 0
    for i, content in enumerate(contents):
        if content.role != "model" and any(p.function_response is None for p in content.parts or []):
            start = i
    for i in range(start, len(contents)):
        calls = _calls(contents[i])
        if contents[i].role == "model" and calls and not calls[0].thought_signature:
            name = calls[0].function_call.name if calls[0].function_call else ""
            return (
                "Function call is missing a thought_signature in functionCall parts. This is "
                "required for tools to work correctly, and missing thought_signature may lead to "
                f"degraded model performance. Additional data, function call `{name}` , position "
                f"{i}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures "
                "for more details."
            )
    return None


def _documented(req: GenerateContentRequest, where: str) -> list[str]:
    """Constraints the API reference states; the wording of each error is the fake's own."""
    lines = []
    for t, tool in enumerate(req.tools or []):
        for d, decl in enumerate(tool.function_declarations or []):
            at = f"{where}.tools[{t}].function_declarations[{d}]"
            if not FUNCTION_NAME.fullmatch(decl.name or ""):
                # Verbatim from google-gemini/gemini-cli#9535.
                lines.append(
                    f"{at}.name: Invalid function name. Must start with a letter or an "
                    "underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), "
                    "colons (:), or dashes (-), with a maximum length of 64."
                )
            if decl.parameters is not None and decl.parameters_json_schema is not None:
                lines.append(f"{at}: parameters and parameters_json_schema are mutually exclusive.")
            if decl.response is not None and decl.response_json_schema is not None:
                lines.append(f"{at}: response and response_json_schema are mutually exclusive.")
    gc = req.generation_config
    if gc is not None:
        at = f"{where}.generation_config"
        if gc.temperature is not None and not 0.0 <= gc.temperature <= 2.0:
            lines.append(f"{at}.temperature: temperature must be in the range [0.0, 2.0].")
        if gc.stop_sequences is not None and len(gc.stop_sequences) > 5:
            lines.append(f"{at}.stop_sequences: at most 5 stop sequences are allowed.")
        if gc.response_schema is not None and gc.response_json_schema is not None:
            lines.append(f"{at}: response_schema and response_json_schema are mutually exclusive.")
        schema_set = gc.response_schema is not None or gc.response_json_schema is not None
        if schema_set and gc.response_mime_type not in ("application/json", "text/x.enum"):
            lines.append(
                f"{at}.response_mime_type: a response schema requires response_mime_type "
                "application/json or text/x.enum."
            )
    return lines


def _check_generate(
    req: GenerateContentRequest, raw: dict[str, Any], where: str, require_signatures: bool
) -> BodyProblem | None:
    if (twice := _oneof_twice(raw.get("contents"))) is not None:
        return _plain(twice)
    lines = _structure(req.contents, where) + _documented(req, where)
    if lines:
        return _field_error(lines)
    if (rule := _turns(req.contents or [], require_signatures)) is not None:
        return _plain(rule)
    return None


def _check_count(req: CountTokensRequest, raw: dict[str, Any], require_sig: bool) -> BodyProblem | None:
    where = "CountTokensRequest"
    inner = req.generate_content_request
    if inner is not None:
        if req.contents:
            return _plain(
                "CountTokensRequest: contents and generate_content_request are mutually exclusive."
            )
        if not (inner.model or "").startswith(("models/", "tunedModels/")):
            # The documented body names the model inside: {"model": "models/gemini-2.0-flash"}.
            return _field_error([f"{where}.generate_content_request.model: unexpected model name format"])
        inner_raw = raw.get("generateContentRequest") or raw.get("generate_content_request") or {}
        return _check_generate(inner, inner_raw, f"{where}.generate_content_request", require_sig)
    if (twice := _oneof_twice(raw.get("contents"))) is not None:
        return _plain(twice)
    lines = _structure(req.contents, where)
    return _field_error(lines) if lines else None


def _without(obj: Any, loc: tuple[int | str, ...]) -> None:
    for seg in loc[:-1]:
        obj = obj[seg]
    del obj[loc[-1]]


def _validate(
    root: type[BaseModel], raw: bytes, parsed: dict[str, Any], forbid: bool
) -> tuple[BaseModel | None, list[_Hit]]:
    try:
        return root.model_validate_json(raw), []
    except ValidationError as exc:
        hits = _pydantic_hits(root, parsed, exc, forbid)
        if hits or forbid:
            return None, hits
        # Unknown names allowed: drop them (deepest first) and validate what is left.
        cleaned = json.loads(raw)
        locs = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
        for loc in sorted(locs, key=len, reverse=True):
            _without(cleaned, loc)
        return root.model_validate_json(json.dumps(cleaned)), []


def validate_body(
    rpc: str, raw: bytes, *, forbid_extra: bool = True, require_signatures: bool = False
) -> tuple[Any, BaseModel | None, BodyProblem | None]:
    """Parse and check one body for `rpc`: `(parsed JSON, validated request, problem)`."""
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        snippet = raw[:40].decode("utf-8", "replace")
        msg = f"Invalid JSON payload received. Unexpected token.\n{snippet}\n^"
        return None, None, BodyProblem(msg, ((None, msg),), f"body is not JSON: {exc}")
    if not isinstance(parsed, dict):
        msg = 'Invalid JSON payload received. Unknown name "": Root element must be a message.'
        return parsed, None, BodyProblem(msg, ((None, msg),), msg)
    root = _ROOTS[rpc]
    unsupported: list[_Hit] = []
    bad_enums: list[_Hit] = []
    _walk(root, parsed, "", unsupported, bad_enums)
    if bad_enums:
        # Before pydantic: the SDK's enums warn on unknown values instead of refusing them.
        return parsed, None, _from_hits(bad_enums)
    hits = unsupported if forbid_extra else []
    req, errors = _validate(root, raw, parsed, forbid_extra)
    hits = errors + hits
    if hits or req is None:
        return parsed, None, _from_hits(hits)
    if isinstance(req, CountTokensRequest):
        problem = _check_count(req, parsed, require_signatures)
    else:
        assert isinstance(req, GenerateContentRequest)
        problem = _check_generate(req, parsed, "GenerateContentRequest", require_signatures)
    return parsed, (None if problem else req), problem


# ---------------------------------------------------------------------------------------------
# Deterministic content and token counts
# ---------------------------------------------------------------------------------------------


def _text(content: gt.Content | None) -> str:
    if content is None:
        return ""
    return " ".join(p.text for p in content.parts or [] if p.text is not None)


def prompt_tokens(req: GenerateContentRequest | None, contents: list[gt.Content] | None = None) -> int:
    """Words of the system instruction and of every text part (thought text included)."""
    total = sum(words(_text(c)) for c in (contents or []))
    if req is not None:
        total += words(_text(req.system_instruction)) + sum(words(_text(c)) for c in req.contents or [])
    return total


def reply_text(req: GenerateContentRequest) -> str:
    """`"echo: <text of the last user turn>"`; a function-response turn echoes the responses."""
    last = next((c for c in reversed(req.contents or []) if c.role != "model"), None)
    said = " ".join(p.text for p in (last.parts or []) if p.text is not None and not p.thought) if last else ""
    if not said and last is not None:
        said = " ".join(
            f"{p.function_response.name} {_compact(p.function_response.response)}"
            for p in last.parts or []
            if p.function_response is not None
        )
    return f"echo: {said}"


def finish_text(text: str, config: gt.GenerationConfig | None) -> tuple[str, str]:
    """Apply `stopSequences` (cut, STOP) then `maxOutputTokens` (in words, MAX_TOKENS)."""
    finish = "STOP"
    if config is not None and config.stop_sequences:
        cuts = [text.find(s) for s in config.stop_sequences if s and s in text]
        if cuts:
            text = text[: min(cuts)]
    limit = config.max_output_tokens if config is not None else None
    if limit is not None and words(text) > limit:
        text, finish = " ".join(text.split()[:limit]), "MAX_TOKENS"
    return text, finish


def thought_signature(seed: str) -> str:
    """A deterministic, opaque base64 signature, as opaque as the real ones."""
    return base64.b64encode(hashlib.sha256(f"sig|{seed}".encode()).digest()).decode()


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def usage_metadata(prompt: int, candidates: int, thoughts: int = 0, cached: int = 0) -> dict[str, Any]:
    """Counts in field-number order, zeros omitted (proto3 JSON), as the API sends them."""
    # cachedContentTokenCount is a part of promptTokenCount, not added to it.
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "cachedContentTokenCount": cached,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}] if prompt else 0,
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": cached}] if cached else 0,
        "thoughtsTokenCount": thoughts,
    }
    return {k: v for k, v in usage.items() if v}


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------

# Finish reasons after which the candidate carries no content.
CONTENT_BLOCKED = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
    "MALFORMED_FUNCTION_CALL",
})


def _ratings() -> list[dict[str, Any]]:
    """Safety ratings of a blocked answer or prompt: one category HIGH and `blocked`."""
    cats = ("SEXUALLY_EXPLICIT", "HATE_SPEECH", "HARASSMENT", "DANGEROUS_CONTENT")
    out: list[dict[str, Any]] = []
    for cat in cats:
        rating: dict[str, Any] = {"category": f"HARM_CATEGORY_{cat}", "probability": "NEGLIGIBLE"}
        if cat == "HARASSMENT":
            rating.update(probability="HIGH", blocked=True)
        out.append(rating)
    return out


@dataclass(frozen=True)
class Reply:
    """Everything one answer says, streamed or not."""

    model: str
    response_id: str
    text: str  # the answer; "" with function calls only
    finish_reason: str
    prompt_tokens: int
    thoughts: str | None = None  # thought text shown (thinkingConfig.includeThoughts)
    thoughts_tokens: int = 0
    cached: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)  # functionCall objects
    signature: str | None = None  # on the first functionCall part, else on the (last) text part
    block_reason: str | None = None  # promptFeedback.blockReason: no candidates at all
    usage: dict[str, Any] | None = None  # replaces every usageMetadata
    chunks: int | None = None  # text deltas in a stream; None: one per word

    def said(self) -> int:
        """candidatesTokenCount: words of the text, and of `name + " " + args` per call."""
        calls = (f"{c['name']} {_compact(c.get('args', {}))}" for c in self.calls)
        return words(self.text) + sum(words(c) for c in calls)

    def usage_at(self, candidates: int) -> dict[str, Any]:
        if self.usage is not None:
            return self.usage
        return usage_metadata(self.prompt_tokens, candidates, self.thoughts_tokens, self.cached)


def _envelope(r: Reply, candidate: dict[str, Any] | None, candidates: int) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if candidate is not None:
        body["candidates"] = [candidate]
    body["usageMetadata"] = r.usage_at(candidates)
    body["modelVersion"] = r.model
    body["responseId"] = r.response_id
    return body


def _candidate(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    # A candidate with nothing to say keeps its role and loses `parts` (seen with MAX_TOKENS
    # spent on thinking): a reader must not assume `content.parts` exists.
    content: dict[str, Any] = {"parts": parts, "role": "model"} if parts else {"role": "model"}
    candidate: dict[str, Any] = {"content": content}
    if finish is not None:
        candidate["finishReason"] = finish
    candidate["index"] = 0
    return candidate


def _call_parts(r: Reply) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for i, call in enumerate(r.calls):
        part: dict[str, Any] = {"functionCall": call}
        if i == 0 and r.signature:
            part["thoughtSignature"] = r.signature  # parallel calls: the first one only
        parts.append(part)
    return parts


def _special(r: Reply) -> dict[str, Any] | None:
    if r.block_reason is not None:
        feedback: dict[str, Any] = {"blockReason": r.block_reason}
        if r.block_reason == "SAFETY":
            feedback["safetyRatings"] = _ratings()
        body = _envelope(r, None, 0)
        return {"promptFeedback": feedback, **body}
    if r.finish_reason in CONTENT_BLOCKED:
        candidate = {"finishReason": r.finish_reason, "index": 0}
        if r.finish_reason == "SAFETY":
            candidate["safetyRatings"] = _ratings()
        return _envelope(r, candidate, 0)
    return None


def generate_response(r: Reply) -> dict[str, Any]:
    """The one `GenerateContentResponse` of a `generateContent` call."""
    if (special := _special(r)) is not None:
        return special
    parts: list[dict[str, Any]] = []
    if r.thoughts:
        parts.append({"text": r.thoughts, "thought": True})
    if r.text:
        text_part: dict[str, Any] = {"text": r.text}
        if r.signature and not r.calls:
            text_part["thoughtSignature"] = r.signature
        parts.append(text_part)
    parts += _call_parts(r)
    return _envelope(r, _candidate(parts, r.finish_reason), r.said())


def stream_chunks(r: Reply) -> list[dict[str, Any]]:
    """The `GenerateContentResponse` chunks of a `streamGenerateContent` call.

    Thought parts first, then one text delta per word (or `chunks` deltas), the last one with
    `finishReason` (and the signature, where real streams put it for a text answer); function
    calls come whole, all in one chunk, the first with the signature. Every chunk carries the
    usage so far: a reader keeps the last one, it must not add them up.
    """
    if (special := _special(r)) is not None:
        return [special]
    out: list[dict[str, Any]] = []
    for piece in split_text(r.thoughts, None) if r.thoughts else []:
        out.append(_envelope(r, _candidate([{"text": piece, "thought": True}], None), 0))
    pieces = split_text(r.text, r.chunks) if (r.text or not r.calls) else []
    said = 0
    for i, piece in enumerate(pieces):
        said += words(piece)
        last = i == len(pieces) - 1 and not r.calls
        part: dict[str, Any] = {"text": piece}
        if last and r.signature:
            part["thoughtSignature"] = r.signature
        out.append(_envelope(r, _candidate([part], r.finish_reason if last else None), said))
    if not pieces and not r.calls:
        out.append(_envelope(r, _candidate([], r.finish_reason), 0))
    if r.calls:
        out.append(_envelope(r, _candidate(_call_parts(r), r.finish_reason), r.said()))
    return out


def count_tokens_response(total: int) -> dict[str, Any]:
    body: dict[str, Any] = {"totalTokens": total}  # "always non-negative"; 0 is still sent
    if total:
        body["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": total}]
    return body


def model_object(model_id: str) -> dict[str, Any]:
    name = model_id if model_id.startswith("models/") else f"models/{model_id}"
    short = name.removeprefix("models/")
    return {
        "name": name, "version": "001", "displayName": short.replace("-", " ").title(),
        "description": f"Fake {short}", "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2, "thinking": True,
    }


def list_models(ids: list[str], page_size: int | None, page_token: str | None) -> dict[str, Any]:
    start = int(page_token.removeprefix("p")) if page_token and page_token.startswith("p") else 0
    size = page_size if page_size and page_size > 0 else 50  # the API's documented default
    page = ids[start : start + size]
    body: dict[str, Any] = {"models": [model_object(m) for m in page]}
    if start + size < len(ids):
        body["nextPageToken"] = f"p{start + size}"
    return body


# ---------------------------------------------------------------------------------------------
# Errors, in Google's words
# ---------------------------------------------------------------------------------------------

STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
# The canonical google.rpc messages, and the Gemini-specific ones seen in the wild.
_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: QUOTA_MESSAGE,
    500: INTERNAL_MESSAGE,
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}


def error_body(code: int, message: str, status: str, details: list[Any] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


def duration(seconds: float) -> str:
    """proto3 JSON Duration: "7s", "0.500s" (0, 3, 6 or 9 fractional digits)."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3f}s" if round(seconds, 3) == seconds else f"{seconds:.9f}s"


def status_error(status: int, retry_delay: float | None = None) -> dict[str, Any]:
    name = STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    message = _MESSAGES.get(status, f"Fake error {status}.")
    details: list[Any] = []
    if status == 429:
        # QuotaFailure, Help, RetryInfo, in this order (as quoted in google/langextract#50).
        violation = {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
            "quotaValue": "10",
        }
        link = {"description": "Learn more about Gemini API quotas", "url": RATE_LIMITS}
        details = [
            {"@type": RPC + "QuotaFailure", "violations": [violation]},
            {"@type": RPC + "Help", "links": [link]},
        ]
        if retry_delay is not None:
            details.append({"@type": RPC + "RetryInfo", "retryDelay": duration(retry_delay)})
    return error_body(status, message, name, details)


def invalid_argument(problem: BodyProblem) -> dict[str, Any]:
    # A violation of the whole body (an unknown top-level name) has no "field".
    violations = [
        {"field": f, "description": d} if f else {"description": d} for f, d in problem.violations
    ]
    details = [{"@type": RPC + "BadRequest", "fieldViolations": violations}] if violations else []
    return error_body(400, problem.message, "INVALID_ARGUMENT", details)


def bad_key_error() -> dict[str, Any]:
    # Quoted in continuedev/continue#8516: a wrong key is a 400, not a 401.
    info = {
        "@type": RPC + "ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }
    localized = {"@type": RPC + "LocalizedMessage", "locale": "en-US", "message": API_KEY_INVALID}
    return error_body(400, API_KEY_INVALID, "INVALID_ARGUMENT", [info, localized])


def no_key_error() -> dict[str, Any]:
    # No key at all is a 403 (PublicAffairs/openai-gemini#92).
    return error_body(403, UNREGISTERED_CALLER, "PERMISSION_DENIED")


def model_not_found(model: str, version: str, method: str) -> dict[str, Any]:
    msg = (
        f"models/{model} is not found for API version {version}, or is not supported for "
        f"{method}. Call ListModels to see the list of available models and their supported "
        "methods."
    )
    return error_body(404, msg, "NOT_FOUND")


def not_found_html(path: str) -> str:
    # A path no API method binds to is answered by Google's front end, in HTML, not JSON.
    return (
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1"
        f"</title>\n  <p><b>404.</b> <ins>That\u2019s an error.</ins>\n  <p>The requested URL "
        f"<code>{path}</code> was not found on this server.  <ins>That\u2019s all we know.</ins>\n"
    )


STREAM_ERROR = error_body(500, INTERNAL_MESSAGE, "INTERNAL")


# ---------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------


def _dumps(obj: Any, indent: int | None = None) -> str:
    # The API writes `"key": value` pairs joined by a bare "," on one line, escapes < and >
    # as \u003c / \u003e (louter test-data), and pretty-prints with 2 spaces outside SSE.
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ": "), indent=indent)
    return text.replace("<", "\\u003c").replace(">", "\\u003e")


def dumps(obj: Any) -> bytes:
    """A whole JSON answer or error, pretty-printed as the API sends them."""
    return _dumps(obj, indent=2).encode()


def sse(obj: Any) -> bytes:
    """One `?alt=sse` event: a single `data:` line, events separated by CRLF CRLF."""
    return f"data: {_dumps(obj)}\r\n\r\n".encode()


def array_element(obj: Any, first: bool) -> bytes:
    """One element of the streamed JSON array that `streamGenerateContent` sends without
    `alt=sse`: `[{...}` first, then `\\r\\n,\\r\\n{...}` for each further element."""
    return (("[" if first else "\r\n,\r\n") + _dumps(obj, indent=2)).encode()


def array_close(empty: bool) -> bytes:
    return b"[]" if empty else b"\r\n]"
