"""Metrics: what a scrape shows after a few records, parsed back with prometheus_client's parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from proxy.metrics import (
    LATENCY_BUCKETS,
    MAX_LABEL_SETS,
    METRICS,
    OVERHEAD_BUCKETS,
    Metrics,
    Snapshot,
)
from proxy.records import UsageRecord


def _rec(dialect: str = "openai", model: str | None = "fast", provider: str | None = "oa",
         status: int = 200, **fields: object) -> UsageRecord:
    return UsageRecord(ts=1.0, request_id="r", key=None, dialect=dialect, operation="chat",
                       model=model, provider=provider, credential=None, upstream_model=None,
                       status=status, outcome="ok" if status < 400 else "error", error=None,
                       attempts=1, **fields)  # type: ignore[arg-type]


def _scrape(m: Metrics) -> dict[str, list[Sample]]:
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def _series(samples: list[Sample], name: str) -> list[dict[str, str]]:
    return [s.labels for s in samples if s.name == name]


@pytest.fixture
def observed() -> Metrics:
    m = Metrics()
    m.observe_many([
        _rec(input_tokens=100, output_tokens=20, cached_tokens=40, reasoning_tokens=5,
             cost_usd=0.002, latency_ms=300.0, overhead_ms=0.3, ttft_ms=120.0, stream=True),
        _rec(input_tokens=50, output_tokens=10, cost_usd=0.001, latency_ms=2000.0,
             overhead_ms=0.07, ttft_ms=900.0, stream=True),
        _rec(status=429, latency_ms=5.0, overhead_ms=4.0),
        _rec(dialect="anthropic", input_tokens=7, output_tokens=3, latency_ms=800.0,
             overhead_ms=0.2, cache_hit=True),  # no price: no cost sample for it
        _rec(model=None, provider=None, status=400, latency_ms=1.0, overhead_ms=1.0),
    ])
    return m


def test_request_counts(observed: Metrics) -> None:
    got = _scrape(observed)["sluice_requests"]
    assert _value(got, "sluice_requests_total", dialect="openai", model="fast", provider="oa",
                  status="200") == 2
    assert _value(got, "sluice_requests_total", dialect="openai", model="fast", provider="oa",
                  status="429") == 1
    assert _value(got, "sluice_requests_total", dialect="anthropic", model="fast",
                  provider="oa", status="200") == 1
    # A request that named no model and reached no provider is still counted.
    assert _value(got, "sluice_requests_total", dialect="openai", model="-", provider="-",
                  status="400") == 1
    assert len(_series(got, "sluice_requests_total")) == 4


def test_duration_histogram(observed: Metrics) -> None:
    got = _scrape(observed)["sluice_request_duration_seconds"]
    labels = {"dialect": "openai", "model": "fast", "provider": "oa"}
    # 0.3 s, 2.0 s and 0.005 s
    assert _value(got, "sluice_request_duration_seconds_count", **labels) == 3
    assert _value(got, "sluice_request_duration_seconds_sum", **labels) == pytest.approx(2.305)
    bucket = "sluice_request_duration_seconds_bucket"
    assert _value(got, bucket, le="0.01", **labels) == 1
    assert _value(got, bucket, le="0.25", **labels) == 1
    assert _value(got, bucket, le="0.5", **labels) == 2
    assert _value(got, bucket, le="1.0", **labels) == 2
    assert _value(got, bucket, le="2.5", **labels) == 3
    assert _value(got, bucket, le="+Inf", **labels) == 3
    les = [s.labels["le"] for s in got if s.name == bucket and s.labels["dialect"] == "openai"
           and s.labels["model"] == "fast"]
    assert les == [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]


def test_a_value_on_a_bucket_bound_is_in_that_bucket() -> None:
    m = Metrics()
    m.observe(_rec(latency_ms=1000.0, overhead_ms=0.1))
    got = _scrape(m)
    labels = {"dialect": "openai", "model": "fast", "provider": "oa"}
    dur = got["sluice_request_duration_seconds"]
    assert _value(dur, "sluice_request_duration_seconds_bucket", le="0.5", **labels) == 0
    assert _value(dur, "sluice_request_duration_seconds_bucket", le="1.0", **labels) == 1
    over = got["sluice_gateway_overhead_seconds"]
    assert _value(over, "sluice_gateway_overhead_seconds_bucket", le="0.0001",
                  dialect="openai") == 1


def test_ttft_only_for_streamed_answers(observed: Metrics) -> None:
    got = _scrape(observed)["sluice_ttft_seconds"]
    labels = {"dialect": "openai", "model": "fast", "provider": "oa"}
    assert _value(got, "sluice_ttft_seconds_count", **labels) == 2
    assert _value(got, "sluice_ttft_seconds_sum", **labels) == pytest.approx(1.02)
    assert _value(got, "sluice_ttft_seconds_bucket", le="0.25", **labels) == 1
    assert _value(got, "sluice_ttft_seconds_bucket", le="1.0", **labels) == 2
    # The anthropic row never streamed: no ttft series at all, rather than an empty one.
    assert {s.labels["dialect"] for s in got} == {"openai"}


def test_overhead_is_per_dialect(observed: Metrics) -> None:
    got = _scrape(observed)["sluice_gateway_overhead_seconds"]
    # openai: 0.0003, 0.00007, 0.004 (fast/oa) and 0.001 (-/-) s, summed across models
    assert _value(got, "sluice_gateway_overhead_seconds_count", dialect="openai") == 4
    assert _value(got, "sluice_gateway_overhead_seconds_sum",
                  dialect="openai") == pytest.approx(0.00537)
    bucket = "sluice_gateway_overhead_seconds_bucket"
    assert _value(got, bucket, le="0.0001", dialect="openai") == 1
    assert _value(got, bucket, le="0.0005", dialect="openai") == 2
    assert _value(got, bucket, le="0.001", dialect="openai") == 3
    assert _value(got, bucket, le="0.005", dialect="openai") == 4
    assert _value(got, "sluice_gateway_overhead_seconds_count", dialect="anthropic") == 1
    les = [s.labels["le"] for s in got if s.name == bucket and s.labels["dialect"] == "openai"]
    assert les == [*(repr(b) for b in OVERHEAD_BUCKETS), "+Inf"]


def test_tokens_cost_and_cache_hits(observed: Metrics) -> None:
    got = _scrape(observed)
    tokens = got["sluice_tokens"]
    # Summed over both dialects for fast/oa.
    for kind, n in {"input": 157, "output": 33, "cached": 40, "reasoning": 5}.items():
        assert _value(tokens, "sluice_tokens_total", model="fast", provider="oa", type=kind) == n
    cost = got["sluice_cost_usd"]
    assert _value(cost, "sluice_cost_usd_total", model="fast", provider="oa") == pytest.approx(
        0.003)
    # Nothing was priced for -/-: unknown cost is no sample, not 0.
    assert _series(cost, "sluice_cost_usd_total") == [{"model": "fast", "provider": "oa"}]
    hits = got["sluice_cache_hits"]
    assert _value(hits, "sluice_cache_hits_total", model="fast") == 1
    assert _value(hits, "sluice_cache_hits_total", model="-") == 0


def test_events() -> None:
    m = Metrics()
    m.upstream_error("oa", "http_500")
    m.upstream_error("oa", "http_500")
    m.upstream_error("an", "read_timeout")
    m.store_counts(written=10, spilled=3)
    m.store_counts(written=5, dropped=1, replayed=2)
    m.store_problem("unavailable")
    m.store_problem("unavailable")
    m.reload_result(True)
    m.reload_result(False)
    m.reload_result(True)
    got = _scrape(m)
    errors = got["sluice_upstream_errors"]
    assert _value(errors, "sluice_upstream_errors_total", provider="oa", reason="http_500") == 2
    assert _value(errors, "sluice_upstream_errors_total", provider="an",
                  reason="read_timeout") == 1
    for name, n in {"written": 15, "spilled": 3, "dropped": 1, "replayed": 2}.items():
        family = f"sluice_usage_records_{name}"
        assert _value(got[family], f"{family}_total") == n
    assert _value(got["sluice_usage_store_errors"], "sluice_usage_store_errors_total",
                  kind="unavailable") == 2
    reloads = got["sluice_config_reloads"]
    assert _value(reloads, "sluice_config_reloads_total", result="ok") == 2
    assert _value(reloads, "sluice_config_reloads_total", result="error") == 1


def test_gauges_from_the_bound_snapshot() -> None:
    m = Metrics()
    got = _scrape(m)  # unbound: zeros, and no per-provider series
    assert _value(got["sluice_in_flight_requests"], "sluice_in_flight_requests") == 0
    assert _value(got["sluice_usage_queue_depth"], "sluice_usage_queue_depth") == 0
    assert got["sluice_cooldowns_active"] == []
    assert got["sluice_breaker_state"] == []

    calls = []

    def snapshot() -> Snapshot:
        calls.append(1)
        return Snapshot(in_flight=7, queue_depth=42, cooldowns={"oa": 2, "an": 0},
                        breakers={("oa", "gpt-4o"): 2, ("an", "claude"): 1})

    m.bind(snapshot)
    got = _scrape(m)
    assert len(calls) == 1  # read once per scrape
    assert _value(got["sluice_in_flight_requests"], "sluice_in_flight_requests") == 7
    assert _value(got["sluice_usage_queue_depth"], "sluice_usage_queue_depth") == 42
    cooldowns = got["sluice_cooldowns_active"]
    assert _value(cooldowns, "sluice_cooldowns_active", provider="oa") == 2
    assert _value(cooldowns, "sluice_cooldowns_active", provider="an") == 0
    breakers = got["sluice_breaker_state"]
    assert _value(breakers, "sluice_breaker_state", provider="oa", model="gpt-4o") == 2
    assert _value(breakers, "sluice_breaker_state", provider="an", model="claude") == 1


def test_a_flood_of_model_names_folds_into_other() -> None:
    m = Metrics(max_label_sets=5)
    for i in range(50):
        m.observe(_rec(model=f"junk-{i}", input_tokens=1))
    m.observe(_rec(model="junk-0", input_tokens=1))  # known before the cap: keeps its row
    for i in range(20):
        m.upstream_error("oa", f"weird_{i}")
    got = _scrape(m)
    requests = got["sluice_requests"]
    models = {s["model"] for s in _series(requests, "sluice_requests_total")}
    assert models == {"junk-0", "junk-1", "junk-2", "junk-3", "junk-4", "other"}
    assert _value(requests, "sluice_requests_total", dialect="openai", model="other",
                  provider="oa", status="200") == 45
    assert _value(requests, "sluice_requests_total", dialect="openai", model="junk-0",
                  provider="oa", status="200") == 2
    assert _value(got["sluice_tokens"], "sluice_tokens_total", model="other", provider="oa",
                  type="input") == 45
    reasons = {s["reason"] for s in _series(got["sluice_upstream_errors"],
                                            "sluice_upstream_errors_total")}
    assert reasons == {"weird_0", "weird_1", "weird_2", "weird_3", "weird_4", "other"}
    assert _value(got["sluice_upstream_errors"], "sluice_upstream_errors_total", provider="oa",
                  reason="other") == 15


def test_every_family_is_declared_and_prefixed(observed: Metrics) -> None:
    observed.upstream_error("oa", "http_500")
    observed.store_problem("unavailable")
    observed.bind(lambda: Snapshot(cooldowns={"oa": 1}, breakers={("oa", "m"): 0}))
    names = set(_scrape(observed))
    assert all(name.startswith("sluice_") for name in names), names
    # The parser reports counters without their _total suffix.
    declared = {spec.name.removesuffix("_total") for spec in METRICS.values()}
    assert names == declared


def test_the_default_cap() -> None:
    m = Metrics()
    for i in range(MAX_LABEL_SETS + 100):
        m.observe(_rec(model=f"m{i}"))
    assert repr(m) == f"<Metrics rows={MAX_LABEL_SETS + 1} upstream_errors=0 bound=False>"


def test_repr_shows_state(observed: Metrics) -> None:
    assert repr(observed) == "<Metrics rows=3 upstream_errors=0 bound=False>"
