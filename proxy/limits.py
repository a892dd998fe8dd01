"""Rate limits as token buckets: RPM and TPM per gateway key and per target, decided with no IO.

Each limit is a bucket holding one minute's allowance that refills continuously at
`per_minute / 60` per second, so a key may burst up to its whole minute and then runs at the
steady rate. A request takes 1 from the RPM bucket and its token estimate from the TPM bucket,
both or neither; when it is refused the decision says how long until it would fit
(`Retry-After`) and when the bucket is full again (`x-ratelimit-reset-*`). After the answer,
`Limiter.reconcile` swaps the estimate for the real usage.

Why not aiolimiter's `AsyncLimiter` here. It is a leaky bucket read off the running event loop's
clock (`loop.time()`), so a test cannot move time; its only ways to ask are `has_capacity()`
(yes or no, never *when*) and `await acquire()`, which waits without bound; `acquire` rejects an
amount above the capacity instead of letting one oversized request through; it cannot take from
two buckets atomically, give tokens back or run into debt. The gateway must refuse a caller
with an exact `Retry-After`, skip a busy target for the next one, and reconcile estimates, so the
arithmetic lives here, where time is an argument (`now: float`). The one place a waiting
limiter could serve is the bounded wait for a busy target, and there `retry_after` already says
how long: dispatch sleeps that long, if it is within its bound, and checks again, so each key
has one bucket rather than a second one in aiolimiter drifting from it.

Concurrency: every method is synchronous and contains no await, so on the event loop a check
and its take are atomic without a lock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from itertools import islice

__all__ = [
    "UNLIMITED",
    "Decision",
    "Limiter",
    "RateLimit",
    "TokenBucket",
    "estimate_prompt_tokens",
    "estimate_request_tokens",
    "format_reset",
    "ratelimit_headers",
]

# A caller who waits exactly the `retry_after` we gave must get through, but `need / rate * rate`
# can fall short of `need` by a rounding error (at 7 per minute, for most amounts); this much
# shortfall still counts as available. Likewise 11 tokens at 11 per minute is 60.00000000000001
# seconds, which must not round up to a Retry-After of 61.
_EPSILON = 1e-9
# OpenAI's rule of thumb: one token is about 4 characters of English text. JSON syntax and role
# names push bytes per token up, non-Latin scripts push it down; the exact count comes at
# reconcile, so the estimate only has to be cheap and roughly right.
_BYTES_PER_TOKEN = 4
# No model today accepts a prompt above 2M tokens (Gemini's largest context); a body that
# estimates higher is base64 media, whose real token cost is a tiny fraction of its bytes.
_MAX_PROMPT_ESTIMATE = 2_000_000
# Buckets are kept per key, and target keys can carry a caller-chosen model name (glob routes
# pass the requested name upstream), so the table is bounded. A full bucket is the same as a
# fresh one, so those go first; only if the table is still crowded are the oldest keys dropped,
# forgiving their recent use.
_MAX_KEYS = 100_000
_KEYS_AFTER_SWEEP = _MAX_KEYS * 3 // 4


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One key's limits; None means unlimited."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (prompt estimate + max_tokens up front)

    def __post_init__(self) -> None:
        for name, value in (("rpm", self.rpm), ("tpm", self.tpm)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (leave it unset for no limit)")


class TokenBucket:
    """A bucket of `per_minute` units that refills continuously at `per_minute / 60` per second.

    It starts full. The level can go below zero: an oversized request taken from a full bucket,
    or usage reconciled above its estimate, leaves a debt that refill pays off before anything
    else is taken.
    """

    __slots__ = ("_at", "_level", "capacity", "per_minute", "rate")

    def __init__(self, per_minute: int, now: float) -> None:
        if per_minute < 1:
            raise ValueError("a bucket needs a capacity of at least 1 per minute")
        self.per_minute = per_minute
        self.capacity = float(per_minute)
        self.rate = self.capacity / 60.0
        self._level = self.capacity
        self._at = now

    def level(self, now: float) -> float:
        """Units available at `now` (negative while in debt)."""
        elapsed = now - self._at
        # A clock that steps back (never a monotonic one) is treated as no time passing.
        if elapsed > 0:
            level = self._level + elapsed * self.rate
            self._level = level if level < self.capacity else self.capacity
            self._at = now
        return self._level

    def wait(self, amount: float, now: float) -> float:
        """Seconds until `amount` could be taken; 0.0 if it can be taken now. Takes nothing.

        An amount above the capacity can never fit, so it is allowed whenever the bucket is full
        (it then runs into debt): one huge request is slow to repeat but never blocked forever.
        """
        level = self.level(now)
        need = amount if amount < self.capacity else self.capacity
        short = need - level
        return 0.0 if short <= _EPSILON else short / self.rate

    def take(self, amount: float, now: float) -> float:
        """Take `amount` and return 0.0, or return the seconds until it is available (nothing
        taken). See `wait` for an amount above the capacity."""
        wait = self.wait(amount, now)
        if wait == 0.0:
            self._level -= amount
        return wait

    def give(self, amount: float, now: float) -> None:
        """Reconcile: a positive amount returns over-estimated units (never above the capacity),
        a negative one takes more (the level may go negative: a debt)."""
        level = self.level(now) + amount
        self._level = level if level < self.capacity else self.capacity

    def reset_in(self, now: float) -> float:
        """Seconds until the bucket is full again."""
        self.level(now)
        return _time_to_full(self)

    def resize(self, per_minute: int, now: float) -> None:
        """Change the capacity (a config reload), keeping what has been used: raising a limit
        gives the difference at once, lowering it may leave a debt."""
        used = self.capacity - self.level(now)
        self.per_minute = per_minute
        self.capacity = float(per_minute)
        self.rate = self.capacity / 60.0
        self._level = self.capacity - used

    def __repr__(self) -> str:
        # `level` needs a time; the repr shows the level at the last update, and when that was.
        return f"<TokenBucket {self._level:.2f}/{self.capacity:g} at t={self._at:g}>"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one `Limiter.check`.

    The first six fields describe the binding limit: when refused, the bucket that needs the
    longest wait; when allowed, the one with the smallest share left. The `*_requests` and
    `*_tokens` fields carry both limits for the response headers (None where a limit is unset).
    """

    allowed: bool
    retry_after: float  # 0 when allowed
    limit: int | None  # the binding limit (for x-ratelimit-limit-*)
    remaining: int | None  # after this request
    reset: float  # seconds until the binding bucket is full (x-ratelimit-reset)
    scope: str  # "rpm" or "tpm"; "none" when the key has no limit at all
    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float = 0.0
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float = 0.0


# Shared by every check of a key without limits: that path allocates nothing.
UNLIMITED = Decision(allowed=True, retry_after=0.0, limit=None, remaining=None, reset=0.0,
                     scope="none")


class _Entry:
    """A key's buckets and the limit they were built for."""

    __slots__ = ("limit", "rpm", "tpm")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.rpm = TokenBucket(limit.rpm, now) if limit.rpm is not None else None
        self.tpm = TokenBucket(limit.tpm, now) if limit.tpm is not None else None

    def update(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.rpm = _resized(self.rpm, limit.rpm, now)
        self.tpm = _resized(self.tpm, limit.tpm, now)

    def full(self, now: float) -> bool:
        return all(b is None or b.level(now) >= b.capacity for b in (self.rpm, self.tpm))


def _resized(bucket: TokenBucket | None, per_minute: int | None, now: float) -> TokenBucket | None:
    if per_minute is None:
        return None
    if bucket is None:
        return TokenBucket(per_minute, now)
    bucket.resize(per_minute, now)
    return bucket


def _remaining(level: float) -> int:
    return int(level) if level > 0 else 0


class Limiter:
    """Buckets per key for one kind of scope: gateway keys, or targets."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}

    def check(self, key: Hashable, limit: RateLimit, tokens: int, now: float) -> Decision:
        """Take 1 request and `tokens` from the key's buckets, both or neither."""
        if limit.rpm is None and limit.tpm is None:
            return UNLIMITED
        entry = self._entries.get(key)
        if entry is None:
            entry = self._add(key, limit, now)
        elif entry.limit is not limit and entry.limit != limit:
            entry.update(limit, now)
        rpm, tpm = entry.rpm, entry.tpm
        # `wait` brings each bucket's level up to `now`, so from here on the levels are read
        # and taken directly: one refill per bucket per check. Measured with timeit on a
        # two-limit key: 8.5 -> 4.2 us a check, of which building the frozen Decision is 2.5.
        wait_r = rpm.wait(1, now) if rpm is not None else 0.0
        wait_t = tpm.wait(tokens, now) if tpm is not None else 0.0
        allowed = wait_r == 0.0 and wait_t == 0.0
        if allowed:
            if rpm is not None:
                rpm._level -= 1
            if tpm is not None:
                tpm._level -= tokens
        return _decide(rpm, tpm, wait_r, wait_t, allowed)

    def cancel(self, key: Hashable, tokens: int, now: float) -> None:
        """Give back what an allowed `check` took, for a request that never went out (every
        target refused it, say), so the caller is not charged for it."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if entry.rpm is not None:
            entry.rpm.give(1, now)
        if entry.tpm is not None:
            entry.tpm.give(tokens, now)

    def reconcile(self, key: Hashable, estimated: int, actual: int, now: float) -> None:
        """Replace the up-front estimate with the answer's real usage: return the surplus, or
        charge the shortfall (a debt the key pays off before its next request)."""
        entry = self._entries.get(key)
        if entry is not None and entry.tpm is not None and estimated != actual:
            entry.tpm.give(estimated - actual, now)

    def headers(self, d: Decision) -> dict[str, str]:
        """OpenAI's rate-limit headers for a decision, plus Retry-After when refused."""
        return ratelimit_headers(d)

    def retain(self, keys: Collection[Hashable]) -> None:
        """Forget every key not in `keys` (a config reload removed it). Pass a set."""
        self.retain_where(keys.__contains__)

    def retain_where(self, keep: Callable[[Hashable], bool]) -> None:
        """Forget every key `keep` refuses."""
        for key in [k for k in self._entries if not keep(k)]:
            del self._entries[key]

    def _add(self, key: Hashable, limit: RateLimit, now: float) -> _Entry:
        if len(self._entries) >= _MAX_KEYS:
            self._sweep(now)
        entry = self._entries[key] = _Entry(limit, now)
        return entry

    def _sweep(self, now: float) -> None:
        """Make room: drop full buckets (no information lost), then the oldest keys."""
        for key in [k for k, e in self._entries.items() if e.full(now)]:
            del self._entries[key]
        excess = len(self._entries) - _KEYS_AFTER_SWEEP
        if excess > 0:
            for key in list(islice(self._entries, excess)):
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Limiter keys={len(self._entries)}>"


def _decide(rpm: TokenBucket | None, tpm: TokenBucket | None, wait_r: float, wait_t: float,
            allowed: bool) -> Decision:
    """The decision for the buckets after the take (or after nothing, when refused); their
    levels are current, as `Limiter.check` just refilled them."""
    limit_r = left_r = limit_t = left_t = None
    reset_r = reset_t = 0.0
    if rpm is not None:
        level_r = rpm._level
        limit_r, left_r, reset_r = rpm.per_minute, _remaining(level_r), _time_to_full(rpm)
    if tpm is not None:
        level_t = tpm._level
        limit_t, left_t, reset_t = tpm.per_minute, _remaining(level_t), _time_to_full(tpm)
    if rpm is None or tpm is None:
        by_tokens = rpm is None
    elif allowed:
        by_tokens = level_t / tpm.capacity < level_r / rpm.capacity
    else:
        by_tokens = wait_t > wait_r
    return Decision(
        allowed=allowed,
        retry_after=0.0 if allowed else max(wait_r, wait_t),
        limit=limit_t if by_tokens else limit_r,
        remaining=left_t if by_tokens else left_r,
        reset=reset_t if by_tokens else reset_r,
        scope="tpm" if by_tokens else "rpm",
        limit_requests=limit_r,
        remaining_requests=left_r,
        reset_requests=reset_r,
        limit_tokens=limit_t,
        remaining_tokens=left_t,
        reset_tokens=reset_t,
    )


def _time_to_full(b: TokenBucket) -> float:
    short = b.capacity - b._level
    return short / b.rate if short > _EPSILON else 0.0


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes `x-ratelimit-reset-*` (Go's duration format), rounded up to
    the millisecond: "12ms", "1s", "1.5s", "6m0s", "2h0m0s"; "0s" when already full."""
    ms = math.ceil(seconds * 1000 - _EPSILON) if seconds > 0 else 0
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, frac = divmod(rest, 1000)
    sec = f"{secs}.{frac:03d}".rstrip("0") if frac else str(secs)
    if hours:
        return f"{hours}h{minutes}m{sec}s"
    if minutes:
        return f"{minutes}m{sec}s"
    return f"{sec}s"


def ratelimit_headers(d: Decision) -> dict[str, str]:
    """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` as OpenAI sends them (integers;
    the reset as a Go duration such as "6m0s"), for each limit the key has. When refused, also
    `Retry-After` in whole seconds, rounded up and at least 1 (SDKs ignore 0 and fall back to
    their own backoff), and `retry-after-ms`, which the openai and anthropic SDKs read first
    for a wait more precise than a whole second.
    """
    h: dict[str, str] = {}
    if d.limit_requests is not None:
        h["x-ratelimit-limit-requests"] = str(d.limit_requests)
        h["x-ratelimit-remaining-requests"] = str(d.remaining_requests or 0)
        h["x-ratelimit-reset-requests"] = format_reset(d.reset_requests)
    if d.limit_tokens is not None:
        h["x-ratelimit-limit-tokens"] = str(d.limit_tokens)
        h["x-ratelimit-remaining-tokens"] = str(d.remaining_tokens or 0)
        h["x-ratelimit-reset-tokens"] = format_reset(d.reset_tokens)
    if not d.allowed:
        h["Retry-After"] = str(max(1, math.ceil(d.retry_after - _EPSILON)))
        h["retry-after-ms"] = str(max(1, math.ceil(d.retry_after * 1000 - _EPSILON)))
    return h


def estimate_prompt_tokens(body_len: int) -> int:
    """A cheap up-front estimate of a prompt's tokens from its body size: bytes / 4, rounded up,
    capped at the largest context any model takes (bigger bodies are base64 media)."""
    estimate = -(-body_len // _BYTES_PER_TOKEN)
    return estimate if estimate < _MAX_PROMPT_ESTIMATE else _MAX_PROMPT_ESTIMATE


def estimate_request_tokens(body_len: int, max_tokens: int | None) -> int:
    """What TPM takes up front: the prompt estimate plus the most the answer may use. Without
    `max_tokens` the answer's size is unknown; it is charged at reconcile instead."""
    return estimate_prompt_tokens(body_len) + (max_tokens if max_tokens and max_tokens > 0 else 0)
