"""Cooldowns: what each provider's headers ask for, and the table's deadlines on a fake clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from proxy.cooldown import (
    CooldownEntry,
    CooldownPolicy,
    CooldownTable,
    retry_after_seconds,
    retry_delay_seconds,
)

# 2025-08-21T12:40:00Z as Unix time: the wall clock every absolute date below is read against.
WALL = datetime(2025, 8, 21, 12, 40, 0, tzinfo=UTC).timestamp()
EXACT = CooldownPolicy(spread=0.0)  # deadlines without the random spread


# --- headers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30", 30.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5),
     # HTTP-date in each of RFC 9110's three formats, 90 s after WALL
     ("Thu, 21 Aug 2025 12:41:30 GMT", 90.0),
     ("Thursday, 21-Aug-25 12:41:30 GMT", 90.0),
     ("Thu Aug 21 12:41:30 2025", 90.0)],
)
def test_retry_after_seconds_and_http_dates(value: str, seconds: float) -> None:
    assert retry_after_seconds({"retry-after": value}, WALL) == pytest.approx(seconds)


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "30"}, WALL) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250.5"}, WALL) == pytest.approx(0.2505)


@pytest.mark.parametrize(
    "value",
    ["soon", "-5", "nan", "inf", "1e3", "", "0x10", "Thu, 21 Aug 2025 12:39:00 GMT",  # in the past
     "Thu, 32 Aug 2025 12:41:30 GMT"],
)
def test_garbage_negative_and_past_values_are_ignored(value: str) -> None:
    assert retry_after_seconds({"retry-after": value}, WALL) is None
    assert retry_after_seconds({"retry-after-ms": value}, WALL) is None
    assert retry_after_seconds({"x-ratelimit-reset-requests": value}, WALL) is None
    assert retry_after_seconds({"anthropic-ratelimit-requests-reset": value}, WALL) is None


def test_garbage_falls_through_to_the_next_form() -> None:
    headers = {"retry-after-ms": "-1", "retry-after": "later", "x-ratelimit-reset-tokens": "6m0s"}
    assert retry_after_seconds(headers, WALL) == 360.0


def test_no_header_no_answer() -> None:
    assert retry_after_seconds({}, WALL) is None
    assert retry_after_seconds({"x-ratelimit-remaining-requests": "0"}, WALL) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0s", 0.0),
     ("1.5µs", 1.5e-6), ("250us", 2.5e-4), ("7", 7.0)],  # bare seconds: Azure OpenAI
)
def test_openai_reset_durations(value: str, seconds: float) -> None:
    assert retry_after_seconds({"x-ratelimit-reset-tokens": value}, WALL) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["1 s", "6m0", "s", "1d", "1.s", "m5s"])
def test_openai_malformed_durations(value: str) -> None:
    assert retry_after_seconds({"x-ratelimit-reset-requests": value}, WALL) is None


def _openai(req_left: str, tok_left: str) -> dict[str, str]:
    return {"x-ratelimit-reset-requests": "2s", "x-ratelimit-remaining-requests": req_left,
            "x-ratelimit-reset-tokens": "45s", "x-ratelimit-remaining-tokens": tok_left}


def test_openai_waits_for_the_spent_limits_only() -> None:
    # Out of requests with tokens to spare: the tokens' (longer) full refill is not our wait.
    assert retry_after_seconds(_openai("0", "90000"), WALL) == 2.0
    assert retry_after_seconds(_openai("12", "0"), WALL) == 45.0
    # Both spent: a retry needs both back.
    assert retry_after_seconds(_openai("0", "0"), WALL) == 45.0
    # None reads 0 (a request larger than the tokens left): the largest reset given.
    assert retry_after_seconds(_openai("12", "500"), WALL) == 45.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2025-08-21T12:40:59Z", 59.0), ("2025-08-21T12:40:59.5Z", 59.5),
     ("2025-08-21T14:41:00+02:00", 60.0), ("2025-08-21t12:40:10z", 10.0),
     ("2025-08-21T12:40:01.123456789Z", 1.123456)],
)
def test_anthropic_rfc3339_resets(value: str, seconds: float) -> None:
    got = retry_after_seconds({"anthropic-ratelimit-requests-reset": value}, WALL)
    assert got == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["2025-08-21", "2025-08-21T12:41:00", "2025-13-01T00:00:00Z",
                                   "1755780060", "2025-08-21T12:39:00Z"])
def test_anthropic_malformed_naive_or_past_resets(value: str) -> None:
    assert retry_after_seconds({"anthropic-ratelimit-tokens-reset": value}, WALL) is None


def test_anthropic_waits_for_the_spent_limits_only() -> None:
    headers = {
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:02Z",
        "anthropic-ratelimit-requests-remaining": "40",
        "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:20Z",
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": "2025-08-21T12:40:05Z",
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2025-08-21T12:40:50Z",
        "anthropic-ratelimit-tokens-remaining": "3000",
    }
    assert retry_after_seconds(headers, WALL) == 20.0
    # Its documented retry-after, when present, is preferred over the resets.
    assert retry_after_seconds({**headers, "retry-after": "3"}, WALL) == 3.0


def test_preference_order() -> None:
    anthropic = {"anthropic-ratelimit-requests-reset": "2025-08-21T12:40:40Z"}
    openai = {"x-ratelimit-reset-requests": "30s", **anthropic}
    assert retry_after_seconds(anthropic, WALL) == 40.0
    assert retry_after_seconds(openai, WALL) == 30.0
    assert retry_after_seconds({"retry-after": "20", **openai}, WALL) == 20.0
    assert retry_after_seconds({"retry-after-ms": "10000", "retry-after": "20", **openai},
                               WALL) == 10.0


@pytest.mark.parametrize(("value", "seconds"),
                         [("7s", 7.0), ("1.5s", 1.5), ("0s", 0.0), ("0.000000001s", 1e-9),
                          (" 42s ", 42.0)])
def test_gemini_retry_delay(value: str, seconds: float) -> None:
    assert retry_delay_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["-1s", "7", "1.5 s", "1m", "s", "", "1.0000000001s", "nans"])
def test_gemini_retry_delay_garbage(value: str) -> None:
    assert retry_delay_seconds(value) is None


# --- policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [{"threshold": 0}, {"window": 0.0}, {"error": -1.0},
                                 {"cap": float("inf")}, {"spread": float("nan")}])
def test_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="cooldown"):
        CooldownPolicy(**bad)  # type: ignore[arg-type]


def test_policy_defaults_match_the_issue() -> None:
    p = CooldownPolicy()
    assert (p.rate_limit, p.error, p.threshold, p.window, p.cap) == (300.0, 60.0, 5, 60.0, 600.0)


# --- rate limits ------------------------------------------------------------------------------


def test_rate_limited_uses_the_given_time() -> None:
    t = CooldownTable()
    assert t.on_rate_limited("k", EXACT, 100.0, 12.0) == 112.0
    assert t.remaining("k", 100.0) == 12.0
    assert t.remaining("k", 111.5) == pytest.approx(0.5)
    assert t.remaining("other", 100.0) == 0.0


def test_rate_limited_default_when_no_time_is_named() -> None:
    t = CooldownTable()
    assert t.on_rate_limited("k", EXACT, 0.0, None) == 300.0
    assert t.on_rate_limited("j", CooldownPolicy(rate_limit=600.0, spread=0.0), 0.0, None) == 600.0
    # Nonsense from a careless caller is treated as "no time named", not as forever.
    assert t.on_rate_limited("n", EXACT, 0.0, float("nan")) == 300.0
    assert t.on_rate_limited("m", EXACT, 0.0, -3.0) == 300.0


def test_rate_limited_zero_is_honoured() -> None:
    t = CooldownTable()
    assert t.on_rate_limited("k", CooldownPolicy(), 50.0, 0.0) == 50.0
    assert t.remaining("k", 50.0) == 0.0


def test_cap_bounds_absurd_provider_times() -> None:
    t = CooldownTable()
    assert t.on_rate_limited("k", EXACT, 0.0, 86400.0) == 600.0
    assert t.on_rate_limited("j", CooldownPolicy(cap=120.0, spread=0.0), 0.0, 121.0) == 120.0


def test_spread_is_bounded_and_varies() -> None:
    t = CooldownTable(random.Random(42))
    policy = CooldownPolicy(spread=0.1)
    deadlines = [t.on_rate_limited(i, policy, 1000.0, 100.0) for i in range(500)]
    assert all(1100.0 <= d < 1110.0 for d in deadlines)
    assert max(deadlines) - min(deadlines) > 5.0  # keys do not all wake at once
    # The spread is applied after the cap: never more than cap * (1 + spread).
    capped = [t.on_rate_limited(("c", i), policy, 0.0, 1e9) for i in range(200)]
    assert all(600.0 <= d < 660.0 for d in capped)


def test_same_seed_same_deadlines() -> None:
    a, b = CooldownTable(random.Random(7)), CooldownTable(random.Random(7))
    policy = CooldownPolicy()
    assert [a.on_rate_limited(i, policy, 0.0, 10.0) for i in range(5)] == [
        b.on_rate_limited(i, policy, 0.0, 10.0) for i in range(5)]


def test_a_later_429_never_shortens_the_cooldown() -> None:
    t = CooldownTable()
    assert t.on_rate_limited("k", EXACT, 0.0, 60.0) == 60.0
    # A concurrent request answered later with a shorter Retry-After.
    assert t.on_rate_limited("k", EXACT, 1.0, 5.0) == 60.0
    # A longer one lengthens it, and it stays one cooldown that started at 0.
    assert t.on_rate_limited("k", EXACT, 2.0, 100.0) == 102.0
    (entry,) = t.entries(2.0)
    assert (entry.started_at, entry.ends_at, entry.reason) == (0.0, 102.0, "rate_limited")


# --- failures ---------------------------------------------------------------------------------


def test_threshold_failures_within_the_window_trip() -> None:
    t = CooldownTable()
    policy = CooldownPolicy(error=120.0, threshold=5, window=60.0, spread=0.0)
    for now in (0.0, 10.0, 20.0, 30.0):
        assert t.on_failure("k", policy, now, "errors") is None
        assert t.remaining("k", now) == 0.0
    assert t.on_failure("k", policy, 59.0, "errors") == 179.0
    assert t.remaining("k", 59.0) == 120.0
    (entry,) = t.entries(60.0)
    assert entry == CooldownEntry("k", 59.0, 179.0, "errors")


def test_failures_spread_wider_than_the_window_do_not_trip() -> None:
    t = CooldownTable()
    policy = CooldownPolicy(threshold=3, window=60.0, spread=0.0)
    # Every failure is 31 s after the previous one: never three within 60 s.
    assert all(t.on_failure("k", policy, i * 31.0, "errors") is None for i in range(20))
    assert t.remaining("k", 20 * 31.0) == 0.0
    # Exactly `window` old is outside the window.
    t2 = CooldownTable()
    assert t2.on_failure("k", policy, 0.0) is None
    assert t2.on_failure("k", policy, 30.0) is None
    assert t2.on_failure("k", policy, 60.0) is None
    assert t2.on_failure("k", policy, 60.5) is not None


def test_the_failure_window_is_bounded_by_threshold() -> None:
    t = CooldownTable()
    policy = CooldownPolicy(threshold=4, window=1.0)
    for i in range(1000):
        t.on_failure("k", policy, i * 2.0)
    assert len(t._failures["k"]) <= 4


def test_counting_starts_afresh_after_a_trip() -> None:
    t = CooldownTable()
    policy = CooldownPolicy(error=10.0, threshold=2, window=60.0, spread=0.0)
    t.on_failure("k", policy, 0.0)
    assert t.on_failure("k", policy, 1.0) == 11.0
    assert t.on_failure("k", policy, 20.0) is None  # one new failure, not three
    assert t.on_failure("k", policy, 21.0) == 31.0


def test_a_changed_threshold_takes_effect() -> None:
    t = CooldownTable()
    t.on_failure("k", CooldownPolicy(threshold=5), 0.0)
    t.on_failure("k", CooldownPolicy(threshold=5), 1.0)
    assert t.on_failure("k", CooldownPolicy(threshold=3, spread=0.0), 2.0) == 62.0


def test_success_ends_cooldown_and_clears_failures() -> None:
    t = CooldownTable()
    policy = CooldownPolicy(threshold=3, spread=0.0)
    t.on_rate_limited("k", policy, 0.0, 30.0)
    t.on_failure("k", policy, 1.0)
    t.on_failure("k", policy, 2.0)
    t.on_success("k")
    assert t.remaining("k", 3.0) == 0.0
    assert t.on_failure("k", policy, 4.0) is None  # the window was cleared
    t.on_success("never-seen")  # harmless


def test_success_of_a_request_sent_before_the_cooldown_does_not_end_it() -> None:
    t = CooldownTable()
    t.on_rate_limited("k", EXACT, 10.0, 30.0)
    t.on_success("k", sent_at=9.0)  # in flight when the 429 arrived
    assert t.remaining("k", 11.0) == 29.0
    t.on_success("k", sent_at=10.0)
    assert t.remaining("k", 11.0) == 0.0


# --- manual -----------------------------------------------------------------------------------


def test_manual_cool_and_recover() -> None:
    t = CooldownTable()
    assert t.cool("k", 600.0, 5.0) == 605.0
    (entry,) = t.entries(5.0)
    assert entry.reason == "manual" and entry.remaining(105.0) == 500.0
    assert t.recover("k") is True
    assert t.remaining("k", 6.0) == 0.0
    assert t.recover("k") is False


def test_manual_cool_replaces_even_a_longer_cooldown_and_is_not_capped() -> None:
    t = CooldownTable()
    t.on_rate_limited("k", EXACT, 0.0, 500.0)
    assert t.cool("k", 10.0, 1.0, reason="maintenance") == 11.0
    assert t.entries(1.0) == [CooldownEntry("k", 0.0, 11.0, "maintenance")]
    assert t.cool("j", 7200.0, 0.0) == 7200.0
    with pytest.raises(ValueError, match="duration"):
        t.cool("k", -1.0, 0.0)


def test_recover_of_an_expired_entry_is_not_a_recovery() -> None:
    t = CooldownTable()
    t.cool("k", 10.0, 0.0)
    assert t.recover("k", now=20.0) is False
    t.cool("k", 10.0, 0.0)
    assert t.recover("k", now=5.0) is True


def test_recover_clears_the_failure_window() -> None:
    t = CooldownTable()
    policy = CooldownPolicy(threshold=2)
    t.on_failure("k", policy, 0.0)
    assert t.recover("k") is False
    assert t.on_failure("k", policy, 1.0) is None


# --- reading it -------------------------------------------------------------------------------


def test_earliest_among_cooling_keys() -> None:
    t = CooldownTable()
    t.on_rate_limited("a", EXACT, 0.0, 30.0)
    t.on_rate_limited("b", EXACT, 0.0, 10.0)
    t.cool("c", 5.0, 0.0)
    assert t.earliest(["a", "b", "idle"], 2.0) == 8.0
    assert t.earliest(["a", "b", "c"], 2.0) == 3.0
    assert t.earliest(["a", "b", "c"], 6.0) == 4.0  # c expired
    assert t.earliest(["idle"], 0.0) is None
    assert t.earliest([], 0.0) is None


def test_entries_are_current_and_soonest_first() -> None:
    t = CooldownTable()
    key = ("cred-1", "gpt-4o-mini")
    t.on_rate_limited(key, EXACT, 0.0, 30.0)
    t.cool("b", 10.0, 0.0)
    t.cool("gone", 1.0, 0.0)
    assert t.entries(2.0) == [CooldownEntry("b", 0.0, 10.0, "manual"),
                              CooldownEntry(key, 0.0, 30.0, "rate_limited")]
    assert [e.key for e in t.entries(10.0)] == [key]
    assert t.entries(30.0) == []


def test_expired_entries_vanish() -> None:
    t = CooldownTable()
    t.on_rate_limited("k", EXACT, 0.0, 30.0)
    assert t.remaining("k", 29.999) > 0
    assert t.remaining("k", 30.0) == 0.0
    assert repr(t) == "<CooldownTable entries=0 failure_windows=0>"


def test_retain_drops_removed_keys() -> None:
    t = CooldownTable()
    policy = CooldownPolicy(threshold=3)
    t.cool("kept", 60.0, 0.0)
    t.cool("removed", 60.0, 0.0)
    t.on_failure("removed-failing", policy, 0.0)
    t.on_failure("kept", policy, 0.0)
    assert repr(t) == "<CooldownTable entries=2 failure_windows=2>"
    t.retain(["kept", "new"])
    assert repr(t) == "<CooldownTable entries=1 failure_windows=1>"
    assert t.remaining("removed", 1.0) == 0.0
    assert t.remaining("kept", 1.0) == 59.0
    t.retain(frozenset())
    assert t.entries(1.0) == []


def test_remaining_on_the_hot_path_does_not_allocate_for_idle_keys() -> None:
    t = CooldownTable()
    t.cool("busy", 60.0, 0.0)
    before = repr(t)
    for _ in range(100):
        assert t.remaining(("idle", "model"), 1.0) == 0.0
    assert repr(t) == before  # asking about a key stores nothing
