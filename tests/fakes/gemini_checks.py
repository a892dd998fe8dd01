"""Gemini API (generativelanguage v1beta/v1) request checks for the fake provider. No IO.

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

Then the API's own rules beyond its types (roles, function turns, documented limits), in its
words where they are on record.
"""

from __future__ import annotations

import enum
import functools
import json
import re
import types as pytypes
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from google.genai import types as gt
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

__all__ = [
    "UNSUPPORTED", "BodyProblem", "CountTokensRequest", "GenerateContentRequest", "validate_body",
]

TYPE_URL = "type.googleapis.com/google.ai.generativelanguage.v1beta."


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
