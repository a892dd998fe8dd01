"""OpenAI error bodies to and from the canonical error.

Reading is shape-tolerant (`envelope.parse_error`: OpenAI's nested object, vLLM's top-level
fields, `{"error": "text"}`, `{"detail": ...}`). The kind comes from the status, except where
the body says more: OpenRouter reports a rate limit of the model's provider as a 500 whose
`error.code` is 429, and a body whose type or code names a rate limit is one whatever the
status. Writing follows OpenAI's `{"error": {"message", "type", "param", "code"}}`; the SDK
picks its exception class by status, so the status is what matters most to a caller.
"""

from __future__ import annotations

from typing import Final, Literal

from adapters.canonical import CanonicalError
from adapters.openai.envelope import ErrorInfo, encode_error, parse_error

__all__ = ["from_canonical_error", "stream_error_event", "to_canonical_error"]

_Kind = Literal["invalid_request", "authentication", "permission", "not_found",
                "request_too_large", "rate_limit", "overloaded", "server", "timeout"]

_BY_STATUS: Final[dict[int, _Kind]] = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    408: "timeout",
    413: "request_too_large",
    422: "invalid_request",
    429: "rate_limit",
    502: "server",
    503: "overloaded",
    504: "timeout",
    529: "overloaded",  # Anthropic's overloaded status, seen behind OpenAI-compatible proxies
}
_RATE_LIMIT_WORDS: Final = ("rate_limit", "insufficient_quota", "too_many_requests")

# kind -> (type, code) as OpenAI writes them; codes only where OpenAI documents one.
_OUT: Final[dict[_Kind, tuple[str, str | None]]] = {
    "invalid_request": ("invalid_request_error", None),
    "request_too_large": ("invalid_request_error", None),
    "authentication": ("authentication_error", "invalid_api_key"),
    "permission": ("permission_error", None),
    "not_found": ("not_found_error", None),
    "rate_limit": ("rate_limit_error", "rate_limit_exceeded"),
    "overloaded": ("server_error", None),
    "server": ("server_error", None),
    "timeout": ("server_error", None),
}


def to_canonical_error(status: int, body: bytes) -> CanonicalError:
    return from_error_info(status, parse_error(body))


def from_error_info(status: int, info: ErrorInfo | None) -> CanonicalError:
    """The canonical error of a status and an already parsed error (also used mid-stream)."""
    if info is None:
        return CanonicalError(status, f"Upstream answered HTTP {status}.", _kind(status))
    code = (info.code or "").strip()
    words = f"{info.type or ''} {code}".lower()
    kind: _Kind
    if code == "429" or any(w in words for w in _RATE_LIMIT_WORDS):
        status, kind = 429, "rate_limit"
    else:
        kind = _kind(status)
    message = info.message or f"Upstream answered HTTP {status}."
    return CanonicalError(status, message, kind, info.param)


def _kind(status: int) -> _Kind:
    kind = _BY_STATUS.get(status)
    if kind is not None:
        return kind
    return "server" if status >= 500 or status < 400 else "invalid_request"


def from_canonical_error(err: CanonicalError) -> tuple[int, bytes]:
    error_type, code = _OUT[err.kind]
    # OpenAI has no 529; its "engine overloaded" answer is a 503.
    status = 503 if err.kind == "overloaded" else err.status
    if not 400 <= status <= 599:
        status = 500
    return status, encode_error(err.message, error_type, err.param, code)


def stream_error_event(err: CanonicalError) -> bytes:
    """An error after the stream began: `data: {"error": {...}}`, as OpenAI sends it (the SDK
    raises `APIError` on a data event with an `error` key)."""
    error_type, code = _OUT[err.kind]
    return b"data: " + encode_error(err.message, error_type, err.param, code) + b"\n\n"
