"""The usage record: what one request was, did and cost (one per request, never dropped)."""

from __future__ import annotations

import msgspec

__all__ = ["COLUMNS", "UsageRecord"]


class UsageRecord(msgspec.Struct, gc=False):
    """What one request was, did and cost. Field order is the store's column order.

    Times are Unix seconds (`ts`, the request's arrival) and milliseconds (durations). Token
    counts come from the provider's own usage; `estimated` says they were counted by the gateway
    instead (a stream cut before its usage arrived). `cost_usd` is None when no price is known:
    unknown, never 0.
    """

    ts: float
    request_id: str
    key: str | None  # the gateway key's name (never its secret); None when unauthenticated
    dialect: str  # the caller's API: openai | anthropic | gemini
    operation: str  # chat | completions | embeddings | count_tokens
    model: str | None  # the model as the caller named it (alias), None if the body had none
    provider: str | None  # the provider that answered last
    credential: str | None  # that provider's credential label
    upstream_model: str | None
    status: int  # the HTTP status the caller got
    outcome: str  # ok | error | rate_limited | client_closed | cut
    error: str | None  # the error code when not ok
    attempts: int
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    cost_usd: float | None = None
    latency_ms: float = 0.0  # arrival to the last byte sent
    ttft_ms: float | None = None  # arrival to the first byte sent (streams)
    overhead_ms: float = 0.0  # latency not spent waiting on an upstream
    stream: bool = False
    cache_hit: bool = False


COLUMNS: tuple[str, ...] = UsageRecord.__struct_fields__
