"""Live config reload: SIGHUP, `POST /v0/management/reload`, or a changed config file.

The new config is loaded and validated whole first; if it is invalid the old one stays in force
and the problems are logged, counted and returned. A valid one is swapped in at once: a request
keeps the runtime it started on, so in-flight requests finish on their config. Cooldowns,
breakers, rate-limit buckets, budgets and statistics are kept for what still exists; providers
whose connection settings did not change keep their pooled connections, and the pools of the
others are closed once the last request of the old runtime ends.

What only a restart can change (the listening address, TLS, per-connection bounds, the body
limit, the usage store) keeps its running value, with a warning naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from proxy import health
from proxy.config import ConfigError, Settings
from proxy.log import configure_level, event, redact
from proxy.runtime import STATE, GatewayState, Runtime, Upstream

__all__ = ["RELOADER", "Reloader"]

# Longest an old runtime's pools are kept for its last requests (a stream may run for long).
_RETIRE_MAX = 3600.0
_RETIRE_POLL = 0.25
_WATCH_POLL = 1.0


class Reloader:
    """Reloads the gateway's config from `load` (which re-reads the file the gateway started
    with, applying the same command-line overrides)."""

    def __init__(self, app: web.Application, load: Callable[[], Settings],
                 path: str | None = None) -> None:
        self.app = app
        self.load = load
        self.path = path  # the config file watched when server.watch_config is on
        self.last_error: list[str] | None = None
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self.notify_reloading: Callable[[], None] = lambda: None
        self.notify_ready: Callable[[], None] = lambda: None

    async def reload(self, why: str) -> list[str] | None:
        """Load, validate and swap; None when the new config is in force, else its problems."""
        async with self._lock:
            state = self.app[STATE]
            self.notify_reloading()
            try:
                problems = self._swap(state, why)
                if problems is None:
                    await health.stop_health_checks(self.app)
                    await health.start_health_checks(self.app)
                return problems
            finally:
                self.notify_ready()

    def _swap(self, state: GatewayState, why: str) -> list[str] | None:
        old = state.runtime
        try:
            new_settings = self.load()
        except ConfigError as err:
            self.last_error = err.problems
            state.metrics.reload_result(False)
            event("config reload refused; the running config stays in force", logging.ERROR,
                  trigger=why, config=err.source, problems=err.problems)
            return err.problems
        new_settings = _keep_restart_only(old.settings, new_settings)
        runtime = Runtime(new_settings, traffic=old.traffic, ledger=state.ledger,
                          metrics=state.metrics, previous=old)
        runtime.retain_traffic()
        state.ledger.configure(new_settings.keys, new_settings.providers)
        state.cache.settings = new_settings.cache
        state.runtime = runtime  # from here on, new requests run on the new config
        redact.set_secrets([*old.settings.secrets(), *new_settings.secrets()])
        configure_level(new_settings.log.level)
        orphans = runtime.orphans(old)
        task = asyncio.get_running_loop().create_task(_retire(old, orphans))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        self.last_error = None
        state.metrics.reload_result(True)
        event("config reloaded", trigger=why, config=new_settings.source,
              providers=sorted(new_settings.providers),
              models=[m.name for m in new_settings.models], closing_pools=len(orphans))
        return None

    async def watch(self) -> None:
        """Reload when the config file's modification time or size changes."""
        if self.path is None:
            return
        path = Path(self.path)
        seen = _stamp(path)
        while True:
            await asyncio.sleep(_WATCH_POLL)
            stamp = _stamp(path)
            if stamp != seen and stamp is not None:
                seen = stamp
                await self.reload("file changed")

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _keep_restart_only(old: Settings, new: Settings) -> Settings:
    names = ("host", "port", "max_body", "server", "usage")
    changed = [name for name in names if getattr(new, name) != getattr(old, name)]
    if changed:
        event("config reload: these settings take effect at the next restart", logging.WARNING,
              settings=changed)
    return dataclasses.replace(new, host=old.host, port=old.port, max_body=old.max_body,
                               server=old.server, usage=old.usage)


async def _retire(old: Runtime, orphans: list[Upstream]) -> None:
    """Close the pools the new config dropped once the old runtime's last request ended."""
    waited = 0.0
    while old.active and waited < _RETIRE_MAX:
        await asyncio.sleep(_RETIRE_POLL)
        waited += _RETIRE_POLL
    for upstream in orphans:
        await upstream.aclose()


RELOADER = web.AppKey("sluice_reloader", Reloader)
