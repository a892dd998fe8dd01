"""The offline demo model `echo`: an in-process upstream that speaks OpenAI's wire format.

It answers with the last user message (word by word when streamed), so a fresh install works
with no key and no network, and the whole proxy path (envelope patch, usage request and strip,
SSE piping) runs exactly as it does for a real provider. Its "tokens" are whitespace-separated
words, and its usage counts them honestly: prompt words in, answer words out.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from proxy.errors import UpstreamError, UpstreamProtocolError

__all__ = ["EchoResponse", "EchoUpstream"]

_DECODE = msgspec.json.Decoder(dict[str, Any])
_ENCODE = msgspec.json.Encoder()
_WORD = re.compile(r"\S+\s*")
_EMBEDDING_DIMS = 16
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream")]


class EchoResponse:
    __slots__ = ("__weakref__", "_parts", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], parts: list[bytes]) -> None:
        self.status = status
        self.headers = headers
        self._parts = parts

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    async def read(self) -> bytes:
        return b"".join(self._parts)

    async def _iterate(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            yield part

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    def close(self) -> None:
        self._parts = []

    def abort(self, error: UpstreamError) -> None:
        self._parts = []

    async def __aenter__(self) -> EchoResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class EchoUpstream:
    """Stands where an `UpstreamPool` would, with the same `request` signature."""

    base_path = b"/v1"

    def __repr__(self) -> str:
        return "<EchoUpstream builtin>"

    async def request(
        self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]],
        body: bytes = b"",
    ) -> EchoResponse:
        path = target.split(b"?", 1)[0]
        try:
            req = _DECODE.decode(body) if body else {}
        except msgspec.MsgspecError as err:
            raise UpstreamProtocolError(f"echo: unreadable request: {err}") from None
        if path.endswith(b"/chat/completions"):
            return _chat(req)
        if path.endswith(b"/completions"):
            return _completion(req)
        if path.endswith(b"/embeddings"):
            return _embeddings(req)
        return _error(404, f"echo serves no {path.decode(errors='replace')}")

    async def aclose(self) -> None:
        return None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content
                        if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _limit(req: dict[str, Any]) -> int | None:
    value = req.get("max_completion_tokens") or req.get("max_tokens")
    return value if isinstance(value, int) and value > 0 else None


def _answer(text: str, limit: int | None) -> tuple[list[str], str]:
    words = _WORD.findall(text) or ["(echo: nothing to repeat)"]
    if limit is not None and len(words) > limit:
        return words[:limit], "length"
    return words, "stop"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _sse(obj: Any) -> bytes:
    return b"data: " + _ENCODE.encode(obj) + b"\n\n"


def _chat(req: dict[str, Any]) -> EchoResponse:
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(400, "'messages' must be a non-empty array", "messages")
    prompt = sum(_words(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))
    last_user = next((_text_of(m.get("content")) for m in reversed(messages)
                      if isinstance(m, dict) and m.get("role") == "user"), "")
    words, finish = _answer(last_user, _limit(req))
    usage = _usage(prompt, len(words))
    base = {"id": f"chatcmpl-echo{time.time_ns():x}", "created": int(time.time()),
            "model": req.get("model", "echo"), "system_fingerprint": "sluice-echo"}
    if not req.get("stream"):
        message = {"role": "assistant", "content": "".join(words).rstrip(), "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        body = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        return EchoResponse(200, _JSON, [_ENCODE.encode(body)])
    with_usage = bool((req.get("stream_options") or {}).get("include_usage"))
    chunk = {**base, "object": "chat.completion.chunk"}
    if with_usage:
        chunk["usage"] = None

    def event(delta: dict[str, Any], reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return _sse({**chunk, "choices": [choice]})

    parts = [event({"role": "assistant", "content": "", "refusal": None}, None)]
    parts += [event({"content": w if i < len(words) - 1 else w.rstrip()}, None)
              for i, w in enumerate(words)]
    parts.append(event({}, finish))
    if with_usage:
        parts.append(_sse({**chunk, "choices": [], "usage": usage}))
    parts.append(b"data: [DONE]\n\n")
    return EchoResponse(200, _SSE, parts)


def _completion(req: dict[str, Any]) -> EchoResponse:
    prompt = req.get("prompt")
    if isinstance(prompt, str):
        text = prompt
    else:
        text = " ".join(p for p in prompt or [] if isinstance(p, str))
    words, finish = _answer(text, _limit(req))
    usage = _usage(_words(text), len(words))
    base = {"id": f"cmpl-echo{time.time_ns():x}", "object": "text_completion",
            "created": int(time.time()), "model": req.get("model", "echo")}
    if not req.get("stream"):
        choice = {"index": 0, "text": "".join(words), "logprobs": None, "finish_reason": finish}
        return EchoResponse(200, _JSON, [_ENCODE.encode({**base, "choices": [choice],
                                                          "usage": usage})])
    parts = [_sse({**base, "choices": [{"index": 0, "text": w, "logprobs": None,
                                        "finish_reason": None}]}) for w in words]
    parts.append(_sse({**base, "choices": [{"index": 0, "text": "", "logprobs": None,
                                            "finish_reason": finish}]}))
    if (req.get("stream_options") or {}).get("include_usage"):
        parts.append(_sse({**base, "choices": [], "usage": usage}))
    parts.append(b"data: [DONE]\n\n")
    return EchoResponse(200, _SSE, parts)


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(b - 127.5) / 127.5 for b in digest[:_EMBEDDING_DIMS]]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [x / norm for x in raw]


def _embeddings(req: dict[str, Any]) -> EchoResponse:
    inputs = req.get("input")
    texts = [inputs] if isinstance(inputs, str) else [str(i) for i in inputs or []]
    as_base64 = req.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(texts):
        vec = _vector(text)
        emb: Any = (base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
                    if as_base64 else vec)
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(_words(t) for t in texts)
    body = {"object": "list", "data": data, "model": req.get("model", "echo"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return EchoResponse(200, _JSON, [_ENCODE.encode(body)])


def _error(status: int, message: str, param: str | None = None) -> EchoResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param,
                      "code": None}}
    return EchoResponse(status, _JSON, [_ENCODE.encode(body)])
