"""Traffic control through the running gateway: cooldowns fed by 429s and failures, circuit
breakers, retries, fallbacks, and the operations API that shows and steers them."""

from __future__ import annotations

import itertools
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import ADMIN_KEY, GATEWAY_ENV, GATEWAY_KEY, ROUTER_KEYS, UPSTREAM_KEY
from tests.fakes.openai_provider import FakeOpenAI
from tests.harness import Gateway, ThreadLoop

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def trio(fake_loop: ThreadLoop) -> Iterator[list[FakeOpenAI]]:
    fakes = [FakeOpenAI(api_key=UPSTREAM_KEY) for _ in range(3)]
    for fake in fakes:
        fake_loop.run(fake.start())
    yield fakes
    for fake in fakes:
        fake_loop.run(fake.stop())


@pytest.fixture(scope="module")
def tgw(tmp_path_factory: pytest.TempPathFactory, trio: list[FakeOpenAI]) -> Iterator[Gateway]:
    a, b, c = (f.base_url for f in trio)
    fast = "cooldown: {rate_limit: 2s, error: 1s, threshold: 2, window: 10s, cap: 5s}"
    breaker = "breaker: {min_volume: 3, failure_ratio: 0.5, open_for: 1s, close_after: 1}"
    config = textwrap.dedent(f"""\
        admin: {{key: env:SLUICE_ADMIN_KEY}}
        keys:
          - {{name: team-a, key: env:SLUICE_KEY_TEAM_A}}
          - {{name: tiny, key: env:K1, limits: {{rpm: 2}}}}
        retry: {{attempts: 2, backoff: 50ms, max_backoff: 200ms, deadline: 10s}}
        routing:
          aliases: {{small: backup}}
          rules:
            - {{name: background, model_glob: "*haiku*", model: backup}}
        providers:
          pa: {{kind: openai, base_url: "{a}", api_key: env:UP_OPENAI_KEY, {fast}, {breaker}}}
          pb: {{kind: openai, base_url: "{b}", api_key: env:UP_OPENAI_KEY, {fast}, {breaker}}}
          pc: {{kind: openrouter, base_url: "{c}", api_key: env:UP_OPENAI_KEY, {fast}}}
          pl: {{kind: openai, base_url: "{c}", api_key: env:UP_OPENAI_KEY, limits: {{rpm: 1}}}}
          pc3: {{kind: openai, base_url: "{c}", api_key: env:UP_OPENAI_KEY}}
          plw: {{kind: openai, base_url: "{c}", api_key: env:UP_OPENAI_KEY,
                 limits: {{rpm: 60, max_wait: 2s}}}}
          ph: {{kind: openai, base_url: "{c}", api_key: env:UP_OPENAI_KEY,
                health_check: {{interval: 1s, timeout: 500ms}}, cooldown: {{error: 30s}}}}
        models:
          pair:
            targets:
              - {{provider: pa, model: gpt-4o-mini, weight: 1}}
              - {{provider: pb, model: gpt-4o-mini, weight: 0}}
          solo:
            targets: [{{provider: pa, model: gpt-4o-mini}}]
          wrapped:
            targets: [{{provider: pc, model: openai/gpt-4o-mini}}]
          with-fallback:
            targets: [{{provider: pa, model: gpt-4o-mini}}]
            fallbacks: [backup]
          backup:
            targets: [{{provider: pb, model: gpt-4o-mini}}]
          rotating:
            strategy: round_robin
            targets:
              - {{provider: pa, model: gpt-4o-mini}}
              - {{provider: pb, model: gpt-4o-mini}}
          short:
            targets: [{{provider: pa, model: gpt-4o-mini}}]
            context_window_fallbacks: [backup]
          probed:
            targets:
              - {{provider: ph, model: gpt-4o-mini, weight: 1}}
              - {{provider: pb, model: gpt-4o-mini, weight: 0}}
          waiting:
            strategy: priority
            targets:
              - {{provider: plw, model: gpt-4o-mini, priority: 0}}
              - {{provider: pb, model: gpt-4o-mini, priority: 1}}
          three:
            targets:
              - {{provider: pa, model: gpt-4o-mini}}
              - {{provider: pb, model: gpt-4o-mini}}
              - {{provider: pc3, model: gpt-4o-mini}}
          limited:
            strategy: priority
            targets:
              - {{provider: pl, model: gpt-4o-mini, priority: 0}}
              - {{provider: pb, model: gpt-4o-mini, priority: 1}}
        """)
    gw = Gateway(tmp_path_factory.mktemp("gw-traffic"), config, GATEWAY_ENV).start()
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def _fresh(trio: list[FakeOpenAI], tgw: Gateway) -> Iterator[None]:
    for fake in trio:
        fake.reset()
    yield
    for name in ("pa", "pb", "pc", "pl", "pc3", "ph", "plw"):
        httpx.post(f"{tgw.url}/v0/operations/providers/{name}/recover", headers=ADMIN)
    for fake in trio:
        fake.assert_clean()


@pytest.fixture
def chat(tgw: Gateway) -> Iterator[Callable[..., Any]]:
    client = openai.OpenAI(base_url=f"{tgw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)

    def call(model: str) -> Any:
        return client.chat.completions.with_raw_response.create(model=model, messages=HI)

    yield call
    client.close()


def test_a_429_cools_the_target_and_traffic_moves_on(chat: Callable[..., Any],
                                                     trio: list[FakeOpenAI]) -> None:
    a = trio[0]
    a.behavior.status, a.behavior.retry_after, a.behavior.times = 429, 30, 1
    first = chat("pair")
    assert first.headers["x-sluice-provider"] == "pb"
    assert first.headers["x-sluice-attempts"] == "2"
    for _ in range(3):
        assert chat("pair").headers["x-sluice-provider"] == "pb"
    assert a.calls["/chat/completions"] == 1, "a cooling target must not be called again"


def test_all_cooling_is_a_429_with_the_earliest_recovery(chat: Callable[..., Any],
                                                         trio: list[FakeOpenAI]) -> None:
    a = trio[0]
    a.behavior.status, a.behavior.retry_after = 429, 3
    with pytest.raises(openai.RateLimitError) as info:
        chat("solo")
    with pytest.raises(openai.RateLimitError) as again:
        chat("solo")
    assert a.calls["/chat/completions"] == 1
    assert again.value.response.headers["x-sluice-attempts"] == "0"
    assert 2 <= int(again.value.response.headers["Retry-After"]) <= 4  # 3 s + <=10% spread
    assert info.value.response.headers["Retry-After"]


def test_recovery_happens_on_time(chat: Callable[..., Any], trio: list[FakeOpenAI]) -> None:
    a = trio[0]
    a.behavior.status, a.behavior.retry_after, a.behavior.times = 429, 1, 1
    with pytest.raises(openai.RateLimitError):
        chat("solo")
    time.sleep(1.3)  # Retry-After 1 s plus at most 10% spread
    assert chat("solo").headers["x-sluice-provider"] == "pa"


def test_a_5xx_fails_over_to_the_next_target(chat: Callable[..., Any],
                                              trio: list[FakeOpenAI]) -> None:
    a = trio[0]
    a.behavior.status, a.behavior.times = 500, 1
    resp = chat("pair")
    assert (resp.headers["x-sluice-provider"], resp.headers["x-sluice-attempts"]) == ("pb", "2")


def test_a_retry_pass_after_backoff_recovers(chat: Callable[..., Any],
                                             trio: list[FakeOpenAI]) -> None:
    a = trio[0]
    a.behavior.status, a.behavior.times = 503, 1
    resp = chat("solo")  # one target: the second pass, after a short backoff, succeeds
    assert resp.headers["x-sluice-attempts"] == "2"
    assert a.calls["/chat/completions"] == 2


def test_repeated_failures_cool_the_target(chat: Callable[..., Any],
                                           trio: list[FakeOpenAI]) -> None:
    a = trio[0]
    a.behavior.status = 500
    for _ in range(2):  # threshold 2: the second failure trips a 1 s cooldown
        assert chat("pair").headers["x-sluice-provider"] == "pb"
    calls = a.calls["/chat/completions"]
    assert chat("pair").headers["x-sluice-attempts"] == "1"
    assert a.calls["/chat/completions"] == calls


def test_openrouter_rate_limit_wrapped_in_a_500_is_a_rate_limit(
        chat: Callable[..., Any], trio: list[FakeOpenAI]) -> None:
    c = trio[2]
    c.behavior.status = 500
    c.behavior.body = {"error": {"message": "Provider returned error", "code": 429, "metadata": {
        "raw": "google/gemini is temporarily rate-limited upstream", "provider_name": "Google"}}}
    with pytest.raises(openai.RateLimitError):
        chat("wrapped")
    with pytest.raises(openai.RateLimitError) as info:
        chat("wrapped")  # cooling: not sent again
    assert info.value.response.headers["x-sluice-attempts"] == "0"
    assert c.calls["/chat/completions"] == 1


def test_fallback_group_serves_when_the_model_cannot(chat: Callable[..., Any],
                                                     trio: list[FakeOpenAI]) -> None:
    a, b, _ = trio
    a.behavior.status = 502
    resp = chat("with-fallback")
    assert resp.headers["x-sluice-provider"] == "pb"
    assert b.requests[0].json["model"] == "gpt-4o-mini"


def test_non_retryable_4xx_is_not_retried(chat: Callable[..., Any],
                                          trio: list[FakeOpenAI]) -> None:
    a, b, _ = trio
    a.behavior.status = 400
    with pytest.raises(openai.BadRequestError):
        chat("pair")
    assert b.requests == [], "the caller's own mistake must not be sent elsewhere"


def test_operations_api(tgw: Gateway, chat: Callable[..., Any], trio: list[FakeOpenAI]) -> None:
    assert httpx.get(f"{tgw.url}/v0/operations/cooldown/status").status_code == 401
    bad = httpx.post(f"{tgw.url}/v0/operations/providers/pa/cooldown", headers=ADMIN,
                     json={"duration": "soon"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "duration"
    assert httpx.post(f"{tgw.url}/v0/operations/providers/nope/recover",
                      headers=ADMIN).status_code == 404
    cooled = httpx.post(f"{tgw.url}/v0/operations/providers/pa/cooldown", headers=ADMIN,
                        json={"duration": "10m", "reason": "maintenance"})
    assert cooled.status_code == 200
    status = httpx.get(f"{tgw.url}/v0/operations/cooldown/status", headers=ADMIN).json()
    assert status["providers_in_cooldown"] == ["pa"]
    period = status["cooldown_periods"][0]
    assert period["reason"] == "maintenance" and 590 < period["remaining_seconds"] <= 600
    assert chat("pair").headers["x-sluice-provider"] == "pb"
    assert trio[0].requests == []
    providers = httpx.get(f"{tgw.url}/v0/operations/providers/status", headers=ADMIN).json()
    assert providers["providers"]["pa"]["status"] == "cooling_down"
    pb = providers["providers"]["pb"]
    assert pb["status"] == "healthy" and pb["requests_last_minute"] >= 1
    target = pb["targets"]["pb/gpt-4o-mini"]
    assert target["average_latency_ms"] is not None and target["last_check"] > 1_700_000_000
    text = str(providers)
    assert UPSTREAM_KEY not in text and GATEWAY_KEY not in text and ADMIN_KEY not in text
    assert httpx.post(f"{tgw.url}/v0/operations/providers/pa/recover",
                      headers=ADMIN).json()["recovered"] == 1
    assert chat("pair").headers["x-sluice-provider"] == "pa"


def test_round_robin_alternates_and_sessions_stick(tgw: Gateway, chat: Callable[..., Any]) -> None:
    seen = [chat("rotating").headers["x-sluice-provider"] for _ in range(6)]
    assert seen.count("pa") == seen.count("pb") == 3
    assert all(x != y for x, y in itertools.pairwise(seen))
    with openai.OpenAI(base_url=f"{tgw.url}/v1", api_key=GATEWAY_KEY, max_retries=0) as client:
        sticky = {client.chat.completions.with_raw_response.create(
            model="rotating", messages=HI, extra_headers={"x-session-id": "conv-42"}
        ).headers["x-sluice-provider"] for _ in range(5)}
    assert len(sticky) == 1, "one session, one target"


def test_a_target_over_its_rpm_is_skipped(chat: Callable[..., Any]) -> None:
    first = chat("limited")
    assert first.headers["x-sluice-provider"] == "pl"
    second = chat("limited")  # pl allows 1 request a minute: the next tier serves
    assert second.headers["x-sluice-provider"] == "pb"


def test_a_caller_over_its_own_limit_gets_429_with_headers(tgw: Gateway) -> None:

    with openai.OpenAI(base_url=f"{tgw.url}/v1", api_key=ROUTER_KEYS[0],
                       max_retries=0) as client:
        for _ in range(2):
            client.chat.completions.create(model="rotating", messages=HI)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="rotating", messages=HI)
    headers = info.value.response.headers
    assert int(headers["Retry-After"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "tiny" in info.value.message and "rpm" in info.value.message


def test_load_balancing_status(tgw: Gateway, chat: Callable[..., Any]) -> None:
    chat("rotating")
    status = httpx.get(f"{tgw.url}/v0/operations/load_balancing/status", headers=ADMIN).json()
    rotating = status["models"]["rotating"]
    assert rotating["strategy"] == "round_robin"
    assert {t["target"] for t in rotating["targets"]} == {"pa/gpt-4o-mini", "pb/gpt-4o-mini"}
    assert status["models"]["with-fallback"]["fallbacks"] == ["backup"]


def test_aliases_and_routing_rules_name_what_fired(chat: Callable[..., Any],
                                                  trio: list[FakeOpenAI]) -> None:
    resp = chat("claude-haiku-4-5")  # no such model: the rule sends it to `backup`
    assert resp.headers["x-sluice-route"] == "background"
    assert resp.headers["x-sluice-provider"] == "pb"
    aliased = chat("small")
    assert aliased.headers["x-sluice-provider"] == "pb"
    assert "x-sluice-route" not in aliased.headers


def test_a_cooling_targets_share_spreads_over_the_rest(tgw: Gateway, chat: Callable[..., Any],
                                                       trio: list[FakeOpenAI]) -> None:
    """Regression (chaos bench): with round robin over A, B, C and B cooling, B's turns all
    fell to the target after it; they must spread over A and C."""
    cooled = httpx.post(f"{tgw.url}/v0/operations/providers/pb/cooldown", headers=ADMIN,
                        json={"duration": "1m"})
    assert cooled.status_code == 200
    seen = [chat("three").headers["x-sluice-provider"] for _ in range(8)]
    assert "pb" not in seen
    assert abs(seen.count("pa") - seen.count("pc3")) <= 1


def test_context_window_fallback(chat: Callable[..., Any], trio: list[FakeOpenAI]) -> None:
    a, b, _ = trio
    a.behavior.status = 400
    a.behavior.body = {"error": {
        "message": "This model's maximum context length is 128000 tokens. However, your "
                   "messages resulted in 130000 tokens.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
    resp = chat("short")
    assert resp.headers["x-sluice-provider"] == "pb"
    assert a.calls["/chat/completions"] == 1 and b.calls["/chat/completions"] == 1
    with pytest.raises(openai.BadRequestError) as info:
        chat("solo")  # no context fallback: the provider's 400 reaches the caller
    assert info.value.code == "context_length_exceeded"


def test_active_health_check_takes_a_failing_provider_out_and_back(
        tgw: Gateway, chat: Callable[..., Any], trio: list[FakeOpenAI]) -> None:
    c = trio[2]
    c.behavior.status = 503  # the probe (GET /v1/models) and requests fail alike
    deadline = time.monotonic() + 5
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = httpx.get(f"{tgw.url}/v0/operations/cooldown/status", headers=ADMIN).json()
        if "ph" in status["providers_in_cooldown"]:
            break
        time.sleep(0.2)
    period = next(p for p in status["cooldown_periods"] if p["provider"] == "ph")
    assert period["reason"] == "health_check"
    c.reset()
    assert chat("probed").headers["x-sluice-provider"] == "pb"
    assert c.calls["/chat/completions"] == 0, "a provider failing its probe gets no traffic"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and chat("probed").headers["x-sluice-provider"] != "ph":
        time.sleep(0.2)  # the next good probe brings it back
    assert chat("probed").headers["x-sluice-provider"] == "ph"
    assert c.calls["/models"] >= 1


def test_a_target_over_its_rpm_is_waited_for_within_the_bound(chat: Callable[..., Any]) -> None:
    """plw allows 60 requests a minute (a burst of 60, then one a second) and may be waited for
    up to 2 s: past the burst, a request waits for room instead of going to the next tier."""
    waits = []
    for _ in range(64):  # the burst, refilled a little while it is spent, then past it
        started = time.monotonic()
        assert chat("waiting").headers["x-sluice-provider"] == "plw"
        waits.append(time.monotonic() - started)
    assert 0.3 < max(waits) < 2.0, "past the burst, a request waited for room"
