"""What the request path runs on: settings, router, keys and one upstream per provider.

A `Runtime` is built whole from `Settings` and never changed afterwards; a handler takes the
current one once, so a request finishes on the runtime it started with. `GatewayState` holds the
current runtime behind the app's typed key (aiohttp freezes the app, so the state is a box).
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from adapters.canonical import Usage
from adapters.providers import AuthStyle
from proxy import prices
from proxy.auth import KeyTable
from proxy.balance import Balancer, Candidate, Strategy, TargetStats
from proxy.breaker import BreakerPolicy, BreakerTable
from proxy.cache import ResponseCache
from proxy.config import ModelRoute, Provider, Settings, Target
from proxy.cooldown import CooldownTable
from proxy.echo import EchoUpstream
from proxy.errors import UpstreamError
from proxy.ledger import Ledger
from proxy.limits import Limiter
from proxy.metrics import Metrics
from proxy.router import Router
from proxy.routing import Rules
from proxy.upstream import UpstreamPool

if TYPE_CHECKING:
    from proxy.usage import Recorder

__all__ = ["STATE", "CredentialHeaders", "GatewayState", "ProviderRuntime", "Runtime", "Traffic",
           "Upstream", "UpstreamAnswer", "target_name"]

VERSION = "0.1.0"
# Candidate lists are cached per route name; names of ad-hoc routes come from callers.
_CANDIDATE_CACHE_MAX = 4096
_USER_AGENT = f"sluice/{VERSION}".encode()
_UNKNOWN = object()


class UpstreamAnswer(Protocol):
    status: int
    headers: list[tuple[bytes, bytes]]

    def header(self, name: bytes) -> bytes | None: ...
    async def read(self) -> bytes: ...
    def __aiter__(self) -> AsyncIterator[bytes]: ...
    def close(self) -> None: ...
    def abort(self, error: UpstreamError) -> None: ...


class Upstream(Protocol):
    base_path: bytes

    async def request(self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]],
                      body: bytes = b"") -> UpstreamAnswer: ...
    async def aclose(self) -> None: ...


class CredentialHeaders:
    """One credential's prebuilt request headers; `label` names it (never the secret)."""

    __slots__ = ("headers", "label")

    def __init__(self, label: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.label = label
        self.headers = headers


class ProviderRuntime:
    """A provider's connection pool and its prebuilt request headers, one set per credential."""

    __slots__ = ("_next", "credentials", "name", "provider", "upstream")

    def __init__(self, provider: Provider, upstream: Upstream) -> None:
        self.provider = provider
        self.name = provider.name
        self.upstream = upstream
        common = [(b"content-type", b"application/json"), (b"user-agent", _USER_AGENT)]
        common += [(k.lower().encode(), v.encode()) for k, v in provider.spec.extra_headers]
        common += [(k.lower().encode(), v.encode()) for k, v in provider.headers]
        self.credentials = [
            CredentialHeaders(cred.label, [_auth_header(provider.spec.auth, cred.secret), *common])
            for cred in provider.credentials if provider.spec.auth != "none"]
        if not self.credentials:
            self.credentials.append(CredentialHeaders(f"{provider.name} (no key)", common))
        self._next = 0

    def pick(self, model: str, cooldowns: CooldownTable, now: float) -> CredentialHeaders | None:
        """The next credential (round robin) whose (credential, model) is not cooling down."""
        creds = self.credentials
        n = len(creds)
        start = self._next
        for i in range(n):
            cred = creds[(start + i) % n]
            if not cooldowns.remaining((cred.label, model), now):
                self._next = (start + i + 1) % n
                return cred
        return None

    def available(self, model: str, cooldowns: CooldownTable, now: float) -> bool:
        """Some credential of this provider may serve `model` now (nothing is advanced)."""
        heads = cooldowns.heads()
        if self.name not in heads and not any(c.label in heads for c in self.credentials):
            return True  # nothing of this provider is cooling: no per-key lookup
        return not cooldowns.remaining((self.name, None), now) and any(
            not cooldowns.remaining((c.label, model), now) for c in self.credentials)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Headers of the next credential, cooldowns aside (token counting, health checks)."""
        cred = self.credentials[self._next % len(self.credentials)]
        self._next = (self._next + 1) % len(self.credentials)
        return cred.headers

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
    return UpstreamPool(provider.base_url, timeouts=provider.timeouts, limits=provider.limits,
                        proxies=provider.proxies)


class Traffic:
    """Cooldowns, breakers, rate-limit buckets, balancing turns and per-target statistics:
    state that outlives a config reload (kept per target that still exists), so it is owned by
    the gateway, not by one runtime."""

    __slots__ = ("answers", "balancer", "breakers", "cooldowns", "key_limits", "rng", "stats",
                 "target_limits")

    def __init__(self, policy_for: Callable[[Hashable], BreakerPolicy]) -> None:
        self.rng = random.Random()
        self.cooldowns = CooldownTable(self.rng)
        self.breakers = BreakerTable(policy_for)
        self.balancer = Balancer(self.rng)
        self.stats: dict[str, TargetStats] = {}
        self.key_limits = Limiter()
        self.target_limits = Limiter()
        # Answers being read now, whichever runtime opened them: a drain ends what is left.
        self.answers: weakref.WeakSet[UpstreamAnswer] = weakref.WeakSet()

    def stats_for(self, name: str) -> TargetStats:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = TargetStats()
        return stats


def _same_pool(a: Provider, b: Provider) -> bool:
    """Whether pooled connections opened for `a` may serve `b`."""
    return (a.base_url, a.timeouts, a.limits, a.proxies, a.spec.builtin) == (
        b.base_url, b.timeouts, b.limits, b.proxies, b.spec.builtin)


def target_name(target: Target) -> str:
    """A target's stable name: `provider/model` (`*` for "the name the caller asked")."""
    return f"{target.provider.name}/{target.model or '*'}"


class Runtime:
    __slots__ = ("_candidates", "_prices", "active", "keys", "ledger", "metrics", "providers",
                 "router", "rules", "settings", "traffic")

    def __init__(self, settings: Settings, traffic: Traffic | None = None,
                 ledger: Ledger | None = None, metrics: Metrics | None = None,
                 previous: Runtime | None = None) -> None:
        self.settings = settings
        self.traffic = traffic or Traffic(self._breaker_policy)
        self.traffic.breakers.use_policies(self._breaker_policy)
        self.active = 0  # requests running on this runtime (a replaced one retires at 0)
        self.ledger = ledger  # spend per key and provider, for provider quotas
        self.metrics = metrics or Metrics()
        self._candidates: dict[str, tuple[Candidate, ...]] = {}
        self._prices: dict[Hashable, prices.Price | None] = {}
        self.rules = Rules(settings.aliases, settings.rules)
        self.router = Router(settings)
        self.keys = KeyTable(settings.keys)
        # A provider whose connection settings a reload left alone keeps its pooled
        # connections; the others get a new pool.
        before = previous.providers if previous is not None else {}
        self.providers: Mapping[str, ProviderRuntime] = {
            name: ProviderRuntime(p, before[name].upstream
                                  if name in before and _same_pool(before[name].provider, p)
                                  else _make_upstream(p))
            for name, p in settings.providers.items()
        }

    def order(self, route: ModelRoute, sticky: str | None = None,
              requested: str | None = None) -> list[Target]:
        """The route's targets in the order its strategy (and the caller's session) says.

        With `requested` (the caller's model name), targets cooling down are left out before
        ordering, so their share spreads over the others instead of all falling to the next
        in rotation; when none is available the full order comes back (the caller reports why).
        """
        if len(route.targets) == 1 and sticky is None:
            return list(route.targets)
        candidates = self.candidates(route)
        cooldowns = self.traffic.cooldowns
        if requested is not None and cooldowns:
            now = time.monotonic()
            # Candidates are built from route.targets in the same order.
            open_ = [c for c, t in zip(candidates, route.targets, strict=True)
                     if self.providers[t.provider.name].available(
                         t.upstream_model(requested), cooldowns, now)]
            if open_ and len(open_) < len(candidates):
                candidates = tuple(open_)
        # The config's spelling equals the StrEnum member, so no conversion per request.
        strategy: Strategy = route.strategy  # type: ignore[assignment]
        ordered = self.traffic.balancer.order(strategy, route.name, candidates, sticky)
        return [c.key for c in ordered]  # type: ignore[misc]

    def candidates(self, route: ModelRoute) -> tuple[Candidate, ...]:
        """What the balancer sees of the route's targets (built once per route)."""
        candidates = self._candidates.get(route.name)
        if candidates is None or candidates[0].key not in route.targets:
            candidates = tuple(
                Candidate(key=t, weight=t.weight, priority=t.priority, price=self._blended(t),
                          stats=self.traffic.stats_for(target_name(t)), name=target_name(t),
                          quota=self._quota_of(t.provider.name))
                for t in route.targets)
            if len(self._candidates) >= _CANDIDATE_CACHE_MAX:
                self._candidates.clear()
            self._candidates[route.name] = candidates
        return candidates

    def _blended(self, target: Target) -> float | None:
        """One figure per target for the `cost` strategy: the mean of input and output rates."""
        price = target.price
        if price is None and target.model is not None:
            price = prices.lookup(target.provider.spec.kind, target.model)
        return None if price is None else (price.input + price.output) / 2

    def _quota_of(self, provider: str) -> Callable[[], float | None] | None:
        if self.settings.providers[provider].quota is None or self.ledger is None:
            return None
        ledger = self.ledger
        return lambda: ledger.quota_left(provider, time.time())

    def cost(self, pr: ProviderRuntime, target: Target | None, model: str,
             usage: Usage) -> float | None:
        """USD of a request by the target's configured price, else the built-in table's;
        None when neither knows the model."""
        if target is not None and target.price is not None:
            return prices.cost(usage, target.price)  # configured: nothing to look up
        key = (pr.provider.spec.kind, model)
        price = self._prices.get(key, _UNKNOWN)
        if price is _UNKNOWN:
            price = prices.lookup(pr.provider.spec.kind, model)
            if len(self._prices) >= _CANDIDATE_CACHE_MAX:
                self._prices.clear()
            self._prices[key] = price
        return prices.cost(usage, price)  # type: ignore[arg-type]

    def _breaker_policy(self, key: Hashable) -> BreakerPolicy:
        provider_name = key[0] if isinstance(key, tuple) else key
        provider = self.settings.providers.get(str(provider_name))
        return provider.breaker if provider is not None else BreakerPolicy()

    def orphans(self, previous: Runtime) -> list[Upstream]:
        """The previous runtime's upstream pools this one does not use."""
        kept = {id(p.upstream) for p in self.providers.values()}
        return [p.upstream for p in previous.providers.values() if id(p.upstream) not in kept]

    def retain_traffic(self) -> None:
        """Forget cooldowns, breakers, buckets and statistics of what this config removed."""
        providers = set(self.providers)
        labels = {c.label for p in self.providers.values() for c in p.credentials}
        keys = {k.name for k in self.settings.keys}
        targets = {target_name(t) for m in self.settings.models for t in m.targets}

        def first_in(names: set[str]) -> Callable[[Hashable], bool]:
            return lambda key: isinstance(key, tuple) and key[0] in names

        t = self.traffic
        t.cooldowns.retain_where(first_in(labels | providers))
        t.breakers.retain_where(first_in(providers))
        t.target_limits.retain_where(first_in(labels))
        t.key_limits.retain_where(keys.__contains__)
        for name in [n for n in t.stats if n not in targets]:
            del t.stats[name]

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.upstream.aclose()


class GatewayState:
    """What the gateway holds across config reloads: the current runtime, the accounting
    (ledger, usage recorder, metrics), the response cache and its background tasks."""

    __slots__ = ("cache", "draining", "in_flight", "ledger", "metrics", "recorder", "runtime",
                 "started_at", "tasks")

    def __init__(self, runtime: Runtime, ledger: Ledger, metrics: Metrics,
                 recorder: Recorder | None) -> None:
        self.runtime = runtime
        self.ledger = ledger
        self.metrics = metrics
        self.recorder = recorder  # None: usage recording is off (`usage.store: none`)
        # Entries outlive a reload; a reload that changes `cache:` sets `cache.settings`.
        self.cache = ResponseCache(runtime.settings.cache)
        self.in_flight = 0
        self.draining = False  # a shutdown began: /health says so while requests finish
        self.started_at = time.time()
        # Background tasks (health checks) the gateway cancels when it stops.
        self.tasks: list[asyncio.Task[None]] = []


STATE = web.AppKey("sluice_state", GatewayState)
