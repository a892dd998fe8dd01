"""The `sluice` command: serve, check-config, usage, version."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import sys
import time
from collections.abc import Sequence

import msgspec
import uvloop

from proxy.config import ConfigError, Settings, default_settings, load_settings
from proxy.errors import BadRequest
from proxy.lifecycle import check_listen_address, serve
from proxy.log import configure, redact_url
from proxy.management import parse_time, usage_table
from proxy.runtime import VERSION
from proxy.store import StoreError, open_store

__all__ = ["main"]


def _settings(path: str | None) -> Settings:
    path = path or os.environ.get("SLUICE_CONFIG")
    return load_settings(path) if path else default_settings()


def _describe(s: Settings) -> str:
    lines = [f"config: {s.source}", f"listen: {s.host}:{s.port}",
             f"max body: {s.max_body} bytes",
             "gateway keys: " + (", ".join(k.name for k in s.keys) or "none (loopback only)"),
             "admin key: " + ("set" if s.admin_key else "not set"), "providers:"]
    for p in s.providers.values():
        creds = ", ".join(c.label for c in p.credentials) or "no credential"
        lines.append(f"  {p.name}: kind={p.spec.kind} base_url={p.base_url} [{creds}]")
        if p.proxies:
            lines.append("    via " + ", ".join(redact_url(u) for u in p.proxies))
    lines.append("models:")
    for m in s.models:
        lines.append(f"  {m.name}")
        for t in m.targets:
            lines.append(f"    -> {t.provider.name}: {t.model or '(the requested name)'}"
                         f"  weight={t.weight}")
    lines.append("also: <provider>/<model> for every provider above")
    return "\n".join(lines)


async def _usage(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    if not settings.usage.enabled:
        print("sluice usage: usage recording is off in this config (usage.store: none)",
              file=sys.stderr)
        return 1
    end = parse_time(args.end, "to") if args.end else time.time()
    start = parse_time(args.start, "from") if args.start else end - 30 * 86400
    store = open_store(settings.usage.store, settings.usage.data_dir)
    await store.open()
    try:
        groups = await store.summary(start, end, args.group_by, key=args.key, model=args.model,
                                     provider=args.provider)
    finally:
        await store.close()
    if args.json:
        print(msgspec.json.encode([msgspec.structs.asdict(g) for g in groups]).decode())
        return 0
    print(f"usage from {_iso(start)} to {_iso(end)} ({redact_url(settings.usage.store)})")
    print(usage_table(groups, args.group_by))
    return 0


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _fail(err: ConfigError) -> int:
    print(f"sluice: invalid config ({err.source}):", file=sys.stderr)
    for problem in err.problems:
        print(f"  - {problem}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice", description="A fast LLM API gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="start the gateway",
                             description="Start the gateway (default config: embedded).")
    p_serve.add_argument("--config", help="YAML config file (default: $SLUICE_CONFIG or the "
                         "embedded default)")
    p_serve.add_argument("--host", help="override server.host")
    p_serve.add_argument("--port", type=int, help="override server.port")
    p_serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                         help="override log.level")
    p_check = sub.add_parser("check-config", help="validate a config file and print its routes",
                             description="Validate a config file; print the resolved routes "
                             "with secrets redacted. Exit 2 if it is invalid.")
    p_check.add_argument("file", nargs="?", help="YAML config (default: the embedded default)")
    p_usage = sub.add_parser(
        "usage", help="print a usage report from the store",
        description="Print requests, tokens, cost, errors and latency per key, model, provider "
        "or day, read from the usage store the config names (the gateway need not run).")
    p_usage.add_argument("--config", help="YAML config file (default: $SLUICE_CONFIG or the "
                         "embedded default)")
    p_usage.add_argument("--from", dest="start", help="start: Unix seconds or ISO date/datetime "
                         "(default: 30 days before --to)")
    p_usage.add_argument("--to", dest="end", help="end (default: now)")
    p_usage.add_argument("--group-by", default="model",
                         choices=["key", "model", "provider", "day"])
    p_usage.add_argument("--key", help="only this gateway key")
    p_usage.add_argument("--model", help="only this model")
    p_usage.add_argument("--provider", help="only this provider")
    p_usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_parser("version", help="print the version", description="Print the version.")
    args = parser.parse_args(argv)

    if args.command == "version":
        print(f"sluice {VERSION}")
        return 0
    if args.command == "check-config":
        try:
            settings = load_settings(args.file) if args.file else default_settings()
            check_listen_address(settings)
        except ConfigError as err:
            return _fail(err)
        print(_describe(settings))
        return 0
    if args.command == "usage":
        try:
            return asyncio.run(_usage(args))
        except (ConfigError, BadRequest, StoreError) as err:
            if isinstance(err, ConfigError):
                return _fail(err)
            print(f"sluice usage: {err}", file=sys.stderr)
            return 1
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}

    def load() -> Settings:
        """The config file (again, on a reload), with the command line's overrides."""
        settings = _settings(args.config)
        settings = dataclasses.replace(settings, **overrides) if overrides else settings
        check_listen_address(settings)
        return settings

    try:
        settings = load()
    except ConfigError as err:
        return _fail(err)
    configure(args.log_level or settings.log.level, secrets=settings.secrets())
    try:
        path = args.config or os.environ.get("SLUICE_CONFIG")
        uvloop.run(serve(settings, load=load, path=path))
    except ConfigError as err:  # found at start only: the TLS files do not load
        return _fail(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
