"""Model names to routes: exact aliases, provider prefixes, globs (ordering: test_balance)."""

from __future__ import annotations

from proxy.config import settings_from_mapping
from proxy.router import Router

RAW = {
    "providers": {
        "a": {"kind": "openai", "api_key": "ka"},
        "b": {"kind": "openrouter", "api_key": "kb"},
        "echo": {"kind": "echo"},
    },
    "models": {
        "mix": {"targets": [{"provider": "a", "model": "ma", "weight": 3},
                            {"provider": "b", "model": "mb", "weight": 1}]},
        "standby": {"targets": [{"provider": "a", "weight": 1},
                                {"provider": "b", "weight": 0}]},
        "gpt-*": {"targets": [{"provider": "a"}]},
        "*": {"targets": [{"provider": "b", "model": "fallback"}]},
    },
}


def _router() -> Router:
    return Router(settings_from_mapping(RAW, {}))


def test_exact_alias_first_then_prefix_then_globs_in_order() -> None:
    r = _router()
    mix = r.resolve("mix")
    assert mix is not None and mix.name == "mix"
    prefixed = r.resolve("b/qwen/qwen3-coder")
    assert prefixed is not None
    (target,) = prefixed.targets
    assert (target.provider.name, target.upstream_model("b/qwen/qwen3-coder")) == (
        "b", "qwen/qwen3-coder")
    glob = r.resolve("gpt-4.1")
    assert glob is not None and glob.name == "gpt-*"
    assert glob.targets[0].upstream_model("gpt-4.1") == "gpt-4.1"
    catch_all = r.resolve("anything")
    assert catch_all is not None and catch_all.targets[0].upstream_model("anything") == "fallback"


def test_unknown_names_and_builtin_prefix() -> None:
    r = Router(settings_from_mapping({"providers": {"echo": {"kind": "echo"}}}, {}))
    assert r.resolve("nope") is None
    assert r.resolve("echo/x") is None  # the demo provider is not addressable by prefix
    assert r.resolve("a/") is None


def test_listed_shows_named_aliases_only() -> None:
    assert [m.name for m in _router().listed()] == ["mix", "standby"]


def test_adhoc_prefix_routes_are_cached_within_a_bound() -> None:
    r = _router()
    first = r.resolve("a/m1")
    assert r.resolve("a/m1") is first
    for i in range(5000):
        r.resolve(f"a/model-{i}")
    assert len(r._adhoc) <= 4096
