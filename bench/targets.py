"""The servers a run starts: the fake upstream and the two proxies under test."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.procs import LOAD_CORE, PROXY_CORE, Proc, free_port, spawn, wait_http
from bench.workloads import MODEL, TO_ANTHROPIC, TO_OPENAI

__all__ = [
    "ADMIN_KEY",
    "UPSTREAM_KEY_REF",
    "Target",
    "start_baseline",
    "start_gateway",
    "start_sluice",
    "start_upstream",
]

_READY_S = 10.0  # the gateway must answer within this, or its column is skipped
_UPSTREAM_KEY_ENV = "BENCH_UP_KEY"
UPSTREAM_KEY_REF = f"env:{_UPSTREAM_KEY_ENV}"
# The operations API's key, for configs that switch it on (`admin: {key: env:BENCH_ADMIN_KEY}`).
_ADMIN_KEY_ENV = "BENCH_ADMIN_KEY"
ADMIN_KEY = "sk-bench-admin"
_DATA_DIR_ENV = "SLUICE_DATA_DIR"  # where the gateway keeps its SQLite usage file and spill
_CLAUDE = "claude-sonnet-4-6"  # the upstream model behind `to-anthropic`


@dataclass
class Target:
    """Where the load goes: `proc` is the proxy under test, None when going direct to upstream."""

    name: str
    port: int
    proc: Proc | None = None
    skipped: str = ""


def _env() -> dict[str, str]:
    return {
        **os.environ,
        _UPSTREAM_KEY_ENV: "sk-bench-upstream",
        _ADMIN_KEY_ENV: ADMIN_KEY,
        "PYTHONUNBUFFERED": "1",
    }


def start_upstream(
    stack: ExitStack,
    log_dir: Path,
    name: str = "upstream",
    chunk_delay: float = 0.0,
    switches: tuple[str, ...] = (),
) -> tuple[Target, Proc]:
    """The fake upstream, as the `direct` target and as the process whose CPU is also read;
    `switches` are more of bench.upstream's options (429s, the call log)."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.upstream",
        "--port",
        str(port),
        "--chunk-delay",
        str(chunk_delay),
        *switches,
    ]
    proc = spawn(name, argv, LOAD_CORE, log_dir, _env())
    stack.callback(proc.stop)
    if (why := wait_http(proc, port, _READY_S)) is not None:
        raise RuntimeError(f"fake upstream not ready: {why}\n{proc.log_tail()}")
    return Target("direct", port, None), proc


def start_baseline(
    stack: ExitStack, log_dir: Path, upstream: Target, name: str = "baseline"
) -> Target:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.baseline_proxy",
        "--port",
        str(port),
        "--upstream",
        f"http://127.0.0.1:{upstream.port}",
    ]
    proc = spawn(name, argv, PROXY_CORE, log_dir, _env())
    stack.callback(proc.stop)
    if (why := wait_http(proc, port, _READY_S)) is not None:
        raise RuntimeError(f"baseline proxy not ready: {why}\n{proc.log_tail()}")
    return Target("baseline", port, proc)


def _sluice_config(path: Path, port: int, upstream: Target) -> None:
    """Two providers of different kinds on the one fake upstream; the core workloads' model and
    `to-openai` both go to the OpenAI one, `to-anthropic` to the Anthropic one."""
    up = f"http://127.0.0.1:{upstream.port}"
    key = UPSTREAM_KEY_REF
    path.write_text(
        f"""server: {{host: 127.0.0.1, port: {port}}}
providers:
  oai: {{kind: openai, base_url: "{up}/v1", api_key: {key}}}
  ant: {{kind: anthropic, base_url: "{up}", api_key: {key}}}
models:
  {MODEL}:
    targets:
      - {{provider: oai, model: {MODEL}}}
  {TO_OPENAI}:
    targets:
      - {{provider: oai, model: {MODEL}}}
  {TO_ANTHROPIC}:
    targets:
      - {{provider: ant, model: {_CLAUDE}}}
"""
    )


def _sluice_argv(config: Path, port: int) -> list[str]:
    script = Path(sys.executable).with_name("sluice")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "proxy"]
    return [*head, "serve", "--config", str(config), "--port", str(port)]


def start_sluice(stack: ExitStack, log_dir: Path, upstream: Target, name: str = "sluice") -> Target:
    """The gateway, or a Target with `skipped` saying why it could not be measured."""
    port = free_port()
    config = log_dir / f"{name}.yaml"
    _sluice_config(config, port, upstream)
    return _start(stack, log_dir, name, config, port)


def start_gateway(
    stack: ExitStack, log_dir: Path, name: str, config_text: Callable[[int], str]
) -> Target:
    """The gateway on the config `config_text(port)` returns (its listen port is chosen here);
    a Target with `skipped` saying why when it does not come up."""
    port = free_port()
    config = log_dir / f"{name}.yaml"
    config.write_text(config_text(port))
    return _start(stack, log_dir, name, config, port)


def _start(stack: ExitStack, log_dir: Path, name: str, config: Path, port: int) -> Target:
    # Each gateway keeps its usage store (SQLite file, spill file) in a dir of its own under the
    # run's temporary dir: never the repo's ./.sluice, never shared with another gateway's.
    data_dir = log_dir / f"{name}.data"
    env = {**_env(), _DATA_DIR_ENV: str(data_dir)}
    try:
        proc = spawn(name, _sluice_argv(config, port), PROXY_CORE, log_dir, env)
    except OSError as e:
        return Target("sluice", port, None, skipped=f"cannot start the gateway: {e}")
    stack.callback(proc.stop)
    if (why := wait_http(proc, port, _READY_S)) is not None:
        proc.stop()
        tail = proc.log_tail(8).replace("\n", "\n    ")
        return Target("sluice", port, None, skipped=f"{why}; its log ends:\n    {tail}")
    return Target("sluice", port, proc)
