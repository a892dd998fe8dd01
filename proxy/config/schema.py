"""The config file's schema: msgspec Structs that validate a parsed YAML document.

Every section forbids unknown fields, so a misspelled key is an error that names its path
(`providers.openai.rpmm: unknown field`); `convert_file` collects every problem at once.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from proxy.config.settings import DEFAULT_HOST, DEFAULT_MAX_BODY, DEFAULT_PORT, ConfigError

Number = int | float
Duration = Number | str  # seconds, or "250ms", "10s", "5m", "1h"
Size = int | str  # bytes, or "512KiB", "32MiB"
Weight = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]

# --- the file's schema ----------------------------------------------------------------------


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class TLSSection(_Section):
    cert: str  # PEM certificate chain
    key: str  # PEM private key


class ServerSection(_Section):
    host: str = DEFAULT_HOST
    port: Port = DEFAULT_PORT
    max_body: Size = DEFAULT_MAX_BODY
    # SIGTERM: in-flight requests and streams get this long to finish before they are ended.
    drain_timeout: Duration = 30
    tls: TLSSection | None = None
    idle_timeout: Duration = 75  # an idle keep-alive connection is closed after this
    max_header: Size = "8KiB"  # the longest request line and header field
    max_headers: Annotated[int, msgspec.Meta(ge=1)] = 128
    watch_config: bool = False  # reload when the config file changes


# An outbound proxy URL (http://, https://, socks5://, socks5h://, credentials allowed), or
# "direct" for none; several rotate.
Proxies = str | list[str]


class CacheSection(_Section):
    ttl: Duration = 300
    max_entries: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    # Answers sampled with temperature > 0 differ on every call; cache them only when asked.
    allow_nondeterministic: bool = False


class AdminSection(_Section):
    key: str | None = None
    allow_remote: bool = False


class LimitSection(_Section):
    rpm: Annotated[int, msgspec.Meta(ge=1)] | None = None  # requests per minute
    tpm: Annotated[int, msgspec.Meta(ge=1)] | None = None  # tokens per minute (prompt + max_tokens)
    # A target over its limit: wait at most this long for room, else try the next candidate.
    max_wait: Duration = 0


Amount = Annotated[float, msgspec.Meta(ge=0)]


class PeriodsSection(_Section):
    """A budget per calendar period (UTC): a day, a week from Monday, a month."""

    day: Amount | None = None
    week: Amount | None = None
    month: Amount | None = None


class BudgetSection(_Section):
    usd: PeriodsSection = msgspec.field(default_factory=PeriodsSection)
    tokens: PeriodsSection = msgspec.field(default_factory=PeriodsSection)  # input + output


class KeySection(_Section):
    name: str
    key: str
    limits: LimitSection = msgspec.field(default_factory=LimitSection)
    budget: BudgetSection = msgspec.field(default_factory=BudgetSection)
    models: list[str] | None = None  # globs of the model names this key may ask for


class QuotaSection(_Section):
    """What a provider account allows per period, for the `quota_aware` strategy."""

    limit: Annotated[float, msgspec.Meta(gt=0)]
    unit: Literal["tokens", "usd", "requests"] = "tokens"
    reset: Literal["daily", "weekly", "monthly"] = "monthly"


class UsageSection(_Section):
    # "sqlite" (a file under data_dir), a path to a SQLite file, "postgresql://...", or "none"
    # to record nothing (no records, no usage metrics, no budgets).
    store: str = "sqlite"
    data_dir: str | None = None  # default: $SLUICE_DATA_DIR, $STATE_DIRECTORY, else ./.sluice
    flush_interval: Duration = 0.2  # a hard kill loses at most this much of records
    queue_max: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    batch_max: Annotated[int, msgspec.Meta(ge=1)] = 2000
    spill_max: Size = "1GiB"  # the spill file's bound on disk while the store is down


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    requests: bool = True  # one JSON line per request
    bodies: bool = False  # prompt and completion bodies in request lines


class TimeoutsSection(_Section):
    connect: Duration = 10
    # Longest silence between two chunks of an answer; never a total, so long streams live.
    read: Duration = 300
    write: Duration = 60
    pool: Duration = 30


class CooldownSection(_Section):
    rate_limit: Duration = 300  # used only when a 429 names no time
    error: Duration = 60
    threshold: Annotated[int, msgspec.Meta(ge=1)] = 5
    window: Duration = 60
    cap: Duration = 600  # no provider-given time is honoured beyond this


class BreakerSection(_Section):
    failure_ratio: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    window: Duration = 60
    min_volume: Annotated[int, msgspec.Meta(ge=1)] = 10
    open_for: Duration = 30
    half_open_probes: Annotated[int, msgspec.Meta(ge=1)] = 2
    close_after: Annotated[int, msgspec.Meta(ge=1)] = 2


class RetrySection(_Section):
    # Passes over a model's candidates (its targets, then its fallback groups' targets).
    attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 2
    backoff: Duration = 0.2  # base of the exponential backoff between passes (full jitter)
    max_backoff: Duration = 5
    deadline: Duration = 60  # no new attempt starts after this long


class RuleSection(_Section):
    name: str
    model: str  # the model group the request goes to
    tokens_over: Annotated[int, msgspec.Meta(ge=0)] | None = None
    model_glob: str | None = None  # the requested name, e.g. "*haiku*"
    thinking: bool | None = None
    tool: str | None = None
    key: str | None = None  # a gateway key's name


class RoutingSection(_Section):
    aliases: dict[str, str] = {}
    rules: list[RuleSection] = []


class HealthCheckSection(_Section):
    interval: Duration = 30
    timeout: Duration = 5
    path: str | None = None  # after base_url; default: the provider's model list


class ProviderSection(_Section):
    kind: str
    base_url: str | None = None
    api_key: str | None = None
    api_keys: list[str] | None = None
    headers: dict[str, str] = {}
    timeouts: TimeoutsSection = msgspec.field(default_factory=TimeoutsSection)
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 512
    cooldown: CooldownSection = msgspec.field(default_factory=CooldownSection)
    breaker: BreakerSection = msgspec.field(default_factory=BreakerSection)
    # Per credential and upstream model, as the providers count them.
    limits: LimitSection = msgspec.field(default_factory=LimitSection)
    # Off by default: probes spend quota; the answers themselves drive cooldowns and breakers.
    health_check: HealthCheckSection | None = None
    quota: QuotaSection | None = None
    proxy: Proxies | None = None  # default: the top-level `proxy`, else $HTTPS_PROXY/$NO_PROXY


class TargetSection(_Section):
    provider: str
    # None: the name the caller asked for (for glob routes such as "*" or "gpt-*").
    model: str | None = None
    weight: Weight = 1
    priority: int = 0  # the `priority` strategy tries lower numbers first
    # USD per 1M tokens: a number for input and output alike, or {input, output, cached_input,
    # cache_write}; overrides the built-in price table for cost and the `cost` strategy.
    price: float | dict[str, float] | None = None


class ModelSection(_Section):
    targets: Annotated[list[TargetSection], msgspec.Meta(min_length=1)]
    # Model groups tried, in order, once every target of this one failed.
    fallbacks: list[str] = []
    # Model groups tried when an upstream says the prompt is over its context window.
    context_window_fallbacks: list[str] = []
    strategy: Literal["round_robin", "weighted", "least_busy", "latency", "cost", "priority",
                      "quota_aware"] = "round_robin"
    cache: bool = False  # answer repeated requests from the response cache


class ConfigFile(_Section):
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    admin: AdminSection = msgspec.field(default_factory=AdminSection)
    keys: list[KeySection] = []
    providers: dict[str, ProviderSection] = {}
    models: dict[str, ModelSection] = {}
    retry: RetrySection = msgspec.field(default_factory=RetrySection)
    routing: RoutingSection = msgspec.field(default_factory=RoutingSection)
    usage: UsageSection = msgspec.field(default_factory=UsageSection)
    log: LogSection = msgspec.field(default_factory=LogSection)
    proxy: Proxies | None = None  # every provider's outbound proxy unless it names its own
    cache: CacheSection = msgspec.field(default_factory=CacheSection)


# --- parsing helpers ------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1 << 10, "mb": 10**6, "mib": 1 << 20,
               "gb": 10**9, "gib": 1 << 30, None: 1}


def parse_duration(value: Duration) -> float:
    """Seconds from a number or a string such as "250ms", "10s", "5m", "1h"."""
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    m = _DURATION_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration (use e.g. 500ms, 10s, 5m, 1h)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(value: Size) -> int:
    """Bytes from a number or a string such as "512KiB", "32MiB"."""
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("a size must be positive")
        return value
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a size (use e.g. 512KiB, 32MiB)")
    unit = m.group(2).lower() if m.group(2) else None
    return int(m.group(1)) * _SIZE_UNITS[unit]


def _msgspec_problem(prefix: str, err: msgspec.ValidationError) -> str:
    """msgspec's message with our path: 'Object contains unknown field `rpmm` - at `$.x`'
    under prefix 'providers.openai' becomes 'providers.openai.x.rpmm: unknown field'.
    """
    text = str(err)
    where = ""
    if " - at `$" in text:
        text, _, at = text.partition(" - at `$")
        where = at.rstrip("`").lstrip(".")
    path = ".".join(p for p in (prefix, where) if p)
    unknown = re.match(r"Object contains unknown field `(.+)`", text)
    if unknown:
        return f"{path + '.' if path else ''}{unknown.group(1)}: unknown field"
    missing = re.match(r"Object missing required field `(.+)`", text)
    if missing:
        return f"{path + '.' if path else ''}{missing.group(1)}: required field is missing"
    return f"{path or '(top level)'}: {text}"


def convert_file(raw: Any) -> ConfigFile:
    """Validate a parsed YAML document, naming dict entries by their keys in every message."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): the config must be a mapping of sections"])
    problems: list[str] = []
    sections: dict[str, Any] = {}
    for name, typ in (("providers", ProviderSection), ("models", ModelSection)):
        entries = raw.get(name) or {}
        if not isinstance(entries, dict):
            problems.append(f"{name}: must be a mapping of names to entries")
            continue
        converted = {}
        for key, value in entries.items():
            try:
                converted[str(key)] = msgspec.convert(value, typ)
            except msgspec.ValidationError as err:
                problems.append(_msgspec_problem(f"{name}.{key}", err))
        sections[name] = converted
    rest = {k: v for k, v in raw.items() if k not in ("providers", "models")}
    try:
        top = msgspec.convert(rest, ConfigFile)
    except msgspec.ValidationError as err:
        problems.append(_msgspec_problem("", err))
        top = ConfigFile()
    if problems:
        raise ConfigError(problems)
    return msgspec.structs.replace(top, **sections)


