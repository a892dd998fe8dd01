"""Anthropic errors: `{"type": "error", "error": {"type", "message"}}` <-> canonical.

Error types and their statuses are those of the API reference (docs: api/errors): 400
invalid_request_error, 401 authentication_error, 402 billing_error, 403 permission_error, 404
not_found_error, 413 request_too_large, 429 rate_limit_error, 500 api_error, 504 timeout_error,
529 overloaded_error. `retry-after` is a response header, never in the body, so the proxy reads
it; only the kind comes from here.

Toward a caller, the status follows the kind, because the SDK picks its exception class by
status (`_exceptions.py`: 529 OverloadedError, 504 GatewayTimeoutError, 413
ContentTooLargeError, ...) and retries 408/409/429/5xx. Two kinds keep the upstream's own status
in their class: a 4xx invalid_request or permission (402 billing, 409 conflict, 422 from an
OpenAI-compatible server keep their SDK classes), and a 5xx server error (502, 503).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from adapters.anthropic import wire
from adapters.canonical import CanonicalError

__all__ = ["error_from_type", "from_canonical_error", "stream_error_event", "to_canonical_error"]

Kind = Literal["invalid_request", "authentication", "permission", "not_found",
               "request_too_large", "rate_limit", "overloaded", "server", "timeout"]

# A non-JSON error body (an HTML page from a proxy) is quoted up to this many characters: enough
# to recognise it, without relaying a whole page into an error message.
_MAX_QUOTED = 512

_TYPE_KIND: dict[str, Kind] = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication",
    "billing_error": "permission",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "request_too_large": "request_too_large",
    "rate_limit_error": "rate_limit",
    "api_error": "server",
    "overloaded_error": "overloaded",
    "timeout_error": "timeout",
}
_STATUS_KIND: dict[int, Kind] = {
    400: "invalid_request", 401: "authentication", 402: "permission", 403: "permission",
    404: "not_found", 408: "timeout", 413: "request_too_large", 429: "rate_limit",
    504: "timeout", 529: "overloaded",
}
# kind -> (error.type, status) toward a caller.
_KIND_OUT: dict[str, tuple[str, int]] = {
    "invalid_request": ("invalid_request_error", 400),
    "authentication": ("authentication_error", 401),
    "permission": ("permission_error", 403),
    "not_found": ("not_found_error", 404),
    "request_too_large": ("request_too_large", 413),
    "rate_limit": ("rate_limit_error", 429),
    "overloaded": ("overloaded_error", 529),
    "server": ("api_error", 500),
    "timeout": ("timeout_error", 504),
}
# An error event mid-stream has no HTTP status of its own; the one its type has as a response.
_TYPE_STATUS = {t: status for t, status in _KIND_OUT.values()} | {"billing_error": 402}


def _kind_of(status: int) -> Kind:
    return _STATUS_KIND.get(status) or ("server" if status >= 500 else "invalid_request")


def to_canonical_error(status: int, body: bytes) -> CanonicalError:
    try:
        obj = wire.ERROR_BODY.decode(body).error
    except msgspec.DecodeError:
        obj = None
    if obj is not None:
        kind = _TYPE_KIND.get(obj.type) or _kind_of(status)
        return CanonicalError(status, obj.message or f"Upstream error {status}", kind)
    text = body[:_MAX_QUOTED].decode("utf-8", "replace").strip()
    return CanonicalError(status, text or f"Upstream error {status}", _kind_of(status))


def error_from_type(error_type: str, message: str) -> CanonicalError:
    """The canonical error of an `error` stream event (no HTTP status: the type's own)."""
    kind = _TYPE_KIND.get(error_type, "server")
    return CanonicalError(_TYPE_STATUS.get(error_type, 500), message or "Stream error", kind)


def _type_and_status(err: CanonicalError) -> tuple[str, int]:
    error_type, status = _KIND_OUT.get(err.kind, ("api_error", 500))
    keep = (400 <= err.status < 500 if err.kind in ("invalid_request", "permission")
            else err.kind == "server" and 500 <= err.status < 600)
    return error_type, err.status if keep else status


def from_canonical_error(err: CanonicalError) -> tuple[int, bytes]:
    error_type, status = _type_and_status(err)
    body = wire.OutError(wire.OutErrorObject(error_type, err.message))
    return status, wire.ENCODER.encode(body)


def stream_error_event(err: CanonicalError) -> bytes:
    """`event: error` as the API sends it mid-stream (the SDK raises it as an APIStatusError)."""
    error_type, _ = _type_and_status(err)
    body = wire.OutError(wire.OutErrorObject(error_type, err.message))
    return b"event: error\ndata: " + wire.ENCODER.encode(body) + b"\n\n"
