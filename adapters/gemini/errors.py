"""Gemini errors <-> canonical errors.

Gemini answers errors as Google APIs do: `{"error": {"code", "message", "status", "details"}}`
with a google.rpc status name, and typed `details` (`@type`
"type.googleapis.com/google.rpc.RetryInfo" with `retryDelay: "7s"`, `BadRequest` with
`fieldViolations`, `ErrorInfo` with a `reason`). A streamGenerateContent answered without
`alt=sse` wraps the error in an array: `[{"error": {...}}]`.

Two choices where Gemini's own behaviour is not what a caller of another dialect needs:
- an invalid API key is `400 INVALID_ARGUMENT` with ErrorInfo reason `API_KEY_INVALID`
  ("API key not valid. Please pass a valid API key."); we read it as `authentication` (401),
  since it is one, and a caller's SDK should not read it as a malformed request;
- a canonical `authentication` error goes to a Gemini caller as `401 UNAUTHENTICATED`, the
  google.rpc code for bad credentials: google-genai raises `ClientError` for every 4xx, so the
  status is what tells the user, and 401 says "credentials".
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from adapters.canonical import CanonicalError
from adapters.gemini import wire
from adapters.gemini.wire import ErrorBody, ErrorObject

__all__ = ["from_canonical_error", "stream_error_event", "to_canonical_error"]

_RPC = "type.googleapis.com/google.rpc."
_Kind = Any  # CanonicalError.kind's Literal; kept loose for the lookup tables below

# google.rpc status name -> (canonical kind, HTTP status).
_BY_STATUS: dict[str, tuple[_Kind, int]] = {
    "INVALID_ARGUMENT": ("invalid_request", 400),
    "FAILED_PRECONDITION": ("invalid_request", 400),
    "OUT_OF_RANGE": ("invalid_request", 400),
    "UNAUTHENTICATED": ("authentication", 401),
    "PERMISSION_DENIED": ("permission", 403),
    "NOT_FOUND": ("not_found", 404),
    "RESOURCE_EXHAUSTED": ("rate_limit", 429),
    "UNAVAILABLE": ("overloaded", 503),
    "DEADLINE_EXCEEDED": ("timeout", 504),
    "INTERNAL": ("server", 500),
    "UNKNOWN": ("server", 500),
    "ABORTED": ("server", 500),
    "CANCELLED": ("server", 499),
}
_BY_CODE: dict[int, _Kind] = {400: "invalid_request", 401: "authentication", 403: "permission",
                              404: "not_found", 413: "request_too_large", 429: "rate_limit",
                              503: "overloaded", 504: "timeout"}
# canonical kind -> (HTTP status, google.rpc status name) for a Gemini caller.
_TO_GEMINI: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "INVALID_ARGUMENT"),
    # Gemini reports an oversized prompt as a 400 INVALID_ARGUMENT ("The input token count
    # exceeds the maximum number of tokens allowed").
    "request_too_large": (400, "INVALID_ARGUMENT"),
    "authentication": (401, "UNAUTHENTICATED"),
    "permission": (403, "PERMISSION_DENIED"),
    "not_found": (404, "NOT_FOUND"),
    "rate_limit": (429, "RESOURCE_EXHAUSTED"),
    "overloaded": (503, "UNAVAILABLE"),
    "server": (500, "INTERNAL"),
    "timeout": (504, "DEADLINE_EXCEEDED"),
}
_TOO_LARGE = ("exceeds the maximum number of tokens", "payload size exceeds")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_ANY = msgspec.json.Decoder()
_SNIPPET = 300  # characters of a non-JSON error body kept in the message


def to_canonical_error(status: int, body: bytes) -> CanonicalError:
    err = _error_object(body)
    if err is None:
        text = body[:_SNIPPET].decode("utf-8", "replace").strip()
        kind = _BY_CODE.get(status, "server" if status >= 500 else "invalid_request")
        return CanonicalError(status, text or f"Gemini answered HTTP {status}.", kind)
    kind, code = _BY_STATUS.get(err.status, (None, status))
    if kind is None:
        kind = _BY_CODE.get(status, "server" if status >= 500 else "invalid_request")
    if _reason(err.details) == "API_KEY_INVALID":
        kind, code = "authentication", 401
    elif kind == "invalid_request" and any(s in err.message for s in _TOO_LARGE):
        kind = "request_too_large"
    return CanonicalError(code, err.message or f"Gemini answered HTTP {status}.", kind,
                          param=_field(err.details), retry_after=_retry_after(err.details))


def _error_object(body: bytes) -> ErrorObject | None:
    try:
        parsed = _ANY.decode(body)
    except msgspec.DecodeError:
        return None
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]  # streamGenerateContent without alt=sse: [{"error": ...}]
    try:
        return msgspec.convert(parsed, ErrorBody).error
    except msgspec.ValidationError:
        return None


def _detail(details: list[dict[str, Any]] | None, kind: str) -> dict[str, Any] | None:
    for detail in details or ():
        if detail.get("@type") == _RPC + kind:
            return detail
    return None


def _reason(details: list[dict[str, Any]] | None) -> str | None:
    info = _detail(details, "ErrorInfo")
    return info.get("reason") if info else None


def _field(details: list[dict[str, Any]] | None) -> str | None:
    bad = _detail(details, "BadRequest")
    for violation in (bad or {}).get("fieldViolations") or ():
        if isinstance(violation, dict) and isinstance(violation.get("field"), str):
            return str(violation["field"])
    return None


def _retry_after(details: list[dict[str, Any]] | None) -> float | None:
    info = _detail(details, "RetryInfo")
    delay = info.get("retryDelay") if info else None
    match = _DURATION.match(delay) if isinstance(delay, str) else None
    return float(match.group(1)) if match else None


def _duration(seconds: float) -> str:
    """A proto3 JSON Duration: "7s", "0.500s"."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3f}s"


def _gemini_error(err: CanonicalError) -> tuple[int, ErrorObject]:
    code, status = _TO_GEMINI.get(err.kind, (500, "INTERNAL"))
    details: list[dict[str, Any]] = []
    if err.kind == "rate_limit" and err.retry_after is not None:
        details.append({"@type": _RPC + "RetryInfo", "retryDelay": _duration(err.retry_after)})
    if err.kind == "invalid_request" and err.param:
        details.append({"@type": _RPC + "BadRequest",
                        "fieldViolations": [{"field": err.param, "description": err.message}]})
    return code, ErrorObject(code=code, message=err.message, status=status,
                             details=details or None)


def from_canonical_error(err: CanonicalError) -> tuple[int, bytes]:
    code, obj = _gemini_error(err)
    return code, wire.ENCODER.encode(ErrorBody(obj))


def error_chunk(err: CanonicalError) -> bytes:
    """The JSON of a mid-stream error: the same object an error answer carries."""
    return wire.ENCODER.encode(ErrorBody(_gemini_error(err)[1]))


def stream_error_event(err: CanonicalError) -> bytes:
    """Gemini ends a failing `alt=sse` stream with one more `data:` event holding the error
    object instead of a GenerateContentResponse (what the google-genai SDK raises from)."""
    return b"data: " + error_chunk(err) + b"\r\n\r\n"
