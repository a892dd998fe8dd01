"""The request pipeline every caller dialect shares, plus health, root and ping.

A dialect's endpoint authenticates, reads the body under its bound, builds a `Call` from the
envelope alone and hands it to `serve_call`, which routes it, dispatches it and answers either
with the provider's own bytes (same dialect) or through the adapters (translated).
"""

from __future__ import annotations

import math
import time
from fnmatch import fnmatchcase

import msgspec
from aiohttp import web

from adapters.canonical import Usage
from adapters.openai.envelope import (
    Envelope,
    RequestError,
    decode_envelope,
    decode_object,
)
from adapters.providers import Dialect
from proxy.cache import CACHE_HEADER, CachedAnswer, CachePlan, Collector, keepable, plan_for
from proxy.calls import Call
from proxy.config import GatewayKey
from proxy.counting import count_translated
from proxy.dispatch import Exchange, open_upstream
from proxy.errors import (
    BadRequest,
    BodyTooLarge,
    BudgetExhausted,
    CallerRateLimited,
    InvalidJSON,
    MissingField,
    ModelNotAllowed,
    ModelNotFound,
    UnsupportedMediaType,
)
from proxy.limits import estimate_request_tokens
from proxy.metering import body_usage
from proxy.runtime import STATE, VERSION, Runtime, UpstreamAnswer
from proxy.stream import pipe_stream, stream_tap
from proxy.translate import answer_translated

__all__ = [
    "ANSWER_BODY",
    "CACHE_HIT",
    "CALL",
    "CALLER",
    "EXCHANGE",
    "JSON_HEADERS",
    "authenticate",
    "check_object",
    "dialect_of",
    "envelope_of",
    "health",
    "ping",
    "read_body",
    "root",
    "serve_call",
]

# What the pipeline learns about a request, left on it for its usage record (proxy.accounting).
CALLER = "sluice_caller"
CALL = "sluice_call"
EXCHANGE = "sluice_exchange"
ANSWER_BODY = "sluice_answer_body"  # kept only with `log.bodies: true`
CACHE_HIT = "sluice_cache_hit"  # the CachedAnswer a request was answered with


def _logs_bodies(request: web.Request) -> bool:
    return request.app[STATE].runtime.settings.log.bodies

_ENCODE = msgspec.json.Encoder()
JSON_HEADERS = {"Content-Type": "application/json"}


def dialect_of(request: web.Request) -> Dialect:
    """The caller's dialect, from the path and the headers its SDK always sends, so that even
    a 404 answers in it."""
    path = request.path
    if path.startswith("/v1beta/") or ":" in path or "key" in request.query:
        return "gemini"
    if path.startswith("/v1/messages") or "anthropic-version" in request.headers:
        return "anthropic"
    if "x-goog-api-key" in request.headers:
        return "gemini"
    return "openai"


def authenticate(request: web.Request, *, query_key: bool = False) -> tuple[Runtime, GatewayKey]:
    """The runtime this request runs on, and who is calling. `query_key`: Gemini callers may
    send the key as `?key=` (never logged, never forwarded)."""
    rt = request.app[STATE].runtime
    fallback = request.query.get("key") if query_key else None
    caller = request[CALLER] = rt.keys.authenticate(request.headers, fallback)
    return rt, caller


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def read_body(request: web.Request, limit: int) -> bytes:
    content_type = request.headers.get("Content-Type")
    if content_type is not None and not _is_json(content_type):
        raise UnsupportedMediaType(
            f"Content-Type {content_type.partition(';')[0]!r} is not supported; "
            "send the body as JSON with 'Content-Type: application/json'.")
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(f"The request body is {length} bytes; this gateway accepts at most "
                           f"{limit} (server.max_body).")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"The request body is over {limit} bytes (server.max_body).") from None
    if not body:
        raise InvalidJSON("The request body is empty; send a JSON object.")
    return body


def envelope_of(body: bytes, required: str | None) -> Envelope:
    """The top-level fields of a JSON body with `model` (OpenAI and Anthropic dialects)."""
    try:
        env = decode_envelope(body)
        if required is not None:
            env.require(required)
    except RequestError as err:
        if err.missing and err.param:
            raise MissingField(err.param) from None
        if err.param is None:
            raise InvalidJSON(str(err)) from None
        raise BadRequest(str(err), param=err.param) from None
    return env


def check_object(body: bytes) -> None:
    """A body forwarded as it is must still be a JSON object (Gemini bodies carry no model)."""
    try:
        decode_object(body)
    except RequestError as err:
        raise InvalidJSON(str(err)) from None


async def serve_call(request: web.Request, rt: Runtime, caller: GatewayKey,
                     call: Call) -> web.StreamResponse:
    request[CALL] = call
    if caller.models is not None and not any(fnmatchcase(call.model, g) for g in caller.models):
        raise ModelNotAllowed(f"Gateway key '{caller.name}' may not use model '{call.model}' "
                              f"(allowed: {', '.join(caller.models) or 'none'}).", param="model")
    if caller.budgets:
        over = request.app[STATE].ledger.check(caller, time.time())
        if over is not None:
            wait = max(1, math.ceil(over.resets_at - time.time()))
            raise BudgetExhausted(over.message(caller.name), headers={"Retry-After": str(wait)})
    tokens = estimate_request_tokens(len(call.body), _max_tokens(call))
    model, rule = rt.rules.apply(call, caller.name, tokens) if rt.rules else (call.model, None)
    route = rt.router.resolve(model)
    if route is None:
        raise ModelNotFound(call.model)
    rid: str = request["rid"]
    if call.operation == "count_tokens":
        first = rt.order(route)[0]
        if first.provider.spec.dialect != call.dialect:
            return await count_translated(rt, call, first, {"x-request-id": rid})
    plan = None
    # The whole cost of the cache to a request that did not opt in: this test.
    if route.cache or CACHE_HEADER in request.headers:
        plan = plan_for(call, caller.name, request.headers, rt.settings.cache)
        if plan is not None and plan.lookup:
            hit = await request.app[STATE].cache.get(plan.key)
            if hit is not None:
                return _answer_hit(request, call, hit, rule)
    ex = request[EXCHANGE] = Exchange(rid, caller, route, call.model)
    ex.session = request.headers.get("x-session-id")
    ex.tokens = tokens
    traffic, now = rt.traffic, time.monotonic()
    decision = traffic.key_limits.check(caller.name, caller.limits, ex.tokens, now)
    if not decision.allowed:
        raise CallerRateLimited(
            f"Gateway key '{caller.name}' is over its {decision.scope} limit "
            f"({decision.limit} per minute); retry in {math.ceil(decision.retry_after)} s.",
            headers=traffic.key_limits.headers(decision))
    try:
        answer = await open_upstream(rt, ex, call, request.headers)
    except BaseException:
        traffic.key_limits.cancel(caller.name, ex.tokens, now)
        raise
    assert ex.provider is not None  # set by open_upstream on every answer it returns
    headers = {"x-request-id": rid, "x-sluice-provider": ex.provider.name,
               "x-sluice-attempts": str(ex.attempts)}
    if rule is not None:
        headers["x-sluice-route"] = rule
    keep = None
    if plan is not None:
        headers[CACHE_HEADER] = "miss"
        keep = Collector()
    if ex.translated:
        resp = await answer_translated(request, ex, call, answer, headers, keep)
    else:
        resp = await _answer_same_dialect(request, ex, call, answer, headers, keep)
    _reconcile(rt, ex)
    if plan is not None and keep is not None:
        await _store(request, ex, call, plan, resp, keep)
    return resp


def _answer_hit(request: web.Request, call: Call, hit: CachedAnswer,
                rule: str | None) -> web.Response:
    """The stored answer, byte for byte (a stream in one write), with no upstream call."""
    request[CACHE_HIT] = hit
    headers = {"x-request-id": request["rid"], "x-sluice-provider": hit.provider,
               "x-sluice-attempts": "0", CACHE_HEADER: "hit", "Content-Type": hit.content_type}
    if call.stream:
        headers["Cache-Control"] = "no-cache"
    if rule is not None:
        headers["x-sluice-route"] = rule
    if _logs_bodies(request):
        request[ANSWER_BODY] = hit.body
    return web.Response(body=hit.body, headers=headers)


async def _store(request: web.Request, ex: Exchange, call: Call, plan: CachePlan,
                 resp: web.StreamResponse, keep: Collector) -> None:
    """Keep an answer that ended whole and well (see proxy.cache)."""
    if resp.status != 200 or ex.outcome != "ok" or ex.provider is None:
        return
    data = keep.data()
    if data is None or not keepable(call, keep.finish, data):
        return
    answer = CachedAnswer(body=data, content_type=resp.headers.get("Content-Type",
                                                                   "application/json"),
                          provider=ex.provider.name, upstream_model=ex.upstream_model,
                          usage=ex.usage or Usage(), estimated=ex.estimated)
    await request.app[STATE].cache.put(plan.key, answer)


def _max_tokens(call: Call) -> int | None:
    env = call.envelope
    raw = env.fields.get("max_tokens") or env.fields.get("max_completion_tokens") \
        if env is not None else None
    if raw is None:
        return None
    value = bytes(raw)
    return int(value) if value.isdigit() else None


def _reconcile(rt: Runtime, ex: Exchange) -> None:
    """Charge the buckets what the request really cost, once its usage is known."""
    if ex.usage is None:
        return
    actual = ex.usage.input_tokens + ex.usage.output_tokens
    now = time.monotonic()
    rt.traffic.key_limits.reconcile(ex.caller.name, ex.tokens, actual, now)
    if ex.limit_key is not None:
        rt.traffic.target_limits.reconcile(ex.limit_key, ex.tokens, actual, now)


async def _answer_same_dialect(request: web.Request, ex: Exchange, call: Call,
                               answer: UpstreamAnswer, headers: dict[str, str],
                               keep: Collector | None = None) -> web.StreamResponse:
    content_type = (answer.header(b"content-type") or b"application/json").decode()
    headers["Content-Type"] = content_type
    if call.stream:
        headers["Cache-Control"] = "no-cache"
        sse = content_type.startswith("text/event-stream")
        if sse or call.dialect == "gemini":  # Gemini without ?alt=sse: a streamed JSON array
            return await pipe_stream(request, answer, headers, call.dialect,
                                     stream_tap(ex, call), keep)
    data = await ex.read_whole(answer)
    if _logs_bodies(request):
        request[ANSWER_BODY] = data
    ex.usage = body_usage(call.dialect, data)
    if keep is not None:
        keep.add(data)
    return web.Response(body=data, status=answer.status, headers=headers)


async def health(request: web.Request) -> web.Response:
    """`GET /health`: 200 `ok`, or 503 `draining` once a shutdown began (load balancers take
    the gateway out of rotation while its last requests finish)."""
    state = request.app[STATE]
    body = {"status": "draining" if state.draining else "ok", "version": VERSION,
            "uptime_s": round(time.time() - state.started_at, 3), "in_flight": state.in_flight}
    return web.Response(body=_ENCODE.encode(body), status=503 if state.draining else 200,
                        headers=JSON_HEADERS)


async def root(request: web.Request) -> web.Response:
    """`GET /`: some clients (Claude Code) probe the base URL before their first call."""
    return web.Response(body=_ENCODE.encode({"service": "sluice", "version": VERSION}),
                        headers=JSON_HEADERS)


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="OK")
