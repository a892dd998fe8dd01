"""The response cache through the running gateway, with the official SDKs: a repeated request is
answered with the first answer's bytes and no upstream call, streams included; sampled requests,
errors, cut streams and blocked answers are not kept; Cache-Control is honoured; entries expire;
usage records and metrics count the hits at no cost."""

from __future__ import annotations

import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ADMIN_KEY, GATEWAY_ENV, GATEWAY_KEY, SECRETS
from tests.fakes.anthropic_provider import FakeAnthropic
from tests.fakes.gemini_provider import FakeGemini
from tests.fakes.openai_provider import FakeOpenAI
from tests.harness import Gateway

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
PRICE = "{input: 1.0, output: 2.0}"
CACHE = "x-sluice-cache"
# The anthropic SDK 2.x has no `temperature` (its API version dropped it); the gateway speaks
# 2023-06-01 upstream, which takes it, so a caller may still send it in the body.
ZERO = {"temperature": 0}


def cache_config(oai: FakeOpenAI, ant: FakeAnthropic, gem: FakeGemini, cache: str) -> str:
    return textwrap.dedent(f"""\
        admin: {{key: env:SLUICE_ADMIN_KEY}}
        keys:
          - {{name: team-a, key: env:SLUICE_KEY_TEAM_A}}
        usage: {{flush_interval: 50ms}}
        cache: {cache}
        providers:
          oai: {{kind: openai, base_url: "{oai.base_url}", api_key: env:UP_OPENAI_KEY}}
          ant: {{kind: anthropic, base_url: "{ant.base_url}", api_key: env:UP_ANTHROPIC_KEY}}
          gem: {{kind: gemini, base_url: "{gem.base_url}", api_key: env:UP_GEMINI_KEY}}
        models:
          cached: {{cache: true, targets: [{{provider: oai, model: gpt-4o-mini, price: {PRICE}}}]}}
          cached-ant: {{cache: true, targets: [{{provider: ant, model: claude-sonnet-4-6}}]}}
          cached-gem: {{cache: true, targets: [{{provider: gem, model: gemini-2.5-flash}}]}}
          plain: {{targets: [{{provider: oai, model: gpt-4o-mini}}]}}
          plain-ant: {{targets: [{{provider: ant, model: claude-sonnet-4-6}}]}}
        """)


def _gateway(factory: pytest.TempPathFactory, config: str) -> Iterator[Gateway]:
    gw = Gateway(factory.mktemp("gw-cache"), config, GATEWAY_ENV).start()
    yield gw
    gw.stop()
    assert not [s for s in SECRETS if s in gw.log()], "a secret reached the gateway log"


@pytest.fixture(scope="module")
def cgw(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI,
        anthropic_upstream: FakeAnthropic, gemini_upstream: FakeGemini) -> Iterator[Gateway]:
    yield from _gateway(tmp_path_factory, cache_config(
        upstream, anthropic_upstream, gemini_upstream, "{}"))


@pytest.fixture(scope="module")
def loose_gw(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI,
             anthropic_upstream: FakeAnthropic, gemini_upstream: FakeGemini
             ) -> Iterator[Gateway]:
    """A short TTL, and sampled answers cached too."""
    yield from _gateway(tmp_path_factory, cache_config(
        upstream, anthropic_upstream, gemini_upstream,
        "{ttl: 1s, allow_nondeterministic: true}"))


@pytest.fixture
def oai(cgw: Gateway) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{cgw.url}/v1", api_key=GATEWAY_KEY, max_retries=0,
                           timeout=20)
    yield client
    client.close()


@pytest.fixture
def ant(cgw: Gateway) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=cgw.url, api_key=GATEWAY_KEY, max_retries=0,
                                 timeout=20)
    yield client
    client.close()


def _unique() -> Any:  # the SDKs want their own TypedDicts
    """A prompt no other test sends: the gateways (and their caches) live for the module."""
    return [{"role": "user", "content": f"hello {uuid.uuid4().hex}"}]


def _chat(gw: Gateway, body: dict[str, Any], headers: dict[str, str] | None = None
          ) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body,
                      headers={**AUTH, **(headers or {})}, timeout=20)


def _records(gw: Gateway, **params: Any) -> list[dict[str, Any]]:
    r = httpx.get(f"{gw.url}/v0/management/usage/records", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["records"]
    return found


def test_miss_then_hit_with_no_upstream_call(oai: openai.OpenAI, upstream: FakeOpenAI) -> None:
    messages = _unique()
    first = oai.chat.completions.with_raw_response.create(
        model="cached", messages=messages, temperature=0)
    second = oai.chat.completions.with_raw_response.create(
        model="cached", messages=messages, temperature=0)
    assert (first.headers[CACHE], second.headers[CACHE]) == ("miss", "hit")
    assert second.http_response.content == first.http_response.content
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert second.headers["x-sluice-provider"] == "oai"
    assert (first.headers["x-sluice-attempts"], second.headers["x-sluice-attempts"]) == ("1", "0")
    assert second.headers["content-type"] == first.headers["content-type"]
    assert len(upstream.requests) == 1


def test_a_changed_parameter_misses(oai: openai.OpenAI, upstream: FakeOpenAI) -> None:
    messages = _unique()
    answers = [oai.chat.completions.with_raw_response.create(
        model="cached", messages=messages, temperature=0, max_tokens=n)
        for n in (5, 6, 5)]
    assert [a.headers[CACHE] for a in answers] == ["miss", "miss", "hit"]
    assert [r.json["max_tokens"] for r in upstream.requests] == [5, 6]


def test_header_opt_in_with_the_anthropic_sdk(ant: anthropic.Anthropic,
                                              anthropic_upstream: FakeAnthropic) -> None:
    messages = _unique()

    def ask(**kwargs: Any) -> Any:
        return ant.messages.with_raw_response.create(
            model="plain-ant", max_tokens=20, messages=messages,
            extra_body=ZERO, **kwargs)

    plain = ask()
    assert CACHE not in plain.headers
    opted = [ask(extra_headers={CACHE: "use"}) for _ in range(2)]
    assert [a.headers[CACHE] for a in opted] == ["miss", "hit"]
    assert opted[1].parse().content[0].text == plain.parse().content[0].text
    assert len(anthropic_upstream.requests) == 2
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(extra_headers={CACHE: "please"})
    assert "x-sluice-cache: use" in caught.value.message


@pytest.mark.parametrize("model", ["cached", "cached-ant"], ids=["same-dialect", "translated"])
def test_a_stream_is_replayed_byte_identical(cgw: Gateway, oai: openai.OpenAI, model: str,
                                             upstream: FakeOpenAI,
                                             anthropic_upstream: FakeAnthropic) -> None:
    messages = _unique()
    body = {"model": model, "messages": messages, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    first, second = _chat(cgw, body), _chat(cgw, body)
    assert (first.headers[CACHE], second.headers[CACHE]) == ("miss", "hit")
    assert first.content.endswith(b"data: [DONE]\n\n")
    assert second.content == first.content
    assert second.headers["content-type"].startswith("text/event-stream")
    assert len(upstream.requests) + len(anthropic_upstream.requests) == 1
    # The SDK reads the replay as a stream, as it read the first answer.
    stream = oai.chat.completions.create(model=model, messages=messages,
                                         temperature=0, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("echo: hello ") and chunks[-1].usage is not None
    assert len(upstream.requests) + len(anthropic_upstream.requests) == 1


def test_anthropic_stream_replay(ant: anthropic.Anthropic,
                                 anthropic_upstream: FakeAnthropic) -> None:
    messages = _unique()
    texts = []
    for _ in range(2):
        with ant.messages.stream(model="cached-ant", max_tokens=20, extra_body=ZERO,
                                 messages=messages) as stream:
            texts.append(stream.get_final_text())
    assert texts[0] == texts[1] and texts[0].startswith("echo: hello ")
    assert len(anthropic_upstream.requests) == 1


@pytest.mark.parametrize("temperature", [0.7, None], ids=["sampled", "default"])
def test_sampled_requests_are_cached_only_when_allowed(cgw: Gateway, loose_gw: Gateway,
                                                       upstream: FakeOpenAI,
                                                       temperature: float | None) -> None:
    body: dict[str, Any] = {"model": "cached", "messages": _unique()}
    if temperature is not None:
        body["temperature"] = temperature
    strict = [_chat(cgw, body) for _ in range(2)]
    assert [CACHE in r.headers for r in strict] == [False, False]
    assert len(upstream.requests) == 2
    loose = [_chat(loose_gw, body).headers[CACHE] for _ in range(2)]
    assert loose == ["miss", "hit"]
    assert len(upstream.requests) == 3


def test_entries_expire_after_the_ttl(loose_gw: Gateway, upstream: FakeOpenAI) -> None:
    body = {"model": "cached", "messages": _unique(), "temperature": 0}
    assert [_chat(loose_gw, body).headers[CACHE] for _ in range(2)] == ["miss", "hit"]
    time.sleep(1.1)
    assert [_chat(loose_gw, body).headers[CACHE] for _ in range(2)] == ["miss", "hit"]
    assert len(upstream.requests) == 2


def test_cache_control_no_store_and_no_cache(cgw: Gateway, upstream: FakeOpenAI) -> None:
    body = {"model": "cached", "messages": _unique(), "temperature": 0}
    stored = _chat(cgw, body, {"Cache-Control": "no-store"})
    assert stored.status_code == 200 and CACHE not in stored.headers
    assert _chat(cgw, body).headers[CACHE] == "miss"  # no-store kept nothing
    upstream.behavior.content = "a fresher answer"
    fresh = _chat(cgw, body, {"Cache-Control": "no-cache"})
    assert fresh.headers[CACHE] == "miss"
    assert fresh.json()["choices"][0]["message"]["content"] == "a fresher answer"
    again = _chat(cgw, body)
    assert again.headers[CACHE] == "hit" and again.content == fresh.content  # stored anyway
    assert len(upstream.requests) == 3


def test_errors_are_not_cached(cgw: Gateway, upstream: FakeOpenAI) -> None:
    body = {"model": "cached", "messages": _unique(), "temperature": 0}
    upstream.behavior.status, upstream.behavior.times = 400, 1
    failed = _chat(cgw, body)
    assert failed.status_code == 400 and CACHE not in failed.headers
    ok = _chat(cgw, body)
    assert ok.status_code == 200 and ok.headers[CACHE] == "miss"
    assert _chat(cgw, body).headers[CACHE] == "hit"
    assert len(upstream.requests) == 2


def test_a_cut_stream_is_not_cached(cgw: Gateway, upstream: FakeOpenAI) -> None:
    body = {"model": "cached", "messages": _unique(), "temperature": 0, "stream": True}
    upstream.behavior.error_after = 2
    broken = _chat(cgw, body)
    assert broken.headers[CACHE] == "miss" and b'"error"' in broken.content
    upstream.behavior.error_after = None
    upstream.behavior.cut_after = 2
    cut = _chat(cgw, body)
    assert cut.headers[CACHE] == "miss" and not cut.content.endswith(b"data: [DONE]\n\n")
    upstream.behavior.cut_after = None
    whole = [_chat(cgw, body) for _ in range(2)]
    assert [r.headers[CACHE] for r in whole] == ["miss", "hit"]
    assert len(upstream.requests) == 3


def test_a_blocked_answer_is_not_cached(cgw: Gateway, gemini_upstream: FakeGemini) -> None:
    body = {"model": "cached-gem", "messages": _unique(), "temperature": 0}
    gemini_upstream.behavior.finish_reason = "SAFETY"
    blocked = [_chat(cgw, body) for _ in range(2)]
    assert [r.json()["choices"][0]["finish_reason"] for r in blocked] == ["content_filter"] * 2
    assert [r.headers[CACHE] for r in blocked] == ["miss", "miss"]
    assert len(gemini_upstream.requests) == 2


def test_usage_records_and_metrics_count_hits_at_no_cost(cgw: Gateway,
                                                         upstream: FakeOpenAI) -> None:
    since = time.time()
    body = {"model": "cached", "messages": _unique(), "temperature": 0}
    ids = [_chat(cgw, body).headers["x-request-id"] for _ in range(3)]
    recs = {r["request_id"]: r for r in _records(cgw, **{"from": since})}
    miss, *hits = (recs[i] for i in ids)
    assert miss["cache_hit"] is False and miss["cost_usd"] > 0 and miss["attempts"] == 1
    for hit in hits:
        assert hit["cache_hit"] is True and hit["cost_usd"] == 0.0 and hit["attempts"] == 0
        assert (hit["input_tokens"], hit["output_tokens"]) == \
            (miss["input_tokens"], miss["output_tokens"]) != (0, 0)
        assert (hit["provider"], hit["upstream_model"], hit["model"], hit["status"],
                hit["outcome"]) == ("oai", "gpt-4o-mini", "cached", 200, "ok")
        assert hit["credential"] is None
    assert len(upstream.requests) == 1
    families = {f.name: f for f in text_string_to_metric_families(
        httpx.get(f"{cgw.url}/metrics").text)}
    (counted,) = [s.value for s in families["sluice_cache_hits"].samples
                  if s.name == "sluice_cache_hits_total" and s.labels["model"] == "cached"]
    assert counted >= 2
