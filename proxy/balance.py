"""The order to try a route's targets in, by the route's strategy: a pure decision, no IO.

Dispatch hands over the candidates that may serve now (cooling and open-breaker targets already
removed) and tries them in the order returned: the first is the pick, the rest are fallbacks.
Whatever the strategy, a weight-0 target is a standby, tried after every weighted one (the
`priority` strategy keeps its tiers first and puts standbys last within their tier), and ties are
broken by a weighted random draw, so equal targets share the load in proportion to their weights.

- round_robin: turns per route in proportion to weight (strict rotation for equal weights);
- weighted: a weighted random draw without replacement;
- least_busy: fewest calls in flight;
- latency: unmeasured targets first (to measure them), then the lowest EWMA, within a tolerance;
- cost: cheapest known blended price first, unknown prices after every known one;
- priority: lowest tier first, weighted within a tier, later tiers as fallbacks;
- quota_aware: most provider quota left first, in 5% steps; unknown quota counts as full.

Randomness comes from the `random.Random` given to the `Balancer`, so tests seed it.
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Balancer",
    "Candidate",
    "Strategy",
    "TargetStats",
    "last_minute",
]

# An EWMA with alpha 0.2 weighs the last ~9 samples (2 / alpha - 1) as much as an average over
# them would: it follows a target that slows down within seconds of traffic, not one outlier.
_EWMA_ALPHA = 0.2
# Latencies within 20% of the fastest count as equally fast and share the traffic by weight;
# otherwise the fastest target takes everything and the herd follows every small fluctuation.
_LATENCY_TOLERANCE = 0.2
# One order in 50 ignores latency and draws by weight alone, so a target that was slow once gets
# measured again instead of keeping a stale EWMA forever (it is only ever tried as a fallback).
_LATENCY_EXPLORE = 0.02
# Quota fractions are compared in steps of 5%: targets with about the same quota left share the
# load, instead of a burst of concurrent requests all landing on the one with 0.1% more.
_QUOTA_STEP = 0.05
# A turn counter per route; route names can come from callers (`provider/model` routes), so the
# table is bounded and cleared when full (each route then starts its rotation over).
_MAX_ROUTES = 4096
# Counters wrap here; a wrap costs one uneven turn every 4 billion requests.
_TURN_MASK = 0xFFFFFFFF
# The golden ratio's fractional part: the sequence frac(k * phi) spreads turns evenly over
# [0, 1) for any k, so weighted round robin needs no per-target state (a Weyl sequence).
_PHI = (math.sqrt(5.0) - 1.0) / 2.0
# Rendezvous hashes keep 53 bits, what a float holds exactly, so (n + 0.5) / 2**53 is in (0, 1).
_HASH_BITS = 53
# Keeps a quota of exactly 0.15 from flooring to step 2 through 0.15 / 0.05 == 2.9999999999999996.
_QUOTA_NUDGE = 1e-9


class Strategy(enum.StrEnum):
    """A route's `strategy:`. A StrEnum (a `str, Enum` that ruff's UP042 asks for): members
    equal their config spelling, and `str()` gives it too."""

    ROUND_ROBIN = "round_robin"
    WEIGHTED = "weighted"
    LEAST_BUSY = "least_busy"
    LATENCY = "latency"
    COST = "cost"
    PRIORITY = "priority"
    QUOTA_AWARE = "quota_aware"


@dataclass(slots=True)
class TargetStats:
    """What dispatch has seen of one target: calls in flight, latency, outcomes."""

    in_flight: int = 0
    latency_ewma: float | None = None  # seconds
    requests: int = 0  # finished calls
    failures: int = 0
    last_at: float | None = field(default=None, repr=False)  # when the last call ended
    # The last minute, one slot per second: (second, calls, failures). Fixed size, so a busy
    # target costs no more memory than an idle one.
    _minute: list[tuple[int, int, int]] = field(default_factory=lambda: [(-1, 0, 0)] * 60,
                                                repr=False)

    def started(self) -> None:
        self.in_flight += 1

    def finished(self, latency: float | None, ok: bool, alpha: float = _EWMA_ALPHA,
                 now: float | None = None) -> None:
        """A call ended. Only successes teach latency: a fast 5xx would make a broken target
        look fast (failures are the breaker's and the cooldown's business)."""
        if self.in_flight > 0:
            self.in_flight -= 1
        self.requests += 1
        if now is not None:
            self.last_at = now
            second = int(now)
            slot = second % 60
            held, calls, fails = self._minute[slot]
            if held != second:
                calls = fails = 0
            self._minute[slot] = (second, calls + 1, fails + (not ok))
        if not ok:
            self.failures += 1
        elif latency is not None:
            ewma = self.latency_ewma
            self.latency_ewma = latency if ewma is None else ewma + alpha * (latency - ewma)


def last_minute(stats: TargetStats, now: float) -> tuple[int, int]:
    """(calls, failures) that ended in the last 60 seconds."""
    since = int(now) - 59
    slots = [s for s in stats._minute if s[0] >= since]
    return sum(s[1] for s in slots), sum(s[2] for s in slots)


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a strategy sees about one target."""

    key: Hashable  # the Target
    weight: int = 1
    priority: int = 0  # lower first
    price: float | None = None  # USD per 1M input+output tokens (blended); None: unknown, last
    quota_left: float | None = None  # fraction 0..1 of provider quota remaining; None: unknown
    quota: Callable[[], float | None] | None = None  # reads quota_left live, when given
    stats: TargetStats | None = None
    # A stable identity for stickiness and the status page, e.g. "openai#0/gpt-4.1". Without it
    # `repr(key)` is used, which changes whenever any field of the key does.
    name: str | None = None

    def left(self) -> float | None:
        return self.quota() if self.quota is not None else self.quota_left

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        return self.key if isinstance(self.key, str) else repr(self.key)


def _standby(c: Candidate) -> int:
    return 0 if c.weight > 0 else 1


class Balancer:
    """Orders candidates by strategy; keeps one round-robin turn counter per route."""

    __slots__ = ("_rng", "_turns")

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._turns: dict[str, int] = {}

    def order(
        self,
        strategy: Strategy,
        route_name: str,
        candidates: Sequence[Candidate],
        sticky: str | None = None,
    ) -> list[Candidate]:
        """Candidates in the order to try them.

        With `sticky` (a session id), the session's own candidate goes first while it is among
        the candidates, chosen by weighted rendezvous hashing over the candidates' labels: the
        same session keeps the same target across calls and processes, and when the set
        changes only the sessions of a removed target (or those a new one wins) move. Provider
        prompt caches are why this matters. The rest follow the strategy's order.
        """
        if len(candidates) <= 1:
            return list(candidates)
        match strategy:
            case Strategy.ROUND_ROBIN:
                ordered = self._round_robin(route_name, candidates)
            case Strategy.WEIGHTED:
                ordered = self._weighted(candidates)
            case Strategy.LEAST_BUSY:
                ordered = self._sorted(candidates, _in_flight)
            case Strategy.LATENCY:
                ordered = self._latency(candidates)
            case Strategy.COST:
                ordered = self._sorted(candidates, _price)
            case Strategy.PRIORITY:
                ordered = self._priority(candidates)
            case Strategy.QUOTA_AWARE:
                ordered = self._sorted(candidates, _quota)
        if sticky is not None:
            # Stickiness never pulls a session into a fallback tier.
            pool = (ordered if strategy is not Strategy.PRIORITY
                    else [c for c in ordered if c.priority == ordered[0].priority])
            first = _rendezvous(sticky, pool)
            if first is not ordered[0]:
                at = next(i for i, c in enumerate(ordered) if c is first)
                ordered.insert(0, ordered.pop(at))
        return ordered

    def scores(
        self, strategy: Strategy, route_name: str, candidates: Sequence[Candidate]
    ) -> list[dict[str, object]]:
        """Per candidate, what the strategy ranks it by, for the load-balancing status page.

        `score` is the strategy's criterion (share of turns, calls in flight, latency in ms,
        price, tier, quota left); `share` is the expected fraction of first picks where the
        weights alone decide it. Read-only: no turn is taken and no random number drawn.
        """
        shares = _shares(strategy, candidates)
        out: list[dict[str, object]] = []
        for c in candidates:
            share = shares.get(id(c), 0.0)
            s = c.stats
            latency_ms = s.latency_ewma * 1000.0 if s and s.latency_ewma is not None else None
            match strategy:
                case Strategy.ROUND_ROBIN | Strategy.WEIGHTED:
                    score: object = share
                case Strategy.LEAST_BUSY:
                    score = _in_flight(c)
                case Strategy.LATENCY:
                    score = latency_ms
                case Strategy.COST:
                    score = c.price
                case Strategy.PRIORITY:
                    score = c.priority
                case Strategy.QUOTA_AWARE:
                    left = c.left()
                    score = 1.0 if left is None else left
            out.append({
                "target": c.label, "weight": c.weight, "score": score,
                "share": share if strategy in _WEIGHT_DECIDES else None,
                "priority": c.priority, "price": c.price, "quota_left": c.left(),
                "in_flight": s.in_flight if s else 0, "latency_ms": latency_ms,
                "requests": s.requests if s else 0, "failures": s.failures if s else 0,
            })
        return out

    # --- the strategies ---------------------------------------------------------------------

    def _es(self, c: Candidate) -> float:
        """Efraimidis-Spirakis: u ** (1 / w), highest first; sorting by it is a weighted draw
        without replacement. Weight 0 draws from [-2, -1): below every weighted candidate, in
        a uniform order among the standbys, so they share the load when only they are left."""
        u = self._rng.random()
        return u ** (1.0 / c.weight) if c.weight > 0 else u - 2.0

    def _weighted(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        return sorted(candidates, key=self._es, reverse=True)

    def _sorted(
        self, candidates: Sequence[Candidate], primary: Callable[[Candidate], float]
    ) -> list[Candidate]:
        """Standbys last, then by `primary` ascending, ties drawn by weight."""
        es = self._es
        return sorted(candidates, key=lambda c: (_standby(c), primary(c), -es(c)))

    def _priority(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        es = self._es
        return sorted(candidates, key=lambda c: (c.priority, -es(c)))

    def _latency(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        """Unmeasured targets first (so they get measured), then the fastest, with latencies
        within the tolerance of the fastest counting as equal."""
        if self._rng.random() < _LATENCY_EXPLORE:
            return self._weighted(candidates)
        known = [c.stats.latency_ewma for c in candidates
                 if c.stats is not None and c.stats.latency_ewma is not None]
        cutoff = min(known) * (1.0 + _LATENCY_TOLERANCE) if known else 0.0

        def primary(c: Candidate) -> float:
            ewma = c.stats.latency_ewma if c.stats is not None else None
            if ewma is None:
                return -1.0
            return 0.0 if ewma <= cutoff else ewma

        return self._sorted(candidates, primary)

    def _round_robin(self, route_name: str, candidates: Sequence[Candidate]) -> list[Candidate]:
        """Turns in proportion to weight: plain rotation when the weights are equal, else the
        turn's point of a Weyl sequence picks by cumulative weight (3:1 goes A A A B A A A B ...
        give or take one, never long runs). The others follow in rotation; standbys last."""
        turn = self._take_turn(route_name)
        weight = candidates[0].weight
        if weight > 0 and all(c.weight == weight for c in candidates):
            first = turn % len(candidates)  # the common case: plain rotation
            return [*candidates[first:], *candidates[:first]]
        active = [c for c in candidates if c.weight > 0]
        standby = [c for c in candidates if c.weight <= 0]
        if not active:
            active, standby = standby, []
        weights = [c.weight for c in active]
        if min(weights) == max(weights):
            first = turn % len(active)
        else:
            point = (turn * _PHI) % 1.0 * sum(weights)
            first = 0
            while first < len(active) - 1 and point >= weights[first]:
                point -= weights[first]
                first += 1
        return active[first:] + active[:first] + standby

    def _take_turn(self, route_name: str) -> int:
        turns = self._turns
        turn = turns.get(route_name)
        if turn is None:
            if len(turns) >= _MAX_ROUTES:
                turns.clear()
            turn = 0
        turns[route_name] = (turn + 1) & _TURN_MASK
        return turn

    def __repr__(self) -> str:
        return f"<Balancer routes={len(self._turns)}>"


_WEIGHT_DECIDES = frozenset({Strategy.ROUND_ROBIN, Strategy.WEIGHTED, Strategy.PRIORITY})


def _shares(strategy: Strategy, candidates: Sequence[Candidate]) -> dict[int, float]:
    """Expected share of first picks by weight (by `id` of the candidate): among the weighted
    candidates, of the first tier for `priority`; equal among standbys if only they are left."""
    pool = list(candidates)
    if strategy is Strategy.PRIORITY and pool:
        top = min(c.priority for c in pool)
        pool = [c for c in pool if c.priority == top]
    weighted = [c for c in pool if c.weight > 0]
    if weighted:
        total = sum(c.weight for c in weighted)
        return {id(c): c.weight / total for c in weighted}
    return {id(c): 1.0 / len(pool) for c in pool}


def _in_flight(c: Candidate) -> float:
    return c.stats.in_flight if c.stats is not None else 0


def _price(c: Candidate) -> float:
    return c.price if c.price is not None else math.inf


def _quota(c: Candidate) -> float:
    """Most quota first, in steps. Unknown counts as full: quota is learned only from a
    target's answers, so a target never tried must be tried to be learned (an idle key is
    also what a provider sees as full)."""
    left = c.left()
    q = 1.0 if left is None else min(max(left, 0.0), 1.0)
    return -math.floor(q / _QUOTA_STEP + _QUOTA_NUDGE)


def _rendezvous(session: str, pool: Sequence[Candidate]) -> Candidate:
    """Weighted rendezvous (highest random weight) hashing: score -w / ln(h) with h the
    candidate's hash for this session in (0, 1). blake2b, not `hash()`, so that every process
    maps a session the same way. Standbys only when there is nothing else."""
    weighted = [c for c in pool if c.weight > 0] or list(pool)
    best = weighted[0]
    best_score = -math.inf
    for c in weighted:
        digest = hashlib.blake2b(f"{session}\x00{c.label}".encode(), digest_size=8).digest()
        n = int.from_bytes(digest, "big") >> (64 - _HASH_BITS)
        h = (n + 0.5) / (1 << _HASH_BITS)
        score = -max(c.weight, 1) / math.log(h)
        if score > best_score:
            best, best_score = c, score
    return best
