"""Anthropic Messages wire shapes: msgspec Structs, decoders and encoders built once.

Shapes follow the API reference and the official SDK's own types (`anthropic.types`:
`MessageCreateParams`, the `*BlockParam` variants, `Message`, `RawMessageStreamEvent`).

Decoding reads only the fields the translators use; every other field is ignored, never refused
(no `forbid_unknown_fields`), so a new API field or a beta one never breaks translation.

Content blocks are decoded into one flat Struct (`Block`) carrying the union of the fields of
the block types we translate, instead of a tagged union: msgspec refuses a tag it does not know,
and the API keeps adding block types (server tool results, `container_upload`, ...). The
translators dispatch on `Block.type` with `match` and name any block they cannot carry.
A few server-tool blocks give a known field another JSON type (`web_search_tool_result.content`
is an object when it reports an error, `search_result.source` is a string); `source` accepts
both, and a body that still fails the typed decode is diagnosed block by block
(`request.py`), so such a block is refused by name, not with a decode error.

Encoding goes through Structs too (`Out*`), with `omit_defaults` so absent options stay absent.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "BLOCK",
    "BLOCK_TYPE",
    "BODY",
    "CONTENT",
    "ENCODER",
    "ERROR_BODY",
    "LOOSE_BODY",
    "RAW",
    "RESPONSE",
    "STREAM_DECODERS",
    "Block",
    "BlockStartEvent",
    "BlockStopEvent",
    "Body",
    "Delta",
    "DeltaEvent",
    "ErrorBody",
    "ErrorObject",
    "Format",
    "LooseBody",
    "LooseTurn",
    "MessageDeltaEvent",
    "MessageStartEvent",
    "OutBlock",
    "OutDocument",
    "OutError",
    "OutErrorObject",
    "OutFormat",
    "OutImage",
    "OutMessage",
    "OutOutputConfig",
    "OutRedacted",
    "OutRequest",
    "OutResponse",
    "OutSource",
    "OutText",
    "OutThinking",
    "OutThinkingConfig",
    "OutTokensDetails",
    "OutTool",
    "OutToolChoice",
    "OutToolResult",
    "OutToolUse",
    "OutUsage",
    "OutputConfig",
    "RespBlock",
    "Source",
    "ThinkingConfig",
    "Tool",
    "ToolChoice",
    "Turn",
    "TypeOnly",
    "Usage",
    "WireMessage",
    "pack_signature",
    "unpack_signature",
]

# An absent `input` (a tool_use block always has one; a malformed one may not).
_NO_INPUT = msgspec.Raw(b"{}")


# --- requests: what a caller sends -------------------------------------------------------------


class Source(msgspec.Struct, gc=False):
    """An image or document source: base64 (`media_type`, `data`), `url`, plain `text`
    (`data` with media type text/plain), `content` (blocks), or `file` (`file_id`)."""

    type: str = ""
    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    file_id: str | None = None
    content: str | list[Block] | None = None


class Block(msgspec.Struct):
    """Any content block, flat: `type` says which fields mean something (see module doc)."""

    type: str = ""
    text: str | None = None
    # image, document: an object; search_result: the result's source as a string.
    source: Source | str | None = None
    title: str | None = None
    # tool_use
    id: str | None = None
    name: str | None = None
    input: msgspec.Raw = _NO_INPUT
    # tool_result (content also for search_result, as text blocks)
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool = False
    # thinking, redacted_thinking
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class TypeOnly(msgspec.Struct, gc=False):
    """Just a block's `type`, to name a block the typed decode refused."""

    type: str = ""


class LooseTurn(msgspec.Struct):
    """A turn whose blocks are kept undecoded, to find the block a typed decode refused."""

    content: str | list[msgspec.Raw] = ""


class LooseBody(msgspec.Struct):
    messages: list[LooseTurn] = []


class Turn(msgspec.Struct):
    """One entry of `messages`: user, assistant, or a mid-conversation `system` entry."""

    role: str
    content: str | list[Block] = ""


class Tool(msgspec.Struct):
    """A custom tool (`type` absent or "custom") or a server tool (`type` names it)."""

    name: str = ""
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(msgspec.Struct, gc=False):
    type: str = "auto"
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(msgspec.Struct, gc=False):
    type: str = "enabled"
    budget_tokens: int | None = None
    display: str | None = None


class Format(msgspec.Struct):
    type: str = ""
    schema: dict[str, Any] | None = None


class OutputConfig(msgspec.Struct):
    effort: str | None = None
    format: Format | None = None


class Body(msgspec.Struct):
    """A `POST /v1/messages` body, the fields translation uses. `output_format` is the
    structured-outputs beta spelling that `output_config.format` replaced; `mcp_servers` is
    only checked for presence (a server-side connector no other provider has)."""

    messages: list[Turn] = []
    model: str | None = None
    system: str | list[Block] | None = None
    max_tokens: int | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stream: bool | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    output_format: Format | None = None
    mcp_servers: msgspec.Raw = msgspec.Raw(b"")


# --- answers: what a provider sends -----------------------------------------------------------


class OutputTokensDetails(msgspec.Struct, gc=False):
    thinking_tokens: int = 0


class Usage(msgspec.Struct, gc=False):
    """`usage` of a Message, of message_start, or of message_delta (where every count but
    `output_tokens` is optional and, when present, cumulative)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: OutputTokensDetails | None = None


class RespBlock(msgspec.Struct):
    """A content block of an answer. Only the types we ask for carry fields we read;
    server-tool blocks (never requested by the gateway) decode to their `type` alone."""

    type: str = ""
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: msgspec.Raw = _NO_INPUT
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class WireMessage(msgspec.Struct):
    id: str = ""
    model: str | None = None
    content: list[RespBlock] = []
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage | None = None


class MessageStartEvent(msgspec.Struct):
    message: WireMessage


class BlockStartEvent(msgspec.Struct):
    index: int
    content_block: RespBlock


class Delta(msgspec.Struct, gc=False):
    """text_delta, input_json_delta, thinking_delta, signature_delta (citations_delta and any
    newer type carry nothing the canonical stream holds)."""

    type: str = ""
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    signature: str | None = None


class DeltaEvent(msgspec.Struct, gc=False):
    index: int
    delta: Delta


class BlockStopEvent(msgspec.Struct, gc=False):
    index: int


class MessageDelta(msgspec.Struct, gc=False):
    stop_reason: str | None = None
    stop_sequence: str | None = None


class MessageDeltaEvent(msgspec.Struct, gc=False):
    delta: MessageDelta = msgspec.field(default_factory=MessageDelta)
    usage: Usage | None = None


class ErrorObject(msgspec.Struct, gc=False):
    type: str = ""
    message: str = ""


class ErrorBody(msgspec.Struct, gc=False):
    """`{"type": "error", "error": {"type", "message"}, "request_id"}`; also the data of a
    mid-stream `event: error`."""

    error: ErrorObject | None = None


# --- what we send: request bodies and answers -------------------------------------------------


class OutSource(msgspec.Struct, omit_defaults=True, gc=False):
    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class OutText(msgspec.Struct, tag="text", tag_field="type", gc=False):
    text: str


class OutImage(msgspec.Struct, tag="image", tag_field="type", gc=False):
    source: OutSource


class OutDocument(msgspec.Struct, tag="document", tag_field="type", omit_defaults=True,
                  gc=False):
    source: OutSource
    title: str | None = None


class OutToolUse(msgspec.Struct, tag="tool_use", tag_field="type", gc=False):
    id: str
    name: str
    input: msgspec.Raw


class OutToolResult(msgspec.Struct, tag="tool_result", tag_field="type", omit_defaults=True,
                    gc=False):
    tool_use_id: str
    content: list[OutText | OutImage | OutDocument] | None = None
    is_error: bool = False


class OutThinking(msgspec.Struct, tag="thinking", tag_field="type", gc=False):
    thinking: str
    signature: str


class OutRedacted(msgspec.Struct, tag="redacted_thinking", tag_field="type", gc=False):
    data: str


OutBlock = (OutText | OutImage | OutDocument | OutToolUse | OutToolResult | OutThinking
            | OutRedacted)


class OutMessage(msgspec.Struct, gc=False):
    role: str
    content: list[OutBlock]


class OutTool(msgspec.Struct, omit_defaults=True, gc=False):
    name: str
    input_schema: dict[str, Any]
    description: str | None = None


class OutToolChoice(msgspec.Struct, omit_defaults=True, gc=False):
    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class OutThinkingConfig(msgspec.Struct, omit_defaults=True, gc=False):
    type: str
    budget_tokens: int | None = None


class OutFormat(msgspec.Struct, gc=False):
    schema: dict[str, Any]
    type: str = "json_schema"


class OutOutputConfig(msgspec.Struct, omit_defaults=True, gc=False):
    effort: str | None = None
    format: OutFormat | None = None


class OutRequest(msgspec.Struct, omit_defaults=True, gc=False):
    model: str
    max_tokens: int
    messages: list[OutMessage]
    system: str | list[OutText] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    tools: list[OutTool] | None = None
    tool_choice: OutToolChoice | None = None
    thinking: OutThinkingConfig | None = None
    output_config: OutOutputConfig | None = None
    stream: bool | None = None


class OutTokensDetails(msgspec.Struct, gc=False):
    thinking_tokens: int


class OutUsage(msgspec.Struct, omit_defaults=True, gc=False):
    """Usage as the API reports it; `output_tokens_details` only when reasoning was counted."""

    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    output_tokens: int
    output_tokens_details: OutTokensDetails | None = None


class OutResponse(msgspec.Struct, gc=False):
    """A non-stream `Message` as the API answers it: every field present, nulls included."""

    id: str
    model: str
    content: list[OutBlock]
    stop_reason: str | None
    stop_sequence: str | None
    usage: OutUsage
    type: str = "message"
    role: str = "assistant"


class OutErrorObject(msgspec.Struct, gc=False):
    type: str
    message: str


class OutError(msgspec.Struct, gc=False):
    error: OutErrorObject
    type: str = "error"


# --- built once -------------------------------------------------------------------------------

BODY = msgspec.json.Decoder(Body)
CONTENT = msgspec.json.Decoder(list[Block])
BLOCK = msgspec.json.Decoder(Block)
BLOCK_TYPE = msgspec.json.Decoder(TypeOnly)
LOOSE_BODY = msgspec.json.Decoder(LooseBody)
RAW = msgspec.json.Decoder(msgspec.Raw)
RESPONSE = msgspec.json.Decoder(WireMessage)
ERROR_BODY = msgspec.json.Decoder(ErrorBody)
ENCODER = msgspec.json.Encoder()

# Stream events by their SSE `event:` name, which the API sets equal to the data's `type`.
# One decoder per event is a dict lookup instead of a union's tag dispatch, and an event type
# the API adds later simply has no decoder (and is skipped).
STREAM_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "message_start": msgspec.json.Decoder(MessageStartEvent),
    "content_block_start": msgspec.json.Decoder(BlockStartEvent),
    "content_block_delta": msgspec.json.Decoder(DeltaEvent),
    "content_block_stop": msgspec.json.Decoder(BlockStopEvent),
    "message_delta": msgspec.json.Decoder(MessageDeltaEvent),
    "error": ERROR_BODY,
}


# --- thinking that another provider produced, carried through an Anthropic caller -------------
# An Anthropic caller holds reasoning only as `thinking` blocks, whose `signature` it echoes back
# verbatim. Reasoning from another dialect (Gemini thought signatures, OpenAI-compatible
# `reasoning_content`) is given to it as a thinking block whose signature names that dialect, so
# the next turn brings it back tagged with its source and the provider encoders can tell it from
# a real Anthropic signature (which is base64 and never holds ':').

_FOREIGN = "sluice:"


def pack_signature(source: str | None, signature: str | None) -> str:
    """The `signature` to give an Anthropic caller for thinking from `source`."""
    if source is None or source == "anthropic":
        return signature or ""
    return f"{_FOREIGN}{source}:{signature or ''}"


def unpack_signature(signature: str) -> tuple[str | None, str | None]:
    """`(source, signature)` of a signature an Anthropic caller sent back. `source` is
    "anthropic" for a real one, the dialect's name for one `pack_signature` made."""
    if not signature.startswith(_FOREIGN):
        return "anthropic", signature or None
    source, _, inner = signature[len(_FOREIGN):].partition(":")
    return source, inner or None
