"""Usage accounting through the running gateway: one record per request with the tokens and cost
the providers reported, for every caller x provider dialect pair, streamed and not; budgets and
model allow-lists per key; the management API and /metrics agreeing with the records; no secret
in any of it."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ADMIN_KEY, GATEWAY_ENV, GATEWAY_KEY, SECRETS
from tests.e2e.test_dialects import CALLERS, DRIVERS, HELLO, PROVIDERS
from tests.fakes.anthropic_provider import FakeAnthropic
from tests.fakes.gemini_provider import FakeGemini
from tests.fakes.openai_provider import FakeOpenAI
from tests.harness import Gateway

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CAPPED_KEY = "sk-sluice-capped-4455"
TOKCAP_KEY = "sk-sluice-tokcap-6677"
NARROW_KEY = "sk-sluice-narrow-8899"
KEYS_ENV = {"KEY_CAPPED": CAPPED_KEY, "KEY_TOKCAP": TOKCAP_KEY, "KEY_NARROW": NARROW_KEY}
ALL_SECRETS = (*SECRETS, CAPPED_KEY, TOKCAP_KEY, NARROW_KEY)

# What each fake reports, and the canonical usage it must become (input counts cached and
# cache-written prompt tokens; output counts reasoning).
REPORTED: dict[str, dict[str, Any]] = {
    "openai": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
               "prompt_tokens_details": {"cached_tokens": 3},
               "completion_tokens_details": {"reasoning_tokens": 2}},
    "anthropic": {"input_tokens": 13, "output_tokens": 5, "cache_read_input_tokens": 2,
                  "cache_creation_input_tokens": 4},
    "gemini": {"promptTokenCount": 17, "candidatesTokenCount": 4, "thoughtsTokenCount": 3,
               "cachedContentTokenCount": 6, "totalTokenCount": 24},
}
# (input, output, cached, reasoning)
EXPECTED = {"openai": (11, 7, 3, 2), "anthropic": (19, 5, 2, 0), "gemini": (17, 7, 6, 3)}
SHORT = {"openai": "oai", "anthropic": "ant", "gemini": "gem"}  # the providers' names
# USD per 1M: input 1, output 2, cached input 0.5, cache write 1.25.
PRICE = "{input: 1.0, output: 2.0, cached_input: 0.5, cache_write: 1.25}"
COST = {"openai": (8 * 1 + 3 * 0.5 + 7 * 2) / 1e6,
        "anthropic": (13 * 1 + 2 * 0.5 + 4 * 1.25 + 5 * 2) / 1e6,
        "gemini": (11 * 1 + 6 * 0.5 + 7 * 2) / 1e6}


def usage_config(oai: FakeOpenAI, ant: FakeAnthropic, gem: FakeGemini) -> str:
    return textwrap.dedent(f"""\
        admin: {{key: env:SLUICE_ADMIN_KEY}}
        keys:
          - {{name: team-a, key: env:SLUICE_KEY_TEAM_A}}
          - {{name: capped, key: env:KEY_CAPPED, budget: {{usd: {{day: 0.00005}}}}}}
          - {{name: tokcap, key: env:KEY_TOKCAP, budget: {{tokens: {{day: 40}}}}}}
          - {{name: narrow, key: env:KEY_NARROW, models: ["to-open*"]}}
        usage: {{flush_interval: 50ms}}
        providers:
          oai: {{kind: openai, base_url: "{oai.base_url}", api_key: env:UP_OPENAI_KEY}}
          ant: {{kind: anthropic, base_url: "{ant.base_url}", api_key: env:UP_ANTHROPIC_KEY}}
          gem: {{kind: gemini, base_url: "{gem.base_url}", api_key: env:UP_GEMINI_KEY}}
          qa: {{kind: openai, base_url: "{oai.base_url}", api_key: env:UP_OPENAI_KEY,
                quota: {{limit: 20, reset: daily}}}}
          qb: {{kind: openai, base_url: "{oai.base_url}", api_key: env:UP_OPENAI_KEY,
                quota: {{limit: 1000, reset: daily}}}}
        models:
          to-openai: {{targets: [{{provider: oai, model: gpt-4o-mini, price: {PRICE}}}]}}
          to-anthropic: {{targets: [{{provider: ant, model: claude-sonnet-4-6, price: {PRICE}}}]}}
          to-gemini: {{targets: [{{provider: gem, model: gemini-2.5-flash, price: {PRICE}}}]}}
          unpriced: {{targets: [{{provider: oai, model: my-own-finetune}}]}}
          quota-pair:
            strategy: quota_aware
            targets: [{{provider: qa, model: model-a}}, {{provider: qb, model: model-b}}]
        """)


@pytest.fixture(scope="module")
def ugw(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI,
        anthropic_upstream: FakeAnthropic, gemini_upstream: FakeGemini) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("gw-usage"),
                 usage_config(upstream, anthropic_upstream, gemini_upstream),
                 {**GATEWAY_ENV, **KEYS_ENV}).start()
    yield gw
    gw.stop()
    log = gw.log()
    assert not [s for s in ALL_SECRETS if s in log], "a secret reached the gateway log"


@pytest.fixture
def fakes(upstream: FakeOpenAI, anthropic_upstream: FakeAnthropic,
          gemini_upstream: FakeGemini) -> dict[str, Any]:
    fakes = {"openai": upstream, "anthropic": anthropic_upstream, "gemini": gemini_upstream}
    for kind, fake in fakes.items():
        fake.behavior.usage = REPORTED[kind]
    return fakes


def records(gw: Gateway, **params: Any) -> list[dict[str, Any]]:
    r = httpx.get(f"{gw.url}/v0/management/usage/records", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    answer: list[dict[str, Any]] = r.json()["records"]
    return answer


def chat(gw: Gateway, key: str, model: str = "to-openai") -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": HELLO})


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("caller", CALLERS)
def test_each_pair_records_the_reported_tokens_and_cost(ugw: Gateway, fakes: dict[str, Any],
                                                        caller: str, provider: str,
                                                        stream: bool) -> None:
    since = time.time()
    driver = DRIVERS[caller](ugw.url)
    try:
        result = driver.chat(f"to-{provider}", HELLO, stream=stream)
    finally:
        driver.close()
    assert result.text == "echo: hello there gateway"
    (rec,) = records(ugw, key="team-a", **{"from": since})
    want_in, want_out, want_cached, want_reasoning = EXPECTED[provider]
    assert (rec["input_tokens"], rec["output_tokens"], rec["cached_tokens"],
            rec["reasoning_tokens"]) == (want_in, want_out, want_cached, want_reasoning)
    assert rec["estimated"] is False
    assert rec["cost_usd"] == pytest.approx(COST[provider], rel=1e-9)
    assert rec["dialect"] == caller and rec["model"] == f"to-{provider}"
    name = SHORT[provider]
    assert rec["provider"] == name and rec["stream"] is stream
    assert rec["status"] == 200 and rec["outcome"] == "ok" and rec["attempts"] == 1
    assert rec["credential"].startswith(f"{name}#0 (env:")
    assert rec["latency_ms"] > 0 and 0 <= rec["overhead_ms"] <= rec["latency_ms"]
    if stream:
        assert 0 < rec["ttft_ms"] <= rec["latency_ms"]


def test_unknown_price_is_recorded_as_unknown_not_zero(ugw: Gateway,
                                                       fakes: dict[str, Any]) -> None:
    since = time.time()
    assert chat(ugw, GATEWAY_KEY, "unpriced").status_code == 200
    (rec,) = records(ugw, key="team-a", **{"from": since})
    assert rec["cost_usd"] is None and rec["input_tokens"] == 11
    report = httpx.get(f"{ugw.url}/v0/management/usage", headers=ADMIN,
                       params={"from": since, "group_by": "model"}).json()
    (group,) = report["groups"]
    assert group["group"] == "unpriced" and group["unpriced"] == 1 and group["cost_usd"] == 0


def test_failed_requests_get_records_too(ugw: Gateway, fakes: dict[str, Any]) -> None:
    since = time.time()
    fakes["openai"].behavior.status = 400
    assert chat(ugw, GATEWAY_KEY).status_code == 400
    assert chat(ugw, "sk-wrong-key").status_code == 401
    assert chat(ugw, GATEWAY_KEY, "no-such-model").status_code == 404
    got = sorted((r["status"], r["key"], r["model"], r["outcome"])
                 for r in records(ugw, **{"from": since}))
    assert got == [(400, "team-a", "to-openai", "error"), (401, None, None, "error"),
                   (404, "team-a", "no-such-model", "error")]


def test_usd_budget_stops_the_key_at_the_right_request(ugw: Gateway,
                                                       fakes: dict[str, Any]) -> None:
    # 0.00005 USD a day; each call costs 0.0000235: calls 1-3 start under the budget (0, 23.5,
    # 47 µUSD spent), the 4th finds 70.5 spent and is refused.
    for _ in range(3):
        assert chat(ugw, CAPPED_KEY).status_code == 200
    client = openai.OpenAI(base_url=f"{ugw.url}/v1", api_key=CAPPED_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="to-openai", messages=HELLO)  # type: ignore[arg-type]
    err = caught.value
    assert err.code == "budget_exceeded"
    assert "budget.usd.day" in err.message and "resets at" in err.message
    assert int(err.response.headers["Retry-After"]) > 0
    keys = httpx.get(f"{ugw.url}/v0/management/keys", headers=ADMIN).json()["keys"]
    (capped,) = [k for k in keys if k["name"] == "capped"]
    (budget,) = capped["budgets"]
    assert budget["exceeded"] is True and budget["spent"] == pytest.approx(3 * COST["openai"])


def test_token_budget_and_model_allow_list(ugw: Gateway, fakes: dict[str, Any]) -> None:
    # 40 tokens a day; each call is 11 + 7 = 18: the 4th starts over (54).
    statuses = [chat(ugw, TOKCAP_KEY).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    client = anthropic.Anthropic(base_url=ugw.url, api_key=NARROW_KEY, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.create(model="to-anthropic", max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
    assert "may not use model 'to-anthropic'" in str(caught.value)
    assert chat(ugw, NARROW_KEY, "to-openai").status_code == 200


def test_metrics_agree_with_the_records(ugw: Gateway, fakes: dict[str, Any]) -> None:
    for _ in range(2):
        assert chat(ugw, GATEWAY_KEY).status_code == 200
    report = httpx.get(f"{ugw.url}/v0/management/usage", headers=ADMIN,
                       params={"group_by": "model", "from": 0}).json()
    body = httpx.get(f"{ugw.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(body)}
    requests = sum(s.value for s in families["sluice_requests"].samples
                   if s.name == "sluice_requests_total")
    assert requests == report["totals"]["requests"]
    tokens = {t: sum(s.value for s in families["sluice_tokens"].samples
                     if s.name == "sluice_tokens_total" and s.labels["type"] == t)
              for t in ("input", "output", "cached")}
    assert tokens == {"input": report["totals"]["input_tokens"],
                      "output": report["totals"]["output_tokens"],
                      "cached": report["totals"]["cached_tokens"]}
    cost = sum(s.value for s in families["sluice_cost_usd"].samples
               if s.name == "sluice_cost_usd_total")
    assert cost == pytest.approx(report["totals"]["cost_usd"], rel=1e-9)
    assert all(name.startswith("sluice_") for name in families if name in body)
    assert not [s for s in ALL_SECRETS if s in body]


def test_management_answers_hold_no_secret(ugw: Gateway, fakes: dict[str, Any]) -> None:
    assert chat(ugw, GATEWAY_KEY).status_code == 200
    for path in ("/v0/management/config", "/v0/management/keys",
                 "/v0/management/usage?group_by=key", "/v0/management/usage/records"):
        r = httpx.get(f"{ugw.url}{path}", headers=ADMIN)
        assert r.status_code == 200, (path, r.text)
        assert not [s for s in ALL_SECRETS if s in r.text], path
    config = httpx.get(f"{ugw.url}/v0/management/config", headers=ADMIN).json()
    assert config["providers"]["oai"]["credentials"] == ["oai#0 (env:UP_OPENAI_KEY)"]
    assert httpx.get(f"{ugw.url}/v0/management/config").status_code == 401
    bad = httpx.get(f"{ugw.url}/v0/management/usage", headers=ADMIN,
                    params={"group_by": "colour"})
    assert bad.status_code == 400 and "group_by" in bad.text


def test_quota_aware_prefers_the_provider_with_most_quota_left(ugw: Gateway,
                                                               fakes: dict[str, Any]) -> None:
    # Each call spends 18 tokens: once qa served one it has 10% of its 20 left, while qb keeps
    # over 90% of its 1000 for these calls, so qa serves exactly one of them.
    for _ in range(6):
        assert chat(ugw, GATEWAY_KEY, "quota-pair").status_code == 200
    served = [r.json["model"] for r in fakes["openai"].requests]
    assert sorted(served) == ["model-a"] + ["model-b"] * 5
    status = httpx.get(f"{ugw.url}/v0/operations/load_balancing/status", headers=ADMIN).json()
    scores = {t["target"]: t["quota_left"] for t in status["models"]["quota-pair"]["targets"]}
    assert scores == {"qa/model-a": pytest.approx(0.1), "qb/model-b": pytest.approx(1 - 90 / 1000)}


def test_one_log_line_per_request_with_the_records_fields(ugw: Gateway,
                                                          fakes: dict[str, Any]) -> None:
    r = httpx.post(f"{ugw.url}/v1/chat/completions",
                   headers={"Authorization": f"Bearer {GATEWAY_KEY}", "x-request-id": "log-me-1"},
                   json={"model": "to-openai", "messages": HELLO})
    assert r.status_code == 200
    records(ugw)  # the management API flushes the queue, log lines included
    lines = [json.loads(x) for x in ugw.log().splitlines() if '"log-me-1"' in x]
    (line,) = lines
    assert line["event"] == "request" and line["level"] == "info"
    assert (line["key"], line["model"], line["provider"], line["status"]) == \
        ("team-a", "to-openai", "oai", 200)
    assert line["input_tokens"] == 11 and line["cost_usd"] == pytest.approx(COST["openai"])
    assert "request_body" not in line  # log.bodies is off
