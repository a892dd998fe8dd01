"""The response cache: what a request's key is made of, when caching applies (determinism,
Cache-Control), which answers may be kept, and the store's TTL and bounds."""

from __future__ import annotations

import asyncio

import pytest
from multidict import CIMultiDict

from adapters.canonical import Usage
from proxy import cache
from proxy.cache import (
    CachedAnswer,
    Collector,
    ResponseCache,
    answer_finish,
    cache_directives,
    keepable,
    plan_for,
)
from proxy.calls import Call
from proxy.config import CacheSettings
from proxy.errors import BadRequest

BODY = (b'{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}],'
        b'"max_tokens":5}')
SETTINGS = CacheSettings()


def _call(body: bytes = BODY, *, dialect: str = "openai", operation: str = "chat",
          model: str = "m", stream: bool = False, sse: bool = True,
          version: str = "v1beta", query: str = "") -> Call:
    return Call(dialect, operation, body, model, stream, query=query,  # type: ignore[arg-type]
                version=version, sse=sse)


def _key(call: Call, caller: str = "team-a", headers: dict[str, str] | None = None) -> str:
    plan = plan_for(call, caller, CIMultiDict(headers or {}), SETTINGS)
    assert plan is not None
    return plan.key


# --- the key ----------------------------------------------------------------------------------


def test_key_ignores_key_order_and_whitespace() -> None:
    reordered = (b'{ "max_tokens": 5,\n  "messages": [{"content": "hi", "role": "user"}],\n'
                 b'  "temperature": 0, "model": "m" }')
    assert _key(_call(BODY)) == _key(_call(reordered))


@pytest.mark.parametrize("changed", [
    BODY.replace(b'"max_tokens":5', b'"max_tokens":6'),
    BODY.replace(b'"hi"', b'"hi "'),
    BODY.replace(b'"max_tokens":5', b'"max_tokens":5,"top_p":0.5'),
    BODY.replace(b'"max_tokens":5', b'"max_tokens":5,"tools":[]'),
])
def test_any_changed_field_changes_the_key(changed: bytes) -> None:
    assert _key(_call(changed)) != _key(_call(BODY))


def test_key_holds_the_envelope_the_body_does_not() -> None:
    base = _key(_call())
    others = [
        _key(_call(), caller="team-b"),
        _key(_call(model="other")),
        _key(_call(stream=True)),
        _key(_call(dialect="anthropic")),
        _key(_call(operation="completions")),
        _key(_call(query="beta=true")),
        _key(_call(), headers={"anthropic-beta": "context-1m-2025-08-07"}),
    ]
    assert len({base, *others}) == len(others) + 1
    gemini = b'{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"temperature":0}}'
    sse, array = (_key(_call(gemini, dialect="gemini", stream=True, sse=s)) for s in (True, False))
    assert sse != array
    assert _key(_call(gemini, dialect="gemini", version="v1")) != \
        _key(_call(gemini, dialect="gemini"))


def test_key_never_holds_the_secret_nor_ignores_harmless_headers() -> None:
    plain = _key(_call())
    assert _key(_call(), headers={"Authorization": "Bearer sk-secret", "x-stainless-os": "x",
                                  "x-sluice-cache": "use"}) == plain
    assert "sk-secret" not in plain and len(plain) == 40  # blake2b, 20 bytes, hex


# --- when caching applies ---------------------------------------------------------------------


@pytest.mark.parametrize(("body", "dialect", "operation", "applies"), [
    (BODY, "openai", "chat", True),
    (BODY.replace(b'"temperature":0', b'"temperature":0.0'), "openai", "chat", True),
    (BODY.replace(b'"temperature":0', b'"temperature":0.7'), "openai", "chat", False),
    (BODY.replace(b'"temperature":0,', b""), "openai", "chat", False),  # default: 1
    (BODY.replace(b'"temperature":0', b'"temperature":false'), "openai", "chat", False),
    (b'{"model":"m","input":"x"}', "openai", "embeddings", True),
    (b'{"model":"m","prompt":"x","temperature":0}', "openai", "completions", True),
    (b'{"model":"m","max_tokens":5,"messages":[],"temperature":0}', "anthropic", "chat", True),
    (b'{"model":"m","messages":[]}', "anthropic", "count_tokens", False),
    (b'{"contents":[],"generationConfig":{"temperature":0}}', "gemini", "chat", True),
    (b'{"contents":[],"generation_config":{"temperature":0}}', "gemini", "chat", True),
    (b'{"contents":[],"temperature":0}', "gemini", "chat", False),  # not where Gemini reads it
    (b'{"contents":[]}', "gemini", "chat", False),
    (b'{"a":1e400,"temperature":0}', "openai", "chat", False),  # cannot be normalized
])
def test_only_deterministic_requests_are_cached(body: bytes, dialect: str, operation: str,
                                                applies: bool) -> None:
    call = _call(body, dialect=dialect, operation=operation)
    assert (plan_for(call, "k", CIMultiDict(), SETTINGS) is not None) is applies


def test_allow_nondeterministic_caches_sampled_requests() -> None:
    call = _call(BODY.replace(b'"temperature":0', b'"temperature":0.7'))
    assert plan_for(call, "k", CIMultiDict(), CacheSettings(allow_nondeterministic=True))


@pytest.mark.parametrize(("value", "directives"), [
    (None, (False, False)),
    ("", (False, False)),
    ("no-store", (True, False)),
    ("No-Cache", (False, True)),
    ("max-age=0", (False, True)),
    ('max-age="0"', (False, True)),
    ("max-age=60", (False, False)),
    ("private, no-cache , no-store", (True, True)),
    ("no-transform", (False, False)),
    ("x-no-store", (False, False)),
])
def test_cache_control_directives(value: str | None, directives: tuple[bool, bool]) -> None:
    assert cache_directives(value) == directives


def test_no_store_skips_caching_and_no_cache_only_the_lookup() -> None:
    assert plan_for(_call(), "k", CIMultiDict({"Cache-Control": "no-store"}), SETTINGS) is None
    plan = plan_for(_call(), "k", CIMultiDict({"Cache-Control": "no-cache"}), SETTINGS)
    assert plan is not None and plan.lookup is False
    assert plan.key == _key(_call(), caller="k")
    assert repr(plan) == f"<CachePlan {plan.key[:12]} lookup=False>"


def test_an_unknown_opt_in_value_is_the_callers_error() -> None:
    assert plan_for(_call(), "k", CIMultiDict({"X-Sluice-Cache": " USE "}), SETTINGS)
    with pytest.raises(BadRequest) as caught:
        plan_for(_call(), "k", CIMultiDict({"x-sluice-cache": "yes"}), SETTINGS)
    assert caught.value.param == "x-sluice-cache" and "'x-sluice-cache: use'" in caught.value.message


# --- which answers are kept -------------------------------------------------------------------


def _openai_body(finish: str) -> bytes:
    return (b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
            b'"message":{"role":"assistant","content":"hi"},"finish_reason":"' + finish.encode()
            + b'"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}')


def _openai_stream(finish: str | None, done: bool = True) -> bytes:
    chunks = [b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
              b'[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}']
    if finish is not None:
        chunks.append(b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
                      b'"choices":[{"index":0,"delta":{},"finish_reason":"' + finish.encode()
                      + b'"}]}')
    out = b"".join(b"data: " + c + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


@pytest.mark.parametrize(("finish", "kept"), [
    ("stop", True), ("length", True), ("tool_calls", True), ("content_filter", False),
])
def test_error_finish_reasons_are_not_kept(finish: str, kept: bool) -> None:
    assert keepable(_call(), None, _openai_body(finish)) is kept
    stream = _call(stream=True)
    assert keepable(stream, None, _openai_stream(finish)) is kept


def test_a_stream_without_its_end_or_with_an_error_is_not_kept() -> None:
    stream = _call(stream=True)
    assert answer_finish(stream, _openai_stream("stop")) == "stop"
    assert answer_finish(stream, _openai_stream(None, done=False)) == "error"
    error = b'data: {"error":{"message":"boom","type":"server_error"}}\n\n'
    assert answer_finish(stream, _openai_stream(None, done=False) + error) == "error"
    assert answer_finish(_call(), b"not json") == "error"


def test_gemini_streamed_array_finish() -> None:
    chunk = (b'{"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]},'
             b'"finishReason":"%s","index":0}],"usageMetadata":{"promptTokenCount":1,'
             b'"candidatesTokenCount":1,"totalTokenCount":2}}')
    call = _call(b"{}", dialect="gemini", stream=True, sse=False)
    assert answer_finish(call, b"[" + chunk % b"STOP" + b"\r\n]") == "stop"
    assert answer_finish(call, b"[" + chunk % b"SAFETY" + b"\r\n]") == "content_filter"
    sse = _call(b"{}", dialect="gemini", stream=True)
    assert answer_finish(sse, b"data: " + chunk % b"STOP" + b"\r\n\r\n") == "stop"


def test_a_known_finish_is_taken_as_given_and_other_operations_need_none() -> None:
    assert keepable(_call(), "stop", b"anything") is True
    assert keepable(_call(), "error", _openai_body("stop")) is False
    assert keepable(_call(operation="embeddings"), None, b"{}") is True


def test_collector_gives_up_past_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MAX_ENTRY_BYTES", 10)
    keep = Collector()
    keep.add(b"12345")
    keep.add(b"67890")
    assert keep.data() == b"1234567890"
    keep.add(b"x")
    assert keep.data() is None
    keep.add(b"y")
    assert keep.data() is None
    assert repr(keep) == "<Collector chunks=0 bytes=-1 finish=None>"


# --- the store --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _answer(body: bytes = b"{}") -> CachedAnswer:
    return CachedAnswer(body=body, content_type="application/json", provider="p",
                        upstream_model="u", usage=Usage(input_tokens=3, output_tokens=4))


async def test_put_then_get_until_the_ttl_passes() -> None:
    clock = Clock()
    store = ResponseCache(CacheSettings(ttl=60), clock=clock)
    assert await store.get("k") is None
    assert await store.put("k", _answer(b"one"))
    got = await store.get("k")
    assert got is not None and got.body == b"one" and got.usage.output_tokens == 4
    assert got.expires == 1060.0
    clock.now = 1059.9
    assert await store.get("k") is not None
    clock.now = 1060.0
    assert await store.get("k") is None


async def test_short_ttl_expires_on_the_real_clock() -> None:
    store = ResponseCache(CacheSettings(ttl=0.05))
    await store.put("k", _answer())
    assert await store.get("k") is not None
    await asyncio.sleep(0.1)
    assert await store.get("k") is None
    assert await store._backend.get("k") is None  # aiocache's own timer dropped it too


async def test_max_entries_evicts_the_oldest_first() -> None:
    clock = Clock()
    store = ResponseCache(CacheSettings(ttl=60, max_entries=3), clock=clock)
    for i, key in enumerate("abcd"):
        clock.now = 1000.0 + i
        await store.put(key, _answer(key.encode()))
    assert [await store.get(k) is not None for k in "abcd"] == [False, True, True, True]
    assert len(store) == 3
    await store.put("b", _answer(b"b2"))  # stored again: the newest, not a fourth entry
    await store.put("e", _answer())
    assert [await store.get(k) is not None for k in "bcde"] == [True, False, True, True]
    assert repr(store) == "<ResponseCache entries=3 bytes=5 ttl=60 max_entries=3>"


async def test_expired_entries_leave_before_live_ones_are_evicted() -> None:
    clock = Clock()
    store = ResponseCache(CacheSettings(ttl=10, max_entries=3), clock=clock)
    await store.put("old", _answer())
    clock.now += 5
    await store.put("mid", _answer())
    clock.now += 6  # "old" expired, "mid" has 4 s left
    await store.put("new", _answer())
    assert len(store) == 2
    assert await store.get("mid") is not None


async def test_bytes_bound_and_oversized_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MAX_TOTAL_BYTES", 10)
    monkeypatch.setattr(cache, "MAX_ENTRY_BYTES", 6)
    store = ResponseCache(CacheSettings(ttl=60), clock=Clock())
    assert await store.put("a", _answer(b"12345"))
    assert await store.put("b", _answer(b"12345"))
    assert await store.put("c", _answer(b"1"))  # 11 bytes would pass the bound: "a" goes
    assert [await store.get(k) is not None for k in "abc"] == [False, True, True]
    assert not await store.put("d", _answer(b"1234567"))
    assert await store.get("d") is None and len(store) == 2
