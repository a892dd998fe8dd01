"""OpenAI chat completions (non-stream answers) to and from the canonical response.

Provider side: only `choices[0]` is read (the gateway never asks for more than one). The
reasoning text comes from `reasoning_content` (DeepSeek, vLLM), `reasoning` (OpenRouter) or
LiteLLM's `thinking_blocks`; it is unsigned, so its Thinking has source None. A `refusal`
becomes text with the canonical finish "refusal". A tool call under finish "stop" (Ollama and
some other servers say so) finishes as "tool_calls".

Caller side: a `chat.completion` the openai SDK parses, with the caller's model name. Thinking
goes in `reasoning_content` (all of its text) and, when any block is signed or redacted, in
LiteLLM's `thinking_blocks`, which clients echo back with the message so that a signature
returns to its provider on the next turn. Tool call ids carry their provider_data packed.
Images or documents a provider answers with have no place in a chat completion message and are
left out.
"""

from __future__ import annotations

from typing import Final

import msgspec

from adapters.canonical import (
    Block,
    FinishReason,
    Response,
    Text,
    Thinking,
    ToolCall,
    TranslationError,
    Usage,
    pack_call_id,
    unpack_call_id,
)
from adapters.openai.request import _arguments, _thinking
from adapters.openai.wire import (
    COMPLETION,
    ENCODE,
    ChoiceOut,
    CompletionOut,
    CompletionTokensDetailsOut,
    FunctionOut,
    MessageIn,
    PromptTokensDetailsOut,
    ResponseMessageOut,
    ThinkingBlockOut,
    ToolCallOut,
    UsageIn,
    UsageOut,
)

__all__ = [
    "completion_id",
    "finish_from_openai",
    "finish_to_openai",
    "from_canonical_response",
    "to_canonical_response",
    "usage_from_openai",
    "usage_to_openai",
]

_FINISH_IN: Final[dict[str, FinishReason]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",  # deprecated, same meaning
    "content_filter": "content_filter",
    "error": "error",  # OpenRouter, when the model's provider failed mid-answer
}
# The SDK's finish_reason Literal has no "error"; the answer was cut, which "stop" least
# misstates (and the gateway reports the error itself where it can).
_FINISH_OUT: Final[dict[FinishReason, str]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
    "error": "stop",
}


# --- provider side ----------------------------------------------------------------------------


def to_canonical_response(body: bytes, *, model: str) -> Response:
    try:
        completion = COMPLETION.decode(body)
    except msgspec.MsgspecError as err:
        raise TranslationError(f"The upstream answer is not a chat completion: {err}") from None
    content: list[Block] = []
    refusal = False
    finish = None
    if completion.choices:
        choice = completion.choices[0]
        finish = choice.finish_reason
        if choice.message is not None:
            content, refusal = _blocks(choice.message)
    has_calls = any(isinstance(b, ToolCall) for b in content)
    return Response(
        id=completion.id,
        model=completion.model or model,
        content=content,
        finish=finish_from_openai(finish, tool_calls=has_calls, refusal=refusal),
        usage=usage_from_openai(completion.usage),
    )


def _blocks(m: MessageIn) -> tuple[list[Block], bool]:
    blocks: list[Block] = _thinking(m)
    if isinstance(m.content, str):
        if m.content:
            blocks.append(Text(m.content))
    else:
        blocks.extend(Text(p.text) for p in m.content or () if p.type == "text" and p.text)
    if m.refusal:
        blocks.append(Text(m.refusal))
    for call in m.tool_calls or ():
        if call.function is not None:
            call_id, data = unpack_call_id(call.id)
            blocks.append(ToolCall(call_id, call.function.name, _arguments(call.function), data))
    if m.function_call is not None:
        blocks.append(ToolCall("call_fn0", m.function_call.name, _arguments(m.function_call)))
    return blocks, bool(m.refusal)


def finish_from_openai(reason: str | None, *, tool_calls: bool, refusal: bool) -> FinishReason:
    finish = _FINISH_IN.get(reason or "stop", "stop")
    if finish == "stop" and tool_calls:
        return "tool_calls"
    if finish == "stop" and refusal:
        return "refusal"
    return finish


def usage_from_openai(u: UsageIn | None) -> Usage:
    if u is None:
        return Usage()
    prompt = u.prompt_tokens_details
    completion = u.completion_tokens_details
    cached = (prompt.cached_tokens if prompt else None) or u.prompt_cache_hit_tokens or 0
    return Usage(
        input_tokens=u.prompt_tokens or 0,
        output_tokens=u.completion_tokens or 0,
        cached_tokens=cached,
        cache_write_tokens=(prompt.cache_write_tokens if prompt else None) or 0,
        reasoning_tokens=(completion.reasoning_tokens if completion else None) or 0,
    )


# --- caller side ------------------------------------------------------------------------------


def from_canonical_response(resp: Response, *, model: str, created: int = 0) -> bytes:
    """`created` is the Unix time of the answer; adapters keep no clock, so the proxy passes
    it (0 when it does not)."""
    texts: list[str] = []
    calls: list[ToolCallOut] = []
    reasoning: list[str] = []
    thinking: list[ThinkingBlockOut] = []
    signed = False
    for block in resp.content:
        match block:
            case Text(text=text):
                texts.append(text)
            case ToolCall():
                calls.append(ToolCallOut(id=pack_call_id(block.id, block.provider_data),
                                         function=FunctionOut(block.name, block.arguments)))
            case Thinking(redacted=str(data)):
                thinking.append(ThinkingBlockOut("redacted_thinking", data=data))
                signed = True
            case Thinking(text=text, signature=signature):
                if text:
                    reasoning.append(text)
                thinking.append(ThinkingBlockOut("thinking", text, signature))
                signed = signed or signature is not None
            case _:
                pass
    message = ResponseMessageOut(
        "assistant",
        "".join(texts) if texts else (None if calls else ""),
        None,
        tool_calls=calls or None,
        reasoning_content="".join(reasoning) or None,
        thinking_blocks=thinking if signed else None,
    )
    out = CompletionOut(
        id=completion_id(resp.id),
        created=created or resp.created,
        model=model,
        choices=[ChoiceOut(0, message, None, finish_to_openai(resp.finish))],
        usage=usage_to_openai(resp.usage),
    )
    return ENCODE.encode(out)


def completion_id(upstream_id: str) -> str:
    return upstream_id if upstream_id.startswith("chatcmpl") else f"chatcmpl-{upstream_id}"


def finish_to_openai(finish: FinishReason) -> str:
    return _FINISH_OUT[finish]


def usage_to_openai(u: Usage) -> UsageOut:
    return UsageOut(
        prompt_tokens=u.input_tokens,
        completion_tokens=u.output_tokens,
        total_tokens=u.input_tokens + u.output_tokens,
        prompt_tokens_details=PromptTokensDetailsOut(u.cached_tokens, u.cache_write_tokens),
        completion_tokens_details=CompletionTokensDetailsOut(u.reasoning_tokens),
    )
