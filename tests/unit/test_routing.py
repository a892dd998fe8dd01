"""Aliases and routing rules: the first rule whose every condition holds picks the group."""

from __future__ import annotations

from adapters.openai import decode_envelope
from proxy.calls import Call
from proxy.config import Rule
from proxy.routing import Rules

RULES = Rules(
    {"claude-3-5-sonnet-latest": "sonnet", "small": "cheap"},
    (Rule("long", "long-context", tokens_over=1000),
     Rule("background", "cheap", model_glob="*haiku*"),
     Rule("thinker", "reasoner", thinking=True),
     Rule("searcher", "search", tool="web_search"),
     Rule("team-b", "team-b-group", key="team-b")),
)


def _call(body: bytes, dialect: str = "anthropic") -> Call:
    env = decode_envelope(body)
    return Call(dialect, "chat", body, env.model, env.stream, env)  # type: ignore[arg-type]


def test_aliases_and_rules_in_order() -> None:
    plain = _call(b'{"model":"claude-3-5-sonnet-latest","messages":[]}')
    assert RULES.apply(plain, "team-a", 10) == ("sonnet", None)
    assert RULES.apply(plain, "team-a", 5000) == ("long-context", "long")
    haiku = _call(b'{"model":"claude-haiku-4-5","messages":[]}')
    assert RULES.apply(haiku, "team-a", 10) == ("cheap", "background")
    assert RULES.apply(plain, "team-b", 10) == ("team-b-group", "team-b")


def test_thinking_in_each_dialects_words() -> None:
    on = _call(b'{"model":"m","thinking":{"type":"enabled","budget_tokens":2048}}')
    off = _call(b'{"model":"m","thinking":{"type":"disabled"}}')
    effort = _call(b'{"model":"m","reasoning_effort":"high"}', "openai")
    none = _call(b'{"model":"m","reasoning_effort":"none"}', "openai")
    assert RULES.apply(on, "k", 1)[1] == "thinker"
    assert RULES.apply(off, "k", 1)[1] is None
    assert RULES.apply(effort, "k", 1)[1] == "thinker"
    assert RULES.apply(none, "k", 1)[1] is None
    gemini = Call("gemini", "chat", b'{"generationConfig":{"thinkingConfig":{"thinkingBudget":512}}}',
                  "gemini-2.5-flash", False)
    assert RULES.apply(gemini, "k", 1)[1] == "thinker"


def test_tools_by_name_in_every_shape() -> None:
    anthropic_server = _call(b'{"model":"m","tools":[{"type":"web_search_20250305","name":"web_search"}]}')
    openai_fn = _call(b'{"model":"m","tools":[{"type":"function","function":{"name":"web_search"}}]}',
                      "openai")
    gemini = Call("gemini", "chat",
                  b'{"tools":[{"functionDeclarations":[{"name":"web_search"}]}]}', "g", False)
    other = _call(b'{"model":"m","tools":[{"name":"Bash","input_schema":{}}]}')
    for call in (anthropic_server, openai_fn, gemini):
        assert RULES.apply(call, "k", 1) == ("search", "searcher")
    assert RULES.apply(other, "k", 1)[1] is None


def test_no_aliases_or_rules_is_falsy() -> None:
    assert not Rules({}, ())
    assert RULES
