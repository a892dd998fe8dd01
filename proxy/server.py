"""The aiohttp application: route table, the one error middleware, and the serve loop."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from adapters.dialects import ADAPTERS
from adapters.openai import encode_error
from adapters.providers import Dialect
from proxy import anthropic_api, gemini_api, handlers, health, openai_api, ops
from proxy.config import ConfigError, Settings
from proxy.errors import BodyTooLarge, MethodNotAllowed, NotFound, SluiceError, canonical_error
from proxy.handlers import dialect_of
from proxy.log import event
from proxy.runtime import STATE, GatewayState, Runtime

__all__ = ["build_app", "check_listen_address", "serve"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A caller-chosen request id is kept for tracing only if it is short and plain.
_MAX_REQUEST_ID = 128
# aiohttp listens with a backlog of 128; a burst of clients opening streams at once (measured:
# 500) overflowed it, and each dropped SYN costs its client a 1-3 s retransmit.
_LISTEN_BACKLOG = 1024


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
    """The one place an error becomes an HTTP answer; every answer gets its x-request-id."""
    rid = _request_id(request)
    request["rid"] = rid
    try:
        resp = await handler(request)
    except SluiceError as err:
        return error_response(err, rid, dialect_of(request))
    except web.HTTPException as exc:
        return error_response(_from_http_exception(request, exc), rid, dialect_of(request))
    except Exception:
        event("unhandled error", logging.ERROR, request_id=rid, path=request.path,
              exc_info=True)
        return error_response(SluiceError("Internal gateway error; see the gateway log for "
                                          f"request id {rid}."), rid, dialect_of(request))
    if not resp.prepared:
        resp.headers["x-request-id"] = rid
    return resp


def _routes(app: web.Application) -> None:
    # Gemini's POST /v1/models/{model}:{action} must be tried before OpenAI's GET models/{id}.
    gemini_api.add_routes(app)
    anthropic_api.add_routes(app)
    openai_api.add_routes(app)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/ping", handlers.ping)
    app.router.add_get("/", handlers.root)
    ops.add_routes(app)


def build_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=settings.max_body)
    app[STATE] = GatewayState(Runtime(settings))

    async def _close_upstreams(app: web.Application) -> None:
        await app[STATE].runtime.aclose()

    app.on_startup.append(health.start_health_checks)
    app.on_cleanup.append(health.stop_health_checks)
    app.on_cleanup.append(_close_upstreams)
    _routes(app)
    return app


def check_listen_address(settings: Settings) -> None:
    """Refuse a non-loopback address without gateway keys: it would open the providers' keys
    to anyone who can reach the port."""
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback and not settings.keys:
        raise ConfigError([
            f"server.host: {settings.host} is not a loopback address, and no gateway keys are "
            "configured; add `keys:` so that only your callers can use the providers' keys"
        ], settings.source)


async def serve(settings: Settings, ready: Callable[[], None] | None = None) -> None:
    check_listen_address(settings)
    app = build_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True,
                           backlog=_LISTEN_BACKLOG)
        await site.start()
        event("listening", host=settings.host, port=settings.port, config=settings.source,
              providers=sorted(settings.providers), models=[m.name for m in settings.models])
        if ready is not None:
            ready()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        event("stopping")
    finally:
        await runner.cleanup()
    event("stopped")
