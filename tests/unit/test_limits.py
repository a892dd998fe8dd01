"""Unit tests for proxy/limits.py: token buckets and the limiter, on a fake clock."""

from __future__ import annotations

import pytest

from proxy import limits
from proxy.limits import (
    UNLIMITED,
    Limiter,
    RateLimit,
    TokenBucket,
    estimate_prompt_tokens,
    estimate_request_tokens,
    format_reset,
)

T0 = 1000.0  # an arbitrary monotonic-clock reading


# --- TokenBucket ---------------------------------------------------------------------------


def test_bucket_starts_full_and_refills_continuously_at_capacity_per_minute() -> None:
    b = TokenBucket(60, T0)
    assert b.capacity == 60.0
    assert b.level(T0) == 60.0
    assert b.take(60, T0) == 0.0
    assert b.level(T0) == 0.0
    assert b.level(T0 + 0.5) == pytest.approx(0.5)
    assert b.level(T0 + 30) == pytest.approx(30.0)
    assert b.level(T0 + 600) == 60.0  # never above the capacity


def test_take_refuses_with_the_exact_wait_and_takes_nothing() -> None:
    b = TokenBucket(600, T0)  # 10 per second
    assert b.take(595, T0) == 0.0
    wait = b.take(25, T0)
    assert wait == pytest.approx(2.0)  # 5 left, 20 short at 10/s
    assert b.level(T0) == pytest.approx(5.0)
    # Waiting exactly what we were told is enough, despite float rounding.
    assert b.take(25, T0 + wait) == 0.0
    assert b.level(T0 + wait) == pytest.approx(0.0, abs=1e-6)


def test_exact_wait_survives_float_rounding_over_many_rates() -> None:
    # Without the rounding allowance, 7 per minute fails for most of these amounts.
    for per_minute in (7, 13, 999, 123457):
        for amount in range(1, min(per_minute, 60) + 1):
            b = TokenBucket(per_minute, T0)
            b.take(per_minute, T0)
            wait = b.take(amount, T0)
            assert wait > 0
            assert b.take(amount, T0 + wait) == 0.0, (per_minute, amount)


def test_an_amount_above_capacity_passes_only_when_full_and_leaves_a_debt() -> None:
    b = TokenBucket(100, T0)
    b.take(1, T0)
    wait = b.take(250, T0)
    assert wait == pytest.approx(0.6)  # the 1 missing token at 100/60 per second
    assert b.take(250, T0 + wait) == 0.0  # full again: the huge request goes through
    assert b.level(T0 + wait) == pytest.approx(-150.0)
    assert b.reset_in(T0 + wait) == pytest.approx(150.0)  # 250 units at 100/60 per second
    # In debt even a zero-amount take waits until the debt is paid.
    assert b.take(0, T0 + wait) == pytest.approx(90.0)


def test_give_returns_up_to_capacity_and_negative_give_charges_into_debt() -> None:
    b = TokenBucket(100, T0)
    b.take(80, T0)
    b.give(30, T0)
    assert b.level(T0) == pytest.approx(50.0)
    b.give(1000, T0)
    assert b.level(T0) == 100.0
    b.give(-130, T0)
    assert b.level(T0) == pytest.approx(-30.0)
    assert b.take(1, T0) == pytest.approx(31 / (100 / 60))


def test_reset_in_is_the_time_until_full() -> None:
    b = TokenBucket(120, T0)  # 2 per second
    assert b.reset_in(T0) == 0.0
    b.take(30, T0)
    assert b.reset_in(T0) == pytest.approx(15.0)
    assert b.reset_in(T0 + 5) == pytest.approx(10.0)
    assert b.reset_in(T0 + 15) == 0.0


def test_a_clock_stepping_back_is_no_time_passing() -> None:
    b = TokenBucket(60, T0)
    b.take(60, T0)
    assert b.level(T0 - 30) == 0.0
    assert b.level(T0 + 1) == pytest.approx(1.0)


def test_resize_keeps_what_was_used() -> None:
    b = TokenBucket(100, T0)
    b.take(40, T0)
    b.resize(200, T0)
    assert b.capacity == 200.0
    assert b.level(T0) == pytest.approx(160.0)
    b.resize(20, T0)
    assert b.level(T0) == pytest.approx(-20.0)


def test_bucket_repr_shows_level_and_capacity() -> None:
    b = TokenBucket(60, T0)
    b.take(15, T0)
    assert repr(b) == "<TokenBucket 45.00/60 at t=1000>"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rpm must be at least 1"):
        RateLimit(rpm=0)
    with pytest.raises(ValueError, match="tpm must be at least 1"):
        RateLimit(tpm=-5)
    with pytest.raises(ValueError):
        TokenBucket(0, T0)


# --- Limiter -------------------------------------------------------------------------------


def test_no_limit_allows_without_storing_anything() -> None:
    lim = Limiter()
    d = lim.check("k", RateLimit(), 10_000, T0)
    assert d is UNLIMITED
    assert d.allowed and d.scope == "none"
    assert len(lim) == 0
    assert lim.headers(d) == {}


def test_refuses_with_retry_after_once_rpm_is_spent() -> None:
    lim = Limiter()
    rl = RateLimit(rpm=60)  # one per second
    for i in range(60):
        d = lim.check("k", rl, 0, T0)
        assert d.allowed and d.retry_after == 0.0
        assert d.remaining == 59 - i
    d = lim.check("k", rl, 0, T0)
    assert not d.allowed
    assert d.retry_after == pytest.approx(1.0)
    assert (d.scope, d.limit, d.remaining) == ("rpm", 60, 0)
    assert d.reset == pytest.approx(60.0)
    assert lim.check("k", rl, 0, T0 + d.retry_after).allowed
    assert not lim.check("k", rl, 0, T0 + d.retry_after).allowed


def test_keys_have_their_own_buckets() -> None:
    lim = Limiter()
    rl = RateLimit(rpm=1)
    assert lim.check("a", rl, 0, T0).allowed
    assert not lim.check("a", rl, 0, T0).allowed
    assert lim.check("b", rl, 0, T0).allowed
    assert lim.check(("cred", "model"), rl, 0, T0).allowed


def test_a_token_refusal_takes_no_request_either() -> None:
    lim = Limiter()
    rl = RateLimit(rpm=10, tpm=1000)
    assert lim.check("k", rl, 900, T0).allowed
    d = lim.check("k", rl, 200, T0)
    assert not d.allowed
    assert d.scope == "tpm"
    assert d.retry_after == pytest.approx(100 / (1000 / 60))  # 100 tokens short
    assert d.remaining_requests == 9  # the refused request took nothing
    assert d.remaining_tokens == 100
    d = lim.check("k", rl, 100, T0)
    assert d.allowed
    assert (d.remaining_requests, d.remaining_tokens) == (8, 0)


def test_a_request_refusal_takes_no_tokens_either() -> None:
    lim = Limiter()
    rl = RateLimit(rpm=1, tpm=1000)
    assert lim.check("k", rl, 10, T0).allowed
    d = lim.check("k", rl, 10, T0)
    assert not d.allowed and d.scope == "rpm"
    assert d.retry_after == pytest.approx(60.0)
    assert d.remaining_tokens == 990


def test_refused_by_both_names_the_longer_wait() -> None:
    lim = Limiter()
    rl = RateLimit(rpm=2, tpm=600)  # 1 request per 30 s, 10 tokens per second
    assert lim.check("k", rl, 300, T0).allowed
    assert lim.check("k", rl, 300, T0).allowed
    d = lim.check("k", rl, 500, T0)  # rpm needs 30 s, tpm needs 50 s
    assert (d.allowed, d.scope) == (False, "tpm")
    assert d.retry_after == pytest.approx(50.0)
    d = lim.check("k", rl, 100, T0)  # rpm needs 30 s, tpm 10 s
    assert d.scope == "rpm"
    assert d.retry_after == pytest.approx(30.0)


def test_allowed_decision_names_the_limit_with_the_smallest_share_left() -> None:
    lim = Limiter()
    rl = RateLimit(rpm=100, tpm=1000)
    d = lim.check("k", rl, 500, T0)  # 99% of requests left, 50% of tokens
    assert (d.scope, d.limit, d.remaining) == ("tpm", 1000, 500)
    d = lim.check("k2", RateLimit(rpm=2, tpm=1000), 1, T0)
    assert (d.scope, d.limit, d.remaining) == ("rpm", 2, 1)


def test_an_oversized_request_passes_on_a_full_bucket_then_waits_out_its_debt() -> None:
    lim = Limiter()
    rl = RateLimit(tpm=600)
    d = lim.check("k", rl, 1500, T0)
    assert d.allowed and d.remaining == 0
    d = lim.check("k", rl, 1, T0)
    assert not d.allowed
    assert d.retry_after == pytest.approx(90.1)  # 900 debt + 1 token at 10/s


def test_reconcile_returns_an_overestimate_and_charges_an_underestimate() -> None:
    lim = Limiter()
    rl = RateLimit(tpm=6000)  # 100 per second
    assert lim.check("k", rl, 5000, T0).allowed
    lim.reconcile("k", estimated=5000, actual=1200, now=T0)
    d = lim.check("k", rl, 4800, T0)
    assert d.allowed and d.remaining == 0
    lim.reconcile("k", estimated=4800, actual=5800, now=T0)  # 1000 more than estimated
    d = lim.check("k", rl, 100, T0)
    assert not d.allowed
    assert d.retry_after == pytest.approx(11.0)  # 1000 debt + 100 wanted at 100/s
    lim.reconcile("unknown", estimated=10, actual=0, now=T0)  # no bucket: nothing happens
    assert len(lim) == 1


def test_cancel_gives_back_what_check_took() -> None:
    lim = Limiter()
    rl = RateLimit(rpm=1, tpm=100)
    assert lim.check("k", rl, 80, T0).allowed
    lim.cancel("k", 80, T0)
    d = lim.check("k", rl, 100, T0)
    assert d.allowed and (d.remaining_requests, d.remaining_tokens) == (0, 0)
    lim.cancel("unknown", 5, T0)


def test_a_changed_limit_resizes_the_buckets_keeping_usage() -> None:
    lim = Limiter()
    assert lim.check("k", RateLimit(rpm=2), 0, T0).allowed
    assert lim.check("k", RateLimit(rpm=2), 0, T0).allowed
    assert not lim.check("k", RateLimit(rpm=2), 0, T0).allowed
    d = lim.check("k", RateLimit(rpm=10, tpm=50), 20, T0)  # reloaded: 8 more requests
    assert d.allowed
    assert (d.remaining_requests, d.remaining_tokens) == (7, 30)
    d = lim.check("k", RateLimit(tpm=50), 0, T0)  # the request limit removed
    assert (d.limit_requests, d.scope) == (None, "tpm")


def test_retain_forgets_removed_keys() -> None:
    lim = Limiter()
    rl = RateLimit(rpm=1)
    for key in ("a", "b", "c"):
        lim.check(key, rl, 0, T0)
    lim.retain({"a", "c"})
    assert len(lim) == 2
    assert not lim.check("a", rl, 0, T0).allowed
    assert lim.check("b", rl, 0, T0).allowed  # forgotten, so fresh
    assert repr(lim) == "<Limiter keys=3>"


def test_key_table_is_bounded_dropping_full_buckets_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "_MAX_KEYS", 8)
    monkeypatch.setattr(limits, "_KEYS_AFTER_SWEEP", 6)
    lim = Limiter()
    rl = RateLimit(rpm=2)
    for i in range(4):  # busy keys: one request each, buckets not full for 30 s
        lim.check(f"busy{i}", rl, 0, T0)
    for i in range(4):
        lim.check(f"idle{i}", rl, 0, T0 - 60)  # refilled by T0: full again
    lim.check("new", rl, 0, T0)  # table full: the four full buckets go, nothing busy does
    assert len(lim) == 5
    for i in range(3):
        lim.check(f"more{i}", rl, 0, T0)
    assert len(lim) == 8
    lim.check("last", rl, 0, T0)  # nothing full: the oldest two go, down to 6, then "last"
    assert len(lim) == 7
    assert lim.check("busy0", rl, 0, T0).remaining == 1  # forgotten, so a fresh bucket
    assert lim.check("busy2", rl, 0, T0).remaining == 0  # kept


# --- headers and estimates -----------------------------------------------------------------


def test_headers_follow_openai_names_and_formats() -> None:
    lim = Limiter()
    rl = RateLimit(rpm=60, tpm=150_000)
    d = lim.check("k", rl, 16, T0)
    assert lim.headers(d) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "7ms",
    }


def test_refused_headers_carry_retry_after_rounded_up_and_at_least_one() -> None:
    lim = Limiter()
    rl = RateLimit(tpm=600)  # 10 per second
    lim.check("k", rl, 600, T0)
    d = lim.check("k", rl, 3, T0)  # 0.3 s away
    h = lim.headers(d)
    assert (h["Retry-After"], h["retry-after-ms"]) == ("1", "300")
    assert h["x-ratelimit-remaining-tokens"] == "0"
    assert h["x-ratelimit-reset-tokens"] == "1m0s"
    assert "x-ratelimit-limit-requests" not in h
    d = lim.check("k", rl, 25, T0 + 0.3)  # 2.2 s away
    assert lim.headers(d)["Retry-After"] == "3"
    # 11 tokens at 11 per minute is exactly 60 s, which float division makes 60.00000000000001:
    # that must not round up to 61.
    tight = RateLimit(tpm=11)
    lim.check("k2", tight, 11, T0)
    d = lim.check("k2", tight, 11, T0)
    assert d.retry_after > 60.0
    assert lim.headers(d)["Retry-After"] == "60"
    assert lim.headers(d)["retry-after-ms"] == "60000"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (-1.0, "0s"), (0.0001, "1ms"), (0.012, "12ms"), (0.9994, "1s"), (1.0, "1s"),
     (1.5, "1.5s"), (23.456, "23.456s"), (60.0, "1m0s"), (360.0, "6m0s"), (383.25, "6m23.25s"),
     (3600.0, "1h0m0s"), (7384.0, "2h3m4s")],
)
def test_format_reset_writes_go_durations_rounded_up_to_the_millisecond(
    seconds: float, text: str
) -> None:
    assert format_reset(seconds) == text


def test_prompt_estimate_is_bytes_over_four_rounded_up_and_capped() -> None:
    assert estimate_prompt_tokens(0) == 0
    assert estimate_prompt_tokens(1) == 1
    assert estimate_prompt_tokens(4000) == 1000
    assert estimate_prompt_tokens(4001) == 1001
    assert estimate_prompt_tokens(32 << 20) == 2_000_000  # 32 MiB of base64 images
    assert estimate_request_tokens(400, 256) == 356
    assert estimate_request_tokens(400, None) == 100
