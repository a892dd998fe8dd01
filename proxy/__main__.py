"""The `sluice` command: serve, check-config, version."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

import uvloop

from proxy.config import ConfigError, Settings, default_settings, load_settings
from proxy.log import configure
from proxy.runtime import VERSION
from proxy.server import check_listen_address, serve

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
    lines.append("models:")
    for m in s.models:
        lines.append(f"  {m.name}")
        for t in m.targets:
            lines.append(f"    -> {t.provider.name}: {t.model or '(the requested name)'}"
                         f"  weight={t.weight}")
    lines.append("also: <provider>/<model> for every provider above")
    return "\n".join(lines)


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
    p_serve.add_argument("--log-level", default="info",
                         choices=["debug", "info", "warning", "error"])
    p_check = sub.add_parser("check-config", help="validate a config file and print its routes",
                             description="Validate a config file; print the resolved routes "
                             "with secrets redacted. Exit 2 if it is invalid.")
    p_check.add_argument("file", nargs="?", help="YAML config (default: the embedded default)")
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
    try:
        settings = _settings(args.config)
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        settings = dataclasses.replace(settings, **overrides) if overrides else settings
        check_listen_address(settings)
    except ConfigError as err:
        return _fail(err)
    configure(args.log_level)
    uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
