"""Claude Code (`claude -p`, npm @anthropic-ai/claude-code) through Sluice to providers of
another dialect: it speaks Anthropic Messages (always streamed, `?beta=true`, ~76 KB bodies with
two dozen tools, `cache_control`, `thinking`, `context_management`, `output_config`)."""

from __future__ import annotations

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

PROVIDERS: list[Dialect] = ["openai", "gemini"]
QUESTION = "What is the capital of France?"


def claude(bin_dir: Path, gw: Gateway, home: Path, prompt: str, *flags: str) -> CliRun:
    env = cli_env(home, ANTHROPIC_BASE_URL=gw.url, ANTHROPIC_API_KEY=GATEWAY_KEY,
                  CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
    argv = [str(bin_dir / "claude"), "-p", prompt, "--output-format", "json", *flags]
    return run_cli(argv, env, home.parent / "project")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_plain_question_is_answered(provider: Dialect, bin_dir: Path, gateways: Gateways,
                                    clean_fakes: dict[Dialect, Fake], home: Path) -> None:
    fake, gw = clean_fakes[provider], gateways[provider]
    fake.behavior.script = script = Script(provider)
    run = claude(bin_dir, gw, home, QUESTION)
    why = report(run, gw, fake)
    assert run.returncode == 0, why
    out = run.json()
    assert (out["type"], out["subtype"], out["is_error"]) == ("result", "success", False), why
    # The fake echoes the last user message: the prompt crossed, and the answer came back.
    assert out["result"].startswith("echo: "), why
    assert QUESTION in out["result"], why
    assert "echo" in script.steps and "tool_call" not in script.steps, why


@pytest.mark.parametrize("provider", PROVIDERS)
def test_bash_tool_result_goes_back_to_the_model(
        provider: Dialect, bin_dir: Path, gateways: Gateways,
        clean_fakes: dict[Dialect, Fake], home: Path) -> None:
    command, printed = shell_probe()
    fake, gw = clean_fakes[provider], gateways[provider]
    fake.behavior.script = script = Script(provider, tool="Bash", command=command)
    prompt = f"Run the shell command `{command}` and tell me what it printed."
    # As root, --dangerously-skip-permissions is refused; allowing Bash is all a turn needs.
    run = claude(bin_dir, gw, home, prompt, "--allowedTools", "Bash")
    why = report(run, gw, fake)
    assert run.returncode == 0, why
    out = run.json()
    assert (out["subtype"], out["is_error"]) == ("success", False), why
    assert script.steps.count("tool_call") == 1, why
    assert script.steps[-1] == "final", why
    assert any(printed in r for r in script.results), why
    assert out["result"].startswith(FINAL_PREFIX), why
    assert printed in out["result"], why
    assert out["num_turns"] == 2, why
