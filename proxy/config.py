"""The config file: its schema (msgspec Structs), loading, validation and secret resolution.

A file is validated whole before anything starts: an unknown or misspelled key, a wrong type, an
unknown provider kind, a target naming a missing provider or an unset `env:` secret is an error
that names its path (`providers.openai.rpmm: unknown field`). Every problem is reported at once.
The result is a frozen `Settings`, the only form the rest of the gateway sees.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from adapters.providers import REGISTRY, ProviderSpec
from proxy.breaker import BreakerPolicy
from proxy.cooldown import CooldownPolicy
from proxy.limits import RateLimit
from proxy.upstream import PoolLimits, Timeouts

__all__ = [
    "DEFAULT_PORT",
    "ConfigError",
    "Credential",
    "GatewayKey",
    "HealthCheck",
    "ModelRoute",
    "Provider",
    "Rule",
    "Settings",
    "Target",
    "default_settings",
    "load_settings",
    "parse_duration",
    "parse_size",
    "settings_from_mapping",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8317
# OpenAI accepts requests up to about 32 MiB (images as base64 make bodies large); beyond that a
# body is more likely a mistake or an attack than a prompt.
DEFAULT_MAX_BODY = 32 << 20

Number = int | float
Duration = Number | str  # seconds, or "250ms", "10s", "5m", "1h"
Size = int | str  # bytes, or "512KiB", "32MiB"
Weight = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class ConfigError(Exception):
    """The config cannot be used; `problems` lists each one with its path."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))


# --- the file's schema ----------------------------------------------------------------------


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class ServerSection(_Section):
    host: str = DEFAULT_HOST
    port: Port = DEFAULT_PORT
    max_body: Size = DEFAULT_MAX_BODY


class AdminSection(_Section):
    key: str | None = None
    allow_remote: bool = False


class LimitSection(_Section):
    rpm: Annotated[int, msgspec.Meta(ge=1)] | None = None  # requests per minute
    tpm: Annotated[int, msgspec.Meta(ge=1)] | None = None  # tokens per minute (prompt + max_tokens)
    # A target over its limit: wait at most this long for room, else try the next candidate.
    max_wait: Duration = 0


class KeySection(_Section):
    name: str
    key: str
    limits: LimitSection = msgspec.field(default_factory=LimitSection)


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


class TargetSection(_Section):
    provider: str
    # None: the name the caller asked for (for glob routes such as "*" or "gpt-*").
    model: str | None = None
    weight: Weight = 1
    priority: int = 0  # the `priority` strategy tries lower numbers first
    price: Annotated[float, msgspec.Meta(ge=0)] | None = None  # USD per 1M tokens, for `cost`


class ModelSection(_Section):
    targets: Annotated[list[TargetSection], msgspec.Meta(min_length=1)]
    # Model groups tried, in order, once every target of this one failed.
    fallbacks: list[str] = []
    # Model groups tried when an upstream says the prompt is over its context window.
    context_window_fallbacks: list[str] = []
    strategy: Literal["round_robin", "weighted", "least_busy", "latency", "cost", "priority",
                      "quota_aware"] = "round_robin"


class ConfigFile(_Section):
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    admin: AdminSection = msgspec.field(default_factory=AdminSection)
    keys: list[KeySection] = []
    providers: dict[str, ProviderSection] = {}
    models: dict[str, ModelSection] = {}
    retry: RetrySection = msgspec.field(default_factory=RetrySection)
    routing: RoutingSection = msgspec.field(default_factory=RoutingSection)


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


@dataclass(frozen=True, slots=True)
class Target:
    provider: Provider
    model: str | None
    weight: int
    priority: int = 0
    price: float | None = None

    def upstream_model(self, requested: str) -> str:
        return self.model if self.model is not None else requested


@dataclass(frozen=True, slots=True)
class ModelRoute:
    name: str
    targets: tuple[Target, ...]
    fallbacks: tuple[str, ...] = ()
    strategy: str = "round_robin"
    context_window_fallbacks: tuple[str, ...] = ()

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


@dataclass(frozen=True, slots=True)
class GatewayKey:
    name: str
    secret: str = field(repr=False)
    limits: RateLimit = field(default_factory=RateLimit)


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


def _convert_file(raw: Any) -> ConfigFile:
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


# --- resolution: the file's references checked and secrets looked up -----------------------


class _Resolver:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def secret(self, path: str, value: str) -> Credential | None:
        if value.startswith("env:"):
            name = value[4:]
            secret = self.env.get(name)
            if not secret:
                self.problems.append(f"{path}: environment variable {name} is not set")
                return None
            return Credential(label=value, secret=secret)
        if not value:
            self.problems.append(f"{path}: empty secret")
            return None
        return Credential(label="inline", secret=value)

    def number(self, path: str, parse: Any, value: Any) -> Any:
        try:
            return parse(value)
        except ValueError as err:
            self.problems.append(f"{path}: {err}")
            return None

    def provider(self, name: str, sec: ProviderSection) -> Provider | None:
        path = f"providers.{name}"
        spec = REGISTRY.get(sec.kind)
        if spec is None:
            kinds = ", ".join(sorted(k for k, s in REGISTRY.items() if not s.builtin))
            self.problems.append(
                f"{path}.kind: unknown provider kind {sec.kind!r} (one of {kinds})")
            return None
        base_url = (sec.base_url or spec.base_url).rstrip("/")
        if not base_url:
            self.problems.append(f"{path}.base_url: required for kind {sec.kind!r}")
        elif not spec.builtin and not base_url.startswith(("http://", "https://")):
            self.problems.append(f"{path}.base_url: must start with http:// or https://")
        if sec.api_key is not None and sec.api_keys is not None:
            self.problems.append(f"{path}: give api_key or api_keys, not both")
        refs = [sec.api_key] if sec.api_key is not None else list(sec.api_keys or [])
        creds = []
        for i, ref in enumerate(refs):
            where = f"{path}.api_key" if sec.api_key is not None else f"{path}.api_keys[{i}]"
            cred = self.secret(where, ref)
            if cred is not None:
                creds.append(Credential(label=f"{name}#{i} ({cred.label})", secret=cred.secret))
        if not refs and spec.key_required:
            self.problems.append(f"{path}: api_key is required for kind {sec.kind!r}")
        t = sec.timeouts
        secs = [self.number(f"{path}.timeouts.{k}", parse_duration, getattr(t, k))
                for k in ("connect", "read", "write", "pool")]
        c, b = sec.cooldown, sec.breaker
        cool = [self.number(f"{path}.cooldown.{k}", parse_duration, getattr(c, k))
                for k in ("rate_limit", "error", "window", "cap")]
        brk = [self.number(f"{path}.breaker.{k}", parse_duration, getattr(b, k))
               for k in ("window", "open_for")]
        max_wait = self.number(f"{path}.limits.max_wait", parse_duration, sec.limits.max_wait)
        if max_wait is None:
            return None
        health = None
        if sec.health_check is not None:
            h = sec.health_check
            every = self.number(f"{path}.health_check.interval", parse_duration, h.interval)
            wait = self.number(f"{path}.health_check.timeout", parse_duration, h.timeout)
            if every is not None and wait is not None:
                health = HealthCheck(max(every, 1.0), wait, h.path or spec.health_path)
        if None in secs or None in cool or None in brk:
            return None
        return Provider(
            name=name,
            spec=spec,
            base_url=base_url,
            credentials=tuple(creds),
            headers=tuple(sec.headers.items()),
            timeouts=Timeouts(connect=secs[0], read=secs[1], write=secs[2], pool=secs[3]),
            limits=PoolLimits(max_connections=sec.max_connections),
            cooldown=CooldownPolicy(rate_limit=cool[0], error=cool[1], threshold=c.threshold,
                                    window=cool[2], cap=cool[3]),
            breaker=BreakerPolicy(failure_ratio=b.failure_ratio, window=brk[0],
                                  min_volume=b.min_volume, open_for=brk[1],
                                  half_open_probes=b.half_open_probes,
                                  close_after=b.close_after),
            rate_limit=RateLimit(rpm=sec.limits.rpm, tpm=sec.limits.tpm),
            health_check=health,
            max_wait=max_wait,
        )

    def model(self, name: str, sec: ModelSection, providers: Mapping[str, Provider]) -> ModelRoute:
        targets = []
        for i, t in enumerate(sec.targets):
            provider = providers.get(t.provider)
            if provider is None:
                self.problems.append(
                    f"models.{name}.targets[{i}].provider: no provider named {t.provider!r}")
                continue
            targets.append(Target(provider=provider, model=t.model, weight=t.weight,
                                  priority=t.priority, price=t.price))
        if targets and not any(t.weight for t in targets):
            self.problems.append(f"models.{name}: every target has weight 0")
        return ModelRoute(name=name, targets=tuple(targets), fallbacks=tuple(sec.fallbacks),
                          strategy=sec.strategy,
                          context_window_fallbacks=tuple(sec.context_window_fallbacks))


def _resolve(cfg: ConfigFile, env: Mapping[str, str], source: str) -> Settings:
    r = _Resolver(env)
    max_body = r.number("server.max_body", parse_size, cfg.server.max_body)
    admin = r.secret("admin.key", cfg.admin.key) if cfg.admin.key is not None else None
    keys = []
    for i, k in enumerate(cfg.keys):
        cred = r.secret(f"keys[{i}].key", k.key)
        if cred is not None:
            keys.append(GatewayKey(name=k.name, secret=cred.secret,
                                   limits=RateLimit(rpm=k.limits.rpm, tpm=k.limits.tpm)))
    names = [k.name for k in cfg.keys]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        r.problems.append(f"keys: the name {dup!r} is used twice")
    secrets = [k.secret for k in keys]
    if len(set(secrets)) != len(secrets):
        r.problems.append("keys: two keys have the same secret")
    providers = {}
    for name, sec in cfg.providers.items():
        p = r.provider(name, sec)
        if p is not None:
            providers[name] = p
    models = tuple(r.model(name, sec, providers) for name, sec in cfg.models.items())
    for route in models:
        for field_name in ("fallbacks", "context_window_fallbacks"):
            for i, group in enumerate(getattr(route, field_name)):
                if group not in cfg.models or group == route.name:
                    r.problems.append(f"models.{route.name}.{field_name}[{i}]: no other model "
                                      f"group named {group!r}")
    known = set(cfg.models) | set(cfg.routing.aliases)
    for i, rule in enumerate(cfg.routing.rules):
        if rule.model not in known:
            r.problems.append(f"routing.rules[{i}].model: no model group or alias named "
                              f"{rule.model!r}")
    for alias, target in cfg.routing.aliases.items():
        if target not in cfg.models:
            r.problems.append(f"routing.aliases.{alias}: no model group named {target!r}")
    rs = cfg.retry
    retry_secs = [r.number(f"retry.{k}", parse_duration, getattr(rs, k))
                  for k in ("backoff", "max_backoff", "deadline")]
    if r.problems:
        raise ConfigError(r.problems, source)
    return Settings(
        source=source,
        host=cfg.server.host,
        port=cfg.server.port,
        max_body=max_body,
        admin_key=admin.secret if admin else None,
        admin_allow_remote=cfg.admin.allow_remote,
        keys=tuple(keys),
        providers=providers,
        models=models,
        retry=RetryPolicy(attempts=rs.attempts, backoff=retry_secs[0],
                          max_backoff=retry_secs[1], deadline=retry_secs[2]),
        aliases=dict(cfg.routing.aliases),
        rules=tuple(Rule(name=x.name, model=x.model, tokens_over=x.tokens_over,
                         model_glob=x.model_glob, thinking=x.thinking, tool=x.tool, key=x.key)
                    for x in cfg.routing.rules),
    )


def settings_from_mapping(
    raw: Any, env: Mapping[str, str] | None = None, source: str = "config"
) -> Settings:
    try:
        cfg = _convert_file(raw)
    except ConfigError as err:
        raise ConfigError(err.problems, source) from None
    return _resolve(cfg, os.environ if env is None else env, source)


def load_settings(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"cannot read the file: {err.strerror}"], source) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError([f"not valid YAML: {err}"], source) from None
    return settings_from_mapping(raw, env, source)


def default_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The embedded default: the offline `echo` model plus each provider whose key is set.

    Providers are named by their kind, so their models answer as `openrouter/qwen/qwen3-coder`;
    bare `claude-*` and `gemini-*` names go to Anthropic and Gemini, and with OPENAI_API_KEY set
    any other bare name goes to OpenAI, as it would without a gateway.
    """
    env = os.environ if env is None else env
    providers: dict[str, Any] = {"echo": {"kind": "echo"}}
    models: dict[str, Any] = {"echo": {"targets": [{"provider": "echo", "model": "echo"}]}}
    for spec in REGISTRY.values():
        if spec.env_key and env.get(spec.env_key):
            providers[spec.kind] = {"kind": spec.kind, "api_key": f"env:{spec.env_key}"}
    # Bare names as each provider's own SDK users write them; globs match in this order.
    for glob, kind in (("claude-*", "anthropic"), ("gemini-*", "gemini"), ("*", "openai")):
        if kind in providers:
            models[glob] = {"targets": [{"provider": kind}]}
    raw = {"providers": providers, "models": models}
    return settings_from_mapping(raw, env, "embedded default")
