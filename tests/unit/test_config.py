"""Config validation: the contract's example works verbatim; every mistake names its path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy.__main__ import main
from proxy.config import (
    ConfigError,
    default_settings,
    load_settings,
    parse_duration,
    parse_size,
    settings_from_mapping,
)

EXAMPLE = textwrap.dedent("""\
    server: {host: 127.0.0.1, port: 8317}
    admin: {key: env:SLUICE_ADMIN_KEY}
    keys:
      - {name: team-a, key: env:SLUICE_KEY_TEAM_A}
    providers:
      up-openai: {kind: openai, base_url: "http://127.0.0.1:9101/v1", api_key: env:UP_OPENAI_KEY}
      up-router: {kind: openrouter, base_url: "http://127.0.0.1:9103/api/v1", api_keys: [env:K1, env:K2]}
    models:
      gpt-4o-mini:
        targets:
          - {provider: up-openai, model: gpt-4o-mini, weight: 3}
          - {provider: up-router, model: openai/gpt-4o-mini}
    """)
ENV = {"SLUICE_ADMIN_KEY": "adm-secret", "SLUICE_KEY_TEAM_A": "sk-team-a-secret",
       "UP_OPENAI_KEY": "sk-up-openai-secret", "K1": "sk-or-1-secret", "K2": "sk-or-2-secret"}


def _problems(raw: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(raw, env or {})
    return info.value.problems


def test_the_contract_example_loads_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(EXAMPLE)
    s = load_settings(path, ENV)
    assert (s.host, s.port) == ("127.0.0.1", 8317)
    assert s.admin_key == "adm-secret"
    assert [k.name for k in s.keys] == ["team-a"]
    router = s.providers["up-router"]
    assert router.base_url == "http://127.0.0.1:9103/api/v1"
    assert [c.secret for c in router.credentials] == ["sk-or-1-secret", "sk-or-2-secret"]
    assert [c.label for c in router.credentials] == ["up-router#0 (env:K1)", "up-router#1 (env:K2)"]
    (route,) = s.models
    assert [(t.provider.name, t.model, t.weight) for t in route.targets] == [
        ("up-openai", "gpt-4o-mini", 3), ("up-router", "openai/gpt-4o-mini", 1)]


def test_unknown_key_names_its_path() -> None:
    problems = _problems({"providers": {"openai": {"kind": "openai", "api_key": "x", "rpmm": 5}}})
    assert problems == ["providers.openai.rpmm: unknown field"]
    assert _problems({"sever": {}}) == ["sever: unknown field"]
    assert _problems({"server": {"prot": 1}}) == ["server.prot: unknown field"]


def test_every_problem_is_reported_at_once() -> None:
    raw = {
        "server": {"port": "eighty"},
        "providers": {"a": {"kind": "nope"}, "b": {"kind": "openai", "api_key": "env:MISSING"}},
        "models": {"m": {"targets": [{"provider": "ghost"}]}, "n": {"targets": []}},
    }
    problems = _problems(raw)
    text = "\n".join(problems)
    assert "server.port: Expected `int`, got `str`" in text
    assert "models.n.targets: Expected `array` of length >= 1" in text
    # Structural errors stop before references are checked; fix them and the rest shows.
    raw["server"] = {}
    raw["models"] = {"m": {"targets": [{"provider": "ghost"}]}}
    problems = _problems(raw)
    assert "providers.a.kind: unknown provider kind 'nope'" in problems[0]
    assert "providers.b.api_key: environment variable MISSING is not set" in problems
    assert "models.m.targets[0].provider: no provider named 'ghost'" in problems


def test_provider_rules() -> None:
    assert _problems({"providers": {"local": {"kind": "openai-compatible"}}}) == [
        "providers.local.base_url: required for kind 'openai-compatible'"]
    assert _problems({"providers": {"o": {"kind": "openai"}}}) == [
        "providers.o: api_key is required for kind 'openai'"]
    assert _problems({"providers": {"o": {"kind": "openai", "api_key": "a", "api_keys": ["b"]}}}
                     ) == ["providers.o: give api_key or api_keys, not both"]
    assert _problems({"providers": {"o": {"kind": "openai", "api_key": "a",
                                          "base_url": "ftp://x"}}}) == [
        "providers.o.base_url: must start with http:// or https://"]
    assert _problems({"providers": {"o": {"kind": "openai", "api_key": "a",
                                          "timeouts": {"read": "forever"}}}}) == [
        "providers.o.timeouts.read: 'forever' is not a duration (use e.g. 500ms, 10s, 5m, 1h)"]
    local = settings_from_mapping(
        {"providers": {"ollama": {"kind": "openai-compatible",
                                  "base_url": "http://127.0.0.1:11434/v1/"}}}, {})
    assert local.providers["ollama"].base_url == "http://127.0.0.1:11434/v1"
    assert local.providers["ollama"].credentials == ()


def test_keys_must_be_distinct() -> None:
    raw = {"keys": [{"name": "a", "key": "s1"}, {"name": "a", "key": "s1"}]}
    assert _problems(raw) == ["keys: the name 'a' is used twice", "keys: two keys have the same secret"]


def test_secrets_never_appear_in_reprs_or_errors() -> None:
    s = settings_from_mapping(
        {"keys": [{"name": "a", "key": "env:K"}],
         "providers": {"o": {"kind": "openai", "api_key": "env:P"}}},
        {"K": "sk-gateway-secret", "P": "sk-provider-secret"})
    text = repr(s)
    assert "sk-gateway-secret" not in text and "sk-provider-secret" not in text


def test_durations_and_sizes() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("5m") == 300
    assert parse_duration(7) == 7.0
    assert parse_size("32MiB") == 32 << 20
    assert parse_size(1024) == 1024
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_embedded_default_switches_providers_on_by_environment() -> None:
    bare = default_settings({})
    assert set(bare.providers) == {"echo"}
    assert [m.name for m in bare.models] == ["echo"]
    full = default_settings({"OPENAI_API_KEY": "a", "OPENROUTER_API_KEY": "b",
                             "ANTHROPIC_API_KEY": "f", "GEMINI_API_KEY": "g",
                             "DEEPSEEK_API_KEY": "c", "GROQ_API_KEY": "d",
                             "DASHSCOPE_API_KEY": "e"})
    assert set(full.providers) == {"echo", "openai", "openrouter", "deepseek", "groq", "qwen",
                                   "anthropic", "gemini"}
    assert full.providers["groq"].base_url == "https://api.groq.com/openai/v1"
    assert full.providers["qwen"].base_url.endswith("/compatible-mode/v1")
    # With OpenAI's key, bare names go to OpenAI as they would without a gateway.
    assert [m.name for m in full.models] == ["echo", "claude-*", "gemini-*", "*"]


def test_check_config_cli_redacts_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(EXAMPLE)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "up-openai: kind=openai base_url=http://127.0.0.1:9101/v1" in out
    assert "-> up-router: openai/gpt-4o-mini  weight=1" in out
    for secret in ENV.values():
        assert secret not in out
    path.write_text(EXAMPLE.replace("weight: 3", "wieght: 3"))
    assert main(["check-config", str(path)]) == 2
    assert "models.gpt-4o-mini.targets[0].wieght: unknown field" in capsys.readouterr().err


def test_non_loopback_without_keys_is_refused(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("server: {host: 0.0.0.0}\n")
    assert main(["check-config", str(path)]) == 2
    assert "not a loopback address, and no gateway keys" in capsys.readouterr().err
