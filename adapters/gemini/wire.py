"""Gemini API (generativelanguage v1beta) wire shapes: msgspec Structs, codecs built once.

Names follow the REST reference and the google-genai SDK's converters
(`models._GenerateContentParameters_to_mldev`, `_Part_to_mldev`, ...), which show the JSON the
SDK puts on the wire: camelCase at the top, but objects the SDK passes through whole keep their
snake_case field names (`inlineData: {"mime_type": ...}`, `fileData: {"file_uri": ...}`,
`thinkingConfig: {"include_thoughts": ...}`, `parameters_json_schema`, `any_of` inside a
`Schema`), and `topK` arrives as a float (`3.0`). The API parses proto3 JSON, which accepts
both spellings of every field, so a caller may send either.

msgspec gives a field one name, so every multi-word field a caller sends has a snake_case twin
(`<name>_`, declared with `name="<snake>"`) and readers take whichever is set (`pick`). Twins
default to None and encoders use `omit_defaults`, so what we send is camelCase only.

Decoding reads only the fields the translators use and ignores the rest (no
`forbid_unknown_fields`): a new API field never breaks translation. `functionCall.args` stays
`Raw`, so its JSON text becomes a canonical tool call's `arguments` without a decode/encode.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

import msgspec
from msgspec import Raw, Struct, field

from adapters.canonical import Thinking

__all__ = [
    "ENCODER",
    "ERROR_BODY",
    "REQUEST",
    "RESPONSE",
    "Blob",
    "Candidate",
    "Content",
    "ErrorBody",
    "ErrorObject",
    "FileData",
    "FunctionCall",
    "FunctionCallingConfig",
    "FunctionResponse",
    "FunctionResponsePart",
    "GenerateContentRequest",
    "GenerateContentResponse",
    "GenerationConfig",
    "OutFunctionDeclaration",
    "OutRequest",
    "OutTool",
    "Part",
    "PromptFeedback",
    "ThinkingConfig",
    "ToolConfig",
    "UsageMetadata",
    "pick",
    "unwrap_thinking",
    "wrap_thinking",
]

T = TypeVar("T")


# The default of a `Raw` field: empty, so `omit_defaults` leaves it out and `if raw:` tests it.
_ABSENT = Raw()


def pick(camel: T | None, snake: T | None) -> T | None:
    """The value of a field sent under either of its names (camelCase wins)."""
    return camel if camel is not None else snake


class _Wire(Struct, rename="camel", omit_defaults=True):
    pass


# --- content -----------------------------------------------------------------------------------


class Blob(_Wire):
    mime_type: str | None = None
    data: str | None = None  # base64
    mime_type_: str | None = field(default=None, name="mime_type")


class FileData(_Wire):
    mime_type: str | None = None
    file_uri: str | None = None
    mime_type_: str | None = field(default=None, name="mime_type")
    file_uri_: str | None = field(default=None, name="file_uri")


class FunctionCall(_Wire):
    name: str = ""
    args: Raw = _ABSENT  # a JSON object, kept as its bytes; b"" if absent
    id: str | None = None


class FunctionResponsePart(_Wire):
    """Media returned by a function (Gemini 3 multimodal function responses)."""

    inline_data: Blob | None = None
    file_data: FileData | None = None
    inline_data_: Blob | None = field(default=None, name="inline_data")
    file_data_: FileData | None = field(default=None, name="file_data")


class FunctionResponse(_Wire):
    name: str = ""
    response: dict[str, Any] | None = None
    id: str | None = None
    parts: list[FunctionResponsePart] | None = None


class Part(_Wire):
    """One part: exactly one of text / inlineData / fileData / functionCall / functionResponse
    (and the code-execution kinds, which only Gemini runs); `thought` and `thoughtSignature`
    ride alongside."""

    text: str | None = None
    thought: bool | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None
    thought_signature: str | None = None
    executable_code: Raw = _ABSENT  # b"" when absent
    code_execution_result: Raw = _ABSENT
    inline_data_: Blob | None = field(default=None, name="inline_data")
    file_data_: FileData | None = field(default=None, name="file_data")
    function_call_: FunctionCall | None = field(default=None, name="function_call")
    function_response_: FunctionResponse | None = field(default=None, name="function_response")
    thought_signature_: str | None = field(default=None, name="thought_signature")
    executable_code_: Raw = field(default=_ABSENT, name="executable_code")
    code_execution_result_: Raw = field(default=_ABSENT, name="code_execution_result")


class Content(_Wire):
    role: str | None = None
    parts: list[Part] | None = None


# --- request -----------------------------------------------------------------------------------


class ThinkingConfig(_Wire):
    include_thoughts: bool | None = None
    thinking_budget: int | None = None
    thinking_level: str | None = None
    include_thoughts_: bool | None = field(default=None, name="include_thoughts")
    thinking_budget_: int | None = field(default=None, name="thinking_budget")
    thinking_level_: str | None = field(default=None, name="thinking_level")


class GenerationConfig(_Wire):
    temperature: float | None = None
    top_p: float | None = None
    top_k: float | None = None  # an int on the wire; the Python SDK sends it as a float
    candidate_count: int | None = None
    max_output_tokens: int | None = None
    stop_sequences: list[str] | None = None
    seed: int | None = None
    response_mime_type: str | None = None
    response_schema: dict[str, Any] | None = None
    response_json_schema: Any = None
    thinking_config: ThinkingConfig | None = None
    response_modalities: list[str] | None = None
    response_logprobs: bool | None = None
    top_p_: float | None = field(default=None, name="top_p")
    top_k_: float | None = field(default=None, name="top_k")
    candidate_count_: int | None = field(default=None, name="candidate_count")
    max_output_tokens_: int | None = field(default=None, name="max_output_tokens")
    stop_sequences_: list[str] | None = field(default=None, name="stop_sequences")
    response_mime_type_: str | None = field(default=None, name="response_mime_type")
    response_schema_: dict[str, Any] | None = field(default=None, name="response_schema")
    response_json_schema_: Any = field(default=None, name="response_json_schema")
    thinking_config_: ThinkingConfig | None = field(default=None, name="thinking_config")
    response_modalities_: list[str] | None = field(default=None, name="response_modalities")
    response_logprobs_: bool | None = field(default=None, name="response_logprobs")


class FunctionCallingConfig(_Wire):
    mode: str | None = None
    allowed_function_names: list[str] | None = None
    allowed_function_names_: list[str] | None = field(default=None,
                                                      name="allowed_function_names")


class ToolConfig(_Wire):
    function_calling_config: FunctionCallingConfig | None = None
    function_calling_config_: FunctionCallingConfig | None = field(
        default=None, name="function_calling_config")


class GenerateContentRequest(_Wire):
    """What a caller sends. `tools` stay plain dicts: each is a oneof of tool kinds whose key
    names the kind, and function declarations carry free-form schemas anyway.
    `safetySettings`, `cachedContent`, `labels`, `serviceTier` and `store` are not read."""

    contents: list[Content] = []
    system_instruction: Content | None = None
    tools: list[dict[str, Any]] | None = None
    tool_config: ToolConfig | None = None
    generation_config: GenerationConfig | None = None
    model: str | None = None
    system_instruction_: Content | None = field(default=None, name="system_instruction")
    tool_config_: ToolConfig | None = field(default=None, name="tool_config")
    generation_config_: GenerationConfig | None = field(default=None, name="generation_config")


class OutFunctionDeclaration(_Wire):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    parameters_json_schema: dict[str, Any] | None = None


class OutTool(_Wire):
    function_declarations: list[OutFunctionDeclaration]


class OutRequest(_Wire):
    """What we send a Gemini provider, in the field order of the SDK's converter."""

    contents: list[Content]
    system_instruction: Content | None = None
    tools: list[OutTool] | None = None
    tool_config: ToolConfig | None = None
    generation_config: GenerationConfig | None = None


# --- answers -----------------------------------------------------------------------------------


class Candidate(_Wire):
    content: Content | None = None
    finish_reason: str | None = None
    index: int | None = None


class UsageMetadata(_Wire):
    """Counts as the API sends them: zero counts are left out (proto3 JSON).
    `cachedContentTokenCount` is a part of `promptTokenCount`; `candidatesTokenCount` excludes
    `thoughtsTokenCount`; `toolUsePromptTokenCount` counts tool results the API itself fed in."""

    prompt_token_count: int = 0
    candidates_token_count: int = 0
    total_token_count: int = 0
    cached_content_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0


class PromptFeedback(_Wire):
    block_reason: str | None = None


class ErrorObject(_Wire):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[dict[str, Any]] | None = None


class ErrorBody(_Wire):
    error: ErrorObject


class GenerateContentResponse(_Wire):
    """A whole answer, or one chunk of a stream. `error` is only ever read: a stream that
    fails midway sends `{"error": {...}}` as its last chunk."""

    candidates: list[Candidate] | None = None
    prompt_feedback: PromptFeedback | None = None
    usage_metadata: UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None
    error: ErrorObject | None = None


REQUEST = msgspec.json.Decoder(GenerateContentRequest)
RESPONSE = msgspec.json.Decoder(GenerateContentResponse)
ERROR_BODY = msgspec.json.Decoder(ErrorBody)
ENCODER = msgspec.json.Encoder()


# --- reasoning from other dialects, carried in a thoughtSignature ------------------------------
# A Gemini caller holds only Gemini's shapes, and the Gemini CLI keeps neither thought parts nor
# anything but `thoughtSignature` of what the model said (geminiChat.ts drops `thought` parts
# from its history). Reasoning another provider needs back on the next turn (an Anthropic
# thinking block and its signature, DeepSeek's reasoning_content) therefore rides, wrapped, in
# the `thoughtSignature` of the part that follows it; every Gemini client echoes that field
# verbatim. The marker is 12 bytes, so its base64 form is a fixed prefix we can test without
# decoding real Gemini signatures; the SDKs may re-encode bytes as base64url, so both are tried.

_MARK = b"\x00sluice:th1\x00"
_PREFIX = base64.b64encode(_MARK).decode()
_PREFIX_URL = base64.urlsafe_b64encode(_MARK).decode()
_THINKING = msgspec.json.Decoder(list[Thinking])


def wrap_thinking(blocks: list[Thinking]) -> str:
    return base64.b64encode(_MARK + ENCODER.encode(blocks)).decode()


def unwrap_thinking(signature: str) -> list[Thinking] | None:
    """The blocks `wrap_thinking` packed, or None for a signature Gemini made."""
    if not signature.startswith((_PREFIX, _PREFIX_URL)):
        return None
    padded = signature + "=" * (-len(signature) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
        return _THINKING.decode(raw[len(_MARK):])
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
