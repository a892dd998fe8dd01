"""Running totals of what each gateway key and provider account spent this day, week and month.

Budgets (`keys[].budget`) are checked against these before dispatch, and provider quotas
(`providers[].quota`) turn them into the "quota left" the `quota_aware` strategy ranks by. Totals
are added as each request finishes, so a key is stopped at the first request after it crossed its
budget, and they are rebuilt from the usage store at start, so a restart forgets nothing. Periods
are calendar periods in UTC: a day from midnight, a week from Monday, a month from the 1st.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proxy.config.settings import Budget, GatewayKey, Period, Provider, Quota
from proxy.records import UsageRecord

__all__ = ["BudgetExceeded", "Ledger", "period_bounds"]

_PERIODS: tuple[Period, ...] = ("day", "week", "month")


def period_bounds(period: Period, now: float) -> tuple[float, float]:
    """(start, end) in Unix seconds of the UTC calendar period holding `now`."""
    today = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0,
                                                            microsecond=0)
    if period == "day":
        start, end = today, today + dt.timedelta(days=1)
    elif period == "week":
        start = today - dt.timedelta(days=today.weekday())
        end = start + dt.timedelta(days=7)
    else:
        start = today.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
    return start.timestamp(), end.timestamp()


@dataclass(slots=True)
class _Window:
    """Spend in one period: requests, tokens (input + output) and known USD."""

    start: float = 0.0
    end: float = 0.0
    requests: int = 0
    tokens: int = 0
    usd: float = 0.0

    def roll(self, period: Period, now: float) -> _Window:
        if not self.start <= now < self.end:
            self.start, self.end = period_bounds(period, now)
            self.requests, self.tokens, self.usd = 0, 0, 0.0
        return self

    def amount(self, unit: str) -> float:
        return self.usd if unit == "usd" else self.requests if unit == "requests" else self.tokens


@dataclass(frozen=True, slots=True)
class BudgetExceeded:
    budget: Budget
    spent: float
    resets_at: float

    def message(self, key: str) -> str:
        unit = "USD" if self.budget.unit == "usd" else "tokens"
        spent = f"{self.spent:.4f}" if self.budget.unit == "usd" else f"{self.spent:.0f}"
        limit = f"{self.budget.limit:g}"
        reset = dt.datetime.fromtimestamp(self.resets_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (f"Gateway key '{key}' is over its {self.budget.period}ly budget of {limit} "
                f"{unit} ({self.budget.name}: {spent} spent); it resets at {reset}.")


class Ledger:
    """Per-period spend of every key with a budget and every provider with a quota."""

    __slots__ = ("_keys", "_providers", "_quotas")

    def __init__(self) -> None:
        self._keys: dict[str, dict[Period, _Window]] = {}
        self._providers: dict[str, dict[Period, _Window]] = {}
        self._quotas: dict[str, Quota] = {}

    def configure(self, keys: Iterable[GatewayKey], providers: Mapping[str, Provider]) -> None:
        """Track the keys and providers a (new) config limits; totals of those kept stay."""
        tracked = {k.name for k in keys if k.budgets}
        self._keys = {name: self._keys.get(name) or _windows() for name in tracked}
        self._quotas = {name: p.quota for name, p in providers.items() if p.quota is not None}
        self._providers = {name: self._providers.get(name) or _windows()
                           for name in self._quotas}

    def tracked(self) -> tuple[set[str], set[str]]:
        """The key and provider names whose totals are kept (those to rebuild from a store)."""
        return set(self._keys), set(self._providers)

    def add(self, rec: UsageRecord) -> None:
        """Count a finished request (called once per record, on the request path: cheap).
        A cache hit spent nothing at any provider, so it counts nowhere."""
        if rec.cache_hit:
            return
        if rec.key is not None:
            windows = self._keys.get(rec.key)
            if windows is not None:
                _charge(windows, rec)
        if rec.provider is not None:
            windows = self._providers.get(rec.provider)
            if windows is not None:
                _charge(windows, rec)

    def seed(self, kind: str, name: str, period: Period, start: float, requests: int,
             tokens: int, usd: float) -> None:
        """Totals of a period so far, as a store counted them at start."""
        table = self._keys if kind == "key" else self._providers
        windows = table.get(name)
        if windows is None:
            return
        end = period_bounds(period, start)[1]
        windows[period] = _Window(start, end, requests, tokens, usd)

    def check(self, key: GatewayKey, now: float) -> BudgetExceeded | None:
        """The first of the key's budgets it has used up, if any."""
        windows = self._keys.get(key.name)
        if windows is None:
            return None
        for budget in key.budgets:
            w = windows[budget.period].roll(budget.period, now)
            spent = w.amount(budget.unit)
            if spent >= budget.limit:
                return BudgetExceeded(budget, spent, w.end)
        return None

    def key_status(self, key: GatewayKey, now: float) -> list[dict[str, object]]:
        windows = self._keys.get(key.name)
        out: list[dict[str, object]] = []
        for budget in key.budgets:
            w = windows[budget.period].roll(budget.period, now) if windows else _Window()
            spent = w.amount(budget.unit)
            out.append({"budget": budget.name, "unit": budget.unit, "period": budget.period,
                        "limit": budget.limit, "spent": round(spent, 10),
                        "remaining": round(max(budget.limit - spent, 0.0), 10),
                        "exceeded": spent >= budget.limit, "resets_at": w.end})
        return out

    def quota_left(self, provider: str, now: float) -> float | None:
        """The fraction of the provider's quota left this period; None when it has none."""
        quota = self._quotas.get(provider)
        if quota is None:
            return None
        w = self._providers[provider][quota.period].roll(quota.period, now)
        return max(0.0, 1.0 - w.amount(quota.unit) / quota.limit)


def _windows() -> dict[Period, _Window]:
    return {p: _Window() for p in _PERIODS}


def _charge(windows: dict[Period, _Window], rec: UsageRecord) -> None:
    for period, w in windows.items():
        if rec.ts >= w.end:  # only forward: a request begun before midnight counts today
            w.roll(period, rec.ts)
        w.requests += 1
        w.tokens += rec.input_tokens + rec.output_tokens
        if rec.cost_usd is not None:
            w.usd += rec.cost_usd
