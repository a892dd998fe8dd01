"""Circuit breakers per target: stop sending to an upstream that is failing, probe it after a
while, and let traffic back when the probes succeed.

Pure: no IO, no clock, no logging; `now` is the caller's monotonic clock.

    CLOSED ──(volume ≥ min_volume and failure ratio ≥ failure_ratio over `window`)──▶ OPEN
    OPEN ──(open_for elapsed; on the next `allow`)──▶ HALF_OPEN
    HALF_OPEN ──(any failure)──▶ OPEN (timer restarts)
    HALF_OPEN ──(close_after successes)──▶ CLOSED (window cleared)

Every `allow()` that returned True while half-open admits a probe; the caller must answer it
with `record()` or, when the request ended without an outcome, `release_probe()`. A probe left
unanswered for `probe_timeout` frees its slot anyway, so a lost one cannot wedge the breaker.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass

__all__ = ["Breaker", "BreakerPolicy", "BreakerState", "BreakerTable"]

# Epoch of a bucket that holds nothing yet; far below any clock reading.
_EMPTY = -(1 << 62)


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_ratio: float = 0.5
    window: float = 60.0
    # Below this many outcomes in the window the ratio says nothing: 1 failure of 1 is 100%.
    min_volume: int = 10
    open_for: float = 30.0
    half_open_probes: int = 2
    close_after: int = 2
    # The window is `buckets` slices of window/buckets seconds: memory is fixed, and an outcome
    # leaves the window at most one slice late.
    buckets: int = 10
    # A probe neither recorded nor released within this is presumed lost. LLM answers (long
    # streams included) finish well within it; a lost one must not keep the breaker half-open.
    probe_timeout: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.failure_ratio <= 1:
            raise ValueError(f"breaker.failure_ratio must be in (0, 1], not {self.failure_ratio!r}")
        for name in ("window", "probe_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"breaker.{name} must be a finite number > 0, not {value!r}")
        if not (math.isfinite(self.open_for) and self.open_for >= 0):
            raise ValueError(f"breaker.open_for must be finite and >= 0, not {self.open_for!r}")
        for name in ("min_volume", "half_open_probes", "close_after", "buckets"):
            if getattr(self, name) < 1:
                raise ValueError(f"breaker.{name} must be >= 1, not {getattr(self, name)!r}")


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    __slots__ = (
        "_bad",
        "_epochs",
        "_ok",
        "_opened_at",
        "_policy",
        "_probe_successes",
        "_probes",
        "_retry_at",
        "_state",
        "_width",
    )

    def __init__(self, policy: BreakerPolicy) -> None:
        self._policy = policy
        self._state = BreakerState.CLOSED
        self._width = policy.window / policy.buckets
        # The rolling window: bucket i holds the outcomes of time slice _epochs[i].
        self._epochs = [_EMPTY] * policy.buckets
        self._ok = [0] * policy.buckets
        self._bad = [0] * policy.buckets
        self._opened_at: float | None = None
        self._retry_at: float | None = None
        # Admission times of the probes in flight (half-open only).
        self._probes: deque[float] = deque(maxlen=policy.half_open_probes)
        self._probe_successes = 0

    @property
    def policy(self) -> BreakerPolicy:
        return self._policy

    @property
    def state(self) -> BreakerState:
        """The state as of the last call (an OPEN breaker turns HALF_OPEN on `allow`)."""
        return self._state

    def state_at(self, now: float) -> BreakerState:
        """The state `allow(now)` would act on: OPEN reads as HALF_OPEN once `open_for` elapsed."""
        retry_at = self._retry_at
        if self._state is BreakerState.OPEN and retry_at is not None and now >= retry_at:
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self, now: float) -> bool:
        """May a request be sent now? Half-open, True admits one of `half_open_probes` probes."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if self._retry_at is not None and now < self._retry_at:
                return False
            self._state = BreakerState.HALF_OPEN
            self._probes.clear()
            self._probe_successes = 0
        probes = self._probes
        horizon = now - self._policy.probe_timeout
        while probes and probes[0] <= horizon:
            probes.popleft()
        if len(probes) >= self._policy.half_open_probes:
            return False
        probes.append(now)
        return True

    def record(self, success: bool, now: float) -> None:
        """The outcome of a request sent through this breaker.

        Half-open, any outcome counts as a probe's, even one of a request sent before the
        breaker opened: a late failure reopens it, which errs on the safe side.
        """
        i = self._bucket(now)
        if success:
            self._ok[i] += 1
        else:
            self._bad[i] += 1
        match self._state:
            case BreakerState.CLOSED:
                if not success:
                    ok, bad = self._totals(now)
                    volume = ok + bad
                    policy = self._policy
                    if volume >= policy.min_volume and bad / volume >= policy.failure_ratio:
                        self._open(now)
            case BreakerState.HALF_OPEN:
                if self._probes:
                    self._probes.popleft()
                if not success:
                    self._open(now)
                else:
                    self._probe_successes += 1
                    if self._probe_successes >= self._policy.close_after:
                        self._close()
            case BreakerState.OPEN:
                pass  # answers of requests sent before it opened: counted, nothing decided

    def release_probe(self) -> None:
        """A probe ended without an outcome (the client went away): free its slot."""
        if self._state is BreakerState.HALF_OPEN and self._probes:
            self._probes.popleft()

    def snapshot(self, now: float) -> dict[str, object]:
        """State and window counts as of `now`, for the operations API."""
        state = self.state_at(now)
        ok, bad = self._totals(now)
        volume = ok + bad
        return {
            "state": state.value,
            "failures": bad,
            "successes": ok,
            "ratio": bad / volume if volume else 0.0,
            "opened_at": self._opened_at if state is not BreakerState.CLOSED else None,
            "retry_at": self._retry_at if state is BreakerState.OPEN else None,
            "probes_in_flight": len(self._probes) if state is BreakerState.HALF_OPEN else 0,
        }

    def __repr__(self) -> str:
        # As of the newest bucket written: repr has no clock.
        newest = max(self._epochs)
        ok, bad = self._totals((newest + 0.5) * self._width) if newest != _EMPTY else (0, 0)
        text = f"<Breaker {self._state.value} failures={bad} successes={ok}"
        if self._state is not BreakerState.CLOSED:
            text += f" opened_at={self._opened_at} retry_at={self._retry_at}"
        if self._state is BreakerState.HALF_OPEN:
            text += f" probes={len(self._probes)} probe_successes={self._probe_successes}"
        return text + ">"

    # -- internals --

    def _open(self, now: float) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = now
        self._retry_at = now + self._policy.open_for
        self._probes.clear()
        self._probe_successes = 0

    def _close(self) -> None:
        # The failures that opened it are history: start counting afresh.
        self._state = BreakerState.CLOSED
        self._opened_at = self._retry_at = None
        self._probes.clear()
        self._probe_successes = 0
        n = self._policy.buckets
        self._epochs[:] = [_EMPTY] * n
        self._ok[:] = [0] * n
        self._bad[:] = [0] * n

    def _bucket(self, now: float) -> int:
        epoch = math.floor(now / self._width)
        i = epoch % self._policy.buckets
        if self._epochs[i] != epoch:
            self._epochs[i] = epoch
            self._ok[i] = self._bad[i] = 0
        return i

    def _totals(self, now: float) -> tuple[int, int]:
        """(successes, failures) in the buckets of the window ending at `now`."""
        epoch = math.floor(now / self._width)
        oldest = epoch - self._policy.buckets + 1
        ok = bad = 0
        for i, e in enumerate(self._epochs):
            if oldest <= e <= epoch:
                ok += self._ok[i]
                bad += self._bad[i]
        return ok, bad


class BreakerTable:
    """One breaker per key (a target), made on first use with `policy_for(key)`."""

    __slots__ = ("_breakers", "_policy_for")

    def __init__(self, policy_for: Callable[[Hashable], BreakerPolicy]) -> None:
        self._policy_for = policy_for
        self._breakers: dict[Hashable, Breaker] = {}

    def get(self, key: Hashable) -> Breaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = Breaker(self._policy_for(key))
        return breaker

    def use_policies(self, policy_for: Callable[[Hashable], BreakerPolicy]) -> None:
        """Where new breakers (and `retain`) get their policy from: the current config's."""
        self._policy_for = policy_for

    def retain(self, keys: Collection[Hashable]) -> None:
        """After a config reload: forget keys not in `keys`; a kept key whose policy changed
        starts afresh (closed) under the new one."""
        self.retain_where((keys if isinstance(keys, set | frozenset) else set(keys)).__contains__)

    def retain_where(self, keep: Callable[[Hashable], bool]) -> None:
        """`retain`, with the kept keys given by a predicate."""
        for key in [k for k in self._breakers if not keep(k)]:
            del self._breakers[key]
        for key, breaker in list(self._breakers.items()):
            policy = self._policy_for(key)
            if policy != breaker.policy:
                self._breakers[key] = Breaker(policy)

    def items(self) -> list[tuple[Hashable, Breaker]]:
        """A copy, safe to iterate while requests come and go."""
        return list(self._breakers.items())

    def __len__(self) -> int:
        return len(self._breakers)

    def __repr__(self) -> str:
        counts = {s: 0 for s in BreakerState}
        for breaker in self._breakers.values():
            counts[breaker.state] += 1
        return "<BreakerTable " + " ".join(f"{s.value}={n}" for s, n in counts.items()) + ">"
