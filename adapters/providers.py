"""The provider registry: what each provider kind speaks and how to reach it.

`REGISTRY` is the only place a provider kind is compared. Everything else asks the spec:
its dialect, documented base URL, how the credential is sent, which caller headers the provider
documents (and so may pass through), and its quirks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["REGISTRY", "AuthStyle", "Dialect", "ProviderSpec", "spec_for"]

Dialect = Literal["openai", "anthropic", "gemini"]
AuthStyle = Literal["bearer", "x-api-key", "x-goog-api-key", "none"]

# Caller headers OpenAI documents for routing a request to an organization or project, and for
# opting into beta behaviour; forwarding them keeps `OpenAI-Organization` users working.
_OPENAI_HEADERS = frozenset({"openai-organization", "openai-project", "openai-beta"})


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    kind: str
    dialect: Dialect
    # Documented base URL including the version path, as the provider's SDKs take it.
    base_url: str
    # Environment variable that switches the provider on in the embedded default config.
    env_key: str | None
    auth: AuthStyle = "bearer"
    # Whether a credential is required at all (local OpenAI-compatible servers take none).
    key_required: bool = True
    # Caller headers the provider documents; all others stay at the gateway.
    passthrough_headers: frozenset[str] = frozenset()
    # Headers the gateway always sends this provider (name, value).
    extra_headers: tuple[tuple[str, str], ...] = ()
    # An OpenAI-dialect provider that honours `stream_options.include_usage` and then sends
    # usage in a final chunk (the other dialects always report usage in their streams).
    stream_usage_option: bool = True
    # OpenRouter reports an upstream rate limit as a 500 whose error `code` is 429.
    wraps_rate_limit_in_500: bool = False
    # Served inside the gateway process (the offline demo model); no network at all.
    builtin: bool = False
    # What an active health check asks for, after the base URL: the model list, which every
    # provider serves to a valid key without spending tokens.
    health_path: str = "/models"
    # Takes `top_k` (vLLM, OpenRouter, DashScope do); OpenAI refuses it ("Unrecognized request
    # argument supplied: top_k"), and Gemini CLI sends topK on every request.
    takes_top_k: bool = True


REGISTRY: dict[str, ProviderSpec] = {
    spec.kind: spec
    for spec in (
        ProviderSpec(
            kind="openai",
            dialect="openai",
            base_url="https://api.openai.com/v1",
            env_key="OPENAI_API_KEY",
            passthrough_headers=_OPENAI_HEADERS,
            takes_top_k=False,
        ),
        ProviderSpec(
            # Base URL without /v1, as ANTHROPIC_BASE_URL takes it.
            kind="anthropic",
            dialect="anthropic",
            base_url="https://api.anthropic.com",
            env_key="ANTHROPIC_API_KEY",
            auth="x-api-key",
            # The API refuses requests without a version header; 2023-06-01 is the current one.
            extra_headers=(("anthropic-version", "2023-06-01"),),
            passthrough_headers=frozenset({"anthropic-beta"}),
            stream_usage_option=False,
            health_path="/v1/models",
        ),
        ProviderSpec(
            # Base URL without the version path; the adapter adds /v1beta/models/...
            kind="gemini",
            dialect="gemini",
            base_url="https://generativelanguage.googleapis.com",
            env_key="GEMINI_API_KEY",
            auth="x-goog-api-key",
            stream_usage_option=False,
            health_path="/v1beta/models",
        ),
        ProviderSpec(
            kind="openrouter",
            dialect="openai",
            base_url="https://openrouter.ai/api/v1",
            env_key="OPENROUTER_API_KEY",
            # OpenRouter documents these two for app attribution on its rankings.
            passthrough_headers=frozenset({"http-referer", "x-title"}),
            wraps_rate_limit_in_500=True,
        ),
        ProviderSpec(
            kind="deepseek",
            dialect="openai",
            base_url="https://api.deepseek.com/v1",
            env_key="DEEPSEEK_API_KEY",
        ),
        ProviderSpec(
            kind="groq",
            dialect="openai",
            base_url="https://api.groq.com/openai/v1",
            env_key="GROQ_API_KEY",
        ),
        ProviderSpec(
            # DashScope's OpenAI-compatible mode; the international endpoint. Users in the
            # Beijing region set base_url to https://dashscope.aliyuncs.com/compatible-mode/v1.
            kind="qwen",
            dialect="openai",
            base_url="https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
            env_key="DASHSCOPE_API_KEY",
        ),
        ProviderSpec(
            # Any server speaking OpenAI's API: vLLM, Ollama, LM Studio, llama.cpp. No default
            # URL, so `base_url` is required; a key is optional.
            kind="openai-compatible",
            dialect="openai",
            base_url="",
            env_key=None,
            key_required=False,
            passthrough_headers=_OPENAI_HEADERS,
        ),
        ProviderSpec(
            kind="echo",
            dialect="openai",
            base_url="builtin://echo/v1",
            env_key=None,
            auth="none",
            key_required=False,
            builtin=True,
        ),
    )
}


def spec_for(kind: str) -> ProviderSpec | None:
    return REGISTRY.get(kind)
