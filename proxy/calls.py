"""What a caller asked for, in its own dialect, read before any routing.

A `Call` holds the caller's raw body and the few facts the gateway acts on (model, stream,
usage request), so same-dialect traffic is forwarded as bytes; the canonical form is decoded
only when a target speaks another dialect, once, however many targets are tried.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from adapters.canonical import Request, TranslationError
from adapters.dialects import ADAPTERS
from adapters.openai import Envelope
from adapters.providers import Dialect
from proxy.errors import BadRequest

__all__ = ["Call", "Operation"]

Operation = Literal["chat", "completions", "embeddings", "count_tokens"]

# Marks a thinking signature the gateway made for an Anthropic caller (adapters/anthropic/wire.py).
_FOREIGN_THINKING = b'"sluice:'  # a false positive only costs the canonical round trip

# The OpenAI-dialect path of each operation, after an OpenAI base URL (which ends in /v1).
_OPENAI_PATHS: dict[Operation, bytes] = {
    "chat": b"/chat/completions",
    "completions": b"/completions",
    "embeddings": b"/embeddings",
}


class Call:
    __slots__ = ("_canonical", "body", "dialect", "envelope", "include_usage", "model",
                 "operation", "query", "sse", "stream", "version")

    def __init__(self, dialect: Dialect, operation: Operation, body: bytes, model: str,
                 stream: bool, envelope: Envelope | None = None, *, query: str = "",
                 version: str = "v1beta", sse: bool = True) -> None:
        self.dialect = dialect
        self.operation = operation
        self.body = body
        self.model = model
        self.stream = stream
        self.envelope = envelope
        self.include_usage = envelope.include_usage if envelope is not None else False
        # Caller query parameters that mean something to a provider of the same dialect
        # (Anthropic's ?beta=true); never the gateway key (Gemini's ?key=).
        self.query = query
        self.version = version  # the Gemini API version the caller used
        self.sse = sse  # Gemini: ?alt=sse, else a streamed JSON array
        self._canonical: Request | None = None

    def __repr__(self) -> str:
        return (f"<Call {self.dialect} {self.operation} model={self.model!r} "
                f"stream={self.stream}>")

    def canonical(self) -> Request:
        """The request in the hub schema, decoded on first use (a 400 if it cannot be)."""
        if self._canonical is None:
            try:
                self._canonical = ADAPTERS[self.dialect].to_canonical_request(
                    self.body, model=self.model, stream=self.stream)
            except TranslationError as err:
                raise BadRequest(str(err), param=err.param) from None
        return self._canonical

    def same_dialect_request(self, model: str, *, want_usage: bool) -> tuple[bytes, bytes]:
        """(path after the provider's base URL, body) for a provider of the caller's dialect."""
        match self.dialect:
            case "openai":
                assert self.envelope is not None
                body = self.envelope.patch(self.body, model, want_usage=want_usage)
                return _OPENAI_PATHS[self.operation], body
            case "anthropic":
                assert self.envelope is not None
                if _FOREIGN_THINKING in self.body:
                    # History that another provider's reasoning passed through (signatures
                    # the gateway made, `sluice:<dialect>:...`) would be refused as invalid
                    # signatures; the canonical round trip drops those blocks and, where
                    # Anthropic then requires thinking, turns thinking off for the turn.
                    body = ADAPTERS["anthropic"].from_canonical_request(
                        self.canonical(), model=model)
                else:
                    body = self.envelope.patch(self.body, model, want_usage=False)
                path = b"/v1/messages/count_tokens" if self.operation == "count_tokens" \
                    else b"/v1/messages"
                return path + self._query(), body
            case "gemini":
                action = ("countTokens" if self.operation == "count_tokens"
                          else "streamGenerateContent" if self.stream else "generateContent")
                path = f"/{self.version}/models/{quote(model, safe='')}:{action}".encode()
                if self.stream and self.sse:
                    path += b"?alt=sse"
                return path, self.body

    def _query(self) -> bytes:
        return ("?" + self.query).encode() if self.query else b""
