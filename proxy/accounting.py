"""The usage record of a finished request, built from what the request path left behind.

The error middleware calls `record_of` once per metered request (every API call, answered or
refused); the handlers leave the caller's key, the `Call` and the `Exchange` on the request as
they learn them, so a request refused early still gets a record with what was known.
"""

from __future__ import annotations

from aiohttp import web

from adapters.canonical import Usage
from proxy.cache import CachedAnswer
from proxy.calls import Call
from proxy.config import GatewayKey
from proxy.dispatch import Exchange
from proxy.handlers import ANSWER_BODY, CACHE_HIT, CALL, CALLER, EXCHANGE, dialect_of
from proxy.records import UsageRecord
from proxy.runtime import Runtime

__all__ = ["bodies_of", "metered", "record_of"]

_NO_USAGE = Usage()


def metered(request: web.Request) -> bool:
    """API calls get a usage record; operations, health and model lists do not."""
    return request.method == "POST" and not request.path.startswith("/v0/")


def _operation_of(path: str) -> str:
    if path.endswith("/embeddings") or ":embedContent" in path or ":batchEmbed" in path:
        return "embeddings"
    if "count_tokens" in path or ":countTokens" in path:
        return "count_tokens"
    if path.endswith("/completions") and not path.endswith("/chat/completions"):
        return "completions"
    return "chat"


def record_of(request: web.Request, rt: Runtime, status: int, error: str | None, ts: float,
              started: float, ended: float) -> UsageRecord:
    latency = ended - started
    try:
        # Subscripts, not request.get: Mapping.get is one more Python frame a lookup, on every
        # request. A request that made an Exchange made its Call before.
        ex: Exchange | None = request[EXCHANGE]
        call: Call | None = request[CALL]
    except KeyError:
        ex, call = None, request.get(CALL)
    if ex is None:
        caller: GatewayKey | None = request.get(CALLER)
        hit: CachedAnswer | None = request.get(CACHE_HIT)  # a hit makes no Exchange
        if hit is not None and caller is not None and call is not None:
            return _hit_record(request, hit, caller, call, status, error, ts, latency)
        return UsageRecord(
            ts=ts, request_id=request["rid"], key=caller.name if caller else None,
            dialect=call.dialect if call else dialect_of(request),
            operation=call.operation if call else _operation_of(request.path),
            model=call.model if call else None, provider=None, credential=None,
            upstream_model=None, status=status, outcome=_outcome(status, "ok"), error=error,
            attempts=0, latency_ms=latency * 1000, overhead_ms=latency * 1000,
            stream=call.stream if call else False)
    assert call is not None  # an Exchange is made for a Call
    usage = ex.usage or _NO_USAGE
    provider = ex.provider
    cost = None
    if provider is not None and ex.usage is not None and status < 400:
        cost = rt.cost(provider, ex.target, ex.upstream_model, usage)
    ttft = (ex.first_byte - started) * 1000 if ex.first_byte is not None else None
    overhead = latency - ex.upstream_wait - ex.body_wait
    if overhead < 0.0:  # not max(): ~480 instructions a call, its keyword parsing included
        overhead = 0.0
    # Positional, in the record's field order: a fifth of the cost of keywords, once a request.
    return UsageRecord(
        ts, ex.request_id, ex.caller.name, call.dialect, call.operation, ex.requested_model,
        provider.name if provider else None, ex.credential,
        ex.upstream_model if provider else None, status, _outcome(status, ex.outcome), error,
        ex.attempts, usage.input_tokens, usage.output_tokens, usage.cached_tokens,
        usage.reasoning_tokens, ex.estimated, cost, latency * 1000, ttft, overhead * 1000,
        call.stream)


def _hit_record(request: web.Request, hit: CachedAnswer, caller: GatewayKey, call: Call,
                status: int, error: str | None, ts: float, latency: float) -> UsageRecord:
    """A request answered from the response cache: the first answer's provider and tokens (what
    the answer holds), no upstream call and nothing spent (cost 0, known, not unknown)."""
    usage = hit.usage
    ms = latency * 1000
    return UsageRecord(
        ts=ts, request_id=request["rid"], key=caller.name, dialect=call.dialect,
        operation=call.operation, model=call.model, provider=hit.provider, credential=None,
        upstream_model=hit.upstream_model, status=status, outcome=_outcome(status, "ok"),
        error=error, attempts=0, input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens, cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens, estimated=hit.estimated, cost_usd=0.0,
        latency_ms=ms, ttft_ms=ms if call.stream else None, overhead_ms=ms, stream=call.stream,
        cache_hit=True)


def _outcome(status: int, outcome: str) -> str:
    if outcome != "ok":
        return outcome
    if status == 499:
        return "client_closed"
    if status == 429:
        return "rate_limited"
    return "ok" if status < 400 else "error"


def bodies_of(request: web.Request) -> dict[str, str]:
    """The prompt and the completion as they crossed the gateway (`log.bodies: true` only)."""
    call: Call | None = request.get(CALL)
    out = {}
    if call is not None:
        out["request_body"] = call.body.decode(errors="replace")
    answer: bytes | None = request.get(ANSWER_BODY)
    if answer is not None:
        out["response_body"] = answer.decode(errors="replace")
    return out
