"""Cooldowns per (credential, upstream model): how long a provider asked us to back off, and for
how long a key that keeps failing is rested.

Pure: no IO, no clock, no logging. `now` is the caller's monotonic clock; `now_wall` (Unix time)
is only used to turn a provider's absolute date into a delay. Dispatch asks `remaining()` for
every candidate of every request, so that path is one dict lookup and allocates nothing unless
the key is cooling.
"""

from __future__ import annotations

import math
import random
import re
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "CooldownEntry",
    "CooldownPolicy",
    "CooldownTable",
    "retry_after_seconds",
    "retry_delay_seconds",
]


@dataclass(frozen=True, slots=True)
class CooldownPolicy:
    """Per provider, from config `cooldown: {rate_limit: 10m, error: 2m, threshold: 5, window: 1m}`.

    Durations are seconds.
    """

    # Used only when a 429 names no time of its own.
    rate_limit: float = 300.0
    # How long a key rests after `threshold` failures within `window`.
    error: float = 60.0
    threshold: int = 5
    window: float = 60.0
    # No provider-given time is honoured beyond this: a Retry-After of a day (or a year, or a
    # misparsed epoch) would otherwise take a key out of rotation until a restart.
    cap: float = 600.0
    # A cooldown lasts +0..spread of its length more, so keys that were throttled together do
    # not all wake in the same instant and throttle each other again.
    spread: float = 0.1

    def __post_init__(self) -> None:
        for name in ("rate_limit", "error", "window", "cap", "spread"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"cooldown.{name} must be a finite number >= 0, not {value!r}")
        if self.window <= 0:
            raise ValueError("cooldown.window must be > 0")
        if self.threshold < 1:
            raise ValueError(f"cooldown.threshold must be >= 1, not {self.threshold!r}")


@dataclass(frozen=True, slots=True)
class CooldownEntry:
    """One key out of rotation: since when, until when (caller's clock) and why."""

    key: Hashable
    started_at: float
    ends_at: float
    # "rate_limited", "errors", "manual", or whatever reason the caller gave.
    reason: str

    def remaining(self, now: float) -> float:
        return max(0.0, self.ends_at - now)


# --- what the provider asked for -----------------------------------------------------------

# RFC 9110 §10.2.3 delay-seconds is 1*DIGIT; a fraction is accepted as the official SDKs do.
_SECONDS_RE = re.compile(r"\d+(?:\.\d+)?")
# Go's time.Duration.String(), which OpenAI's reset headers use: "20ms", "1s", "6m0s", "1h2m3.5s".
# Go writes microseconds with U+00B5; U+03BC and "us" are accepted too.
_GO_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|μs|ms|s|m|h))+")
_GO_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6,
             "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# RFC 3339 date-time; `datetime.fromisoformat` alone would also take a bare date or week dates.
_RFC3339_RE = re.compile(
    r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)")
# protobuf JSON Duration (google.rpc.RetryInfo.retryDelay): seconds with up to 9 decimals + "s".
_PROTO_DURATION_RE = re.compile(r"(\d+(?:\.\d{1,9})?)s")

# OpenAI: each reset is "the time until the rate limit (based on requests / tokens) resets to its
# initial state" (platform.openai.com/docs/guides/rate-limits, "Rate limits in headers").
_OPENAI_LIMITS = (
    ("x-ratelimit-reset-requests", "x-ratelimit-remaining-requests"),
    ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
)
# Anthropic: each reset is "the time when the rate limit will be fully replenished, provided in
# RFC 3339 format" (docs.anthropic.com/en/api/rate-limits, "Response headers").
_ANTHROPIC_LIMITS = tuple(
    (f"anthropic-ratelimit-{name}-reset", f"anthropic-ratelimit-{name}-remaining")
    for name in ("requests", "tokens", "input-tokens", "output-tokens")
)


def _delay(value: float) -> float | None:
    """A delay as given, or None when it is negative, infinite or NaN."""
    return value if math.isfinite(value) and value >= 0 else None


def _plain_seconds(value: str) -> float | None:
    value = value.strip()
    return _delay(float(value)) if _SECONDS_RE.fullmatch(value) else None


def _http_date_delay(value: str, now_wall: float) -> float | None:
    """Seconds from `now_wall` to an HTTP-date: IMF-fixdate, RFC 850 or asctime (RFC 9110 5.6.7)."""
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime and "-0000" carry no zone; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return _delay(when.timestamp() - now_wall)


def _go_duration(value: str) -> float | None:
    value = value.strip()
    if _SECONDS_RE.fullmatch(value):
        # Not Go's format, but Azure OpenAI sends bare seconds in the same headers.
        return _delay(float(value))
    if not _GO_DURATION_RE.fullmatch(value):
        return None
    return _delay(sum(float(n) * _GO_UNITS[unit] for n, unit in _GO_PART_RE.findall(value)))


def _rfc3339_delay(value: str, now_wall: float) -> float | None:
    m = _RFC3339_RE.fullmatch(value.strip())
    if m is None:
        return None
    day, clock, fraction, zone = m.groups()
    # fromisoformat takes at most microseconds; a provider may send nanoseconds.
    text = f"{day}T{clock}{'.' + fraction[:6].ljust(6, '0') if fraction else ''}"
    text += "+00:00" if zone in ("Z", "z") else zone
    try:
        when = datetime.fromisoformat(text)
    except ValueError:  # the shape is right but e.g. month 13
        return None
    return _delay(when.timestamp() - now_wall)


def _is_zero(value: str | None) -> bool:
    return value is not None and value.strip() in ("0", "0.0")


def _reset_delay(
    headers: Mapping[str, str],
    limits: tuple[tuple[str, str], ...],
    parse: Callable[[str], float | None],
) -> float | None:
    """The wait implied by a provider's per-limit reset headers.

    A 429 means at least one limit is spent. Those whose `remaining` is 0 are the spent ones, and
    a retry succeeds only once all of them are back: the largest of their resets. When none says
    0 the request was refused because it needs more than is left (OpenAI refuses a request whose
    token estimate exceeds the remaining tokens, leaving `remaining-tokens` above 0), so we do not
    know which limit it was and take the largest reset given. The resets are times to a *full*
    refill, so this errs long; the policy's cap bounds it.
    """
    resets: list[float] = []
    spent: list[float] = []
    for reset_name, remaining_name in limits:
        raw = headers.get(reset_name)
        seconds = parse(raw) if raw is not None else None
        if seconds is None:
            continue
        resets.append(seconds)
        if _is_zero(headers.get(remaining_name)):
            spent.append(seconds)
    chosen = spent or resets
    return max(chosen) if chosen else None


def retry_after_seconds(headers: Mapping[str, str], now_wall: float) -> float | None:
    """How long the provider asked us to wait, in seconds, or None when it did not say.

    `headers` has lower-case names; `now_wall` is Unix time, used only for absolute dates. The
    first of these that parses wins: `retry-after-ms`; `retry-after` as seconds or an HTTP-date;
    OpenAI's `x-ratelimit-reset-{requests,tokens}`; Anthropic's
    `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset`. Negative values,
    dates in the past and garbage are ignored (the next form is tried). 0 is a valid answer.
    """
    raw = headers.get("retry-after-ms")
    if raw is not None and (ms := _plain_seconds(raw)) is not None:
        return ms / 1000.0
    raw = headers.get("retry-after")
    if raw is not None:
        seconds = _plain_seconds(raw)
        if seconds is None:
            seconds = _http_date_delay(raw, now_wall)
        if seconds is not None:
            return seconds
    seconds = _reset_delay(headers, _OPENAI_LIMITS, _go_duration)
    if seconds is not None:
        return seconds
    return _reset_delay(headers, _ANTHROPIC_LIMITS, lambda v: _rfc3339_delay(v, now_wall))


def retry_delay_seconds(value: str) -> float | None:
    """Seconds from a Gemini error's `google.rpc.RetryInfo` `retryDelay` ("7s", "1.5s").

    The delay is in the error body's `details`, not in a header; a protobuf Duration in JSON is
    decimal seconds with up to nine fractional digits and an "s" suffix. Negative or garbage → None.
    """
    m = _PROTO_DURATION_RE.fullmatch(value.strip())
    return _delay(float(m.group(1))) if m else None


# --- the table ----------------------------------------------------------------------------


class CooldownTable:
    """Which keys are resting, and the recent failures of those that are not.

    Memory is bounded by the configured keys: one entry per cooling key (expired ones are dropped
    lazily, by `remaining`, `entries` and `retain`), and per key a failure window of at most
    `threshold` timestamps. `retain` forgets keys a config reload removed.
    """

    __slots__ = ("_failures", "_heads", "_random", "_until")

    def __init__(self, rng: random.Random | None = None) -> None:
        self._until: dict[Hashable, CooldownEntry] = {}
        # The first parts of the cooling keys (credential labels, provider names), rebuilt
        # after a change: most lookups ask about a credential that is not cooling at all.
        self._heads: frozenset[Hashable] | None = None
        self._failures: dict[Hashable, deque[float]] = {}
        self._random = rng or random.Random()

    # -- feeding it --

    def on_rate_limited(
        self, key: Hashable, policy: CooldownPolicy, now: float, retry_after: float | None
    ) -> float:
        """A 429: rest `key` for the time asked (or the policy's default), capped, plus spread.

        Returns the deadline. An existing later deadline is kept: answers to requests sent
        before the first 429 must not shorten the cooldown it started.
        """
        if retry_after is None or not (math.isfinite(retry_after) and retry_after >= 0):
            retry_after = policy.rate_limit
        return self._enter(key, now, self._spread(min(retry_after, policy.cap), policy),
                           "rate_limited", extend_only=True)

    def on_failure(
        self, key: Hashable, policy: CooldownPolicy, now: float, reason: str = "errors"
    ) -> float | None:
        """A 5xx, timeout or connect error. The `threshold`-th within `window` rests the key for
        `policy.error` (plus spread) and returns the deadline; otherwise None."""
        window = self._failures.get(key)
        if window is None or window.maxlen != policy.threshold:
            window = self._failures[key] = deque(window or (), maxlen=policy.threshold)
        window.append(now)
        horizon = now - policy.window
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) < policy.threshold:
            return None
        # Counting starts afresh: the next trip needs `threshold` new failures.
        del self._failures[key]
        return self._enter(key, now, self._spread(policy.error, policy), reason, extend_only=True)

    def on_success(self, key: Hashable, sent_at: float | None = None) -> None:
        """A success ends the key's cooldown and clears its failure window.

        With `sent_at` (when the request that succeeded was sent), a success of a request sent
        before the cooldown began does not end it: it says nothing about the provider after the
        429 (concurrent requests answered out of order).
        """
        self._failures.pop(key, None)
        entry = self._until.get(key)
        if entry is not None and (sent_at is None or sent_at >= entry.started_at):
            del self._until[key]
            self._heads = None

    def cool(self, key: Hashable, duration: float, now: float, reason: str = "manual") -> float:
        """An operator's cooldown: exactly `duration` seconds (no cap, no spread), replacing any
        current one, longer or shorter. Returns the deadline."""
        if not (math.isfinite(duration) and duration >= 0):
            raise ValueError(f"a cooldown duration must be a finite number >= 0, not {duration!r}")
        return self._enter(key, now, duration, reason, extend_only=False)

    def recover(self, key: Hashable, now: float | None = None) -> bool:
        """An operator's recover: ends the cooldown and clears the failure window.

        True if the key was cooling; with `now`, an entry already past its deadline does not
        count as cooling.
        """
        self._failures.pop(key, None)
        entry = self._until.pop(key, None)
        self._heads = None
        return entry is not None and (now is None or entry.ends_at > now)

    def recover_where(self, match: Callable[[Hashable], bool], now: float) -> int:
        """`recover` every key `match` accepts, cooling or only counting failures; returns how
        many were cooling (an operator's recover of a whole provider)."""
        keys = [k for k in (*self._until, *self._failures) if match(k)]
        return sum(self.recover(k, now) for k in dict.fromkeys(keys))

    # -- asking it --

    def heads(self) -> frozenset[Hashable]:
        """The first parts of the keys that may be cooling (an expired one may linger)."""
        heads = self._heads
        if heads is None:
            heads = self._heads = frozenset(
                k[0] if isinstance(k, tuple) else k for k in self._until)
        return heads

    def __bool__(self) -> bool:
        """Whether any key may be cooling (expired entries linger until looked up), so the
        calm case skips every per-target lookup."""
        return bool(self._until)

    def remaining(self, key: Hashable, now: float) -> float:
        """Seconds until `key` may be used again; 0.0 when it is not cooling."""
        entry = self._until.get(key)
        if entry is None:
            return 0.0
        left = entry.ends_at - now
        if left > 0:
            return left
        del self._until[key]
        self._heads = None
        return 0.0

    def earliest(self, keys: Iterable[Hashable], now: float) -> float | None:
        """The smallest `remaining` among those of `keys` that are cooling, or None if none is:
        the Retry-After of the gateway's own 429 when every candidate is cooling."""
        best: float | None = None
        for key in keys:
            left = self.remaining(key, now)
            if left > 0 and (best is None or left < best):
                best = left
        return best

    def entries(self, now: float) -> list[CooldownEntry]:
        """The current cooldowns, soonest to end first (for the operations API)."""
        self._drop_expired(now)
        return sorted(self._until.values(), key=lambda e: e.ends_at)

    def retain(self, keys: Collection[Hashable]) -> None:
        """Forget every key not in `keys` (a config reload removed it)."""
        self.retain_where((keys if isinstance(keys, set | frozenset) else set(keys)).__contains__)

    def retain_where(self, keep: Callable[[Hashable], bool]) -> None:
        """Forget every key `keep` refuses (a config reload removed its credential)."""
        for table in (self._until, self._failures):
            for key in [k for k in table if not keep(k)]:
                del table[key]
                self._heads = None

    def __repr__(self) -> str:
        return (f"<CooldownTable entries={len(self._until)} "
                f"failure_windows={len(self._failures)}>")

    # -- internals --

    def _spread(self, duration: float, policy: CooldownPolicy) -> float:
        return duration * (1.0 + policy.spread * self._random.random())

    def _enter(
        self, key: Hashable, now: float, duration: float, reason: str, *, extend_only: bool
    ) -> float:
        ends_at = now + duration
        current = self._until.get(key)
        if current is not None and current.ends_at > now:
            if extend_only and current.ends_at >= ends_at:
                return current.ends_at
            started_at = current.started_at  # one continuous cooldown, lengthened
        else:
            started_at = now
        self._until[key] = CooldownEntry(key, started_at, ends_at, reason)
        self._heads = None
        return ends_at

    def _drop_expired(self, now: float) -> None:
        for key in [k for k, e in self._until.items() if e.ends_at <= now]:
            del self._until[key]
            self._heads = None
