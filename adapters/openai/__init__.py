"""The OpenAI dialect (chat completions): the same-dialect fast path and the translators.

`envelope` serves the same-dialect fast path (the proxy forwards the caller's bytes with only
`model` and `stream_options` patched). The translators to and from the canonical hub follow the
contract in adapters/README.md: `wire` (shapes), `request`, `response`, `stream`, `errors`.
"""

from __future__ import annotations

from adapters.openai.envelope import (
    Envelope,
    ErrorInfo,
    RequestError,
    Usage,
    decode_envelope,
    decode_usage,
    encode_error,
    parse_error,
)
from adapters.openai.errors import from_canonical_error, stream_error_event, to_canonical_error
from adapters.openai.request import from_canonical_request, request_path, to_canonical_request
from adapters.openai.response import from_canonical_response, to_canonical_response
from adapters.openai.stream import StreamDecoder, StreamEncoder

__all__ = [
    "Envelope",
    "ErrorInfo",
    "RequestError",
    "StreamDecoder",
    "StreamEncoder",
    "Usage",
    "decode_envelope",
    "decode_usage",
    "encode_error",
    "from_canonical_error",
    "from_canonical_request",
    "from_canonical_response",
    "parse_error",
    "request_path",
    "stream_error_event",
    "to_canonical_error",
    "to_canonical_request",
    "to_canonical_response",
]
