"""Loading a config: the file read and validated, its references checked, secrets looked up.

A file is validated whole before anything starts: an unknown or misspelled key, a wrong type, an
unknown provider kind, a target naming a missing provider or an unset `env:` secret is an error
that names its path. Every problem is reported at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from adapters.providers import REGISTRY
from proxy.breaker import BreakerPolicy
from proxy.config.schema import (
    BudgetSection,
    ConfigFile,
    ModelSection,
    PeriodsSection,
    ProviderSection,
    ServerSection,
    UsageSection,
    convert_file,
    parse_duration,
    parse_size,
)
from proxy.config.settings import (
    Budget,
    CacheSettings,
    ConfigError,
    Credential,
    GatewayKey,
    HealthCheck,
    LogSettings,
    ModelRoute,
    Period,
    Provider,
    Quota,
    RetryPolicy,
    Rule,
    ServerSettings,
    Settings,
    Target,
    UsageSettings,
)
from proxy.cooldown import CooldownPolicy
from proxy.limits import RateLimit
from proxy.log import redact_url
from proxy.prices import parse_price
from proxy.upstream import PoolLimits, Timeouts

# --- resolution: the file's references checked and secrets looked up -----------------------


class _Resolver:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        # The top-level `proxy`, for providers that name none (None: not configured).
        self.default_proxies: tuple[str, ...] | None = None

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
            quota=None if sec.quota is None else Quota(
                limit=sec.quota.limit, unit=sec.quota.unit, period=_PERIODS[sec.quota.reset]),
            proxies=() if spec.builtin else self.proxies(
                f"{path}.proxy", sec.proxy, self.default_proxies, base_url),
        )

    def server(self, sec: ServerSection) -> ServerSettings | None:
        drain = self.number("server.drain_timeout", parse_duration, sec.drain_timeout)
        idle = self.number("server.idle_timeout", parse_duration, sec.idle_timeout)
        header = self.number("server.max_header", parse_size, sec.max_header)
        if sec.tls is not None:
            for name in ("cert", "key"):
                if not Path(getattr(sec.tls, name)).is_file():
                    self.problems.append(f"server.tls.{name}: no such file "
                                         f"{getattr(sec.tls, name)!r}")
        if drain is None or idle is None or header is None:
            return None
        return ServerSettings(drain_timeout=drain, idle_timeout=idle, max_header=header,
                              max_headers=sec.max_headers, watch_config=sec.watch_config,
                              tls_cert=sec.tls.cert if sec.tls else None,
                              tls_key=sec.tls.key if sec.tls else None)

    def proxies(self, path: str, value: str | list[str] | None, fallback: tuple[str, ...] | None,
                base_url: str) -> tuple[str, ...]:
        """The provider's proxies: its own, else the top-level ones, else the environment's
        ($HTTPS_PROXY / $HTTP_PROXY, unless $NO_PROXY names its host). "direct": none."""
        if value is None and fallback is not None:
            return fallback
        if value is None:
            found = _env_proxy(base_url, self.env)
            self._check_proxies(f"{path} (from the environment's HTTPS_PROXY/HTTP_PROXY)",
                                found, listed=False)
            return found
        urls = [value] if isinstance(value, str) else list(value)
        if not urls:
            self.problems.append(f"{path}: an empty list (use \"direct\" for no proxy)")
        if "direct" in urls:
            if len(urls) > 1:
                self.problems.append(f"{path}: \"direct\" cannot be mixed with proxies")
            return ()
        self._check_proxies(path, urls, listed=not isinstance(value, str))
        return tuple(urls)

    def _check_proxies(self, path: str, urls: Sequence[str], *, listed: bool) -> None:
        for i, url in enumerate(urls):
            where = f"{path}[{i}]" if listed else path
            try:
                parts = urlsplit(url)
                port = parts.port
            except ValueError:
                port = None
                parts = urlsplit("")
            if parts.scheme not in _PROXY_SCHEMES or not parts.hostname or not port:
                self.problems.append(
                    f"{where}: {redact_url(url)!r} is not a proxy URL (scheme://host:port with "
                    f"scheme one of {', '.join(_PROXY_SCHEMES)}, or \"direct\")")

    def usage(self, sec: UsageSection, env: Mapping[str, str]) -> UsageSettings | None:
        flush = self.number("usage.flush_interval", parse_duration, sec.flush_interval)
        spill = self.number("usage.spill_max", parse_size, sec.spill_max)
        store = sec.store.strip()
        if not store:
            self.problems.append("usage.store: empty (use sqlite, a file path, "
                                 "postgresql://..., or none)")
        if flush is None or spill is None or not store:
            return None
        if flush <= 0:
            self.problems.append("usage.flush_interval: must be above 0")
            return None
        data_dir = sec.data_dir or env.get("SLUICE_DATA_DIR") or env.get("STATE_DIRECTORY") \
            or ".sluice"
        return UsageSettings(store=store, data_dir=Path(data_dir), flush_interval=flush,
                             queue_max=sec.queue_max, batch_max=sec.batch_max, spill_max=spill)

    def model(self, name: str, sec: ModelSection, providers: Mapping[str, Provider]) -> ModelRoute:
        targets = []
        for i, t in enumerate(sec.targets):
            provider = providers.get(t.provider)
            if provider is None:
                self.problems.append(
                    f"models.{name}.targets[{i}].provider: no provider named {t.provider!r}")
                continue
            price = None
            if t.price is not None:
                price = self.number(f"models.{name}.targets[{i}].price",
                                    partial(parse_price, kind=provider.spec.kind), t.price)
            targets.append(Target(provider=provider, model=t.model, weight=t.weight,
                                  priority=t.priority, price=price))
        if targets and not any(t.weight for t in targets):
            self.problems.append(f"models.{name}: every target has weight 0")
        return ModelRoute(name=name, targets=tuple(targets), fallbacks=tuple(sec.fallbacks),
                          strategy=sec.strategy,
                          context_window_fallbacks=tuple(sec.context_window_fallbacks),
                          cache=sec.cache)


def _resolve(cfg: ConfigFile, env: Mapping[str, str], source: str) -> Settings:
    r = _Resolver(env)
    if cfg.proxy is not None:
        r.default_proxies = r.proxies("proxy", cfg.proxy, None, "")
    max_body = r.number("server.max_body", parse_size, cfg.server.max_body)
    admin = r.secret("admin.key", cfg.admin.key) if cfg.admin.key is not None else None
    keys = []
    for i, k in enumerate(cfg.keys):
        cred = r.secret(f"keys[{i}].key", k.key)
        if cred is not None:
            keys.append(GatewayKey(name=k.name, secret=cred.secret,
                                   limits=RateLimit(rpm=k.limits.rpm, tpm=k.limits.tpm),
                                   budgets=_budgets(k.budget),
                                   models=tuple(k.models) if k.models is not None else None))
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
    usage = r.usage(cfg.usage, env)
    server = r.server(cfg.server)
    cache_ttl = r.number("cache.ttl", parse_duration, cfg.cache.ttl)
    if r.problems or usage is None or server is None or cache_ttl is None:
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
        usage=usage,
        log=LogSettings(level=cfg.log.level, requests=cfg.log.requests, bodies=cfg.log.bodies),
        server=server,
        cache=CacheSettings(ttl=cache_ttl, max_entries=cfg.cache.max_entries,
                            allow_nondeterministic=cfg.cache.allow_nondeterministic),
    )


_PERIODS: dict[str, Period] = {"daily": "day", "weekly": "week", "monthly": "month"}
_PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


def _env_proxy(base_url: str, env: Mapping[str, str]) -> tuple[str, ...]:
    """The proxy the environment gives a URL, as curl and requests read it."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https"):
        return ()
    names = ("HTTPS_PROXY", "https_proxy") if parts.scheme == "https" else (
        "HTTP_PROXY", "http_proxy")
    proxy = next((env[n] for n in names if env.get(n)), None)
    if proxy is None:
        return ()
    host = (parts.hostname or "").lower()
    no_proxy = env.get("NO_PROXY") or env.get("no_proxy") or ""
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return ()
        entry = entry.split(":", 1)[0].lstrip(".").lstrip("*.")
        if host == entry or host.endswith("." + entry):
            return ()
    if "://" not in proxy:
        proxy = "http://" + proxy
    return (proxy,)


def _budgets(sec: BudgetSection) -> tuple[Budget, ...]:
    units: tuple[tuple[Literal["usd", "tokens"], PeriodsSection], ...] = (
        ("usd", sec.usd), ("tokens", sec.tokens))
    return tuple(Budget(unit, period, limit) for unit, periods in units
                 for period in ("day", "week", "month")
                 if (limit := getattr(periods, period)) is not None)


def settings_from_mapping(
    raw: Any, env: Mapping[str, str] | None = None, source: str = "config"
) -> Settings:
    try:
        cfg = convert_file(raw)
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

