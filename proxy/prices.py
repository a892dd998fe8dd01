"""Model prices, and what a request cost.

`BUILTIN` holds the list prices of the common models of each provider kind, in USD per million
tokens; `lookup` finds a model's price by the name the provider answered with, and `cost` turns
a canonical `Usage` into dollars. Configured prices (`parse_price`) take precedence over these
and are the way to price anything the table leaves out. An unknown model has no price: its
cost is None (unknown), never 0.

A `Price` is flat: where a provider bills a long prompt at a higher rate (Gemini 2.5 Pro and
Claude Sonnet 4.5 above 200k prompt tokens, GPT-5.4 above 272k) or a thinking-mode answer at a
higher rate (Qwen), the table carries the base rate, so such requests are under-counted.
Configure a price per model alias where that matters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from adapters.canonical import Usage
from adapters.providers import spec_for

__all__ = ["BUILTIN", "Price", "cost", "lookup", "parse_price"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens.

    `cached_input` is the rate of prompt tokens read from a cache (None: the input rate).
    `cache_write` is the rate of prompt tokens written to a cache (None: the input rate;
    `parse_price` resolves it to 1.25 x input for providers speaking Anthropic's API, whose
    5-minute cache writes cost that).
    """

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


# Anthropic bills a 5-minute cache write at 1.25 x the base input rate ("Prompt caching",
# platform.claude.com/docs/en/about-claude/pricing).
_ANTHROPIC_WRITE_MARKUP = 1.25
_PER_TOKEN = 1e-6


def _claude(inp: float, out: float) -> Price:
    # Every Claude model is priced at these multiples of its input rate: cache hits 0.1 x,
    # 5-minute cache writes 1.25 x (the pricing page's table lists each one; they all agree).
    return Price(inp, out, cached_input=round(inp * 0.1, 6),
                 cache_write=round(inp * _ANTHROPIC_WRITE_MARKUP, 6))


def _table(entries: dict[str, Price]) -> Mapping[str, Price]:
    return MappingProxyType(entries)


# List prices read on 2026-11-28, standard (not batch, flex or priority) tier. Sources:
# - openai: developers.openai.com/api/docs/pricing and the per-model pages under
#   /api/docs/models, cross-checked with pydantic/genai-prices (openai.yml, 2026-08-21).
# - anthropic: platform.claude.com/docs/en/about-claude/pricing ("Model pricing").
# - gemini: ai.google.dev/gemini-api/docs/pricing, paid tier, text/image/video input, prompts
#   up to 200k tokens; 2.0 Flash and Flash-Lite from pydantic/genai-prices (google.yml).
# - groq: groq.com/pricing and console.groq.com/docs/models, via pydantic/genai-prices
#   (groq.yml); gpt-oss-120b re-checked against Groq's models page. Mixtral is no longer
#   served by Groq, so it has no price.
# - qwen: Alibaba Cloud Model Studio "Billing for model services" (international, flagship
#   models, 2025-04-22): the first context tier, non-thinking mode. Cache hits are left at the
#   input rate (the page's 40 % figure has since changed), which over-counts them.
# - deepseek: none built in. DeepSeek's prices change with the time of day, and the
#   `deepseek-chat` / `deepseek-reasoner` aliases were retired on 2026-07-24 in favour of the
#   V4 models (DeepSeek's API docs, as relayed by several guides): configure a price.
BUILTIN: Mapping[str, Mapping[str, Price]] = MappingProxyType({
    "openai": _table({
        "gpt-4o": Price(2.50, 10.00, cached_input=1.25),
        "gpt-4o-mini": Price(0.15, 0.60, cached_input=0.075),
        "gpt-4.1": Price(2.00, 8.00, cached_input=0.50),
        "gpt-4.1-mini": Price(0.40, 1.60, cached_input=0.10),
        "gpt-4.1-nano": Price(0.10, 0.40, cached_input=0.025),
        "o1": Price(15.00, 60.00, cached_input=7.50),
        "o1-mini": Price(1.10, 4.40, cached_input=0.55),
        "o1-pro": Price(150.00, 600.00),
        "o3": Price(2.00, 8.00, cached_input=0.50),  # since 2025-06-10 (was 10 / 40)
        "o3-mini": Price(1.10, 4.40, cached_input=0.55),
        "o3-pro": Price(20.00, 80.00),
        "o4-mini": Price(1.10, 4.40, cached_input=0.275),
        "gpt-5": Price(1.25, 10.00, cached_input=0.125),
        "gpt-5-chat": Price(1.25, 10.00, cached_input=0.125),
        "gpt-5-mini": Price(0.25, 2.00, cached_input=0.025),
        "gpt-5-nano": Price(0.05, 0.40, cached_input=0.005),
        "gpt-5-pro": Price(15.00, 120.00),
        "gpt-5.1": Price(1.25, 10.00, cached_input=0.125),
        "gpt-5.2": Price(1.75, 14.00, cached_input=0.175),
    }),
    "anthropic": _table({
        "claude-opus-4-8": _claude(5.00, 25.00),
        "claude-opus-4-7": _claude(5.00, 25.00),
        "claude-opus-4-6": _claude(5.00, 25.00),
        "claude-opus-4-5": _claude(5.00, 25.00),
        "claude-opus-4-1": _claude(15.00, 75.00),
        "claude-opus-4": _claude(15.00, 75.00),
        "claude-opus-4-0": _claude(15.00, 75.00),
        "claude-sonnet-4-6": _claude(3.00, 15.00),
        "claude-sonnet-4-5": _claude(3.00, 15.00),
        "claude-sonnet-4": _claude(3.00, 15.00),
        "claude-sonnet-4-0": _claude(3.00, 15.00),
        "claude-3-7-sonnet": _claude(3.00, 15.00),
        "claude-3-5-sonnet": _claude(3.00, 15.00),
        "claude-haiku-4-5": _claude(1.00, 5.00),
        "claude-3-5-haiku": _claude(0.80, 4.00),
        "claude-3-opus": _claude(15.00, 75.00),
        # Haiku 3's cache rates are listed rounded: hits 0.03, writes 0.30.
        "claude-3-haiku": Price(0.25, 1.25, cached_input=0.03, cache_write=0.30),
    }),
    "gemini": _table({
        "gemini-2.5-pro": Price(1.25, 10.00, cached_input=0.125),
        "gemini-2.5-flash": Price(0.30, 2.50, cached_input=0.03),
        "gemini-2.5-flash-lite": Price(0.10, 0.40, cached_input=0.01),
        "gemini-2.0-flash": Price(0.10, 0.40, cached_input=0.025),
        "gemini-2.0-flash-lite": Price(0.075, 0.30),
    }),
    "groq": _table({
        "llama-3.3-70b-versatile": Price(0.59, 0.79),
        "llama-3.1-8b-instant": Price(0.05, 0.08),
        "meta-llama/llama-4-scout-17b-16e-instruct": Price(0.11, 0.34),
        "meta-llama/llama-4-maverick-17b-128e-instruct": Price(0.20, 0.60),
        "openai/gpt-oss-120b": Price(0.15, 0.60),
        "openai/gpt-oss-20b": Price(0.075, 0.30),
        "qwen/qwen3-32b": Price(0.29, 0.59),
    }),
    "qwen": _table({
        "qwen-max": Price(1.60, 6.40),
        "qwen-plus": Price(0.40, 1.20),
        "qwen-turbo": Price(0.05, 0.20),
    }),
})

# Kinds that name models "vendor/model" and bill a vendor's own model at the vendor's price
# (OpenRouter passes the provider's price through), with the table each vendor's names are in.
# Other vendors (meta-llama/..., mistralai/...) are served by third parties at their own
# prices, so they stay unknown.
_VENDOR_PRICED: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "openrouter": MappingProxyType({
        "openai": "openai",
        "anthropic": "anthropic",
        "google": "gemini",
        "qwen": "qwen",
    }),
})

# A snapshot or version tail on a model name: -2024-08-06 (OpenAI), -20250929 or @20250929
# (Anthropic, Vertex), -001 (Gemini), -latest. What is left is the name prices are listed by.
_VERSION_TAIL = re.compile(r"(?:[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|\d{3})|-latest)$")


def _names(model: str) -> Iterator[str]:
    """The names a model may be listed under, most specific first."""
    name = model.strip().lower().removeprefix("models/")  # Gemini's resource form
    yield name
    bare = _VERSION_TAIL.sub("", name)
    if bare != name:
        yield bare
    # Claude models go by dotted names too (OpenRouter's anthropic/claude-sonnet-4.5).
    if "." in bare and bare.startswith("claude-"):
        yield bare.replace(".", "-")


def _find(table: Mapping[str, Price], model: str) -> Price | None:
    for name in _names(model):
        price = table.get(name)
        if price is not None:
            return price
    return None


_FREE = Price(0.0, 0.0)


def lookup(kind: str, model: str) -> Price | None:
    """The built-in price of `model` as served by a provider of `kind`, or None if unknown.

    Tries the name as given, then without a snapshot/version tail, then (for a "vendor/model"
    name) without the vendor. No prefix guessing: `o1-pro` is not `o1` and `gpt-5-pro` is not
    `gpt-5`, so a name the table does not list is unknown.
    """
    if kind == "echo":
        return _FREE  # the built-in offline demo costs nothing
    table = BUILTIN.get(kind)
    if table is not None:
        price = _find(table, model)
        if price is not None:
            return price
    vendor, slash, rest = model.partition("/")
    if not slash:
        return None
    vendor_tables = _VENDOR_PRICED.get(kind)
    if vendor_tables is not None:
        table = BUILTIN.get(vendor_tables.get(vendor.strip().lower(), ""))
    return _find(table, rest) if table is not None else None


def cost(usage: Usage, price: Price | None) -> float | None:
    """What `usage` cost in USD at `price`; None when the price is unknown.

    `usage.input_tokens` counts cached and cache-written prompt tokens too, and
    `output_tokens` counts reasoning tokens (adapters/canonical.py), so each prompt token is
    billed once, at its own rate.
    """
    if price is None:
        return None
    cached = usage.cached_tokens
    written = usage.cache_write_tokens
    fresh = max(usage.input_tokens - cached - written, 0)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    write_rate = price.input if price.cache_write is None else price.cache_write
    return (fresh * price.input + cached * cached_rate + written * write_rate
            + usage.output_tokens * price.output) * _PER_TOKEN


_FIELDS = ("input", "output", "cached_input", "cache_write")


def _rate(field: str, value: object) -> float:
    # bool is an int subclass; `price: true` is a mistake, not a price of 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"price {field}: expected a number of USD per 1M tokens, got {value!r}")
    rate = float(value)
    if not rate >= 0 or rate == float("inf"):  # also refuses NaN
        raise ValueError(f"price {field}: must be a finite number >= 0, got {value!r}")
    return rate


def parse_price(value: object, kind: str | None = None) -> Price:
    """A configured price: a number, or a mapping of `input`, `output` and optional
    `cached_input` and `cache_write`, each in USD per million tokens.

    A bare number is one rate for input and output tokens alike (the way self-hosted and
    flat-rate models are billed); give a mapping where they differ. With `kind`, a missing
    `cache_write` on a provider speaking Anthropic's API is 1.25 x input, its 5-minute cache
    write rate. Raises ValueError naming the bad field.
    """
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in _FIELDS)
        if unknown:
            raise ValueError(f"price: unknown field {unknown[0]!r} "
                             f"(expected {', '.join(_FIELDS)})")
        for field in ("input", "output"):
            if field not in value:
                raise ValueError(f"price {field}: required")
        rates = {f: _rate(f, value[f]) for f in _FIELDS if value.get(f) is not None}
        price = Price(rates["input"], rates["output"], rates.get("cached_input"),
                      rates.get("cache_write"))
    else:
        flat = _rate("price", value)
        price = Price(flat, flat)
    spec = spec_for(kind) if kind is not None else None
    if price.cache_write is None and spec is not None and spec.dialect == "anthropic":
        price = Price(price.input, price.output, price.cached_input,
                      round(price.input * _ANTHROPIC_WRITE_MARKUP, 9))
    return price
