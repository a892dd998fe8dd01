"""The aiohttp application: route table, the one error middleware, and the serve loop."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from adapters.dialects import ADAPTERS
from adapters.openai import encode_error
from adapters.providers import Dialect
from proxy import (
    anthropic_api,
    gemini_api,
    handlers,
    health,
    management,
    openai_api,
    ops,
)
from proxy.accounting import bodies_of, metered, record_of
from proxy.breaker import BreakerState
from proxy.config import Settings
from proxy.errors import (
    BodyTooLarge,
    MethodNotAllowed,
    NotFound,
    ShuttingDown,
    SluiceError,
    canonical_error,
)
from proxy.handlers import dialect_of
from proxy.ledger import Ledger, period_bounds
from proxy.log import event
from proxy.metrics import Metrics, Snapshot
from proxy.runtime import STATE, GatewayState, Runtime
from proxy.store import StoreError, open_store
from proxy.usage import Recorder

__all__ = ["build_app", "error_response"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A caller-chosen request id is kept for tracing only if it is short and plain.
_MAX_REQUEST_ID = 128


def _request_id(request: web.Request) -> str:
    given = request.headers.get("x-request-id")
    if given and len(given) <= _MAX_REQUEST_ID and given.isascii() and given.isprintable():
        return given
    return os.urandom(12).hex()


def error_response(err: SluiceError, rid: str, dialect: Dialect = "openai") -> web.Response:
    if dialect == "openai":
        status, body = err.status, encode_error(err.message, err.type, err.param, err.code)
    else:
        status, body = ADAPTERS[dialect].from_canonical_error(canonical_error(err))
    headers = {"Content-Type": "application/json", "x-request-id": rid, **err.headers}
    return web.Response(body=body, status=status, headers=headers)


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> SluiceError:
    if exc.status == 404:
        return NotFound(f"Unknown path {request.method} {request.path}. This gateway serves "
                        "the OpenAI API under /v1 (POST /v1/chat/completions), Anthropic's "
                        "(POST /v1/messages) and Gemini's (POST /v1beta/models/M:generateContent).")
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path} "
                                f"(allowed: {allowed}).", headers={"Allow": allowed})
    if exc.status == 413:
        return BodyTooLarge("The request body is over this gateway's limit (server.max_body).")
    error = SluiceError(exc.reason)
    error.status = exc.status
    return error


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place an error becomes an HTTP answer; every answer gets its x-request-id, and
    every API call its usage record."""
    rid = _request_id(request)
    request["rid"] = rid
    if not metered(request):
        return (await _answer(request, handler, rid))[0]
    state = request.app[STATE]
    if state.draining:
        handler = _refuse
    # The runtime a request starts on is the one it finishes on (a reload swaps in another);
    # its count of active requests says when a replaced runtime's pools may close.
    rt = state.runtime
    ts, started = time.time(), time.monotonic()
    state.in_flight += 1
    rt.active += 1
    status: int = 499
    error: str | None = "client_closed"  # unless the handler returns or raises below
    try:
        resp, error = await _answer(request, handler, rid)
        status = resp.status
        return resp
    finally:
        state.in_flight -= 1
        rt.active -= 1
        if state.recorder is not None:
            rec = record_of(request, rt, status, error, ts, started, time.monotonic())
            state.recorder.add(rec, bodies_of(request) if rt.settings.log.bodies else None)


async def _refuse(request: web.Request) -> web.StreamResponse:
    raise ShuttingDown("The gateway is shutting down and takes no new requests; retry shortly.",
                       headers={"Retry-After": "1", "Connection": "close"})


async def _answer(request: web.Request, handler: Handler, rid: str
                  ) -> tuple[web.StreamResponse, str | None]:
    """The handler's answer, or the error's in the caller's dialect, and the error's code."""
    try:
        resp = await handler(request)
    except SluiceError as err:
        return _failed(request, err, rid)
    except web.HTTPException as exc:
        return _failed(request, _from_http_exception(request, exc), rid)
    except Exception:
        event("unhandled error", logging.ERROR, request_id=rid, path=request.path,
              exc_info=True)
        return _failed(request, SluiceError("Internal gateway error; see the gateway log for "
                                            f"request id {rid}."), rid)
    if not resp.prepared:
        resp.headers["x-request-id"] = rid
    return resp, None


def _failed(request: web.Request, err: SluiceError, rid: str) -> tuple[web.Response, str]:
    return error_response(err, rid, dialect_of(request)), err.code or err.type


def _routes(app: web.Application) -> None:
    # Gemini's POST /v1/models/{model}:{action} must be tried before OpenAI's GET models/{id}.
    gemini_api.add_routes(app)
    anthropic_api.add_routes(app)
    openai_api.add_routes(app)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/ping", handlers.ping)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/", handlers.root)
    ops.add_routes(app)
    management.add_routes(app)


def build_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=settings.max_body)
    ledger, metrics = Ledger(), Metrics()
    ledger.configure(settings.keys, settings.providers)
    recorder = None
    if settings.usage.enabled:
        store = open_store(settings.usage.store, settings.usage.data_dir)
        recorder = Recorder(settings.usage, store, metrics, ledger, settings.log.requests)
    runtime = Runtime(settings, ledger=ledger, metrics=metrics)
    state = app[STATE] = GatewayState(runtime, ledger, metrics, recorder)
    metrics.bind(lambda: _snapshot(state))

    async def _start_usage(app: web.Application) -> None:
        if state.recorder is not None:
            await state.recorder.start()
            await _rebuild_ledger(state)

    async def _close_usage(app: web.Application) -> None:
        if state.recorder is not None:
            await state.recorder.close()

    async def _close_upstreams(app: web.Application) -> None:
        await state.runtime.aclose()

    app.on_startup.append(_start_usage)
    app.on_startup.append(health.start_health_checks)
    app.on_cleanup.append(health.stop_health_checks)
    app.on_cleanup.append(_close_usage)
    app.on_cleanup.append(_close_upstreams)
    _routes(app)
    return app


async def _rebuild_ledger(state: GatewayState) -> None:
    """Budget and quota totals of the current periods, from the store, so that a restart
    forgets no spend."""
    recorder = state.recorder
    assert recorder is not None
    keys, providers = state.ledger.tracked()
    if recorder.store is None or not (keys or providers):
        return
    now = time.time()
    try:
        for period in ("day", "week", "month"):
            start = period_bounds(period, now)[0]
            for kind, names in (("key", keys), ("provider", providers)):
                if not names:
                    continue
                totals = await recorder.store.totals(start, by=kind)  # type: ignore[arg-type]
                for name, t in totals.items():
                    if name in names:
                        state.ledger.seed(kind, name, period, start, t.requests,
                                          t.input_tokens + t.output_tokens, t.cost_usd)
    except StoreError as err:
        event("budget totals not rebuilt: the usage store is unavailable", logging.ERROR,
              error=str(err))


_BREAKER_LEVEL = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def _snapshot(state: GatewayState) -> Snapshot:
    """The gauges' values at scrape time (nothing on the request path keeps them)."""
    rt, now = state.runtime, time.monotonic()
    owner = {c.label: name for name, pr in rt.providers.items() for c in pr.credentials}
    owner.update((name, name) for name in rt.providers)
    cooling: dict[str, int] = dict.fromkeys(rt.providers, 0)
    for entry in rt.traffic.cooldowns.entries(now):
        label = entry.key[0] if isinstance(entry.key, tuple) else entry.key
        provider = owner.get(str(label))
        if provider is not None:
            cooling[provider] += 1
    breakers = {(str(key[0]), str(key[1])): _BREAKER_LEVEL[b.state_at(now)]
                for key, b in rt.traffic.breakers.items()
                if isinstance(key, tuple) and key[0] in rt.providers}
    return Snapshot(
        in_flight=state.in_flight,
        queue_depth=len(state.recorder.queue) if state.recorder is not None else 0,
        cooldowns=cooling, breakers=breakers)


async def _metrics(request: web.Request) -> web.Response:
    # Rendering costs ~13 µs per sample: off the event loop, so a scrape never stalls requests.
    metrics = request.app[STATE].metrics
    body, content_type = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
    return web.Response(body=body, headers={"Content-Type": content_type})
