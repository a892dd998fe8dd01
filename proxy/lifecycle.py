"""Running the gateway as a service: listen (optionally TLS), tell systemd how it goes, reload
on SIGHUP, and drain on SIGTERM/SIGINT.

A drain refuses new requests (503; `/health` says `draining`) and gives in-flight requests
and streams `server.drain_timeout` to finish; what is still running then is ended with the
caller dialect's stream error event (its upstream answer is aborted, and the stream's own error
path writes the event). Usage records are flushed last, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import ssl
from collections.abc import Callable

from aiohttp import web

from proxy.config import ConfigError, Settings
from proxy.errors import GatewayDraining
from proxy.log import event
from proxy.notify import Notifier
from proxy.reload import RELOADER, Reloader
from proxy.runtime import STATE, GatewayState
from proxy.server import build_app

__all__ = ["check_listen_address", "serve"]

# aiohttp listens with a backlog of 128; a burst of clients opening streams at once (measured:
# 500) overflowed it, and each dropped SYN costs its client a 1-3 s retransmit.
_LISTEN_BACKLOG = 1024
# After the drain: how long aborted answers get to write their error events, then how long
# aiohttp waits for handlers before cancelling them.
_ABORT_GRACE = 5.0
_SHUTDOWN_TIMEOUT = 5.0
_POLL = 0.05


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


def _tls(settings: Settings) -> ssl.SSLContext | None:
    s = settings.server
    if s.tls_cert is None or s.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(s.tls_cert, s.tls_key)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError([f"server.tls: cannot load the certificate and key: {err}"],
                          settings.source) from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def serve(settings: Settings, ready: Callable[[], None] | None = None,
                load: Callable[[], Settings] | None = None, path: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain. `load` re-reads the config for a reload (the
    same file and command-line overrides; without it a reload re-applies `settings`); `path`
    is the config file, watched when `server.watch_config` is on."""
    check_listen_address(settings)
    ssl_context = _tls(settings)
    app = build_app(settings)
    state = app[STATE]
    reloader = app[RELOADER] = Reloader(app, load or (lambda: settings), path)
    notifier = Notifier.from_env()
    reloader.notify_reloading = notifier.reloading
    reloader.notify_ready = notifier.ready
    s = settings.server
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=_SHUTDOWN_TIMEOUT,
                           keepalive_timeout=s.idle_timeout, max_line_size=s.max_header,
                           max_field_size=s.max_header, max_headers=s.max_headers)
    await runner.setup()
    background: list[asyncio.Task[None]] = []
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True,
                           backlog=_LISTEN_BACKLOG, ssl_context=ssl_context)
        await site.start()
        event("listening", host=settings.host, port=settings.port, tls=ssl_context is not None,
              config=settings.source, providers=sorted(settings.providers),
              models=[m.name for m in settings.models])
        notifier.ready()
        if ready is not None:
            ready()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def on_hup() -> None:
            await reloader.reload("SIGHUP")

        loop.add_signal_handler(signal.SIGHUP,
                                lambda: background.append(loop.create_task(on_hup())))
        background.append(loop.create_task(notifier.watchdog_loop()))
        if s.watch_config and path is not None:
            background.append(loop.create_task(reloader.watch()))
        await stop.wait()
        notifier.stopping()
        await _drain(state, site, s.drain_timeout)
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await reloader.close()
        await runner.cleanup()  # the usage recorder flushes in the app's cleanup
    event("stopped")


async def _drain(state: GatewayState, site: web.TCPSite, drain_for: float) -> None:
    # Still listening, so that /health answers `draining` to whoever balances the load; a new
    # API request gets 503 and may go elsewhere. The listener closes once the drain ends.
    state.draining = True
    event("draining", in_flight=state.in_flight, drain_timeout=drain_for)
    loop = asyncio.get_running_loop()
    if not await _settled(state, loop.time() + drain_for):
        cut = GatewayDraining("The gateway is shutting down and its drain time ran out before "
                              "this answer ended; retry the request.")
        answers = list(state.runtime.traffic.answers)
        for answer in answers:
            answer.abort(cut)
        event("drain time over: ending what is left", in_flight=state.in_flight,
              answers=len(answers))
        await _settled(state, loop.time() + _ABORT_GRACE)
    await site.stop()
    event("drained", in_flight=state.in_flight)


async def _settled(state: GatewayState, deadline: float) -> bool:
    """Wait until no request is in flight or `deadline` (loop time) passed."""
    loop = asyncio.get_running_loop()
    # Polled: the count is a plain int the request path updates; an Event would cost every
    # request something, for the benefit of one shutdown.
    while state.in_flight and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(_POLL)
    return not state.in_flight
