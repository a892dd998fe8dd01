"""The management API: usage reports and records, the running config (redacted), key budgets.

Same guard as the operations API (admin key, loopback unless allowed). Usage answers come from
the store after a flush of the queue, so a request answered a moment ago is already counted.
The `sluice usage` command prints the same report from the store directly (`usage_table`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Sequence
from typing import Any, get_args

import msgspec
from aiohttp import web

from proxy.config import Settings
from proxy.errors import BadRequest, SluiceError
from proxy.log import redact_url
from proxy.ops import admin_runtime, json_response
from proxy.reload import RELOADER
from proxy.runtime import STATE, GatewayState
from proxy.store import GroupBy, StoreError, UsageGroup, UsageStore

__all__ = ["add_routes", "parse_time", "redacted_config", "usage_table"]

_DEFAULT_SPAN = 30 * 86400  # a report with no `from` covers the last 30 days
_MAX_PAGE = 1000


class StoreUnavailable(SluiceError):
    status = 503
    type = "server_error"
    code = "usage_store_unavailable"


def parse_time(value: str, name: str) -> float:
    """Unix seconds from a number, an ISO date (`2026-11-28`, UTC midnight) or an ISO datetime
    (UTC unless it names its offset)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"'{name}' must be Unix seconds or an ISO date or datetime, got "
                         f"{value!r}.", param=name) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _span(query: Any) -> tuple[float, float]:
    now = time.time()
    end = parse_time(query["to"], "to") if "to" in query else now
    start = parse_time(query["from"], "from") if "from" in query else end - _DEFAULT_SPAN
    if start > end:
        raise BadRequest("'from' is after 'to'.", param="from")
    return start, end


def _state(request: web.Request) -> tuple[GatewayState, UsageStore]:
    admin_runtime(request)
    state = request.app[STATE]
    if state.recorder is None or state.recorder.store is None:
        raise StoreUnavailable("Usage recording is off (usage.store: none).")
    return state, state.recorder.store


async def _flushed(state: GatewayState) -> None:
    assert state.recorder is not None
    await state.recorder.flush()


async def usage_report(request: web.Request) -> web.Response:
    state, store = _state(request)
    q = request.query
    start, end = _span(q)
    group_by = q.get("group_by", "model")
    if group_by not in get_args(GroupBy):
        raise BadRequest(f"'group_by' must be one of {', '.join(get_args(GroupBy))}, "
                         f"got {group_by!r}.", param="group_by")
    await _flushed(state)
    try:
        groups = await store.summary(start, end, group_by,  # type: ignore[arg-type]
                                     key=q.get("key"), model=q.get("model"),
                                     provider=q.get("provider"))
    except StoreError as err:
        raise StoreUnavailable(f"The usage store is unavailable: {err}") from None
    return json_response({"from": start, "to": end, "group_by": group_by,
                          "groups": [msgspec.structs.asdict(g) for g in groups],
                          "totals": _totals(groups)})


def _totals(groups: Sequence[UsageGroup]) -> dict[str, object]:
    fields = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens",
              "reasoning_tokens", "unpriced", "estimated")
    totals: dict[str, object] = {f: sum(getattr(g, f) for g in groups) for f in fields}
    totals["cost_usd"] = round(sum(g.cost_usd for g in groups), 9)
    return totals


async def usage_records(request: web.Request) -> web.Response:
    state, store = _state(request)
    q = request.query
    start = parse_time(q["from"], "from") if "from" in q else None
    end = parse_time(q["to"], "to") if "to" in q else None
    try:
        limit = int(q.get("limit", "100"))
        status = int(q["status"]) if "status" in q else None
    except ValueError:
        raise BadRequest("'limit' and 'status' must be integers.", param="limit") from None
    if not 1 <= limit <= _MAX_PAGE:
        raise BadRequest(f"'limit' must be between 1 and {_MAX_PAGE}.", param="limit")
    before = None
    if "before" in q:  # the `next` cursor of the previous page: "<ts>,<request id>"
        ts, _, rid = q["before"].partition(",")
        before = (parse_time(ts, "before"), rid)
    await _flushed(state)
    try:
        records = await store.records(start, end, key=q.get("key"), model=q.get("model"),
                                      provider=q.get("provider"), status=status, limit=limit,
                                      before=before)
    except StoreError as err:
        raise StoreUnavailable(f"The usage store is unavailable: {err}") from None
    last = records[-1] if len(records) == limit else None
    return json_response({"records": [msgspec.structs.asdict(r) for r in records],
                          "next": f"{last.ts!r},{last.request_id}" if last else None})


async def keys_status(request: web.Request) -> web.Response:
    rt = admin_runtime(request)
    ledger, now = request.app[STATE].ledger, time.time()
    return json_response({"keys": [
        {"name": k.name, "models": list(k.models) if k.models is not None else None,
         "limits": {"rpm": k.limits.rpm, "tpm": k.limits.tpm},
         "budgets": ledger.key_status(k, now)}
        for k in rt.settings.keys]})


async def config_view(request: web.Request) -> web.Response:
    rt = admin_runtime(request)
    return json_response(redacted_config(rt.settings))


def redacted_config(s: Settings) -> dict[str, object]:
    """The config in force, as the gateway resolved it; secrets appear only as their labels
    (`env:NAME`, `inline`), header values and store passwords not at all."""
    return {
        "source": s.source,
        "server": {"host": s.host, "port": s.port, "max_body": s.max_body},
        "admin": {"key": "set" if s.admin_key else None, "allow_remote": s.admin_allow_remote},
        "keys": [{"name": k.name, "limits": {"rpm": k.limits.rpm, "tpm": k.limits.tpm},
                  "models": list(k.models) if k.models is not None else None,
                  "budgets": [{"unit": b.unit, "period": b.period, "limit": b.limit}
                              for b in k.budgets]} for k in s.keys],
        "providers": {
            name: {"kind": p.spec.kind, "base_url": p.base_url,
                   "credentials": [c.label for c in p.credentials],
                   "headers": {h: "***" for h, _ in p.headers},
                   "proxies": [redact_url(u) for u in p.proxies],
                   "rate_limit": {"rpm": p.rate_limit.rpm, "tpm": p.rate_limit.tpm},
                   "quota": None if p.quota is None else {
                       "limit": p.quota.limit, "unit": p.quota.unit, "period": p.quota.period}}
            for name, p in s.providers.items()},
        "models": {m.name: {"strategy": m.strategy, "fallbacks": list(m.fallbacks),
                            "context_window_fallbacks": list(m.context_window_fallbacks),
                            "targets": [{"provider": t.provider.name, "model": t.model,
                                         "weight": t.weight, "priority": t.priority,
                                         "price": dataclasses.asdict(t.price)
                                         if t.price is not None else None}
                                        for t in m.targets]}
                   for m in s.models},
        "routing": {"aliases": dict(s.aliases), "rules": [r.name for r in s.rules]},
        "retry": {"attempts": s.retry.attempts, "backoff": s.retry.backoff,
                  "max_backoff": s.retry.max_backoff, "deadline": s.retry.deadline},
        "usage": {"store": redact_url(s.usage.store), "data_dir": str(s.usage.data_dir),
                  "flush_interval": s.usage.flush_interval},
        "log": {"level": s.log.level, "requests": s.log.requests, "bodies": s.log.bodies},
    }


_COLUMNS = (("group", "{}"), ("requests", "{:d}"), ("errors", "{:d}"),
            ("input_tokens", "{:d}"), ("output_tokens", "{:d}"), ("cached_tokens", "{:d}"),
            ("cost_usd", "{:.4f}"), ("unpriced", "{:d}"), ("p50_latency_ms", "{:.0f}"),
            ("p95_latency_ms", "{:.0f}"))


def usage_table(groups: Sequence[UsageGroup], group_by: str) -> str:
    """The usage report as a plain-text table, for the terminal."""
    head = [group_by if name == "group" else name.replace("_", " ") for name, _ in _COLUMNS]
    rows = [[fmt.format(getattr(g, name)) if getattr(g, name) is not None else "-"
             for name, fmt in _COLUMNS] for g in groups]
    totals = _totals(groups)
    rows.append(["total", *(("{:.4f}" if n == "cost_usd" else "{}").format(totals[n])
                            if n in totals else "" for n, _ in _COLUMNS[1:])])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(-1, lines[1])
    return "\n".join(lines)


async def reload_config(request: web.Request) -> web.Response:
    """`POST /v0/management/reload`: load the config file again; 422 with its problems (and
    the running config unchanged) when it is invalid."""
    admin_runtime(request)
    reloader = request.app.get(RELOADER)
    if reloader is None:
        raise ReloadUnavailable("This gateway was not started by `sluice serve`; it cannot "
                                "reload its config.")
    problems = await reloader.reload("api")
    if problems is not None:
        raise InvalidConfig("The new config is invalid; the running config stays in force: "
                            + "; ".join(problems))
    return json_response({"status": "reloaded",
                          "config": request.app[STATE].runtime.settings.source})


class ReloadUnavailable(SluiceError):
    status = 503
    type = "server_error"
    code = "reload_unavailable"


class InvalidConfig(SluiceError):
    status = 422
    type = "invalid_request_error"
    code = "invalid_config"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v0/management/usage", usage_report)
    app.router.add_get("/v0/management/usage/records", usage_records)
    app.router.add_get("/v0/management/config", config_view)
    app.router.add_get("/v0/management/keys", keys_status)
    app.router.add_post("/v0/management/reload", reload_config)
