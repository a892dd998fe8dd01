"""Our own hub schema: every dialect translates to and from these shapes, never to each other.

Three dialects would need six direct translators per direction; through this hub each dialect
has one pair. The shapes hold the union of what the dialects can express and name it in neutral
words (the block kinds of Anthropic, the finish reasons of OpenAI, which are the most widely
known). What a provider needs echoed back on a later turn (Anthropic thinking signatures, Gemini
thought signatures) travels in `provider_data`, tagged with the dialect that made it, so it is
only ever sent back to that dialect.

Pure: no IO, no clock, no logging.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import msgspec

__all__ = [
    "Block",
    "BlockStart",
    "BlockStop",
    "CanonicalError",
    "Document",
    "Event",
    "FinishReason",
    "Image",
    "Message",
    "Reasoning",
    "Request",
    "Response",
    "ResponseFormat",
    "Role",
    "StreamEnd",
    "StreamError",
    "StreamStart",
    "Text",
    "TextDelta",
    "Thinking",
    "ThinkingDelta",
    "Tool",
    "ToolArgsDelta",
    "ToolCall",
    "ToolChoice",
    "ToolResult",
    "TranslationError",
    "Unsupported",
    "Usage",
    "pack_call_id",
    "unpack_call_id",
]

Dialect = Literal["openai", "anthropic", "gemini"]
Role = Literal["user", "assistant"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "refusal", "error"]


class TranslationError(ValueError):
    """A request or answer that cannot be carried into the other dialect.

    `param` names the caller's field at fault; the proxy answers 400 in the caller's dialect.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class Unsupported(TranslationError):
    """The target cannot express what the caller asked for (an image for a text-only model,
    `n > 1`, a server tool it lacks): said in a clear 400, never dropped silently."""


# --- content blocks ---------------------------------------------------------------------------


class Text(msgspec.Struct, tag="text", frozen=True):
    text: str


class Image(msgspec.Struct, tag="image", frozen=True):
    """Base64 `data` with its media type, or a `url` (http(s) or a data: URL kept as given)."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class Document(msgspec.Struct, tag="document", frozen=True):
    """A file such as a PDF: base64 `data`, a `url`, or plain `text`."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    text: str | None = None
    title: str | None = None


class ToolCall(msgspec.Struct, tag="tool_call", frozen=True):
    id: str
    name: str
    # The arguments as JSON text, exactly as the model produced them (OpenAI keeps them as a
    # string; Anthropic and Gemini as objects, decoded only when crossing to them).
    arguments: str
    provider_data: dict[str, Any] | None = None


class ToolResult(msgspec.Struct, tag="tool_result", frozen=True):
    call_id: str
    content: list[Text | Image | Document]
    is_error: bool = False
    # Gemini answers a call by function name, not id; kept when the caller's dialect knows it.
    name: str | None = None


class Thinking(msgspec.Struct, tag="thinking", frozen=True):
    """Reasoning the model showed. `signature` is what its provider requires echoed back;
    `source` is the dialect that signed it (a signature is meaningless to another provider).
    `redacted` holds Anthropic's encrypted redacted_thinking data."""

    text: str = ""
    signature: str | None = None
    source: Dialect | None = None
    redacted: str | None = None


Block = Text | Image | Document | ToolCall | ToolResult | Thinking


class Message(msgspec.Struct, frozen=True):
    """One turn. Tool results are blocks of a user turn (as Anthropic has them); the OpenAI
    adapter splits them into `role: "tool"` messages and Gemini's into functionResponse parts."""

    role: Role
    content: list[Block]


# --- the request ------------------------------------------------------------------------------


class Tool(msgspec.Struct, frozen=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # JSON Schema, as the caller gave it


class ToolChoice(msgspec.Struct, frozen=True):
    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None  # with mode "tool"
    parallel: bool | None = None  # False: at most one call per turn


class ResponseFormat(msgspec.Struct, frozen=True):
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


class Reasoning(msgspec.Struct, frozen=True):
    """Whether and how much the model should think, in whichever terms the caller used."""

    enabled: bool = True
    budget_tokens: int | None = None
    effort: Literal["minimal", "low", "medium", "high"] | None = None
    include_thoughts: bool = True


class Request(msgspec.Struct, kw_only=True):
    model: str
    messages: list[Message]
    system: list[Text] = []
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = []
    stream: bool = False
    tools: list[Tool] = []
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    reasoning: Reasoning | None = None
    seed: int | None = None
    # The caller asked for usage on its stream (OpenAI's stream_options.include_usage).
    stream_usage: bool = False


# --- the answer -------------------------------------------------------------------------------


class Usage(msgspec.Struct):
    input_tokens: int = 0  # all prompt tokens, cached ones included
    output_tokens: int = 0  # all generated tokens, reasoning included
    cached_tokens: int = 0  # prompt tokens read from a cache
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class Response(msgspec.Struct, kw_only=True):
    id: str
    model: str
    content: list[Block]
    finish: FinishReason = "stop"
    stop_sequence: str | None = None
    usage: Usage = msgspec.field(default_factory=Usage)
    created: int = 0  # Unix time of the answer, set by the proxy (adapters keep no clock)


# --- stream events ----------------------------------------------------------------------------
# A provider's stream decoder turns its chunks into these; the caller's encoder turns them into
# its own framing. Blocks are numbered in the order they start; one block is open at a time per
# index, and text, thinking and tool calls may interleave only across indexes.


class StreamStart(msgspec.Struct, tag="start"):
    id: str
    model: str
    usage: Usage | None = None  # input tokens, when the provider says them up front
    created: int = 0  # Unix time, set by the proxy (adapters keep no clock)


class BlockStart(msgspec.Struct, tag="block_start"):
    index: int
    kind: Literal["text", "thinking", "tool_call"]
    tool_id: str | None = None
    tool_name: str | None = None
    provider_data: dict[str, Any] | None = None


class TextDelta(msgspec.Struct, tag="text_delta"):
    index: int
    text: str


class ThinkingDelta(msgspec.Struct, tag="thinking_delta"):
    index: int
    text: str = ""
    signature: str | None = None
    source: Dialect | None = None


class ToolArgsDelta(msgspec.Struct, tag="tool_args_delta"):
    index: int
    partial_json: str


class BlockStop(msgspec.Struct, tag="block_stop"):
    index: int


class StreamEnd(msgspec.Struct, tag="end"):
    finish: FinishReason
    stop_sequence: str | None = None
    usage: Usage | None = None


class CanonicalError(msgspec.Struct, frozen=True):
    """An error in neutral terms: the HTTP status it maps to, a kind, and the message."""

    status: int
    message: str
    kind: Literal["invalid_request", "authentication", "permission", "not_found",
                  "request_too_large", "rate_limit", "overloaded", "server", "timeout"] = "server"
    param: str | None = None
    retry_after: float | None = None


class StreamError(msgspec.Struct, tag="error"):
    error: CanonicalError


Event = (StreamStart | BlockStart | TextDelta | ThinkingDelta | ToolArgsDelta | BlockStop
         | StreamEnd | StreamError)


# --- provider data carried in tool call ids ---------------------------------------------------
# Every client echoes a tool call id back verbatim on the next turn, so what a provider needs
# back (Gemini's thoughtSignature on a functionCall) can ride in it with no gateway state. The
# marker and base64url keep the id within Anthropic's documented pattern ^[a-zA-Z0-9_-]+$.

_CALL_DATA_MARK = "__sl_"
_JSON = msgspec.json.Encoder()
_DATA = msgspec.json.Decoder(dict[str, Any])


def pack_call_id(call_id: str, provider_data: dict[str, Any] | None) -> str:
    if not provider_data:
        return call_id
    packed = base64.urlsafe_b64encode(_JSON.encode(provider_data)).rstrip(b"=").decode()
    return f"{call_id}{_CALL_DATA_MARK}{packed}"


def unpack_call_id(call_id: str) -> tuple[str, dict[str, Any] | None]:
    base, mark, packed = call_id.partition(_CALL_DATA_MARK)
    if not mark:
        return call_id, None
    try:
        data = _DATA.decode(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)))
    except (ValueError, msgspec.DecodeError):
        return call_id, None
    return base, data
