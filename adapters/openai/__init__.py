"""The OpenAI dialect (chat completions): the same-dialect fast path and the translators."""

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

__all__ = [
    "Envelope",
    "ErrorInfo",
    "RequestError",
    "Usage",
    "decode_envelope",
    "decode_usage",
    "encode_error",
    "parse_error",
]
