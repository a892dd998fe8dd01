"""OpenAI Chat Completions wire shapes, one `msgspec.Struct` per shape, decoders built once.

Sources: the official SDK's types (`openai.types.chat`: `CompletionCreateParams`, the
`ChatCompletion*MessageParam` variants, `ChatCompletion`, `ChatCompletionChunk`,
`CompletionUsage`) and the API reference. Extensions other servers put on the same shapes are
named where they appear: DeepSeek's `reasoning_content`, OpenRouter's `reasoning`, LiteLLM's
`thinking_blocks`.

Inbound shapes (what callers and providers send us) declare only the fields a translator reads;
msgspec skips every other key, so a field we do not know never fails a decode. Where the
documented type is a union the dialect's own `type` or `role` tells apart, the inbound shape is
one flat Struct with every variant's fields optional, and the translator dispatches on the tag
with `match`: an unknown part or role then becomes a 400 naming the field, not a decode error.

Inbound Structs are `gc=False`: decoded values never form reference cycles, and leaving them
out of the cycle collector saves ~20% of a chunk's decode (bench: 1.0 -> 0.8 µs for a content
chunk).

Outbound shapes (what we send) are `omit_defaults` Structs: a None field is left out, as the SDK
leaves out an unset param. Fields that OpenAI always sends, even as null (`content`, `refusal`,
`logprobs`, `finish_reason`), have no default so they are always written.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "CHUNK",
    "COMPLETION",
    "ENCODE",
    "REQUEST",
    "AllowedTools",
    "AssistantOut",
    "ChatCompletionIn",
    "ChatRequestIn",
    "ChatRequestOut",
    "ChoiceIn",
    "ChoiceOut",
    "ChunkChoiceIn",
    "ChunkIn",
    "CompletionOut",
    "CompletionTokensDetailsIn",
    "CompletionTokensDetailsOut",
    "ContentPartIn",
    "DeltaIn",
    "FileIn",
    "FileOut",
    "FilePartOut",
    "FunctionCallIn",
    "FunctionDefIn",
    "FunctionDefOut",
    "FunctionDeltaIn",
    "FunctionOut",
    "ImagePartOut",
    "ImageURLIn",
    "ImageURLOut",
    "JSONSchemaIn",
    "JSONSchemaOut",
    "MessageIn",
    "MessageOut",
    "NamedChoiceOut",
    "NamedFunction",
    "PartOut",
    "PromptTokensDetailsIn",
    "PromptTokensDetailsOut",
    "ReasoningIn",
    "ResponseFormatIn",
    "ResponseFormatOut",
    "ResponseMessageOut",
    "StreamOptionsIn",
    "StreamOptionsOut",
    "SystemOut",
    "TextPartOut",
    "ThinkingBlockIn",
    "ThinkingBlockOut",
    "ThinkingParamIn",
    "ToolCallDeltaIn",
    "ToolCallIn",
    "ToolCallOut",
    "ToolChoiceIn",
    "ToolIn",
    "ToolMessageOut",
    "ToolOut",
    "UsageIn",
    "UsageOut",
    "UserOut",
]


# --- inbound: a caller's request -------------------------------------------------------------


class ImageURLIn(msgspec.Struct, gc=False):
    url: str
    detail: str | None = None  # "auto" | "low" | "high": a rendering hint, dropped


class FileIn(msgspec.Struct, gc=False):
    # `file_data` is base64, documented with its data: URL prefix
    # ("data:application/pdf;base64,..."); some clients send the bare base64.
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class ContentPartIn(msgspec.Struct, gc=False):
    """One content part of any type: text, image_url, input_audio, file, refusal."""

    type: str
    text: str | None = None
    # The SDK's type is {url, detail}; a few clients (and vLLM's docs of old) send the URL bare.
    image_url: ImageURLIn | str | None = None
    input_audio: Any = None
    file: FileIn | None = None
    refusal: str | None = None


class FunctionCallIn(msgspec.Struct, gc=False):
    name: str = ""
    # A JSON string per the reference; some clients send the object itself.
    arguments: str | dict[str, Any] = ""


class ToolCallIn(msgspec.Struct, gc=False):
    id: str = ""
    type: str = "function"
    function: FunctionCallIn | None = None


class ThinkingBlockIn(msgspec.Struct, gc=False):
    """LiteLLM's `thinking_blocks` entry: {type: thinking, thinking, signature} or
    {type: redacted_thinking, data}."""

    type: str = "thinking"
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class MessageIn(msgspec.Struct, gc=False):
    """A message of any role: system, developer, user, assistant, tool, function."""

    role: str
    content: str | list[ContentPartIn] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    name: str | None = None  # the function name of a legacy role "function" message
    function_call: FunctionCallIn | None = None  # legacy assistant function call
    refusal: str | None = None
    audio: Any = None  # {id} of an earlier audio answer
    reasoning_content: str | None = None  # DeepSeek
    reasoning: str | None = None  # OpenRouter
    thinking_blocks: list[ThinkingBlockIn] | None = None  # LiteLLM


class FunctionDefIn(msgspec.Struct, gc=False):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(msgspec.Struct, gc=False):
    type: str = "function"
    function: FunctionDefIn | None = None


class NamedFunction(msgspec.Struct, gc=False):
    name: str


class AllowedTools(msgspec.Struct, gc=False):
    mode: str = "auto"
    tools: list[ToolIn] = []


class ToolChoiceIn(msgspec.Struct, gc=False):
    """{type: function, function: {name}} | {type: allowed_tools, allowed_tools} | custom."""

    type: str = "function"
    function: NamedFunction | None = None
    allowed_tools: AllowedTools | None = None


class JSONSchemaIn(msgspec.Struct, gc=False):
    name: str | None = None
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseFormatIn(msgspec.Struct, gc=False):
    type: str = "text"
    json_schema: JSONSchemaIn | None = None


class StreamOptionsIn(msgspec.Struct, gc=False):
    include_usage: bool | None = None


class ReasoningIn(msgspec.Struct, gc=False):
    """OpenRouter's unified `reasoning` request object."""

    effort: str | None = None
    max_tokens: int | None = None
    exclude: bool | None = None
    enabled: bool | None = None


class ThinkingParamIn(msgspec.Struct, gc=False):
    """`thinking` as LiteLLM takes it in OpenAI-format requests and DeepSeek documents it:
    {type: enabled | disabled, budget_tokens}."""

    type: str = "enabled"
    budget_tokens: int | None = None


class ChatRequestIn(msgspec.Struct, gc=False):
    messages: list[MessageIn]
    model: str | None = None
    stream: bool | None = None
    stream_options: StreamOptionsIn | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # not OpenAI's; vLLM, OpenRouter and DashScope take it
    stop: str | list[str] | None = None
    n: int | None = None
    seed: int | None = None
    tools: list[ToolIn] | None = None
    functions: list[FunctionDefIn] | None = None  # legacy
    tool_choice: str | ToolChoiceIn | None = None
    function_call: str | NamedFunction | None = None  # legacy
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatIn | None = None
    reasoning_effort: str | None = None
    reasoning: ReasoningIn | None = None
    thinking: ThinkingParamIn | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: Any = None
    web_search_options: Any = None


# --- inbound: a provider's answer ------------------------------------------------------------


class PromptTokensDetailsIn(msgspec.Struct, gc=False):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class CompletionTokensDetailsIn(msgspec.Struct, gc=False):
    reasoning_tokens: int | None = None


class UsageIn(msgspec.Struct, gc=False):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: PromptTokensDetailsIn | None = None
    completion_tokens_details: CompletionTokensDetailsIn | None = None
    # DeepSeek reports its context cache at the top level of `usage`.
    prompt_cache_hit_tokens: int | None = None


class ChoiceIn(msgspec.Struct, gc=False):
    message: MessageIn | None = None
    index: int = 0
    finish_reason: str | None = None


class ChatCompletionIn(msgspec.Struct, gc=False):
    id: str = ""
    model: str = ""
    choices: list[ChoiceIn] | None = None
    usage: UsageIn | None = None


class FunctionDeltaIn(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class ToolCallDeltaIn(msgspec.Struct, gc=False):
    index: int | None = None
    id: str | None = None
    function: FunctionDeltaIn | None = None


class DeltaIn(msgspec.Struct, gc=False):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDeltaIn] | None = None
    # LiteLLM-style signed thinking (what our own StreamEncoder sends an OpenAI caller).
    thinking_blocks: list[ThinkingBlockIn] | None = None


class ChunkChoiceIn(msgspec.Struct, gc=False):
    index: int = 0
    delta: DeltaIn | None = None
    finish_reason: str | None = None


class ChunkIn(msgspec.Struct, gc=False):
    id: str = ""
    model: str = ""
    choices: list[ChunkChoiceIn] | None = None
    usage: UsageIn | None = None
    # A mid-stream error: OpenAI sends {"error": {...}} alone; OpenRouter puts "error" on a
    # chunk that also has choices. Its shape is read by envelope.parse_error.
    error: Any = None


# --- outbound: a request to a provider -------------------------------------------------------


class TextPartOut(msgspec.Struct, tag="text"):
    text: str


class ImageURLOut(msgspec.Struct, omit_defaults=True):
    url: str


class ImagePartOut(msgspec.Struct, tag="image_url"):
    image_url: ImageURLOut


class FileOut(msgspec.Struct, omit_defaults=True):
    filename: str
    file_data: str


class FilePartOut(msgspec.Struct, tag="file"):
    file: FileOut


PartOut = TextPartOut | ImagePartOut | FilePartOut


class SystemOut(msgspec.Struct):
    role: Literal["system"]
    content: str


class UserOut(msgspec.Struct):
    role: Literal["user"]
    content: str | list[PartOut]


class FunctionOut(msgspec.Struct):
    name: str
    arguments: str


class ToolCallOut(msgspec.Struct, kw_only=True):
    id: str
    type: Literal["function"] = "function"
    function: FunctionOut


class AssistantOut(msgspec.Struct, omit_defaults=True):
    role: Literal["assistant"]
    content: str | None = None
    tool_calls: list[ToolCallOut] | None = None
    reasoning_content: str | None = None


class ToolMessageOut(msgspec.Struct):
    role: Literal["tool"]
    tool_call_id: str
    content: str


MessageOut = SystemOut | UserOut | AssistantOut | ToolMessageOut


class FunctionDefOut(msgspec.Struct, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolOut(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: FunctionDefOut


class NamedChoiceOut(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: NamedFunction


class JSONSchemaOut(msgspec.Struct, omit_defaults=True):
    name: str
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseFormatOut(msgspec.Struct, omit_defaults=True):
    type: str
    json_schema: JSONSchemaOut | None = None


class StreamOptionsOut(msgspec.Struct):
    include_usage: bool = True


class ChatRequestOut(msgspec.Struct, omit_defaults=True):
    model: str
    messages: list[MessageOut]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    tools: list[ToolOut] | None = None
    tool_choice: str | NamedChoiceOut | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatOut | None = None
    reasoning_effort: str | None = None
    stream: bool | None = None
    stream_options: StreamOptionsOut | None = None


# --- outbound: an answer to a caller ---------------------------------------------------------


class ThinkingBlockOut(msgspec.Struct, omit_defaults=True):
    type: Literal["thinking", "redacted_thinking"]
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class ResponseMessageOut(msgspec.Struct, omit_defaults=True):
    # No defaults on the first three: omit_defaults would drop them, and OpenAI always sends
    # `content` and `refusal`, null included.
    role: Literal["assistant"]
    content: str | None
    refusal: None
    tool_calls: list[ToolCallOut] | None = None
    reasoning_content: str | None = None
    thinking_blocks: list[ThinkingBlockOut] | None = None


class ChoiceOut(msgspec.Struct):
    index: int
    message: ResponseMessageOut
    logprobs: None
    finish_reason: str


class PromptTokensDetailsOut(msgspec.Struct, omit_defaults=True):
    cached_tokens: int
    cache_write_tokens: int = 0


class CompletionTokensDetailsOut(msgspec.Struct):
    reasoning_tokens: int


class UsageOut(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetailsOut
    completion_tokens_details: CompletionTokensDetailsOut


class CompletionOut(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChoiceOut]
    usage: UsageOut


REQUEST = msgspec.json.Decoder(ChatRequestIn)
COMPLETION = msgspec.json.Decoder(ChatCompletionIn)
CHUNK = msgspec.json.Decoder(ChunkIn)
ENCODE = msgspec.json.Encoder()
