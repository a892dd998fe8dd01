"""The Anthropic Messages dialect, as caller dialect and as provider dialect.

The surface every dialect package shares (adapters/README.md), plus `API_VERSION`: the
`anthropic-version` the provider bodies built here are written for.
"""

from __future__ import annotations

from adapters.anthropic.errors import from_canonical_error, stream_error_event, to_canonical_error
from adapters.anthropic.request import (
    API_VERSION,
    from_canonical_request,
    request_path,
    to_canonical_request,
)
from adapters.anthropic.response import from_canonical_response, to_canonical_response
from adapters.anthropic.stream import StreamDecoder, StreamEncoder

__all__ = [
    "API_VERSION",
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
