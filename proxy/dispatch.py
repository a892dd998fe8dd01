"""Send a request to the first target that answers, and turn upstream failures into errors.

Until the traffic-control layer lands, targets are tried in the router's weighted order and the
next one is tried only when no connection could be made (nothing was sent). Nothing reaches the
client before an upstream answered 2xx, so the caller sees either a whole answer or one error.
"""

from __future__ import annotations

import time

import msgspec
from multidict import CIMultiDictProxy

from adapters.canonical import TranslationError, Usage
from adapters.dialects import ADAPTERS
from adapters.openai import parse_error
from proxy.calls import Call
from proxy.config import GatewayKey, ModelRoute
from proxy.errors import (
    BadRequest,
    GatewayBusy,
    SluiceError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
)
from proxy.runtime import ProviderRuntime, Runtime, UpstreamAnswer

__all__ = ["Exchange", "open_upstream"]

# An upstream error body is read only to quote its message; a bigger one is cut.
_ERROR_QUOTE_MAX = 1000


class Exchange:
    """One proxied request: who asked, for what, where it went and what it cost."""

    __slots__ = ("attempts", "caller", "provider", "request_id", "requested_model", "route",
                 "started", "strip_usage", "translated", "upstream_model", "usage")

    def __init__(self, request_id: str, caller: GatewayKey, route: ModelRoute, model: str) -> None:
        self.request_id = request_id
        self.caller = caller
        self.route = route
        self.requested_model = model
        self.provider: ProviderRuntime | None = None
        self.upstream_model = model
        self.attempts = 0
        self.usage: Usage | None = None
        # The gateway asked for the stream's usage chunk; the caller did not, so it is cut out.
        self.strip_usage = False
        # The provider speaks another dialect than the caller: answers go through the adapters.
        self.translated = False
        self.started = time.monotonic()

    def __repr__(self) -> str:
        where = self.provider.name if self.provider else None
        return (f"<Exchange {self.request_id} model={self.requested_model!r} provider={where}"
                f" attempts={self.attempts} translated={self.translated}>")


def _forwarded(pr: ProviderRuntime, caller_headers: CIMultiDictProxy[str]
               ) -> list[tuple[bytes, bytes]]:
    headers = pr.headers()
    passthrough = pr.provider.spec.passthrough_headers
    if not passthrough:
        return headers
    extra = [(name.encode(), value.encode()) for name in passthrough
             if (value := caller_headers.get(name)) is not None]
    return headers + extra if extra else headers


def _outgoing(call: Call, pr: ProviderRuntime, model: str) -> tuple[bytes, bytes, bool]:
    """(path, body, translated) of the request to send this provider."""
    spec = pr.provider.spec
    if spec.dialect == call.dialect:
        path, body = call.same_dialect_request(model, want_usage=spec.stream_usage_option)
        return path, body, False
    if call.operation != "chat":
        raise BadRequest(
            f"Model '{call.model}' is served by provider '{pr.name}', which speaks the "
            f"{spec.dialect} API; it has no {call.operation} endpoint. Route this model to an "
            f"{call.dialect}-compatible provider.", param="model")
    adapter = ADAPTERS[spec.dialect]
    try:
        req = call.canonical()
        if req.top_k is not None and not spec.takes_top_k:
            req = msgspec.structs.replace(req, top_k=None)  # a sampling hint, meaningless there
        body = adapter.from_canonical_request(req, model=model)
    except TranslationError as err:
        raise BadRequest(str(err), param=err.param) from None
    return adapter.request_path(model=model, stream=call.stream), body, True


async def open_upstream(rt: Runtime, ex: Exchange, call: Call,
                        caller_headers: CIMultiDictProxy[str]) -> UpstreamAnswer:
    """The 2xx answer of the first target that gives one; otherwise the error to answer with.

    Every error raised from here says which provider answered last and after how many attempts.
    """
    try:
        return await _first_answer(rt, ex, call, caller_headers)
    except SluiceError as err:
        trace = {"x-sluice-attempts": str(ex.attempts)}
        if ex.provider is not None:
            trace["x-sluice-provider"] = ex.provider.name
        err.headers = {**err.headers, **trace}
        raise


async def _first_answer(rt: Runtime, ex: Exchange, call: Call,
                        caller_headers: CIMultiDictProxy[str]) -> UpstreamAnswer:
    last: SluiceError | None = None
    for target in rt.router.order(ex.route):
        pr = rt.providers[target.provider.name]
        model = target.upstream_model(call.model)
        path, payload, translated = _outgoing(call, pr, model)
        ex.attempts += 1
        ex.provider = pr
        try:
            answer = await pr.upstream.request(
                b"POST", pr.upstream.base_path + path, _forwarded(pr, caller_headers), payload)
        except UpstreamConnectError as err:
            last = err
            continue
        ex.upstream_model = model
        ex.translated = translated
        if 200 <= answer.status < 300:
            ex.strip_usage = (not translated and call.stream and not call.include_usage
                              and pr.provider.spec.stream_usage_option)
            return answer
        raise await _status_error(pr, answer, call)
    if last is None:
        raise GatewayBusy(f"Model '{ex.requested_model}' has no target that can take requests.")
    raise last


async def _status_error(pr: ProviderRuntime, answer: UpstreamAnswer, call: Call) -> SluiceError:
    """An upstream non-2xx as the error the caller gets (the upstream's own message kept)."""
    try:
        body = await answer.read()
    except UpstreamError:
        body = b""
    finally:
        answer.close()
    status = answer.status
    spec = pr.provider.spec
    etype = code = param = hint = None
    if spec.dialect == "openai":
        info = parse_error(body)
        if info is not None:
            message, etype, code, param = info.message, info.type, info.code, info.param
        else:
            message = body[:_ERROR_QUOTE_MAX].decode(errors="replace").strip()
        # OpenRouter documents that an upstream provider's rate limit may reach us as a 500
        # whose error object says code 429 ("Provider returned error", metadata.raw "...").
        if spec.wraps_rate_limit_in_500 and status >= 500 and code == "429":
            status = 429
    else:
        err = ADAPTERS[spec.dialect].to_canonical_error(status, body)
        message, param = err.message, err.param
        if err.kind == "rate_limit":
            status = 429
        if err.retry_after is not None and answer.header(b"retry-after") is None:
            hint = str(max(1, round(err.retry_after)))
    retry_after = answer.header(b"retry-after")
    return _policy(pr.name, status, message, etype, code, param,
                   retry_after.decode() if retry_after else hint)


def _policy(provider: str, status: int, message: str, etype: str | None, code: str | None,
            param: str | None, retry_after: str | None) -> SluiceError:
    if status in (401, 403):
        # The caller's key was the gateway's and it was fine; the provider refused *our*
        # credential, which is the gateway's misconfiguration, not the caller's.
        return UpstreamStatusError(
            502,
            f"Provider '{provider}' rejected the gateway's credential (upstream status {status})."
            f" Check providers.{provider}.api_key.", code="upstream_auth_failed")
    if status == 429:
        return UpstreamStatusError(
            429, f"Provider '{provider}' is rate limiting this gateway: {message}",
            type="rate_limit_error", code="rate_limit_exceeded",
            headers={"Retry-After": retry_after or "1"})
    if 400 <= status < 500:
        return UpstreamStatusError(status, message or f"Provider '{provider}' answered {status}.",
                                   type=etype, code=code, param=param)
    return UpstreamStatusError(
        502, f"Provider '{provider}' answered {status}: {message or 'no message'}",
        code="upstream_error")
