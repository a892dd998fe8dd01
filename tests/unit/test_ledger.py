"""Budgets and provider quotas: calendar periods in UTC, spend counted per request."""

from __future__ import annotations

import datetime as dt

import pytest

from proxy.config import GatewayKey, settings_from_mapping
from proxy.config.settings import Budget
from proxy.ledger import Ledger, period_bounds
from proxy.records import UsageRecord


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def rec(ts: float, key: str = "k", provider: str = "p", tokens: int = 10,
        cost: float | None = 0.5) -> UsageRecord:
    return UsageRecord(ts=ts, request_id=f"r{ts}{tokens}", key=key, dialect="openai",
                       operation="chat", model="m", provider=provider, credential=None,
                       upstream_model="m", status=200, outcome="ok", error=None, attempts=1,
                       input_tokens=tokens, output_tokens=0, cost_usd=cost)


def test_periods_are_utc_calendar_periods() -> None:
    now = at("2026-11-28T15:30:00")  # a Saturday
    assert period_bounds("day", now) == (at("2026-11-28T00:00:00"), at("2026-11-29T00:00:00"))
    assert period_bounds("week", now) == (at("2026-11-23T00:00:00"), at("2026-11-30T00:00:00"))
    assert period_bounds("month", now) == (at("2026-11-01T00:00:00"), at("2026-12-01T00:00:00"))
    assert period_bounds("month", at("2026-12-31T23:59:59"))[1] == at("2027-01-01T00:00:00")


def key(*budgets: Budget) -> GatewayKey:
    return GatewayKey(name="k", secret="s", budgets=budgets)


def test_a_budget_stops_the_first_request_after_it_is_spent_and_resets_next_period() -> None:
    k = key(Budget("usd", "day", 1.0))
    ledger = Ledger()
    ledger.configure([k], {})
    noon = at("2026-11-28T12:00:00")
    ledger.add(rec(noon, cost=0.6))
    assert ledger.check(k, noon) is None
    ledger.add(rec(noon, cost=0.4))
    over = ledger.check(k, noon)
    assert over is not None and over.spent == pytest.approx(1.0)
    assert over.resets_at == at("2026-11-29T00:00:00")
    assert "budget.usd.day" in over.message("k") and "2026-11-29T00:00:00Z" in over.message("k")
    assert ledger.check(k, at("2026-11-29T00:00:01")) is None  # a new day


def test_unknown_cost_counts_nothing_and_tokens_count_separately() -> None:
    k = key(Budget("tokens", "month", 25), Budget("usd", "week", 5))
    ledger = Ledger()
    ledger.configure([k], {})
    now = at("2026-11-28T12:00:00")
    for _ in range(3):
        ledger.add(rec(now, cost=None))
    over = ledger.check(k, now)
    assert over is not None and over.budget.unit == "tokens" and over.spent == 30
    status = {s["budget"]: s for s in ledger.key_status(k, now)}
    assert status["budget.usd.week"]["spent"] == 0 and not status["budget.usd.week"]["exceeded"]


def test_seeded_totals_survive_a_reconfigure() -> None:
    k = key(Budget("usd", "month", 10))
    ledger = Ledger()
    ledger.configure([k], {})
    now = at("2026-11-28T12:00:00")
    ledger.seed("key", "k", "month", period_bounds("month", now)[0], 4, 100, 9.5)
    ledger.configure([k], {})  # a reload keeps what the key spent
    ledger.add(rec(now, cost=0.5))
    assert ledger.check(k, now) is not None


def test_provider_quota_left_feeds_quota_aware() -> None:
    settings = settings_from_mapping({
        "providers": {"a": {"kind": "openai-compatible", "base_url": "http://127.0.0.1:1",
                            "quota": {"limit": 100, "reset": "daily"}},
                      "b": {"kind": "openai-compatible", "base_url": "http://127.0.0.1:2"}},
        "models": {"m": {"targets": [{"provider": "a"}]}}}, env={})
    ledger = Ledger()
    ledger.configure(settings.keys, settings.providers)
    now = at("2026-11-28T12:00:00")
    assert ledger.quota_left("a", now) == 1.0 and ledger.quota_left("b", now) is None
    ledger.add(rec(now, provider="a", tokens=30))
    ledger.add(rec(now, provider="b", tokens=30))
    assert ledger.quota_left("a", now) == pytest.approx(0.7)
    assert ledger.quota_left("a", at("2026-11-29T01:00:00")) == 1.0
