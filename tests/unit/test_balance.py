"""Unit tests for proxy/balance.py: each strategy's order, stickiness, stats, status scores."""

from __future__ import annotations

import collections
import itertools
import random

import pytest

from proxy import balance
from proxy.balance import Balancer, Candidate, Strategy, TargetStats

_SEED = 20240611


def _names(order: list[Candidate]) -> list[str]:
    return [c.label for c in order]


def _firsts(b: Balancer, strategy: Strategy, cands: list[Candidate], n: int) -> collections.Counter[str]:
    return collections.Counter(b.order(strategy, "r", cands)[0].label for _ in range(n))


def _stats(in_flight: int = 0, latency: float | None = None) -> TargetStats:
    return TargetStats(in_flight=in_flight, latency_ewma=latency)


def test_strategies_are_spelled_as_in_the_config() -> None:
    assert Strategy("round_robin") is Strategy.ROUND_ROBIN
    assert [s.value for s in Strategy] == [
        "round_robin", "weighted", "least_busy", "latency", "cost", "priority", "quota_aware"]
    assert str(Strategy.QUOTA_AWARE) == "quota_aware"


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_returns_each_candidate_once(strategy: Strategy) -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key=k, weight=w) for k, w in (("a", 1), ("b", 3), ("c", 0), ("d", 2))]
    for _ in range(50):
        order = b.order(strategy, "r", cands)
        assert sorted(_names(order)) == ["a", "b", "c", "d"]
        assert order[-1].label == "c" or strategy is Strategy.PRIORITY  # the standby last
    assert b.order(strategy, "r", cands[:1]) == cands[:1]
    assert b.order(strategy, "r", []) == []


# --- round robin ---------------------------------------------------------------------------


def test_round_robin_rotates_evenly_per_route() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key=k) for k in "abc"]
    seq = [_names(b.order(Strategy.ROUND_ROBIN, "r", cands)) for _ in range(6)]
    assert seq[:3] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert seq[3:] == seq[:3]
    # Another route has its own counter.
    assert _names(b.order(Strategy.ROUND_ROBIN, "other", cands)) == ["a", "b", "c"]
    counts = collections.Counter(b.order(Strategy.ROUND_ROBIN, "r", cands)[0].label
                                 for _ in range(300))
    assert counts == {"a": 100, "b": 100, "c": 100}


def test_round_robin_keeps_standbys_last_and_honours_weights_without_runs() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key="a", weight=3), Candidate(key="b", weight=1),
             Candidate(key="s", weight=0)]
    firsts = []
    for _ in range(400):
        order = b.order(Strategy.ROUND_ROBIN, "r", cands)
        assert order[-1].label == "s"
        firsts.append(order[0].label)
    assert abs(firsts.count("a") - 300) <= 3
    assert "bb" not in "".join(firsts)  # spread out, not in blocks
    assert "aaaaa" not in "".join(firsts)


def test_round_robin_among_standbys_only_when_all_are() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key="x", weight=0), Candidate(key="y", weight=0)]
    assert _names(b.order(Strategy.ROUND_ROBIN, "r", cands)) == ["x", "y"]
    assert _names(b.order(Strategy.ROUND_ROBIN, "r", cands)) == ["y", "x"]


def test_route_counters_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(balance, "_MAX_ROUTES", 10)
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key=k) for k in "ab"]
    for i in range(25):
        b.order(Strategy.ROUND_ROBIN, f"route-{i}", cands)
    assert repr(b) == "<Balancer routes=5>"


# --- weighted ------------------------------------------------------------------------------


def test_weighted_first_pick_follows_weights_and_weight_zero_is_last() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key="a", weight=3), Candidate(key="b", weight=1),
             Candidate(key="z", weight=0)]
    n = 4000
    firsts = _firsts(b, Strategy.WEIGHTED, cands, n)
    # p = 0.75, sd = sqrt(n p (1-p)) ~ 27: the bound is more than four sd wide.
    assert 0.72 < firsts["a"] / n < 0.78
    assert firsts["z"] == 0


def test_weighted_second_pick_is_drawn_from_the_rest() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key="a", weight=2), Candidate(key="b", weight=1),
             Candidate(key="c", weight=1)]
    orders = collections.Counter(tuple(_names(b.order(Strategy.WEIGHTED, "r", cands)))
                                 for _ in range(6000))
    # P(a, b, c) = 2/4 * 1/2 = 0.25; P(b, c, a) = 1/4 * 1/3 = 1/12.
    assert 0.23 < orders[("a", "b", "c")] / 6000 < 0.27
    assert 0.07 < orders[("b", "c", "a")] / 6000 < 0.097


# --- least busy, latency, cost, priority, quota --------------------------------------------


def test_least_busy_puts_fewest_in_flight_first_ties_by_weight() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key="busy", stats=_stats(in_flight=5)),
             Candidate(key="idle", stats=_stats(in_flight=0)),
             Candidate(key="some", stats=_stats(in_flight=2)),
             Candidate(key="nostats")]
    for _ in range(20):
        order = _names(b.order(Strategy.LEAST_BUSY, "r", cands))
        assert set(order[:2]) == {"idle", "nostats"}
        assert order[2:] == ["some", "busy"]
    tied = [Candidate(key="a", weight=9, stats=_stats(1)), Candidate(key="b", weight=1, stats=_stats(1))]
    assert _firsts(b, Strategy.LEAST_BUSY, tied, 1000)["a"] > 850


def test_latency_tries_unmeasured_first_then_fastest_with_a_tolerance() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key="slow", stats=_stats(latency=1.0)),
             Candidate(key="fast", stats=_stats(latency=0.100)),
             Candidate(key="near", stats=_stats(latency=0.115)),
             Candidate(key="new")]
    n = 2000
    orders = [_names(b.order(Strategy.LATENCY, "r", cands)) for _ in range(n)]
    by_latency = [o for o in orders if o[0] == "new" and o[3] == "slow"]
    assert len(by_latency) > 0.97 * n
    # fast and near are within 20% of each other: they share the traffic.
    second = collections.Counter(o[1] for o in by_latency)
    assert second["fast"] > 0.4 * len(by_latency) and second["near"] > 0.4 * len(by_latency)
    # A few orders explore by weight, so the slow target gets measured again.
    assert 0 < sum(o[0] == "slow" for o in orders) < 0.02 * n


def test_latency_beyond_the_tolerance_is_strictly_ordered() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key=k, stats=_stats(latency=v)) for k, v in (("c", 3.0), ("a", 1.0), ("b", 2.0))]
    orders = collections.Counter(tuple(_names(b.order(Strategy.LATENCY, "r", cands)))
                                 for _ in range(500))
    # All but the ~2% exploring orders (sd ~3 orders): the bound is six sd away.
    assert orders[("a", "b", "c")] >= 475


def test_cost_puts_the_cheapest_known_price_first_and_unknown_last() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key="unknown"), Candidate(key="dear", price=15.0),
             Candidate(key="cheap", price=0.6), Candidate(key="free", price=0.0),
             Candidate(key="standby", price=0.0, weight=0)]
    for _ in range(20):
        assert _names(b.order(Strategy.COST, "r", cands)) == [
            "free", "cheap", "dear", "unknown", "standby"]


def test_priority_tries_tiers_in_order_weighted_within_a_tier() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key="backup", priority=1), Candidate(key="p-a", priority=0, weight=3),
             Candidate(key="p-b", priority=0, weight=1), Candidate(key="p-standby", priority=0, weight=0),
             Candidate(key="last", priority=5)]
    firsts: collections.Counter[str] = collections.Counter()
    for _ in range(2000):
        order = _names(b.order(Strategy.PRIORITY, "r", cands))
        assert order[2:] == ["p-standby", "backup", "last"]
        firsts[order[0]] += 1
    assert 0.71 < firsts["p-a"] / 2000 < 0.79


def test_quota_aware_puts_most_quota_first_unknown_as_full_close_ones_shared() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key="low", quota_left=0.10), Candidate(key="high", quota_left=0.90),
             Candidate(key="mid", quota_left=0.50), Candidate(key="empty", quota_left=-0.2)]
    for _ in range(20):
        assert _names(b.order(Strategy.QUOTA_AWARE, "r", cands)) == ["high", "mid", "low", "empty"]
    with_unknown = [*cands, Candidate(key="unknown")]
    assert _names(b.order(Strategy.QUOTA_AWARE, "r", with_unknown))[0] == "unknown"
    close = [Candidate(key="a", quota_left=0.81), Candidate(key="b", quota_left=0.80)]
    firsts = _firsts(b, Strategy.QUOTA_AWARE, close, 1000)
    assert firsts["a"] > 400 and firsts["b"] > 400
    steps = [Candidate(key="a", quota_left=0.15), Candidate(key="b", quota_left=0.149)]
    assert all(_names(b.order(Strategy.QUOTA_AWARE, "r", steps))[0] == "a" for _ in range(50))


# --- stickiness ----------------------------------------------------------------------------


def test_a_session_sticks_to_one_target_across_calls_and_balancers() -> None:
    cands = [Candidate(key=k) for k in "abcde"]
    b1, b2 = Balancer(random.Random(1)), Balancer(random.Random(2))
    for session in ("s-1", "s-2", "conversation-42"):
        firsts = {b.order(s, "r", cands, sticky=session)[0].label
                  for b, s in itertools.product((b1, b2), Strategy)
                  for _ in range(5)}
        assert len(firsts) == 1, session
    # The rest still follows the strategy: round robin keeps rotating behind the sticky pick.
    rest = {tuple(_names(b1.order(Strategy.ROUND_ROBIN, "r", cands, sticky="s-1"))[1:])
            for _ in range(5)}
    assert len(rest) > 1


def test_sessions_spread_by_weight_and_avoid_standbys() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key="a", weight=3), Candidate(key="b", weight=1), Candidate(key="z", weight=0)]
    firsts = collections.Counter(b.order(Strategy.WEIGHTED, "r", cands, sticky=f"s{i}")[0].label
                                 for i in range(4000))
    assert 0.72 < firsts["a"] / 4000 < 0.78
    assert firsts["z"] == 0
    only_standbys = [Candidate(key="x", weight=0), Candidate(key="y", weight=0)]
    assert b.order(Strategy.WEIGHTED, "r", only_standbys, sticky="s")[0].label in {"x", "y"}


def test_stickiness_moves_only_when_the_candidate_set_changes() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key=k) for k in "abcd"]
    sessions = [f"session-{i}" for i in range(1000)]

    def mapping(cs: list[Candidate]) -> dict[str, str]:
        return {s: b.order(Strategy.WEIGHTED, "r", cs, sticky=s)[0].label for s in sessions}

    before = mapping(cands)
    assert mapping(cands) == before
    # Remove "c": only c's sessions move; everyone else stays put.
    without_c = mapping([c for c in cands if c.label != "c"])
    moved = {s for s in sessions if without_c[s] != before[s]}
    assert moved == {s for s in sessions if before[s] == "c"}
    # Add "e": only the sessions e wins move, about a fifth, all to e.
    with_e = mapping([*cands, Candidate(key="e")])
    moved = {s for s in sessions if with_e[s] != before[s]}
    assert all(with_e[s] == "e" for s in moved)
    assert 150 < len(moved) < 250


def test_stickiness_stays_in_the_first_priority_tier() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key="t0", priority=0), Candidate(key="t1a", priority=1),
             Candidate(key="t1b", priority=1)]
    assert all(b.order(Strategy.PRIORITY, "r", cands, sticky=f"s{i}")[0].label == "t0"
               for i in range(200))


def test_sticky_identity_is_the_candidate_name_when_given() -> None:
    b = Balancer(random.Random(_SEED))
    # Keys that differ (a reloaded Target with another timeout) but share a name map the same.
    old = [Candidate(key=("target", i, "timeout=30"), name=f"p#{i}/m") for i in range(5)]
    new = [Candidate(key=("target", i, "timeout=60"), name=f"p#{i}/m") for i in range(5)]
    for i in range(100):
        s = f"s{i}"
        assert (b.order(Strategy.WEIGHTED, "r", old, sticky=s)[0].name
                == b.order(Strategy.WEIGHTED, "r", new, sticky=s)[0].name)
    assert Candidate(key=("x", 1)).label == "('x', 1)"


# --- stats and status ----------------------------------------------------------------------


def test_target_stats_track_in_flight_outcomes_and_latency_ewma() -> None:
    s = TargetStats()
    s.started()
    s.started()
    assert s.in_flight == 2
    s.finished(1.0, ok=True)
    assert (s.in_flight, s.requests, s.failures, s.latency_ewma) == (1, 1, 0, 1.0)
    s.finished(2.0, ok=True)
    assert s.latency_ewma == pytest.approx(1.2)  # 1.0 + 0.2 * (2.0 - 1.0)
    s.finished(0.001, ok=False)  # a fast failure teaches nothing about latency
    assert (s.in_flight, s.requests, s.failures) == (0, 3, 1)
    assert s.latency_ewma == pytest.approx(1.2)
    s.finished(None, ok=True)  # never below zero in flight, latency unknown: unchanged
    assert s.in_flight == 0
    assert s.latency_ewma == pytest.approx(1.2)
    s.finished(3.2, ok=True, alpha=0.5)
    assert s.latency_ewma == pytest.approx(2.2)
    assert repr(TargetStats(in_flight=1)) == (
        "TargetStats(in_flight=1, latency_ewma=None, requests=0, failures=0)")


def test_scores_show_each_strategys_criterion_without_taking_a_turn() -> None:
    b = Balancer(random.Random(_SEED))
    stats = TargetStats(in_flight=2, latency_ewma=0.25, requests=10, failures=1)
    cands = [Candidate(key="a", weight=3, price=2.5, stats=stats, name="prov#0/a"),
             Candidate(key="b", weight=1, priority=1, quota_left=0.4),
             Candidate(key="s", weight=0)]
    rows = b.scores(Strategy.WEIGHTED, "r", cands)
    assert rows[0] == {
        "target": "prov#0/a", "weight": 3, "score": 0.75, "share": 0.75, "priority": 0,
        "price": 2.5, "quota_left": None, "in_flight": 2, "latency_ms": 250.0,
        "requests": 10, "failures": 1}
    assert [r["share"] for r in rows] == [0.75, 0.25, 0.0]
    assert [r["score"] for r in b.scores(Strategy.LEAST_BUSY, "r", cands)] == [2, 0, 0]
    assert [r["score"] for r in b.scores(Strategy.LATENCY, "r", cands)] == [250.0, None, None]
    assert [r["score"] for r in b.scores(Strategy.COST, "r", cands)] == [2.5, None, None]
    assert [r["share"] for r in b.scores(Strategy.PRIORITY, "r", cands)] == [1.0, 0.0, 0.0]
    assert [r["score"] for r in b.scores(Strategy.QUOTA_AWARE, "r", cands)] == [1.0, 0.4, 1.0]
    assert all(r["share"] is None for r in b.scores(Strategy.COST, "r", cands))
    assert repr(b) == "<Balancer routes=0>"  # scores never touched the rotation
    assert b.order(Strategy.ROUND_ROBIN, "r", cands)[0].label == "prov#0/a"


def test_standbys_share_the_load_when_only_they_are_left() -> None:
    b = Balancer(random.Random(_SEED))
    cands = [Candidate(key="x", weight=0), Candidate(key="y", weight=0)]
    firsts = _firsts(b, Strategy.WEIGHTED, cands, 1000)
    assert firsts["x"] > 400 and firsts["y"] > 400
    assert [r["share"] for r in b.scores(Strategy.WEIGHTED, "r", cands)] == [0.5, 0.5]
    tiered = [Candidate(key="t0-standby", weight=0), Candidate(key="t1", priority=1)]
    assert _names(b.order(Strategy.PRIORITY, "r", tiered)) == ["t0-standby", "t1"]
    assert [r["share"] for r in b.scores(Strategy.PRIORITY, "r", tiered)] == [1.0, 0.0]


def test_last_minute_counts_only_the_last_sixty_seconds() -> None:
    from proxy.balance import last_minute

    stats = TargetStats()
    for t in (100.0, 100.5, 130.0):
        stats.started()
        stats.finished(0.1, True, now=t)
    stats.started()
    stats.finished(None, False, now=150.0)
    assert last_minute(stats, 150.0) == (4, 1)
    assert last_minute(stats, 165.0) == (2, 1)  # the calls at 100 s are over a minute old
    assert last_minute(stats, 300.0) == (0, 0)
    assert stats.last_at == 150.0
