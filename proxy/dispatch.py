"""Send a request to the first target that answers, and turn upstream failures into errors.

Until the traffic-control layer lands, targets are tried in the router's weighted order and the
next one is tried only when no connection could be made (nothing was sent). Nothing reaches the
client before an upstream answered 2xx, so the caller sees either a whole answer or one error.
"""

from __future__ import annotations

import time

from multidict import CIMultiDictProxy

from adapters.openai import Envelope, Usage, parse_error
from proxy.config import GatewayKey, ModelRoute
from proxy.errors import (
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
                 "started", "strip_usage", "upstream_model", "usage")

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
        self.started = time.monotonic()

    def __repr__(self) -> str:
        where = self.provider.name if self.provider else None
        return (f"<Exchange {self.request_id} model={self.requested_model!r} provider={where}"
                f" attempts={self.attempts}>")


def _forwarded(pr: ProviderRuntime, caller_headers: CIMultiDictProxy[str]
               ) -> list[tuple[bytes, bytes]]:
    headers = pr.headers()
    passthrough = pr.provider.spec.passthrough_headers
    if not passthrough:
        return headers
    extra = [(name.encode(), value.encode()) for name in passthrough
             if (value := caller_headers.get(name)) is not None]
    return headers + extra if extra else headers


async def open_upstream(rt: Runtime, ex: Exchange, env: Envelope, body: bytes, path: bytes,
                        caller_headers: CIMultiDictProxy[str]) -> UpstreamAnswer:
    """The 2xx answer of the first target that gives one; otherwise the error to answer with.

    Every error raised from here says which provider answered last and after how many attempts.
    """
    try:
        return await _first_answer(rt, ex, env, body, path, caller_headers)
    except SluiceError as err:
        trace = {"x-sluice-attempts": str(ex.attempts)}
        if ex.provider is not None:
            trace["x-sluice-provider"] = ex.provider.name
        err.headers = {**err.headers, **trace}
        raise


async def _first_answer(rt: Runtime, ex: Exchange, env: Envelope, body: bytes, path: bytes,
                        caller_headers: CIMultiDictProxy[str]) -> UpstreamAnswer:
    last: SluiceError | None = None
    for target in rt.router.order(ex.route):
        pr = rt.providers[target.provider.name]
        model = target.upstream_model(ex.requested_model)
        want_usage = pr.provider.spec.stream_usage_option
        payload = env.patch(body, model, want_usage=want_usage)
        ex.attempts += 1
        ex.provider = pr
        try:
            answer = await pr.upstream.request(
                b"POST", pr.upstream.base_path + path, _forwarded(pr, caller_headers), payload)
        except UpstreamConnectError as err:
            last = err
            continue
        ex.upstream_model = model
        if 200 <= answer.status < 300:
            ex.strip_usage = env.stream and want_usage and not env.include_usage
            return answer
        raise await _status_error(pr, answer)
    if last is None:
        raise GatewayBusy(f"Model '{ex.requested_model}' has no target that can take requests.")
    raise last


async def _status_error(pr: ProviderRuntime, answer: UpstreamAnswer) -> SluiceError:
    """An upstream non-2xx as the error the caller gets (the upstream's own message kept)."""
    try:
        body = await answer.read()
    except UpstreamError:
        body = b""
    finally:
        answer.close()
    status = answer.status
    info = parse_error(body)
    message = info.message if info else body[:_ERROR_QUOTE_MAX].decode(errors="replace").strip()
    headers: dict[str, str] = {}
    # OpenRouter documents that an upstream provider's rate limit may reach us as a 500 whose
    # error object says code 429 ("Provider returned error", metadata.raw "...rate-limited...").
    if pr.provider.spec.wraps_rate_limit_in_500 and status >= 500 and info and info.code == "429":
        status = 429
    if status in (401, 403):
        # The caller's key was the gateway's and it was fine; the provider refused *our*
        # credential, which is the gateway's misconfiguration, not the caller's.
        return UpstreamStatusError(
            502,
            f"Provider '{pr.name}' rejected the gateway's credential (upstream status {status})."
            f" Check providers.{pr.name}.api_key.",
            code="upstream_auth_failed", headers=headers)
    if status == 429:
        retry_after = answer.header(b"retry-after")
        headers["Retry-After"] = retry_after.decode() if retry_after else "1"
        return UpstreamStatusError(
            429, f"Provider '{pr.name}' is rate limiting this gateway: {message}",
            type="rate_limit_error", code="rate_limit_exceeded", headers=headers)
    if 400 <= status < 500:
        return UpstreamStatusError(
            status, message or f"Provider '{pr.name}' answered {status}.",
            type=info.type if info else None, code=info.code if info else None,
            param=info.param if info else None, headers=headers)
    return UpstreamStatusError(
        502, f"Provider '{pr.name}' answered {status}: {message or 'no message'}",
        code="upstream_error", headers=headers)
