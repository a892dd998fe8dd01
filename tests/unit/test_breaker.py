"""Circuit breaker: every transition on a fake clock, the rolling window, and what it reports."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from proxy.breaker import Breaker, BreakerPolicy, BreakerState, BreakerTable

POLICY = BreakerPolicy(failure_ratio=0.5, window=60.0, min_volume=10, open_for=30.0,
                       half_open_probes=2, close_after=2)


def _feed(b: Breaker, ok: int, bad: int, now: float) -> None:
    for _ in range(ok):
        b.record(True, now)
    for _ in range(bad):
        b.record(False, now)


def _opened(now: float = 100.0, policy: BreakerPolicy = POLICY) -> Breaker:
    b = Breaker(policy)
    _feed(b, 0, policy.min_volume, now)
    assert b.state is BreakerState.OPEN
    return b


# --- closed -> open ---------------------------------------------------------------------------


def test_opens_at_the_failure_ratio_with_enough_volume() -> None:
    b = Breaker(POLICY)
    _feed(b, 5, 4, 0.0)
    assert b.state is BreakerState.CLOSED and b.allow(0.0)
    b.record(False, 1.0)  # 5 of 10
    assert b.state is BreakerState.OPEN
    assert not b.allow(1.0)


def test_below_the_ratio_stays_closed() -> None:
    b = Breaker(POLICY)
    _feed(b, 6, 4, 0.0)
    assert b.state is BreakerState.CLOSED


def test_below_min_volume_stays_closed_even_at_100_percent() -> None:
    b = Breaker(POLICY)
    _feed(b, 0, 9, 0.0)
    assert b.state is BreakerState.CLOSED and b.allow(0.0)
    b.record(False, 0.0)
    assert b.state is BreakerState.OPEN


def test_a_ratio_that_is_not_a_binary_fraction_trips_exactly() -> None:
    b = Breaker(BreakerPolicy(failure_ratio=0.3, min_volume=10))
    _feed(b, 7, 3, 0.0)  # 0.3 * 10 is 3.0000000000000004 in floats
    assert b.state is BreakerState.OPEN


def test_successes_never_open_it() -> None:
    b = Breaker(BreakerPolicy(failure_ratio=0.1, min_volume=1))
    _feed(b, 100, 0, 0.0)
    assert b.state is BreakerState.CLOSED


# --- the rolling window -----------------------------------------------------------------------


def test_the_window_forgets_old_outcomes() -> None:
    b = Breaker(POLICY)
    _feed(b, 0, 9, 0.0)
    b.record(False, 66.0)  # the 9 are more than a window old: volume 1
    assert b.state is BreakerState.CLOSED
    assert b.snapshot(66.0)["failures"] == 1


def test_the_window_counts_what_is_within_it() -> None:
    b = Breaker(POLICY)
    _feed(b, 0, 9, 0.0)
    b.record(False, 59.0)
    assert b.state is BreakerState.OPEN


def test_outcomes_leave_the_window_a_bucket_at_a_time() -> None:
    b = Breaker(POLICY)  # 10 buckets of 6 s
    b.record(False, 0.0)
    b.record(True, 30.0)
    snap = b.snapshot
    assert (snap(59.9)["failures"], snap(59.9)["successes"]) == (1, 1)
    assert (snap(60.0)["failures"], snap(60.0)["successes"]) == (0, 1)
    assert (snap(90.0)["failures"], snap(90.0)["successes"]) == (0, 0)


def test_memory_is_fixed_by_the_bucket_count() -> None:
    b = Breaker(BreakerPolicy(buckets=4, min_volume=10**9))
    for i in range(10_000):
        b.record(i % 2 == 0, i * 0.37)
    assert len(b._epochs) == len(b._ok) == len(b._bad) == 4


# --- open -> half-open -> ... -----------------------------------------------------------------


def test_open_rejects_until_open_for_elapsed() -> None:
    b = _opened(now=100.0)
    assert not b.allow(100.0)
    assert not b.allow(129.9)
    assert b.state_at(129.9) is BreakerState.OPEN
    assert b.state_at(130.0) is BreakerState.HALF_OPEN
    assert b.state is BreakerState.OPEN  # state_at does not change it
    assert b.allow(130.0)
    assert b.state is BreakerState.HALF_OPEN


def test_half_open_admits_at_most_n_probes() -> None:
    b = _opened(now=0.0, policy=BreakerPolicy(min_volume=1, half_open_probes=2, close_after=3))
    assert b.allow(30.0) and b.allow(30.0)
    assert not b.allow(30.0)
    b.record(True, 31.0)  # one probe answered: its slot is free
    assert b.allow(31.0)
    assert not b.allow(31.0)


def test_a_probe_failure_reopens_and_restarts_the_timer() -> None:
    b = _opened(now=0.0)
    assert b.allow(30.0)
    b.record(False, 35.0)
    assert b.state is BreakerState.OPEN
    assert not b.allow(64.9)
    assert b.allow(65.0)
    assert b.snapshot(65.0)["opened_at"] == 35.0


def test_close_after_successes_closes_with_a_clean_window() -> None:
    b = _opened(now=0.0)
    assert b.allow(30.0) and b.allow(30.0)
    b.record(True, 31.0)
    assert b.state is BreakerState.HALF_OPEN
    b.record(True, 32.0)
    assert b.state is BreakerState.CLOSED
    assert b.allow(32.0) and b.allow(32.0) and b.allow(32.0)
    snap = b.snapshot(32.0)
    assert (snap["failures"], snap["successes"], snap["opened_at"]) == (0, 0, None)
    # The failures that opened it are forgotten: one more does not reopen it.
    b.record(False, 33.0)
    assert b.state is BreakerState.CLOSED


def test_release_probe_frees_a_slot() -> None:
    b = _opened(now=0.0)
    assert b.allow(30.0) and b.allow(30.0) and not b.allow(30.0)
    b.release_probe()
    assert b.state is BreakerState.HALF_OPEN  # no outcome, no transition
    assert b.allow(30.0)
    b.release_probe()
    b.release_probe()
    b.release_probe()  # more releases than probes: harmless
    assert b.snapshot(30.0)["probes_in_flight"] == 0


def test_release_probe_outside_half_open_is_a_no_op() -> None:
    b = Breaker(POLICY)
    b.release_probe()
    assert b.state is BreakerState.CLOSED
    b = _opened()
    b.release_probe()
    assert b.state is BreakerState.OPEN


def test_a_lost_probe_frees_its_slot_after_probe_timeout() -> None:
    b = _opened(now=0.0, policy=BreakerPolicy(min_volume=1, half_open_probes=1,
                                               probe_timeout=100.0))
    assert b.allow(30.0)
    assert not b.allow(129.9)
    assert b.allow(130.0)


def test_answers_while_open_are_counted_but_decide_nothing() -> None:
    b = _opened(now=0.0)
    _feed(b, 50, 0, 1.0)
    assert b.state is BreakerState.OPEN
    assert b.snapshot(1.0)["successes"] == 50


def test_open_for_zero_goes_straight_to_probing() -> None:
    b = _opened(now=0.0, policy=BreakerPolicy(min_volume=1, open_for=0.0))
    assert b.allow(0.0)
    assert b.state is BreakerState.HALF_OPEN


# --- reporting --------------------------------------------------------------------------------


def test_snapshot_in_each_state() -> None:
    b = Breaker(POLICY)
    _feed(b, 3, 1, 0.0)
    assert b.snapshot(1.0) == {"state": "closed", "failures": 1, "successes": 3, "ratio": 0.25,
                               "opened_at": None, "retry_at": None, "probes_in_flight": 0}
    _feed(b, 1, 5, 2.0)
    assert b.snapshot(3.0) == {"state": "open", "failures": 6, "successes": 4, "ratio": 0.6,
                               "opened_at": 2.0, "retry_at": 32.0, "probes_in_flight": 0}
    # Past open_for it reads half-open even before anyone asked.
    assert b.snapshot(32.0)["state"] == "half_open"
    assert b.snapshot(32.0)["retry_at"] is None
    assert b.allow(32.0)
    snap = b.snapshot(32.0)
    assert (snap["state"], snap["opened_at"], snap["probes_in_flight"]) == ("half_open", 2.0, 1)
    assert Breaker(POLICY).snapshot(0.0)["ratio"] == 0.0


def test_repr_shows_state() -> None:
    b = Breaker(POLICY)
    assert repr(b) == "<Breaker closed failures=0 successes=0>"
    _feed(b, 4, 6, 10.0)
    assert repr(b) == "<Breaker open failures=6 successes=4 opened_at=10.0 retry_at=40.0>"
    b.allow(40.0)
    assert repr(b) == ("<Breaker half_open failures=6 successes=4 opened_at=10.0 retry_at=40.0"
                       " probes=1 probe_successes=0>")


@pytest.mark.parametrize("bad", [{"failure_ratio": 0.0}, {"failure_ratio": 1.5},
                                 {"window": 0.0}, {"min_volume": 0}, {"open_for": -1.0},
                                 {"half_open_probes": 0}, {"close_after": 0}, {"buckets": 0},
                                 {"probe_timeout": float("inf")}])
def test_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="breaker"):
        BreakerPolicy(**bad)  # type: ignore[arg-type]


# --- the table --------------------------------------------------------------------------------


def test_table_makes_one_breaker_per_key_with_its_policy() -> None:
    asked: list[Hashable] = []

    def policy_for(key: Hashable) -> BreakerPolicy:
        asked.append(key)
        return BreakerPolicy(min_volume=1) if key == ("p", "fragile") else POLICY

    t = BreakerTable(policy_for)
    a = t.get(("p", "m"))
    assert t.get(("p", "m")) is a
    assert t.get(("p", "fragile")).policy.min_volume == 1
    assert asked == [("p", "m"), ("p", "fragile")]
    assert len(t) == 2
    assert dict(t.items()) == {("p", "m"): a, ("p", "fragile"): t.get(("p", "fragile"))}


def test_table_retain_forgets_removed_keys_and_restarts_changed_policies() -> None:
    policies = {"a": POLICY, "b": POLICY}
    t = BreakerTable(lambda key: policies[str(key)])
    a, b = t.get("a"), t.get("b")
    _feed(a, 0, 10, 0.0)
    _feed(b, 0, 10, 0.0)
    assert repr(t) == "<BreakerTable closed=0 open=2 half_open=0>"
    policies["b"] = BreakerPolicy(open_for=5.0)
    t.retain({"a", "b"})
    assert t.get("a") is a and a.state is BreakerState.OPEN  # unchanged policy: state kept
    assert t.get("b") is not b and t.get("b").state is BreakerState.CLOSED
    t.retain(["b"])
    assert [k for k, _ in t.items()] == ["b"]
    assert repr(t) == "<BreakerTable closed=1 open=0 half_open=0>"
