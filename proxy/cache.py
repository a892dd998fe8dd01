"""The response cache: a repeated request answered with the bytes of the first answer, with no
upstream call.

Caching applies to a request for a model with `cache: true`, or sent with the header
`x-sluice-cache: use`; answers then carry `x-sluice-cache: hit` or `miss`. What decides, in the
order `plan_for` applies it:

- `Cache-Control: no-store` from the caller: no lookup and nothing stored (no header at all);
  `no-cache` (or `max-age=0`): no lookup, but the fresh answer is stored.
- Only answers the same request would get again are kept: a chat or legacy completion must ask
  for `temperature: 0` explicitly, because every provider's default samples (OpenAI 1, Anthropic
  1.0, Gemini 1.0), unless `cache.allow_nondeterministic`; embeddings always are.
  Token counting is never cached (it is cheap and already exact or estimated).
- The key is the whole request, normalized: caller dialect, operation, the gateway key's name,
  the model as the caller named it, stream / `alt=sse` / API version / Anthropic's `?beta=true`,
  the caller headers that change an answer (`anthropic-beta`, `openai-beta`), and every body
  field, decoded and re-encoded with sorted keys, then hashed (blake2b). The key's *name* is in
  it because routing rules may send two keys' requests for the same model to different
  targets, and because a shared entry would tell one tenant what another one asked
  (a hit answers faster). The secret never is.
- Stored: answers with status 200 whose stream ended whole (outcome ok) and whose finish reason
  is not an error (`error`, `content_filter`), up to `MAX_ENTRY_BYTES`.

Entries live in an aiocache backend behind `ResponseCache`, which adds what aiocache's memory
backend lacks: a bound on entries (`cache.max_entries`) and bytes (`MAX_TOTAL_BYTES`), evicting
the oldest first. A shared Redis (aiocache's `RedisCache`, with a serializer for `CachedAnswer`,
a msgspec Struct) can replace the memory backend without changing callers: expiry is then the
server's, and the local bookkeeping bounds only what this process stored.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from aiocache import SimpleMemoryCache

from adapters.canonical import StreamEnd, StreamError, TranslationError, Usage
from adapters.dialects import ADAPTERS, DialectAdapter
from adapters.sse import SSEDecoder, SSEError, SSEEvent
from proxy.calls import Call
from proxy.config import CacheSettings
from proxy.errors import BadRequest

__all__ = [
    "CACHE_HEADER",
    "MAX_ENTRY_BYTES",
    "MAX_TOTAL_BYTES",
    "CachePlan",
    "CachedAnswer",
    "Collector",
    "ResponseCache",
    "answer_finish",
    "cache_directives",
    "deterministic",
    "keepable",
    "plan_for",
    "request_key",
]

# Request: `use` opts the request in; answer: `hit` or `miss` when caching applied.
CACHE_HEADER = "x-sluice-cache"
_OPT_IN = "use"
# An answer past this is not kept: one 4 MiB answer would displace hundreds of ordinary ones,
# and a request that long is rarely repeated word for word.
MAX_ENTRY_BYTES = 4 << 20
# `max_entries` bounds the count, not the memory; 10,000 entries of up to 4 MiB could reach
# 40 GiB. The oldest go first past this.
MAX_TOTAL_BYTES = 256 << 20
# Bumped when the key's parts or CachedAnswer change, so that a shared store never mixes layouts.
_KEY_VERSION = "sluice-cache/1"
# Caller headers a provider gets (adapters.providers passthrough_headers) that change the answer.
_ANSWER_HEADERS = ("anthropic-beta", "openai-beta")
# Finish reasons that mean the answer failed or was withheld; the next call may well differ.
_NOT_KEPT_FINISH = frozenset({"error", "content_filter"})

_DECODE = msgspec.json.Decoder()
_SORTED = msgspec.json.Encoder(order="sorted")
_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])


class CachedAnswer(msgspec.Struct, gc=False):
    """One stored answer: the bytes the caller got, and what its usage record needs."""

    body: bytes
    content_type: str
    provider: str  # the provider that answered first; sent again as x-sluice-provider
    upstream_model: str
    usage: Usage
    estimated: bool = False
    expires: float = 0.0  # Unix time; set by ResponseCache.put


class CachePlan:
    """Caching applies to a request: its key, and whether to look it up (not on no-cache)."""

    __slots__ = ("key", "lookup")

    def __init__(self, key: str, lookup: bool) -> None:
        self.key = key
        self.lookup = lookup

    def __repr__(self) -> str:
        return f"<CachePlan {self.key[:12]} lookup={self.lookup}>"


# --- deciding ---------------------------------------------------------------------------------


def cache_directives(value: str | None) -> tuple[bool, bool]:
    """(no_store, no_cache) of a request's Cache-Control (RFC 9111 5.2.1); `max-age=0` asks
    for an answer no older than 0 s, which no stored one is: the same as no-cache."""
    if not value:
        return False, False
    no_store = no_cache = False
    for part in value.split(","):
        name, _, arg = part.partition("=")
        name = name.strip().lower()
        if name == "no-store":
            no_store = True
        elif name == "no-cache" or (name == "max-age" and arg.strip().strip('"') == "0"):
            no_cache = True
    return no_store, no_cache


def _temperature(dialect: str, body: dict[str, Any]) -> object:
    if dialect == "gemini":  # proto3 JSON takes both spellings of the field name
        config = body.get("generationConfig", body.get("generation_config"))
        return config.get("temperature") if isinstance(config, dict) else None
    return body.get("temperature")


def deterministic(call: Call, body: dict[str, Any]) -> bool:
    """Whether the same request gets the same answer: embeddings always; text only with
    `temperature: 0` given (absent means the provider's default, which samples)."""
    if call.operation == "embeddings":
        return True
    t = _temperature(call.dialect, body)
    return isinstance(t, int | float) and not isinstance(t, bool) and t == 0


def request_key(call: Call, caller: str, body: object, headers: Mapping[str, str]) -> str:
    """The cache key of a request whose body decoded to `body` (see the module docstring)."""
    parts = [_KEY_VERSION, call.dialect, call.operation, caller, call.model, call.stream,
             call.sse, call.version, call.query,
             [headers.get(name) for name in _ANSWER_HEADERS], body]
    return hashlib.blake2b(_SORTED.encode(parts), digest_size=20).hexdigest()


def plan_for(call: Call, caller: str, headers: Mapping[str, str],
             settings: CacheSettings) -> CachePlan | None:
    """Whether and how caching applies to a request that opted in (model or header); None when
    it does not. A malformed opt-in header is the caller's error."""
    opt_in = headers.get(CACHE_HEADER)
    if opt_in is not None and opt_in.strip().lower() != _OPT_IN:
        raise BadRequest(f"Header {CACHE_HEADER}: {opt_in!r} is not understood; send "
                         f"'{CACHE_HEADER}: {_OPT_IN}' to use the response cache.",
                         param=CACHE_HEADER)
    if call.operation == "count_tokens":
        return None
    no_store, no_cache = cache_directives(headers.get("Cache-Control"))
    if no_store:
        return None
    try:
        body = _DECODE.decode(call.body)
    except msgspec.DecodeError:  # e.g. a number out of range, which the envelope never read
        return None
    if not isinstance(body, dict):
        return None
    if not settings.allow_nondeterministic and not deterministic(call, body):
        return None
    return CachePlan(request_key(call, caller, body, headers), lookup=not no_cache)


# --- collecting an answer ---------------------------------------------------------------------


class Collector:
    """The bytes of an answer as the caller got them, kept by reference while it is written;
    gives up past MAX_ENTRY_BYTES. `finish` is the canonical finish reason when the pipe knew
    it (translated answers); None: `answer_finish` reads it from the bytes."""

    __slots__ = ("_chunks", "_size", "finish")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0  # -1: over MAX_ENTRY_BYTES
        self.finish: str | None = None

    def __repr__(self) -> str:
        return f"<Collector chunks={len(self._chunks)} bytes={self._size} finish={self.finish}>"

    def add(self, data: bytes) -> None:
        if self._size < 0:
            return
        self._size += len(data)
        if self._size > MAX_ENTRY_BYTES:
            self._chunks, self._size = [], -1
            return
        self._chunks.append(data)

    def data(self) -> bytes | None:
        """The whole answer; None when it outgrew MAX_ENTRY_BYTES."""
        return None if self._size < 0 else b"".join(self._chunks)


def answer_finish(call: Call, data: bytes) -> str:
    """The canonical finish reason of an answer in the caller's dialect, from a provider of the
    same dialect (a translated answer's finish is known before its caller's encoding, which
    may blur it: Anthropic has no `error` stop reason). "error" when it cannot be read or the
    stream holds an error or never ended."""
    adapter = ADAPTERS[call.dialect]
    try:
        if not call.stream:
            return adapter.to_canonical_response(data, model=call.model).finish
        return _stream_finish(adapter, call, data)
    except (TranslationError, SSEError, ValueError):  # msgspec.DecodeError is a ValueError
        return "error"


def _stream_finish(adapter: DialectAdapter, call: Call, data: bytes) -> str:
    if call.dialect == "gemini" and not call.sse:  # a streamed JSON array
        events = [SSEEvent(bytes(raw).decode()) for raw in _ARRAY.decode(data)]
    else:
        events = SSEDecoder().feed(data)
    decoder = adapter.StreamDecoder(model=call.model)
    finish = "error"
    for event in [e for sse_event in events for e in decoder.feed(sse_event)] + decoder.close():
        if isinstance(event, StreamError):
            return "error"
        if isinstance(event, StreamEnd):
            finish = event.finish
    return finish


def keepable(call: Call, finish: str | None, data: bytes) -> bool:
    """Whether an answer that ended well may be stored: its finish reason is not an error."""
    if call.operation != "chat":
        return True  # embeddings and legacy completions: status 200 is the whole verdict
    return (finish if finish is not None else answer_finish(call, data)) not in _NOT_KEPT_FINISH


# --- the store --------------------------------------------------------------------------------


class ResponseCache:
    """Stored answers by key, with a TTL and bounds on entries and bytes (oldest first out).

    Every entry gets the same TTL, so the oldest entry is also the first to expire: evicting
    oldest-first keeps the bookkeeping one ordered dict. (LRU would keep popular entries a little
    longer, but the TTL caps their life anyway.) `settings` may be replaced by a config reload;
    entries stored before keep the TTL they were given.
    """

    __slots__ = ("_backend", "_bytes", "_clock", "_order", "settings")

    def __init__(self, settings: CacheSettings, backend: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        # timeout=None: otherwise aiocache wraps every call in asyncio.wait_for, a task per
        # lookup, for a dict access that cannot hang.
        self._backend = backend if backend is not None else SimpleMemoryCache(timeout=None)
        self._clock = clock
        # key -> (expires, bytes), oldest first: what this process stored, for the bounds.
        self._order: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._bytes = 0

    def __repr__(self) -> str:
        return (f"<ResponseCache entries={len(self._order)} bytes={self._bytes} "
                f"ttl={self.settings.ttl} max_entries={self.settings.max_entries}>")

    def __len__(self) -> int:
        return len(self._order)

    async def get(self, key: str) -> CachedAnswer | None:
        answer = await self._backend.get(key)
        if not isinstance(answer, CachedAnswer):
            return None
        if answer.expires <= self._clock():  # the backend's own timer may not have run yet
            return None
        return answer

    async def put(self, key: str, answer: CachedAnswer) -> bool:
        """Store `answer` under `key` for `settings.ttl`; False when it is too big to keep."""
        size = len(answer.body)
        if size > MAX_ENTRY_BYTES:
            return False
        ttl = self.settings.ttl
        answer.expires = self._clock() + ttl
        for old in self._make_room(key, size, answer.expires):
            await self._backend.delete(old)
        await self._backend.set(key, answer, ttl=ttl)
        return True

    def _make_room(self, key: str, size: int, expires: float) -> list[str]:
        """Record `key` as the newest entry; return the keys to drop from the backend: the
        expired ones at the front, then the oldest while a bound would be passed."""
        order = self._order
        old = order.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        now = expires - self.settings.ttl
        dropped = []
        while order:
            first, (first_expires, first_size) = next(iter(order.items()))
            if not (first_expires <= now or len(order) >= self.settings.max_entries
                    or self._bytes + size > MAX_TOTAL_BYTES):
                break
            del order[first]
            self._bytes -= first_size
            dropped.append(first)
        order[key] = (expires, size)
        self._bytes += size
        return dropped
