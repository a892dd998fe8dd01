"""Gemini `GenerateContentResponse` <-> canonical `Response`, and the part <-> block
conversions the request and stream translators share.

Reading a model's parts (an answer, or a model turn of a caller's history):
- a `thought: true` text part is a `Thinking(source="gemini")` with its `thoughtSignature`;
- a `functionCall` part is a `ToolCall`: `args` become the JSON text `arguments` as sent, the
  part's `thoughtSignature` goes to `provider_data["thoughtSignature"]`, and a call without an
  `id` (Gemini 2.x never sends one) gets a stable synthesized one;
- a `thoughtSignature` on any other part (Gemini 3 puts one on the last part of an answer
  without function calls) becomes a `Thinking(text="", signature=..., source="gemini")` right
  after that part's block: canonical text has nowhere else to keep it;
- a signature we wrapped (`wire.wrap_thinking`) unwraps into the other dialect's thinking
  blocks, placed first in the message, where every dialect wants thinking.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import msgspec

from adapters.canonical import (
    Block,
    Document,
    FinishReason,
    Image,
    Response,
    Text,
    Thinking,
    ToolCall,
    TranslationError,
    Unsupported,
    Usage,
)
from adapters.gemini import wire
from adapters.gemini.wire import (
    Blob,
    Candidate,
    Content,
    FileData,
    FunctionCall,
    GenerateContentResponse,
    Part,
    UsageMetadata,
    pick,
)

__all__ = [
    "answer_parts",
    "call_part",
    "canonical_usage",
    "finish_reason",
    "from_canonical_response",
    "gemini_finish",
    "gemini_usage",
    "media_block",
    "media_part",
    "model_blocks",
    "other_block",
    "synth_id",
    "to_canonical_response",
]

# Gemini finishReason -> canonical. STOP becomes tool_calls when the answer calls functions.
# The safety family is content_filter (adapters/README.md); the function-calling failures are
# errors of the answer; OTHER and values we do not know read as a plain stop.
_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                     "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "LANGUAGE",
                     "MODEL_ARMOR", "JAILBREAK"), "content_filter"),
    **dict.fromkeys(("MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS",
                     "MISSING_THOUGHT_SIGNATURE", "MALFORMED_RESPONSE"), "error"),
}
_GEMINI_FINISH: dict[FinishReason, str] = {
    "stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS",
    "content_filter": "SAFETY", "refusal": "SAFETY", "error": "OTHER",
}
_EMPTY_ARGS = "{}"


def synth_id(*key: object) -> str:
    """A tool call id for a call Gemini sent without one: stable for the same key, and within
    Anthropic's id pattern ^[a-zA-Z0-9_-]+$."""
    digest = hashlib.blake2b("\x1f".join(map(str, key)).encode(), digest_size=12).hexdigest()
    return f"call_{digest}"


def finish_reason(value: str | None, has_calls: bool) -> FinishReason:
    finish = _FINISH.get(value or "STOP", "stop")
    return "tool_calls" if finish == "stop" and has_calls else finish


def gemini_finish(finish: FinishReason) -> str:
    return _GEMINI_FINISH[finish]


def canonical_usage(meta: UsageMetadata | None) -> Usage:
    if meta is None:
        return Usage()
    thoughts = meta.thoughts_token_count
    return Usage(
        # Tool-use prompt tokens (results of Gemini's own tools) are billed as input.
        input_tokens=meta.prompt_token_count + meta.tool_use_prompt_token_count,
        output_tokens=meta.candidates_token_count + thoughts,
        cached_tokens=meta.cached_content_token_count,
        reasoning_tokens=thoughts,
    )


def gemini_usage(usage: Usage) -> UsageMetadata:
    thoughts = min(usage.reasoning_tokens, usage.output_tokens)
    return UsageMetadata(
        prompt_token_count=usage.input_tokens,
        candidates_token_count=usage.output_tokens - thoughts,
        total_token_count=usage.input_tokens + usage.output_tokens,
        cached_content_token_count=usage.cached_tokens,
        thoughts_token_count=thoughts,
    )


# --- parts -> blocks ---------------------------------------------------------------------------


def media_block(blob: Blob | None, file: FileData | None, param: str) -> Image | Document:
    """inlineData / fileData as an Image or a Document; audio and video have no canonical
    block, so they are refused by name rather than passed on as a mislabelled document."""
    if blob is not None:
        mime = pick(blob.mime_type, blob.mime_type_) or ""
        if mime.startswith("image/"):
            return Image(media_type=mime, data=blob.data)
        if mime == "application/pdf" or mime.startswith("text/"):
            return Document(media_type=mime, data=blob.data)
        raise Unsupported(f"inlineData of type '{mime}' cannot be carried to this model; "
                          "images, PDF and text are supported.", f"{param}.inlineData")
    assert file is not None
    mime = pick(file.mime_type, file.mime_type_) or ""
    uri = pick(file.file_uri, file.file_uri_)
    if mime.startswith("image/"):
        return Image(media_type=mime, url=uri)
    if mime.startswith(("audio/", "video/")):
        raise Unsupported(f"fileData of type '{mime}' cannot be carried to this model.",
                          f"{param}.fileData")
    return Document(media_type=mime or None, url=uri)


def model_blocks(parts: list[Part] | None, call_id: Callable[[int, str], str], param: str
                 ) -> tuple[list[Block], int]:
    """A model turn's parts as canonical blocks, and how many function calls they hold.

    `call_id(slot, name)` names the slot-th call when it has no id; `param` prefixes the
    `parts[j]` of an error.
    """
    lead: list[Block] = []  # thinking unwrapped from our own signatures
    blocks: list[Block] = []
    calls = 0
    for j, part in enumerate(parts or ()):
        sig = pick(part.thought_signature, part.thought_signature_)
        if sig is not None and (carried := wire.unwrap_thinking(sig)) is not None:
            lead.extend(carried)
            sig = None
        call = pick(part.function_call, part.function_call_)
        if call is not None:
            blocks.append(_tool_call(call, sig, call.id or call_id(calls, call.name)))
            calls += 1
        elif part.text is not None:
            if part.thought:
                blocks.append(Thinking(part.text, sig, "gemini"))
                continue
            if part.text:
                blocks.append(Text(part.text))
            if sig:
                blocks.append(Thinking("", sig, "gemini"))
        else:
            block = other_block(part, f"{param}[{j}]")
            if block is not None:
                blocks.append(block)
            if pick(part.function_response, part.function_response_) is not None:
                raise TranslationError("A functionResponse part belongs in a user turn.",
                                       f"{param}[{j}]")
    return (lead + blocks if lead else blocks), calls


def other_block(part: Part, param: str) -> Block | None:
    """A media part as its block; code execution refused; anything else (an empty part, a
    functionResponse, which the caller handles, a kind we do not know) is None."""
    blob = pick(part.inline_data, part.inline_data_)
    file = pick(part.file_data, part.file_data_)
    if blob is not None or file is not None:
        return media_block(blob, file, param)
    if (part.executable_code or part.executable_code_ or part.code_execution_result
            or part.code_execution_result_):
        raise Unsupported("Code execution parts are Gemini's own tool and cannot be "
                          "carried to this model.", param)
    return None


def _tool_call(call: FunctionCall, sig: str | None, call_id: str) -> ToolCall:
    args = call.args
    arguments = _EMPTY_ARGS if not args or bytes(args) == b"null" else bytes(args).decode()
    data = {"thoughtSignature": sig} if sig else None
    return ToolCall(call_id, call.name, arguments, data)


# --- blocks -> parts, for a Gemini caller --------------------------------------------------------


def answer_parts(blocks: list[Block]) -> list[Part]:
    """An answer's blocks as the parts a Gemini caller reads.

    Thinking from another dialect is shown as thought text and also wrapped, whole, into the
    `thoughtSignature` of the next text or functionCall part (else the last one before it),
    the one field a Gemini client keeps and echoes (see `wire.wrap_thinking`).
    """
    parts: list[Part] = []
    carried: list[Thinking] = []
    for block in blocks:
        match block:
            case Text(text=text):
                if text:
                    parts.append(_carry(Part(text=text), carried))
            case Thinking(source="gemini"):
                if block.text or block.signature:
                    parts.append(Part(text=block.text, thought=True,
                                      thought_signature=block.signature))
            case Thinking():
                carried.append(block)
                if block.text:
                    parts.append(Part(text=block.text, thought=True))
            case ToolCall():
                parts.append(_carry(call_part(block), carried))
            case Image() | Document():
                parts.append(media_part(block))
    if carried:
        for part in reversed(parts):
            if not part.thought and part.thought_signature is None:
                part.thought_signature = wire.wrap_thinking(carried)
                break
    return parts


def _carry(part: Part, carried: list[Thinking]) -> Part:
    if carried and part.thought_signature is None:
        part.thought_signature = wire.wrap_thinking(carried)
        carried.clear()
    return part


def call_part(call: ToolCall) -> Part:
    """A tool call as a functionCall part with its `args` object and thought signature."""
    sig = (call.provider_data or {}).get("thoughtSignature")
    args = call.arguments.strip() or _EMPTY_ARGS
    try:
        _OBJECT.decode(args)
    except msgspec.DecodeError:
        # A model that broke its JSON (a cut stream): Gemini's args must be an object.
        args = _EMPTY_ARGS
    return Part(function_call=FunctionCall(name=call.name, args=msgspec.Raw(args.encode()),
                                           id=call.id),
                thought_signature=sig if isinstance(sig, str) else None)


# Validates a JSON object without building its values: they are skipped as raw bytes.
_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])


# The first base64 characters of the image formats Gemini reads, for an image sent without
# its media type (Gemini requires `mimeType`).
_MAGIC = (("/9j/", "image/jpeg"), ("iVBORw0KGgo", "image/png"), ("R0lGOD", "image/gif"),
          ("UklGR", "image/webp"), ("JVBERi0", "application/pdf"))


def media_part(block: Image | Document) -> Part:
    if block.data is not None:
        mime = block.media_type or next(
            (m for prefix, m in _MAGIC if block.data.startswith(prefix)),
            "image/png" if isinstance(block, Image) else "application/pdf")
        return Part(inline_data=Blob(mime_type=mime, data=block.data))
    if isinstance(block, Document) and block.text is not None:
        return Part(text=block.text)
    return Part(file_data=FileData(mime_type=block.media_type, file_uri=block.url))


# --- whole answers -------------------------------------------------------------------------------


def to_canonical_response(body: bytes, *, model: str) -> Response:
    try:
        resp = wire.RESPONSE.decode(body)
    except msgspec.DecodeError as exc:
        raise TranslationError(f"Gemini answer is not a GenerateContentResponse: {exc}") from None
    if resp.error is not None:
        raise TranslationError(f"Gemini answered with an error: {resp.error.message}")
    rid = resp.response_id or synth_id("response", body[:256])
    usage = canonical_usage(resp.usage_metadata)
    name = resp.model_version or model
    if not resp.candidates:
        blocked = resp.prompt_feedback is not None and resp.prompt_feedback.block_reason
        finish: FinishReason = "content_filter" if blocked else "stop"
        return Response(id=rid, model=name, content=[], finish=finish, usage=usage)
    cand = resp.candidates[0]
    parts = cand.content.parts if cand.content is not None else None
    blocks, calls = model_blocks(parts, lambda slot, fn: synth_id(rid, slot, fn),
                                 "candidates[0].content.parts")
    return Response(id=rid, model=name, content=blocks,
                    finish=finish_reason(cand.finish_reason, calls > 0), usage=usage)


def from_canonical_response(resp: Response, *, model: str) -> bytes:
    parts = answer_parts(resp.content)
    finish = gemini_finish(resp.finish)
    content: Content | None = Content(role="model", parts=parts or None)
    if not parts and finish == "SAFETY":
        content = None  # a blocked candidate carries no content, as Gemini sends it
    cand = Candidate(content=content, finish_reason=finish, index=0)
    out = GenerateContentResponse(candidates=[cand], usage_metadata=gemini_usage(resp.usage),
                                  model_version=model, response_id=resp.id)
    return wire.ENCODER.encode(out)
