"""Dialect name -> its adapter package: the one table the proxy translates through.

Each package has the same surface (adapters/README.md); `DialectAdapter` states it for mypy,
which checks the modules against it structurally.
"""

from __future__ import annotations

from typing import Protocol

from adapters import anthropic, gemini, openai
from adapters.canonical import CanonicalError, Event, Request, Response
from adapters.providers import Dialect
from adapters.sse import SSEEvent

__all__ = ["ADAPTERS", "DialectAdapter", "StreamDecoderLike", "StreamEncoderLike"]


class StreamDecoderLike(Protocol):
    def feed(self, event: SSEEvent) -> list[Event]: ...
    def close(self) -> list[Event]: ...


class StreamEncoderLike(Protocol):
    def feed(self, event: Event) -> bytes: ...
    def close(self) -> bytes: ...


class _DecoderFactory(Protocol):
    def __call__(self, *, model: str) -> StreamDecoderLike: ...


class _EncoderFactory(Protocol):
    def __call__(self, *, model: str, include_usage: bool = ..., sse: bool = ...
                 ) -> StreamEncoderLike: ...


class DialectAdapter(Protocol):
    @property
    def StreamDecoder(self) -> _DecoderFactory: ...
    @property
    def StreamEncoder(self) -> _EncoderFactory: ...

    def to_canonical_request(self, body: bytes, *, model: str | None = ...,
                             stream: bool | None = ...) -> Request: ...
    def from_canonical_request(self, req: Request, *, model: str) -> bytes: ...
    def request_path(self, *, model: str, stream: bool) -> bytes: ...
    def to_canonical_response(self, body: bytes, *, model: str) -> Response: ...
    def from_canonical_response(self, resp: Response, *, model: str) -> bytes: ...
    def to_canonical_error(self, status: int, body: bytes) -> CanonicalError: ...
    def from_canonical_error(self, err: CanonicalError) -> tuple[int, bytes]: ...
    def stream_error_event(self, err: CanonicalError) -> bytes: ...


ADAPTERS: dict[Dialect, DialectAdapter] = {
    "openai": openai,
    "anthropic": anthropic,
    "gemini": gemini,
}
