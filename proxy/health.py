"""Optional active health checks: a provider that fails its probe is taken out of rotation.

Off unless a provider sets `health_check:` (probes spend quota, and the answers to real
requests already drive cooldowns and breakers). Every `interval` the provider's model list is
asked for with its first credential; a failure (no answer within `timeout`, 5xx, 401/403) puts
the whole provider in a `health_check` cooldown for its `cooldown.error` time, and the next
good probe ends it. An operator's manual cooldown is never ended by a probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiohttp import web

from proxy.config import HealthCheck
from proxy.errors import UpstreamError
from proxy.log import event
from proxy.runtime import STATE, ProviderRuntime, Runtime

__all__ = ["REASON", "probe", "start_health_checks", "stop_health_checks"]

REASON = "health_check"


async def probe(pr: ProviderRuntime, check: HealthCheck) -> bool:
    """One probe: True when the provider answered its model list with a non-5xx, non-auth
    status within the timeout."""
    try:
        async with asyncio.timeout(check.timeout):
            answer = await pr.upstream.request(
                b"GET", pr.upstream.base_path + check.path.encode(), pr.credentials[0].headers)
            try:
                await answer.read()
            finally:
                answer.close()
    except (UpstreamError, TimeoutError):
        return False
    return answer.status < 500 and answer.status not in (401, 403)


def _record(rt: Runtime, pr: ProviderRuntime, ok: bool) -> None:
    cooldowns, key, now = rt.traffic.cooldowns, (pr.name, None), time.monotonic()
    current = next((e for e in cooldowns.entries(now) if e.key == key), None)
    if ok:
        if current is not None and current.reason == REASON:
            cooldowns.recover(key)
            event("provider healthy again", provider=pr.name)
    elif current is None or current.reason == REASON:
        cooldowns.cool(key, pr.provider.cooldown.error, now, REASON)
        event("provider failed its health check", provider=pr.name)


async def _loop(app: web.Application, name: str) -> None:
    while True:
        rt = app[STATE].runtime
        pr = rt.providers.get(name)
        check = pr.provider.health_check if pr is not None else None
        if pr is None or check is None:
            return
        await asyncio.sleep(check.interval)
        _record(rt, pr, await probe(pr, check))


async def start_health_checks(app: web.Application) -> None:
    state = app[STATE]
    state.tasks += [asyncio.create_task(_loop(app, name))
                    for name, pr in state.runtime.providers.items()
                    if pr.provider.health_check is not None and not pr.provider.spec.builtin]


async def stop_health_checks(app: web.Application) -> None:
    tasks, app[STATE].tasks = app[STATE].tasks, []
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
