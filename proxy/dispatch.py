"""Send a request to the first target that answers, and turn upstream failures into errors.

Candidates are a model's targets in balancing order, then its fallback groups'. A candidate
whose (credential, model) cools down after a 429 or repeated failures, or whose circuit breaker
is open, is skipped; a retryable failure (connect error, timeout, 408, 409, 429, 5xx, 401/403 of
our own credential) moves on to the next candidate, and passes over the list repeat with
full-jitter backoff within the retry policy's attempts and deadline. Nothing reaches the client
before an upstream answered 2xx, so every retry happens before the first byte.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterator

import msgspec
from multidict import CIMultiDictProxy

from adapters.canonical import TranslationError, Usage
from adapters.dialects import ADAPTERS
from adapters.openai import parse_error
from proxy.breaker import Breaker
from proxy.calls import Call
from proxy.config import GatewayKey, ModelRoute, Target
from proxy.cooldown import retry_after_seconds
from proxy.errors import (
    AllCoolingDown,
    BadRequest,
    GatewayBusy,
    SluiceError,
    UpstreamError,
    UpstreamStatusError,
)
from proxy.limits import Limiter
from proxy.runtime import (
    CredentialHeaders,
    ProviderRuntime,
    Runtime,
    Traffic,
    UpstreamAnswer,
    target_name,
)

__all__ = ["Exchange", "open_upstream"]

# An upstream error body is read only to quote its message; a bigger one is cut.
_ERROR_QUOTE_MAX = 1000


class Exchange:
    """One proxied request: who asked, for what, where it went and what it cost."""

    __slots__ = ("attempts", "body_wait", "caller", "credential", "estimated", "first_byte",
                 "limit_key", "outcome", "provider", "request_id", "requested_model", "route",
                 "session", "started", "strip_usage", "target", "tokens", "translated",
                 "upstream_model", "upstream_wait", "usage")

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
        self.session: str | None = None  # x-session-id: the same session, the same target
        self.tokens = 0  # the up-front token estimate charged to rate limits
        self.limit_key: tuple[str, str] | None = None  # the target bucket charged
        self.credential: str | None = None  # the label of the credential that answered last
        self.target: Target | None = None  # the target whose answer the caller gets
        # Accounting of time (monotonic seconds), for latency, TTFT and the gateway's overhead:
        self.upstream_wait = 0.0  # spent waiting on upstreams for answer headers (all attempts)
        self.body_wait = 0.0  # spent reading the answer's body or stream after its headers
        self.first_byte: float | None = None  # when the caller got its first byte (streams)
        self.estimated = False  # `usage` was counted by the gateway, not reported upstream
        self.outcome = "ok"  # ok | cut (upstream broke the stream) | client_closed

    async def read_whole(self, answer: UpstreamAnswer) -> bytes:
        """A non-streamed answer's body, closed after; the time reading it is upstream time."""
        reading = time.monotonic()
        try:
            return await answer.read()
        finally:
            answer.close()
            self.body_wait += time.monotonic() - reading

    def __repr__(self) -> str:
        where = self.provider.name if self.provider else None
        return (f"<Exchange {self.request_id} model={self.requested_model!r} provider={where}"
                f" attempts={self.attempts} translated={self.translated}>")


def _forwarded(pr: ProviderRuntime, cred: CredentialHeaders,
               caller_headers: CIMultiDictProxy[str]) -> list[tuple[bytes, bytes]]:
    headers = cred.headers
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


def _candidates(rt: Runtime, route: ModelRoute, session: str | None = None,
                requested: str | None = None) -> Iterator[Target]:
    """The model's targets in balancing order, then each fallback group's, in order."""
    yield from rt.order(route, session, requested)
    for group in route.fallbacks:
        fallback = rt.router.resolve(group)
        if fallback is not None:
            yield from rt.order(fallback, session, requested)


async def _first_answer(rt: Runtime, ex: Exchange, call: Call,
                        caller_headers: CIMultiDictProxy[str]) -> UpstreamAnswer:
    """The model's own candidates; when an upstream says the prompt is over its context
    window, the model's `context_window_fallbacks` groups, in order."""
    try:
        return await _passes(rt, ex, call, caller_headers, ex.route)
    except UpstreamStatusError as err:
        if err.code != CONTEXT_TOO_LONG or not ex.route.context_window_fallbacks:
            raise
        last = err
    for group in ex.route.context_window_fallbacks:
        route = rt.router.resolve(group)
        if route is None:
            continue
        try:
            return await _passes(rt, ex, call, caller_headers, route)
        except UpstreamStatusError as err:
            if err.code != CONTEXT_TOO_LONG:
                raise
            last = err
    raise last


async def _passes(rt: Runtime, ex: Exchange, call: Call,
                  caller_headers: CIMultiDictProxy[str], route: ModelRoute) -> UpstreamAnswer:
    """Passes over the candidates, with full-jitter backoff between passes, until one answers
    2xx, a non-retryable error comes back, or the attempts or the deadline run out."""
    policy, traffic = rt.settings.retry, rt.traffic
    deadline = time.monotonic() + policy.deadline
    last: SluiceError | None = None
    for attempt in range(policy.attempts):
        if attempt:
            delay = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1))
            delay *= traffic.rng.random()
            if time.monotonic() + delay >= deadline:
                break
            await asyncio.sleep(delay)
        sent_before = ex.attempts
        for target in _candidates(rt, route, ex.session, call.model):
            if time.monotonic() >= deadline:
                break
            answer, err = await _try(rt, ex, call, target, caller_headers)
            if answer is not None:
                return answer
            if err is not None:
                last = err
        if ex.attempts == sent_before:
            break  # nothing could be tried: waiting would not change that
    raise _nothing_served(rt, route, ex, call, last)


async def _try(rt: Runtime, ex: Exchange, call: Call, target: Target,
               caller_headers: CIMultiDictProxy[str]
               ) -> tuple[UpstreamAnswer | None, SluiceError | None]:
    """One attempt on one target: (answer, None), (None, retryable error), (None, None) when
    the target was skipped; a non-retryable error is raised."""
    traffic = rt.traffic
    pr = rt.providers[target.provider.name]
    model = target.upstream_model(call.model)
    now = time.monotonic()
    if traffic.cooldowns.remaining((pr.name, None), now):  # an operator's provider cooldown
        return None, None
    cred = pr.pick(model, traffic.cooldowns, now)
    if cred is None:
        return None, None
    cool_key = (cred.label, model)
    if not await _room(traffic.target_limits, cool_key, pr, ex.tokens):
        return None, None  # over its own RPM/TPM: the next candidate, never a queue
    now = time.monotonic()
    path, payload, translated = _outgoing(call, pr, model)
    breaker = traffic.breakers.get((pr.name, model))
    if not breaker.allow(now):
        traffic.target_limits.cancel(cool_key, ex.tokens, now)
        return None, None
    ex.attempts += 1
    ex.provider = pr
    ex.credential = cred.label
    stats = traffic.stats_for(target_name(target))
    stats.started()
    try:
        answer = await pr.upstream.request(
            b"POST", pr.upstream.base_path + path, _forwarded(pr, cred, caller_headers), payload)
    except UpstreamError as err:
        ex.upstream_wait += time.monotonic() - now
        rt.metrics.upstream_error(pr.name, err.code or "upstream_error")
        traffic.cooldowns.on_failure(cool_key, pr.provider.cooldown, time.monotonic(), err.code)
        breaker.record(False, time.monotonic())
        stats.finished(None, False, now=time.monotonic())
        return None, err
    except BaseException:
        breaker.release_probe()
        stats.finished(None, False, now=time.monotonic())
        raise
    answered = time.monotonic()
    ex.upstream_wait += answered - now
    stats.finished(answered - now, 200 <= answer.status < 300, now=answered)
    if 200 <= answer.status < 300:
        traffic.answers.add(answer)
        traffic.cooldowns.on_success(cool_key, sent_at=now)
        breaker.record(True, time.monotonic())
        ex.limit_key = cool_key
        ex.target = target
        ex.upstream_model = model
        ex.translated = translated
        ex.strip_usage = (not translated and call.stream and not call.include_usage
                          and pr.provider.spec.stream_usage_option)
        return answer, None
    status = answer.status
    failed, retry_after = await _status_error(pr, answer, call)
    rt.metrics.upstream_error(pr.name, "rate_limited" if failed.status == 429 else f"http_{status}")
    return None, _judge(traffic, pr, cool_key, breaker, status, failed, retry_after)


def _judge(traffic: Traffic, pr: ProviderRuntime, cool_key: tuple[str, str], breaker: Breaker,
           status: int, failed: SluiceError, retry_after: float | None) -> SluiceError:
    """Feed an upstream's non-2xx to the cooldowns and the breaker; return it when another
    candidate may serve (retryable), raise it when the caller's request was at fault."""
    done = time.monotonic()
    if failed.status == 429:
        traffic.cooldowns.on_rate_limited(cool_key, pr.provider.cooldown, done, retry_after)
        breaker.release_probe()  # throttled is not broken
        return failed
    if status >= 500 or status in _RETRYABLE or failed.code == "upstream_auth_failed":
        traffic.cooldowns.on_failure(cool_key, pr.provider.cooldown, done, f"http_{status}")
        breaker.record(False, done)
        return failed
    breaker.record(True, done)  # the caller's request was at fault, not the provider
    raise failed


async def _room(limits: Limiter, key: tuple[str, str], pr: ProviderRuntime, tokens: int) -> bool:
    """Take room under the target's RPM/TPM, waiting at most `limits.max_wait` for it; each
    request waits on its own, so there is no queue to grow."""
    limit = pr.provider.rate_limit
    now = time.monotonic()
    deadline = now + pr.provider.max_wait
    while True:
        decision = limits.check(key, limit, tokens, now)
        if decision.allowed:
            return True
        if now + decision.retry_after > deadline:
            return False
        # The loop's timers may fire a little early (uvloop keeps whole milliseconds), so the
        # room is checked again rather than assumed.
        await asyncio.sleep(decision.retry_after)
        now = time.monotonic()


def _nothing_served(rt: Runtime, route: ModelRoute, ex: Exchange, call: Call,
                    last: SluiceError | None) -> SluiceError:
    now = time.monotonic()
    cooling = [rt.traffic.cooldowns.remaining((c.label, t.upstream_model(call.model)), now)
               for t in _candidates(rt, route, ex.session)
               for c in rt.providers[t.provider.name].credentials]
    if cooling and all(cooling):
        wait = str(max(1, math.ceil(min(cooling))))
        if last is not None and last.status == 429:
            # The provider's own words say more; Retry-After says when a target is back.
            last.headers = {**last.headers, "Retry-After": wait}
            return last
        return AllCoolingDown(
            f"Every target of model '{ex.requested_model}' is cooling down after rate limits; "
            f"the first recovers in {wait} s.", headers={"Retry-After": wait})
    if last is not None:
        return last
    return GatewayBusy(
        f"No target of model '{ex.requested_model}' can take requests now (circuit breakers "
        "open after repeated failures); retry shortly.", headers={"Retry-After": "5"})


_RETRYABLE = frozenset({408, 409})
# OpenAI's code, and the words each provider uses when a prompt is over the context window:
# OpenAI "maximum context length is", Anthropic "prompt is too long", Gemini "exceeds the
# maximum number of tokens allowed", OpenAI-compatible servers "context length", "context window".
CONTEXT_TOO_LONG = "context_length_exceeded"
_CONTEXT_MESSAGE = re.compile(
    r"context_length_exceeded|maximum context length|context length|context window|"
    r"prompt is too long|exceeds the maximum number of tokens", re.IGNORECASE)


async def _status_error(pr: ProviderRuntime, answer: UpstreamAnswer, call: Call
                        ) -> tuple[SluiceError, float | None]:
    """An upstream non-2xx as the error the caller gets (the upstream's own message kept), and
    how long the provider asked us to wait, if it did."""
    try:
        body = await answer.read()
    except UpstreamError:
        body = b""
    finally:
        answer.close()
    status = answer.status
    spec = pr.provider.spec
    etype = code = param = None
    hint: float | None = None
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
        message, param, hint = err.message, err.param, err.retry_after
        if err.kind == "rate_limit":
            status = 429
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in answer.headers}
    retry_after = retry_after_seconds(headers, time.time())
    if retry_after is None:
        retry_after = hint
    wait = str(max(1, math.ceil(retry_after))) if retry_after is not None else None
    return _policy(pr.name, status, message, etype, code, param, wait), retry_after


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
        if _CONTEXT_MESSAGE.search(f"{code or ''} {message}"):
            code = CONTEXT_TOO_LONG
        return UpstreamStatusError(status, message or f"Provider '{provider}' answered {status}.",
                                   type=etype, code=code, param=param)
    return UpstreamStatusError(
        502, f"Provider '{provider}' answered {status}: {message or 'no message'}",
        code="upstream_error")
