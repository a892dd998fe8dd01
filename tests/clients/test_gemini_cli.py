"""Gemini CLI (`gemini -p`, npm @google/gemini-cli) through Sluice to providers of another
dialect: it streams `:streamGenerateContent?alt=sse` with `parametersJsonSchema` tools and
`thinkingConfig`, and asks its model router first, without streaming, for JSON
(`responseMimeType: application/json` + `responseJsonSchema`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.clients.conftest import (
    CLI_TIMEOUT,
    GATEWAY_KEY,
    CliRun,
    Fake,
    Gateways,
    cli_env,
    report,
    run_cli,
    shell_probe,
)
from tests.clients.turns import FINAL_PREFIX, Dialect, Script
from tests.harness import Gateway

pytestmark = pytest.mark.timeout(CLI_TIMEOUT + 30)

PROVIDERS: list[Dialect] = ["anthropic", "openai"]
QUESTION = "What is the capital of France?"
# With GOOGLE_GEMINI_BASE_URL set and no setting, the CLI picks its "gateway" auth type, which
# non-interactive mode refuses ("Invalid auth method selected."); the API key type is the one
# that sends GEMINI_API_KEY as x-goog-api-key. The rest keeps it from calling home.
SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
}


def gemini(bin_dir: Path, gw: Gateway, home: Path, prompt: str, *flags: str) -> CliRun:
    (home / ".gemini").mkdir(exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(SETTINGS))
    # GEMINI_CLI_TRUST_WORKSPACE: headless runs refuse an untrusted folder (exit 55).
    env = cli_env(home, GOOGLE_GEMINI_BASE_URL=gw.url, GEMINI_API_KEY=GATEWAY_KEY,
                  GEMINI_CLI_TRUST_WORKSPACE="true")
    argv = [str(bin_dir / "gemini"), "-p", prompt, "--output-format", "json", *flags]
    return run_cli(argv, env, home.parent / "project")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_plain_question_is_answered(provider: Dialect, bin_dir: Path, gateways: Gateways,
                                    clean_fakes: dict[Dialect, Fake], home: Path) -> None:
    fake, gw = clean_fakes[provider], gateways[provider]
    fake.behavior.script = script = Script(provider)
    run = gemini(bin_dir, gw, home, QUESTION)
    why = report(run, gw, fake)
    assert run.returncode == 0, why
    answer = run.json()["response"]
    assert answer.startswith("echo: "), why
    assert QUESTION in answer, why
    # The router's JSON call came through JSON mode, and was answered with JSON.
    assert "json" in script.steps and "echo" in script.steps, why


@pytest.mark.parametrize("provider", PROVIDERS)
def test_shell_tool_result_goes_back_to_the_model(
        provider: Dialect, bin_dir: Path, gateways: Gateways,
        clean_fakes: dict[Dialect, Fake], home: Path) -> None:
    command, printed = shell_probe()
    fake, gw = clean_fakes[provider], gateways[provider]
    fake.behavior.script = script = Script(provider, tool="run_shell_command", command=command)
    prompt = f"Run the shell command `{command}` and tell me what it printed."
    run = gemini(bin_dir, gw, home, prompt, "--approval-mode", "yolo")
    why = report(run, gw, fake)
    assert run.returncode == 0, why
    answer = run.json()["response"]
    assert script.steps.count("tool_call") == 1, why
    assert script.steps[-1] == "final", why
    assert any(printed in r for r in script.results), why
    assert answer.startswith(FINAL_PREFIX), why
    assert printed in answer, why
