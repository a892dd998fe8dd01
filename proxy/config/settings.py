"""What the gateway runs on: the frozen `Settings` a valid config resolves to.

The rest of the gateway sees only these; secrets are resolved here and never shown (`repr=False`,
credential labels say where a secret came from, not what it is).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from adapters.providers import ProviderSpec
from proxy.breaker import BreakerPolicy
from proxy.cooldown import CooldownPolicy
from proxy.limits import RateLimit
from proxy.prices import Price
from proxy.upstream import PoolLimits, Timeouts

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8317
# OpenAI accepts requests up to about 32 MiB (images as base64 make bodies large); beyond that a
# body is more likely a mistake or an attack than a prompt.
DEFAULT_MAX_BODY = 32 << 20


class ConfigError(Exception):
    """The config cannot be used; `problems` lists each one with its path."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))


# --- what the gateway runs on ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credential:
    # Says where the secret came from (`env:NAME`), never the secret itself.
    label: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    spec: ProviderSpec
    base_url: str
    credentials: tuple[Credential, ...]
    headers: tuple[tuple[str, str], ...]
    timeouts: Timeouts
    limits: PoolLimits
    cooldown: CooldownPolicy
    breaker: BreakerPolicy
    rate_limit: RateLimit
    health_check: HealthCheck | None = None
    max_wait: float = 0.0  # longest wait for room under `rate_limit` before skipping
    quota: Quota | None = None
    # Outbound proxy URLs tried in rotation; empty: connect directly.
    proxies: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class Target:
    provider: Provider
    model: str | None
    weight: int
    priority: int = 0
    price: Price | None = None  # configured; None: the built-in table's, if it knows the model

    def upstream_model(self, requested: str) -> str:
        return self.model if self.model is not None else requested


@dataclass(frozen=True, slots=True)
class ModelRoute:
    name: str
    targets: tuple[Target, ...]
    fallbacks: tuple[str, ...] = ()
    strategy: str = "round_robin"
    context_window_fallbacks: tuple[str, ...] = ()
    cache: bool = False

    @property
    def is_glob(self) -> bool:
        return any(c in self.name for c in "*?[")


@dataclass(frozen=True, slots=True)
class HealthCheck:
    interval: float
    timeout: float
    path: str


@dataclass(frozen=True, slots=True)
class Rule:
    """A routing rule: when every given condition holds, the request goes to `model`."""

    name: str
    model: str
    tokens_over: int | None = None
    model_glob: str | None = None
    thinking: bool | None = None
    tool: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 2
    backoff: float = 0.2
    max_backoff: float = 5.0
    deadline: float = 60.0


Period = Literal["day", "week", "month"]


@dataclass(frozen=True, slots=True)
class Budget:
    """A cap on what one gateway key spends per calendar period (UTC)."""

    unit: Literal["usd", "tokens"]
    period: Period
    limit: float

    @property
    def name(self) -> str:
        return f"budget.{self.unit}.{self.period}"


@dataclass(frozen=True, slots=True)
class Quota:
    """What a provider account allows per period; `quota_aware` prefers the most left."""

    limit: float
    unit: Literal["tokens", "usd", "requests"]
    period: Period


@dataclass(frozen=True, slots=True)
class GatewayKey:
    name: str
    secret: str = field(repr=False)
    limits: RateLimit = field(default_factory=RateLimit)
    budgets: tuple[Budget, ...] = ()
    models: tuple[str, ...] | None = None  # globs of the models it may use; None: all


@dataclass(frozen=True, slots=True)
class UsageSettings:
    store: str = "sqlite"  # "none": recording is off
    data_dir: Path = Path(".sluice")
    flush_interval: float = 0.2
    queue_max: int = 100_000
    batch_max: int = 2000
    spill_max: int = 1 << 30

    @property
    def enabled(self) -> bool:
        return self.store != "none"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Listening: TLS, per-connection bounds and shutdown (the bounds are named here only)."""

    drain_timeout: float = 30.0
    tls_cert: str | None = None
    tls_key: str | None = None
    idle_timeout: float = 75.0
    max_header: int = 8192  # request line and each header field, bytes
    max_headers: int = 128
    watch_config: bool = False


@dataclass(frozen=True, slots=True)
class CacheSettings:
    ttl: float = 300.0
    max_entries: int = 10_000
    allow_nondeterministic: bool = False


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"
    requests: bool = True
    bodies: bool = False


@dataclass(frozen=True, slots=True)
class Settings:
    source: str
    host: str
    port: int
    max_body: int
    admin_key: str | None = field(repr=False)
    admin_allow_remote: bool
    keys: tuple[GatewayKey, ...]
    providers: Mapping[str, Provider]
    # In config order: exact names are looked up first, then globs in this order.
    models: tuple[ModelRoute, ...]
    retry: RetryPolicy
    aliases: Mapping[str, str] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    usage: UsageSettings = field(default_factory=UsageSettings)
    log: LogSettings = field(default_factory=LogSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)

    def secrets(self) -> list[str]:
        """Every secret this config holds, for the logs to mask wherever one turns up."""
        found = [k.secret for k in self.keys] + [self.admin_key or ""]
        found += [c.secret for p in self.providers.values() for c in p.credentials]
        found += [value for p in self.providers.values() for _, value in p.headers]
        urls = [self.usage.store, *(u for p in self.providers.values() for u in p.proxies)]
        found += [urlsplit(u).password or "" for u in urls if "://" in u]
        return [x for x in found if x]


