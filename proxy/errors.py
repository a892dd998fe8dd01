"""The one error hierarchy of the gateway, each class carrying its HTTP status and error type.

Third-party exceptions (OSError, asyncio.TimeoutError, httptools errors, msgspec errors) are
translated into these once, at the boundary where they happen; the server's middleware is the
only place that turns a `SluiceError` into an HTTP answer, in the caller's dialect.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapters.canonical import CanonicalError

__all__ = [
    "AllCoolingDown",
    "BadRequest",
    "BodyTooLarge",
    "BudgetExhausted",
    "CallerRateLimited",
    "GatewayBusy",
    "GatewayDraining",
    "InvalidJSON",
    "MethodNotAllowed",
    "MissingField",
    "ModelNotAllowed",
    "ModelNotFound",
    "NotFound",
    "ShuttingDown",
    "SluiceError",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamConnectError",
    "UpstreamConnectTimeout",
    "UpstreamError",
    "UpstreamPoolTimeout",
    "UpstreamProtocolError",
    "UpstreamReadTimeout",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "UpstreamWriteTimeout",
    "canonical_error",
]


class SluiceError(Exception):
    """Base of every error the gateway answers with.

    `status` and `type` are class defaults; `code` and `param` follow OpenAI's error object
    (`{"error": {"message", "type", "param", "code"}}`), which the other dialects map from.
    """

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: Mapping[str, str] = headers or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, message={self.message!r})"


# --- the caller's fault ---------------------------------------------------------------------


class BadRequest(SluiceError):
    status = 400
    type = "invalid_request_error"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class MissingField(BadRequest):
    code = "missing_required_parameter"

    def __init__(self, field: str, *, what: str = "request body") -> None:
        super().__init__(f"Missing required parameter: '{field}' in the {what}.", param=field)


class Unauthorized(SluiceError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(SluiceError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist on this gateway. "
            "GET /v1/models lists the models it serves.",
            param="model",
        )


class ModelNotAllowed(SluiceError):
    """The caller's gateway key may not use this model (`keys[].models`)."""

    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class BudgetExhausted(SluiceError):
    """The caller's gateway key spent its budget for the period (`keys[].budget`)."""

    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class MethodNotAllowed(SluiceError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class BodyTooLarge(SluiceError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(SluiceError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class GatewayBusy(SluiceError):
    status = 503
    type = "server_error"
    code = "gateway_unavailable"


class ShuttingDown(SluiceError):
    """A new request while the gateway drains: another instance (or a retry later) serves it."""

    status = 503
    type = "server_error"
    code = "gateway_shutting_down"


class CallerRateLimited(SluiceError):
    """The caller's gateway key is over its own RPM/TPM limit."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class AllCoolingDown(SluiceError):
    """Every candidate of a model is cooling down after rate limits; Retry-After says when the
    first one recovers."""

    status = 429
    type = "rate_limit_error"
    code = "all_targets_cooling_down"


# --- the upstream's fault -------------------------------------------------------------------


class UpstreamError(SluiceError):
    """Something went wrong between the gateway and a provider."""

    status = 502
    type = "upstream_error"
    code = "bad_gateway"


class UpstreamConnectError(UpstreamError):
    """No connection could be made; nothing was sent, so another target may be tried."""

    code = "upstream_unreachable"


class UpstreamConnectTimeout(UpstreamConnectError):
    status = 504
    code = "upstream_connect_timeout"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamReadTimeout(UpstreamTimeout):
    code = "upstream_read_timeout"


class UpstreamWriteTimeout(UpstreamTimeout):
    code = "upstream_write_timeout"


class UpstreamPoolTimeout(UpstreamTimeout):
    """Every pooled connection to the upstream stayed busy for the whole pool timeout."""

    code = "upstream_pool_timeout"


class UpstreamProtocolError(UpstreamError):
    """The upstream broke HTTP or SSE framing, closed early, or sent an oversized event."""

    code = "upstream_protocol_error"


class GatewayDraining(UpstreamError):
    """The gateway is shutting down and its drain time ran out before this answer ended."""

    status = 503
    code = "gateway_shutting_down"


class UpstreamStatusError(UpstreamError):
    """The upstream answered with a non-2xx status; passed on with its status and message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, headers=headers)
        self.status = status
        self.type = type or ("invalid_request_error" if 400 <= status < 500 else "upstream_error")


# --- one error in every dialect ---------------------------------------------------------------

_KINDS = {400: "invalid_request", 401: "authentication", 403: "permission", 404: "not_found",
          405: "invalid_request", 413: "request_too_large", 415: "invalid_request",
          422: "invalid_request", 429: "rate_limit", 503: "overloaded", 529: "overloaded",
          504: "timeout"}


def canonical_error(err: SluiceError) -> CanonicalError:
    """The neutral form the non-OpenAI dialects render errors from (kind follows the status)."""
    retry_after: float | None = None
    value = err.headers.get("Retry-After")
    if value is not None:
        try:
            retry_after = float(value)
        except ValueError:
            retry_after = None
    kind = _KINDS.get(err.status, "invalid_request" if err.status < 500 else "server")
    return CanonicalError(status=err.status, message=err.message, kind=kind,  # type: ignore[arg-type]
                          param=err.param, retry_after=retry_after)
