"""Real CLI clients through the real gateway, against fake providers of another dialect.

`make test-clients` installs the CLIs from npm into `.clients/` and points `SLUICE_CLIENTS` at
their `node_modules/.bin`. One gateway per provider dialect routes every model name a CLI asks
for (`claude-*`, `gemini-*`: main, small/fast and router models alike) to that dialect's fake.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.clients.turns import Dialect
from tests.fakes.anthropic_provider import FakeAnthropic
from tests.fakes.gemini_provider import FakeGemini
from tests.fakes.openai_provider import FakeOpenAI
from tests.harness import Gateway, ThreadLoop

REPO = Path(__file__).resolve().parent.parent.parent
GATEWAY_KEY = "sk-sluice-clients-0123456789"
UPSTREAM_KEYS: dict[Dialect, str] = {
    "openai": "sk-up-openai-clients-111",
    "anthropic": "sk-ant-up-clients-222",
    "gemini": "gemini-up-clients-333",
}
SECRETS = (GATEWAY_KEY, *UPSTREAM_KEYS.values())
UPSTREAM_MODELS: dict[Dialect, str] = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4-6",
    "gemini": "gemini-2.5-flash",
}
# A CLI turn through a local fake takes a few seconds; the bound is for a wedged client.
CLI_TIMEOUT = 120.0
STOP_TIMEOUT = 5.0
# How much of a CLI's output and of the gateway log a failure message shows.
TAIL = 4000

Fake = FakeOpenAI | FakeAnthropic | FakeGemini


def clients_bin() -> Path:
    path = Path(os.environ.get("SLUICE_CLIENTS", REPO / ".clients" / "node_modules" / ".bin"))
    missing = [name for name in ("claude", "gemini") if not (path / name).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found in {path}: run `make test-clients`, which "
                    "installs the CLIs from npm", pytrace=False)
    return path


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return clients_bin()


@pytest.fixture(scope="session")
def fake_loop() -> Iterator[ThreadLoop]:
    loop = ThreadLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def fakes(fake_loop: ThreadLoop) -> Iterator[dict[Dialect, Fake]]:
    # Every fake stays strict (`forbid_extra_fields=True`): what the gateway sends them must be
    # a body the official SDK types accept, whatever extra fields the CLIs put in theirs.
    made: dict[Dialect, Fake] = {
        "openai": FakeOpenAI(prefix="/v1", api_key=UPSTREAM_KEYS["openai"],
                             forbidden_values=(GATEWAY_KEY,)),
        "anthropic": FakeAnthropic(api_key=UPSTREAM_KEYS["anthropic"],
                                   forbidden_values=(GATEWAY_KEY,)),
        "gemini": FakeGemini(api_key=UPSTREAM_KEYS["gemini"], forbidden_values=(GATEWAY_KEY,)),
    }
    for fake in made.values():
        fake_loop.run(fake.start())
    yield made
    for fake in made.values():
        fake_loop.run(fake.stop())


def gateway_config(dialect: Dialect, fake: Fake) -> str:
    model = UPSTREAM_MODELS[dialect]
    return textwrap.dedent(f"""\
        keys:
          - {{name: cli, key: env:SLUICE_KEY_CLI}}
        providers:
          up: {{kind: {dialect}, base_url: "{fake.base_url}", api_key: env:UP_KEY}}
        models:
          "claude-*": {{targets: [{{provider: up, model: {model}}}]}}
          "gemini-*": {{targets: [{{provider: up, model: {model}}}]}}
        """)


class Gateways(dict[Dialect, Gateway]):
    """A gateway per provider dialect, started on first use."""

    def __init__(self, tmp: pytest.TempPathFactory, fakes: dict[Dialect, Fake]) -> None:
        super().__init__()
        self._tmp, self._fakes = tmp, fakes

    def __missing__(self, dialect: Dialect) -> Gateway:
        gw = Gateway(self._tmp.mktemp(f"gw-{dialect}"),
                     gateway_config(dialect, self._fakes[dialect]),
                     {"SLUICE_KEY_CLI": GATEWAY_KEY, "UP_KEY": UPSTREAM_KEYS[dialect]})
        self[dialect] = gw.start()
        return gw


@pytest.fixture(scope="session")
def gateways(tmp_path_factory: pytest.TempPathFactory, fakes: dict[Dialect, Fake]
             ) -> Iterator[Gateways]:
    gws = Gateways(tmp_path_factory, fakes)
    yield gws
    leaked = []
    for dialect, gw in gws.items():
        gw.stop()
        leaked += [f"{dialect}: {s[:8]}…" for s in SECRETS if s in gw.log()]
    assert not leaked, f"a secret reached a gateway log: {leaked}"


@pytest.fixture
def clean_fakes(fakes: dict[Dialect, Fake]) -> Iterator[dict[Dialect, Fake]]:
    """The fakes, reset for this test; each one used must end with no malformed request."""
    for fake in fakes.values():
        fake.reset()
    yield fakes
    for fake in fakes.values():
        fake.assert_clean()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh HOME (and XDG dirs) so no user config, login or history of this machine leaks in."""
    for sub in ("home", "home/.config", "home/.cache", "home/.local/share", "project"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    return tmp_path / "home"


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no provider key, proxy or CLI setting of the machine gets through."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "TERM": "dumb",
        "LANG": "C.UTF-8",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "CI": "1",
    }
    env.update(extra)
    return env


def shell_probe() -> tuple[str, str]:
    """A shell command and what it prints, which is not in the command's own text: a quoted
    answer holding it proves the CLI ran the command and sent the result back. No `$(..)` or
    `$((..))`: Gemini CLI blocks substitutions ("Command injection detected")."""
    token = secrets.token_hex(4)
    return f"printf 'sluice-%s-%s\\n' 42 {token}", f"sluice-42-{token}"


@dataclass
class CliRun:
    argv: list[str]
    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except ValueError:
            raise AssertionError(f"not JSON on stdout:\n{self.stdout[-TAIL:]}") from None


def run_cli(argv: list[str], env: dict[str, str], cwd: Path,
            timeout: float = CLI_TIMEOUT) -> CliRun:
    """Run a CLI to completion; at the timeout, kill its process group (it runs shells)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=STOP_TIMEOUT)
        code = None
    return CliRun(argv, code, out, err, time.monotonic() - started)


# Request fields too big to show in a failure message; the rest are shown as sent.
_BULKY = frozenset({"messages", "contents", "tools", "system", "systemInstruction",
                    "system_instruction"})


def _excerpt(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    shown = {k: v if k not in _BULKY else f"<{len(json.dumps(v))} bytes>" for k, v in body.items()}
    return json.dumps(shown)[:600]


def report(run: CliRun, gateway: Gateway, fake: Fake) -> str:
    """Everything needed to tell a CLI problem from a gateway or translation bug: the CLI's
    output, each request the fake got (an excerpt of those it refused) and the gateway log."""
    lines = []
    for r in fake.requests:
        lines.append(f"  {r.method} {r.path} -> {r.status} ({len(r.body)} bytes)")
        if r.status is not None and r.status >= 400:
            lines.append(f"    {_excerpt(r.json)}")
    requests = "\n".join(lines) or "  (none)"
    violations = "\n".join(f"  {v}" for v in fake.violations) or "  (none)"
    return (f"\n$ {' '.join(run.argv[:2])} … exit {run.returncode} after {run.seconds:.1f}s\n"
            f"--- stdout\n{run.stdout[-TAIL:]}\n--- stderr\n{run.stderr[-TAIL:]}\n"
            f"--- fake {type(fake).__name__} requests\n{requests}\n"
            f"--- fake violations\n{violations}\n"
            f"--- gateway log\n{gateway.log()[-TAIL:]}")
