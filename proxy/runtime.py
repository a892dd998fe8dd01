"""What the request path runs on: settings, router, keys and one upstream per provider.

A `Runtime` is built whole from `Settings` and never changed afterwards; a handler takes the
current one once, so a request finishes on the runtime it started with. `GatewayState` holds the
current runtime behind the app's typed key (aiohttp freezes the app, so the state is a box).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Protocol

from aiohttp import web

from adapters.providers import AuthStyle
from proxy.auth import KeyTable
from proxy.config import Provider, Settings
from proxy.echo import EchoUpstream
from proxy.router import Router
from proxy.upstream import UpstreamPool

__all__ = ["STATE", "GatewayState", "ProviderRuntime", "Runtime", "Upstream", "UpstreamAnswer"]

VERSION = "0.1.0"
_USER_AGENT = f"sluice/{VERSION}".encode()


class UpstreamAnswer(Protocol):
    status: int
    headers: list[tuple[bytes, bytes]]

    def header(self, name: bytes) -> bytes | None: ...
    async def read(self) -> bytes: ...
    def __aiter__(self) -> AsyncIterator[bytes]: ...
    def close(self) -> None: ...


class Upstream(Protocol):
    base_path: bytes

    async def request(self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]],
                      body: bytes = b"") -> UpstreamAnswer: ...
    async def aclose(self) -> None: ...


class ProviderRuntime:
    """A provider's connection pool and its prebuilt request headers, one set per credential."""

    __slots__ = ("_header_sets", "name", "provider", "upstream")

    def __init__(self, provider: Provider, upstream: Upstream) -> None:
        self.provider = provider
        self.name = provider.name
        self.upstream = upstream
        common = [(b"content-type", b"application/json"), (b"user-agent", _USER_AGENT)]
        common += [(k.lower().encode(), v.encode()) for k, v in provider.spec.extra_headers]
        common += [(k.lower().encode(), v.encode()) for k, v in provider.headers]
        sets = [[_auth_header(provider.spec.auth, cred.secret), *common]
                for cred in provider.credentials if provider.spec.auth != "none"]
        if not sets:
            sets.append(common)
        # Several credentials rotate request by request; per-credential cooldowns come later.
        self._header_sets: Iterator[list[tuple[bytes, bytes]]] = itertools.cycle(sets)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return next(self._header_sets)

    def __repr__(self) -> str:
        return f"<ProviderRuntime {self.name} kind={self.provider.spec.kind} {self.upstream!r}>"


def _auth_header(style: AuthStyle, secret: str) -> tuple[bytes, bytes]:
    match style:
        case "bearer":
            return b"authorization", b"Bearer " + secret.encode()
        case "x-api-key" | "x-goog-api-key":
            return style.encode(), secret.encode()
    raise ValueError(f"no credential header for auth style {style!r}")


def _make_upstream(provider: Provider) -> Upstream:
    if provider.spec.builtin:
        return EchoUpstream()
    return UpstreamPool(provider.base_url, timeouts=provider.timeouts, limits=provider.limits)


class Runtime:
    __slots__ = ("keys", "providers", "router", "settings")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.router = Router(settings)
        self.keys = KeyTable(settings.keys)
        self.providers: Mapping[str, ProviderRuntime] = {
            name: ProviderRuntime(p, _make_upstream(p)) for name, p in settings.providers.items()
        }

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.upstream.aclose()


class GatewayState:
    __slots__ = ("runtime", "started_at")

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.started_at = time.time()


STATE = web.AppKey("sluice_state", GatewayState)
