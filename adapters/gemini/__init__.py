"""The Gemini dialect (generateContent): requests, answers, streams and errors to and from the
canonical hub, with the same surface as every dialect package (adapters/README.md)."""

from __future__ import annotations

from adapters.gemini.errors import from_canonical_error, stream_error_event, to_canonical_error
from adapters.gemini.request import from_canonical_request, request_path, to_canonical_request
from adapters.gemini.response import from_canonical_response, to_canonical_response
from adapters.gemini.stream import StreamDecoder, StreamEncoder

__all__ = [
    "StreamDecoder",
    "StreamEncoder",
    "from_canonical_error",
    "from_canonical_request",
    "from_canonical_response",
    "request_path",
    "stream_error_event",
    "to_canonical_error",
    "to_canonical_request",
    "to_canonical_response",
]
