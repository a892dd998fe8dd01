"""The operations API: provider health, cooldowns, manual cooldown and recover.

Guarded by the admin key (`admin.key`, sent as `Authorization: Bearer`) and served to loopback
callers only unless `admin.allow_remote: true`. Answers name providers, credentials by their
labels (`name#0 (env:NAME)`) and models; never a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from typing import Any

import msgspec
from aiohttp import web

from proxy.balance import Strategy, last_minute
from proxy.config import parse_duration
from proxy.errors import BadRequest, NotFound, SluiceError, Unauthorized
from proxy.runtime import STATE, ProviderRuntime, Runtime

__all__ = ["add_routes", "admin_runtime", "json_response", "provider_cooldown_key"]

_ENCODE = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder(dict[str, Any])
_JSON = {"Content-Type": "application/json"}


class Forbidden(SluiceError):
    status = 403
    type = "permission_error"
    code = "forbidden"


def provider_cooldown_key(name: str) -> tuple[str, None]:
    """The cooldown key of a whole provider (an operator's manual cooldown)."""
    return (name, None)


def admin_runtime(request: web.Request) -> Runtime:
    rt = request.app[STATE].runtime
    settings = rt.settings
    if settings.admin_key is None:
        raise Forbidden("The operations API is off: set admin.key in the config.")
    if not settings.admin_allow_remote:
        peer = request.remote or ""
        try:
            local = ipaddress.ip_address(peer).is_loopback
        except ValueError:
            local = False
        if not local:
            raise Forbidden("The operations API answers loopback callers only "
                            "(admin.allow_remote: true opens it).")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    given = hashlib.sha256(token.strip().encode()).digest()
    wanted = hashlib.sha256(settings.admin_key.encode()).digest()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, wanted):
        raise Unauthorized("The operations API needs the admin key as 'Authorization: Bearer'.",
                           headers={"WWW-Authenticate": 'Bearer realm="sluice-admin"'})
    return rt


def _provider(rt: Runtime, request: web.Request) -> ProviderRuntime:
    name = request.match_info["name"]
    pr = rt.providers.get(name)
    if pr is None:
        raise NotFound(f"No provider named '{name}'. Known: {', '.join(sorted(rt.providers))}.")
    return pr


def json_response(body: object) -> web.Response:
    return web.Response(body=_ENCODE.encode(body), headers=_JSON)


def _cooldowns_of(rt: Runtime, pr: ProviderRuntime, now: float) -> list[dict[str, object]]:
    labels = {c.label for c in pr.credentials} | {pr.name}
    wall = time.time() - now  # monotonic -> Unix time
    out = []
    for e in rt.traffic.cooldowns.entries(now):
        label, model = e.key if isinstance(e.key, tuple) else (e.key, None)
        if label in labels:
            out.append({"provider": pr.name, "credential": label if label != pr.name else None,
                        "model": model, "reason": e.reason,
                        "started_at": round(e.started_at + wall, 3),
                        "ends_at": round(e.ends_at + wall, 3),
                        "remaining_seconds": round(max(0.0, e.ends_at - now), 3)})
    return out


async def providers_status(request: web.Request) -> web.Response:
    rt = admin_runtime(request)
    now = time.monotonic()
    wall = time.time() - now
    providers = {}
    for name, pr in rt.providers.items():
        cooling = _cooldowns_of(rt, pr, now)
        breakers = {str(key[1]): b.snapshot(now) for key, b in rt.traffic.breakers.items()
                    if isinstance(key, tuple) and key[0] == name}
        open_ = [m for m, snap in breakers.items() if snap["state"] != "closed"]
        status = "cooling_down" if cooling else "degraded" if open_ else "healthy"
        targets: dict[str, dict[str, Any]] = {}
        calls_total = errors_total = 0
        for target_key, stats in rt.traffic.stats.items():
            if target_key.split("/", 1)[0] != name:
                continue
            calls, errors = last_minute(stats, now)
            calls_total += calls
            errors_total += errors
            targets[target_key] = {
                "requests_last_minute": calls, "errors_last_minute": errors,
                "average_latency_ms": round(stats.latency_ewma * 1000, 1)
                if stats.latency_ewma is not None else None,
                "in_flight": stats.in_flight,
                "last_check": round(stats.last_at + wall, 3) if stats.last_at else None}
        providers[name] = {"kind": pr.provider.spec.kind, "status": status,
                           "in_cooldown": bool(cooling), "cooldowns": cooling,
                           "breakers": breakers, "targets": targets,
                           "requests_last_minute": calls_total,
                           "errors_last_minute": errors_total,
                           "credentials": [c.label for c in pr.credentials]}
    return json_response({"providers": providers})


async def cooldown_status(request: web.Request) -> web.Response:
    rt = admin_runtime(request)
    now = time.monotonic()
    periods = [p for pr in rt.providers.values() for p in _cooldowns_of(rt, pr, now)]
    return json_response({"providers_in_cooldown": sorted({str(p["provider"]) for p in periods}),
                  "cooldown_periods": periods})


async def cool_provider(request: web.Request) -> web.Response:
    rt = admin_runtime(request)
    pr = _provider(rt, request)
    try:
        body = _DECODE.decode(await request.read() or b"{}")
    except msgspec.MsgspecError as err:
        raise BadRequest(f"The body must be a JSON object: {err}") from None
    reason = str(body.get("reason") or "manual")
    try:
        duration = parse_duration(body.get("duration", "5m"))
    except (ValueError, TypeError) as err:
        raise BadRequest(f"'duration': {err}", param="duration") from None
    now = time.monotonic()
    rt.traffic.cooldowns.cool(provider_cooldown_key(pr.name), duration, now, reason)
    return json_response({"provider": pr.name, "cooldown_seconds": duration, "reason": reason})


async def recover_provider(request: web.Request) -> web.Response:
    rt = admin_runtime(request)
    pr = _provider(rt, request)
    now = time.monotonic()
    labels = {c.label for c in pr.credentials} | {pr.name}
    recovered = rt.traffic.cooldowns.recover_where(
        lambda key: isinstance(key, tuple) and key[0] in labels, now)
    # An operator's recover closes the provider's breakers too: it says the provider is back.
    keep = [k for k, _ in rt.traffic.breakers.items()
            if not (isinstance(k, tuple) and k[0] == pr.name)]
    rt.traffic.breakers.retain(keep)
    return json_response({"provider": pr.name, "recovered": recovered})


async def load_balancing_status(request: web.Request) -> web.Response:
    rt = admin_runtime(request)
    models = {}
    for route in rt.router.listed():
        candidates = rt.candidates(route)
        models[route.name] = {
            "strategy": route.strategy,
            "fallbacks": list(route.fallbacks),
            "targets": rt.traffic.balancer.scores(Strategy(route.strategy), route.name,
                                                  candidates),
        }
    return json_response({"models": models})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v0/operations/providers/status", providers_status)
    app.router.add_get("/v0/operations/cooldown/status", cooldown_status)
    app.router.add_post("/v0/operations/providers/{name}/cooldown", cool_provider)
    app.router.add_post("/v0/operations/providers/{name}/recover", recover_provider)
    app.router.add_get("/v0/operations/load_balancing/status", load_balancing_status)
