"""Prices: exact costs per token class, name normalisation, unknown models, configured prices."""

from __future__ import annotations

import math

import pytest

from adapters.canonical import Usage
from proxy.prices import BUILTIN, Price, cost, lookup, parse_price

# --- cost -------------------------------------------------------------------------------------


def test_plain_input_and_output() -> None:
    price = Price(2.50, 10.00, cached_input=1.25)
    assert cost(Usage(input_tokens=1_000_000, output_tokens=1_000_000), price) == 12.50
    assert cost(Usage(input_tokens=1_000, output_tokens=500), price) == pytest.approx(0.0075)


def test_each_prompt_token_is_billed_once_at_its_own_rate() -> None:
    # 10,000 prompt tokens: 6,000 read from the cache, 1,000 written to it, 3,000 fresh.
    price = Price(3.00, 15.00, cached_input=0.30, cache_write=3.75)
    usage = Usage(input_tokens=10_000, output_tokens=2_000, cached_tokens=6_000,
                  cache_write_tokens=1_000, reasoning_tokens=500)
    expected = (3_000 * 3.00 + 6_000 * 0.30 + 1_000 * 3.75 + 2_000 * 15.00) / 1e6
    assert cost(usage, price) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.04455)


def test_reasoning_tokens_are_not_billed_twice() -> None:
    price = Price(1.00, 4.00)
    with_reasoning = Usage(input_tokens=100, output_tokens=1_000, reasoning_tokens=900)
    assert cost(with_reasoning, price) == cost(Usage(input_tokens=100, output_tokens=1_000), price)


def test_missing_cache_rates_fall_back_to_the_input_rate() -> None:
    usage = Usage(input_tokens=1_000_000, cached_tokens=400_000, cache_write_tokens=100_000)
    assert cost(usage, Price(2.00, 8.00)) == pytest.approx(2.00)


def test_counts_that_do_not_add_up_never_go_negative() -> None:
    # A provider reporting more cached tokens than prompt tokens: no negative fresh tokens.
    usage = Usage(input_tokens=100, cached_tokens=150)
    assert cost(usage, Price(1.00, 1.00, cached_input=0.10)) == pytest.approx(150 * 0.10 / 1e6)


def test_unknown_price_is_unknown_cost_not_zero() -> None:
    assert cost(Usage(input_tokens=10, output_tokens=10), None) is None
    assert cost(Usage(), Price(1.0, 1.0)) == 0.0


def test_builtin_claude_cache_rates() -> None:
    sonnet = lookup("anthropic", "claude-sonnet-4-5")
    assert sonnet == Price(3.00, 15.00, cached_input=0.30, cache_write=3.75)
    usage = Usage(input_tokens=2_000_000, output_tokens=100_000, cached_tokens=1_000_000,
                  cache_write_tokens=500_000)
    # 0.5M fresh x 3 + 1M x 0.30 + 0.5M x 3.75 + 0.1M x 15
    assert cost(usage, sonnet) == pytest.approx(1.5 + 0.30 + 1.875 + 1.5)


# --- lookup -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "model", "listed"),
    [("openai", "gpt-4o", "gpt-4o"),
     ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
     ("openai", "GPT-4o-Mini-2024-07-18", "gpt-4o-mini"),
     ("openai", "gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
     ("openai", "gpt-5-chat-latest", "gpt-5-chat"),
     ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
     ("anthropic", "claude-opus-4-20250514", "claude-opus-4"),
     ("anthropic", "claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
     ("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku"),
     ("anthropic", "claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
     ("gemini", "models/gemini-2.5-flash", "gemini-2.5-flash"),
     ("gemini", "gemini-2.0-flash-001", "gemini-2.0-flash"),
     ("groq", "meta-llama/llama-4-scout-17b-16e-instruct",
      "meta-llama/llama-4-scout-17b-16e-instruct")],
)
def test_names_resolve_to_their_listing(kind: str, model: str, listed: str) -> None:
    assert lookup(kind, model) is BUILTIN[kind][listed]


def test_openrouter_reuses_the_vendors_price() -> None:
    assert lookup("openrouter", "openai/gpt-4o") is BUILTIN["openai"]["gpt-4o"]
    assert lookup("openrouter", "openai/gpt-4o-2024-11-20") is BUILTIN["openai"]["gpt-4o"]
    assert lookup("openrouter", "google/gemini-2.5-pro") is BUILTIN["gemini"]["gemini-2.5-pro"]
    # OpenRouter spells Claude versions with dots.
    assert (lookup("openrouter", "anthropic/claude-sonnet-4.5")
            is BUILTIN["anthropic"]["claude-sonnet-4-5"])
    assert (lookup("openrouter", "anthropic/claude-3.5-haiku")
            is BUILTIN["anthropic"]["claude-3-5-haiku"])


def test_openrouter_third_party_models_are_unknown() -> None:
    # Open-weight models there are served by third parties at their own prices, not Groq's
    # or OpenAI's, so neither table applies.
    assert lookup("openrouter", "meta-llama/llama-3.3-70b-instruct") is None
    assert lookup("openrouter", "openai/gpt-oss-120b") is None
    assert lookup("openrouter", "gpt-4o") is None


def test_vendor_prefix_is_stripped_within_the_kinds_own_table() -> None:
    assert lookup("openai", "openai/gpt-4.1") is BUILTIN["openai"]["gpt-4.1"]


@pytest.mark.parametrize(
    ("kind", "model"),
    [("openai", "gpt-7"),
     ("openai", "o1-pro-ultra"),
     ("openai", "gpt-5-turbo"),  # not a prefix match onto gpt-5
     ("anthropic", "claude-sonnet-4-5-20250929-v1:0"),
     ("anthropic", "gpt-4o"),  # another kind's model
     ("gemini", "gemini-2.5-flash-preview-05-20"),
     ("deepseek", "deepseek-chat"),  # no built-in DeepSeek prices (see the module)
     ("openai-compatible", "llama3"),
     ("no-such-kind", "gpt-4o"),
     ("openai", ""),
     ("openai", "/")],
)
def test_unknown_models_have_no_price(kind: str, model: str) -> None:
    assert lookup(kind, model) is None


def test_distinct_tiers_are_not_confused_with_their_base_model() -> None:
    assert lookup("openai", "o1-pro") == Price(150.00, 600.00)
    assert lookup("openai", "gpt-5-pro") == Price(15.00, 120.00)
    assert lookup("openai", "gpt-5") != lookup("openai", "gpt-5-pro")


def test_builtin_table_is_well_formed() -> None:
    for kind, table in BUILTIN.items():
        assert table, kind
        for name, price in table.items():
            assert name == name.strip().lower(), name
            rates = [price.input, price.output, price.cached_input, price.cache_write]
            assert all(r is None or (math.isfinite(r) and r >= 0) for r in rates), name
            assert price.cached_input is None or price.cached_input <= price.input, name


# --- parse_price ------------------------------------------------------------------------------


def test_a_number_is_one_rate_for_input_and_output() -> None:
    assert parse_price(0.5) == Price(0.5, 0.5)
    assert parse_price(2) == Price(2.0, 2.0)


def test_a_mapping() -> None:
    assert parse_price({"input": 1, "output": 4.5, "cached_input": 0.1}) == Price(1.0, 4.5, 0.1)
    assert parse_price({"input": 1, "output": 2, "cache_write": None}) == Price(1.0, 2.0)


def test_cache_write_defaults_to_the_anthropic_markup_for_anthropic_providers() -> None:
    assert parse_price({"input": 3, "output": 15}, kind="anthropic").cache_write == 3.75
    assert parse_price(2.0, kind="anthropic") == Price(2.0, 2.0, cache_write=2.5)
    explicit = parse_price({"input": 3, "output": 15, "cache_write": 6}, kind="anthropic")
    assert explicit.cache_write == 6.0
    assert parse_price({"input": 3, "output": 15}, kind="openai").cache_write is None
    assert parse_price({"input": 3, "output": 15}, kind="no-such-kind").cache_write is None


@pytest.mark.parametrize(
    ("value", "field"),
    [("1.5", "price"),
     (True, "price"),
     (-1, "price"),
     (float("nan"), "price"),
     (float("inf"), "price"),
     (None, "price"),
     ({"output": 1}, "input"),
     ({"input": 1}, "output"),
     ({"input": "cheap", "output": 1}, "input"),
     ({"input": 1, "output": -2}, "output"),
     ({"input": 1, "output": 2, "cached_input": "x"}, "cached_input"),
     ({"input": 1, "output": 2, "cache_write": False}, "cache_write"),
     ({"input": 1, "output": 2, "cached": 0.5}, "'cached'")],
)
def test_bad_prices_name_the_field(value: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        parse_price(value)


def test_the_offline_echo_model_is_free() -> None:
    assert cost(Usage(input_tokens=10, output_tokens=5), lookup("echo", "echo")) == 0.0
