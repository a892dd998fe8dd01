"""Usage read out of same-dialect answers, and estimated when a stream ends without it.

Streams come from the fakes' own wire modules, so they are framed exactly as the fakes (and the
providers they copy) frame them, and are fed whole, byte by byte and in random pieces.

`python -m tests.unit.test_metering` measures what the taps add to a 20-chunk stream.
"""

from __future__ import annotations

import json
import random
import timeit
from functools import partial
from typing import Any

import pytest

from adapters.canonical import Usage
from adapters.openai.envelope import decode_envelope
from adapters.providers import Dialect
from proxy import metering
from proxy.calls import Call
from proxy.config import GatewayKey, ModelRoute
from proxy.counting import estimate_tokens
from proxy.dispatch import Exchange
from proxy.limits import estimate_prompt_tokens
from proxy.metering import (
    AnthropicTap,
    GeminiTap,
    StreamTap,
    body_usage,
    count_text,
    estimate_input,
    estimate_usage,
)
from proxy.stream import UsageTap, stream_tap
from tests.fakes import anthropic_wire as aw
from tests.fakes import gemini_wire as gw

PROMPT = "hello there friend"
ANSWER = "echo: hello there friend, how are you today?"


def _ex() -> Exchange:
    return Exchange("rid", GatewayKey("k", ""), ModelRoute("m", ()), "m")


def _call(dialect: Dialect, *, sse: bool = True) -> Call:
    if dialect == "gemini":
        body = json.dumps({"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}).encode()
        return Call("gemini", "chat", body, "gemini-2.5-flash", True, sse=sse)
    message = {"role": "user", "content": PROMPT}
    body = json.dumps({"model": "m", "max_tokens": 100, "stream": True,
                       "messages": [message]}).encode()
    return Call(dialect, "chat", body, "m", True, decode_envelope(body))


def _pieces(data: bytes, how: str) -> list[bytes]:
    if how == "whole":
        return [data]
    if how == "bytewise":
        return [data[i:i + 1] for i in range(len(data))]
    cuts = sorted(random.Random(len(data)).sample(range(1, len(data)), 25))
    return [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _run(tap: StreamTap, pieces: list[bytes], outcome: str = "ok") -> bytes:
    out = b"".join(tap.feed(p) for p in pieces) + tap.close()
    tap.finish(outcome, 0.25)
    return out


def _tokens(text: str) -> int:
    return count_text([text])


# --- Anthropic ------------------------------------------------------------------------------


def _anthropic_reply(**kwargs: Any) -> aw.Reply:
    fields: dict[str, Any] = {"id": "msg_1", "model": "claude", "thinking": None,
                              "text": ANSWER, "input_tokens": 3, "output_tokens": 9,
                              "cache_read": 10, "cache_creation": 5, **kwargs}
    return aw.Reply(**fields)


def _anthropic_events(reply: aw.Reply) -> list[bytes]:
    return [aw.sse(name, data) for name, data in aw.stream_events(reply)]


ANTHROPIC = b"".join(_anthropic_events(_anthropic_reply()))


@pytest.mark.parametrize("how", ["whole", "bytewise", "random"])
def test_anthropic_usage_from_message_start_and_message_delta(how: str) -> None:
    ex = _ex()
    assert _run(AnthropicTap(ex, _call("anthropic")), _pieces(ANTHROPIC, how)) == ANTHROPIC
    # input_tokens counts only what follows the cache breakpoint: cache reads and writes add.
    assert ex.usage == Usage(input_tokens=18, output_tokens=9, cached_tokens=10,
                             cache_write_tokens=5)
    assert not ex.estimated
    assert (ex.outcome, ex.body_wait) == ("ok", 0.25)


def test_anthropic_message_delta_counts_replace_message_start_counts() -> None:
    # message_delta's counts are cumulative; a relay may repeat (and update) the input ones.
    events = _anthropic_events(_anthropic_reply())
    delta = json.loads(events[-2].split(b"data: ", 1)[1])
    delta["usage"] = {"input_tokens": 4, "cache_read_input_tokens": 12, "output_tokens": 9}
    events[-2] = aw.sse("message_delta", delta)
    ex = _ex()
    _run(AnthropicTap(ex), events)
    assert ex.usage == Usage(input_tokens=21, output_tokens=9, cached_tokens=12,
                             cache_write_tokens=5)


def test_anthropic_thinking_tokens_are_reasoning() -> None:
    events = _anthropic_events(_anthropic_reply())
    delta = json.loads(events[-2].split(b"data: ", 1)[1])
    delta["usage"] = {"output_tokens": 30, "output_tokens_details": {"thinking_tokens": 21}}
    events[-2] = aw.sse("message_delta", delta)
    ex = _ex()
    _run(AnthropicTap(ex), events)
    assert ex.usage is not None
    assert (ex.usage.output_tokens, ex.usage.reasoning_tokens) == (30, 21)


def test_anthropic_stream_cut_before_message_delta_keeps_input_and_estimates_output() -> None:
    cut = ANTHROPIC[:ANTHROPIC.index(b"event: message_delta")]
    ex = _ex()
    assert _run(AnthropicTap(ex, _call("anthropic")), _pieces(cut, "random"), "cut") == cut
    # message_start's output_tokens (1) is a placeholder: the output is counted from the text.
    assert ex.usage == Usage(input_tokens=18, output_tokens=_tokens(ANSWER), cached_tokens=10,
                             cache_write_tokens=5)
    assert ex.estimated
    assert ex.outcome == "cut"


def test_anthropic_error_event_mid_stream_is_a_cut() -> None:
    events = _anthropic_events(_anthropic_reply())
    error = aw.sse("error", aw.stream_error("overloaded_error"))
    ex = _ex()
    _run(AnthropicTap(ex, _call("anthropic")), [*events[:5], error])
    assert ex.outcome == "cut"
    assert ex.estimated
    assert ex.usage is not None and ex.usage.input_tokens == 18


def test_usage_spelled_in_the_answer_text_is_not_usage() -> None:
    # In JSON text a quote is escaped, so a model writing a usage object is never read as one.
    text = 'here: {"usage":{"input_tokens":999,"output_tokens":999}} "usage": {}'
    ex = _ex()
    _run(AnthropicTap(ex), _anthropic_events(_anthropic_reply(text=text)))
    assert ex.usage == Usage(input_tokens=18, output_tokens=9, cached_tokens=10,
                             cache_write_tokens=5)


def test_anthropic_stream_without_any_usage_is_estimated_from_the_prompt() -> None:
    events = [e for e in _anthropic_events(_anthropic_reply())
              if not e.startswith((b"event: message_start", b"event: message_delta"))]
    call = _call("anthropic")
    ex = _ex()
    _run(AnthropicTap(ex, call), events)
    assert ex.usage == Usage(input_tokens=estimate_tokens(call.canonical()),
                             output_tokens=_tokens(ANSWER))
    assert ex.estimated


# --- Gemini ---------------------------------------------------------------------------------


def _gemini_reply(**kwargs: Any) -> gw.Reply:
    fields: dict[str, Any] = {"model": "gemini-2.5-flash", "response_id": "r1", "text": ANSWER,
                              "finish_reason": "STOP", "prompt_tokens": 3,
                              "thoughts_tokens": 7, "cached": 2, **kwargs}
    return gw.Reply(**fields)


def _gemini_stream(chunks: list[dict[str, Any]], framing: str) -> list[bytes]:
    if framing == "sse":
        return [gw.sse(c) for c in chunks]
    return [gw.array_element(c, first=i == 0) for i, c in enumerate(chunks)]


GEMINI_CHUNKS = gw.stream_chunks(_gemini_reply())
WORDS = len(ANSWER.split())


@pytest.mark.parametrize("how", ["whole", "bytewise", "random"])
@pytest.mark.parametrize("framing", ["sse", "array"])
def test_gemini_usage_is_the_last_running_total(framing: str, how: str) -> None:
    stream = b"".join(_gemini_stream(GEMINI_CHUNKS, framing))
    if framing == "array":
        stream += gw.array_close(empty=False)
    ex = _ex()
    assert _run(GeminiTap(ex, _call("gemini", sse=framing == "sse")),
                _pieces(stream, how)) == stream
    # Thinking is output (canonical): candidates + thoughts.
    assert ex.usage == Usage(input_tokens=3, output_tokens=WORDS + 7, cached_tokens=2,
                             reasoning_tokens=7)
    assert not ex.estimated
    assert ex.outcome == "ok"


@pytest.mark.parametrize("framing", ["sse", "array"])
def test_gemini_stream_cut_keeps_the_running_totals_as_a_floor(framing: str) -> None:
    sent = _gemini_stream(GEMINI_CHUNKS, framing)[:3]
    ex = _ex()
    _run(GeminiTap(ex, _call("gemini", sse=framing == "sse")), sent, "cut")
    said = "".join(ANSWER.split(" ", 3)[:3])  # three one-word deltas
    assert ex.estimated
    assert ex.outcome == "cut"
    assert ex.usage is not None
    assert ex.usage.input_tokens == 3 and ex.usage.cached_tokens == 2
    # Gemini counted 3 words and 7 thoughts so far, more than the text shows.
    assert ex.usage.output_tokens == max(3 + 7, _tokens(said)) == 10


@pytest.mark.parametrize("framing", ["sse", "array"])
def test_gemini_error_chunk_mid_stream_is_a_cut(framing: str) -> None:
    sent = _gemini_stream([*GEMINI_CHUNKS[:3], gw.STREAM_ERROR], framing)
    if framing == "array":
        sent.append(gw.array_close(empty=False))
    ex = _ex()
    _run(GeminiTap(ex, _call("gemini", sse=framing == "sse")), sent)
    assert ex.outcome == "cut"
    assert ex.estimated


def test_gemini_blocked_prompt_is_a_whole_answer() -> None:
    chunks = gw.stream_chunks(_gemini_reply(block_reason="SAFETY"))
    ex = _ex()
    _run(GeminiTap(ex), _gemini_stream(chunks, "sse"))
    assert not ex.estimated
    assert ex.outcome == "ok"
    assert ex.usage is not None and ex.usage.input_tokens == 3


def test_gemini_usage_key_as_answer_text_is_not_usage() -> None:
    chunks = gw.stream_chunks(_gemini_reply(text='"usageMetadata": {"promptTokenCount": 99}'))
    ex = _ex()
    _run(GeminiTap(ex), _gemini_stream(chunks, "sse"))
    assert ex.usage is not None and ex.usage.input_tokens == 3


# --- OpenAI, and what every tap shares --------------------------------------------------------

OPENAI = (b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
          + b"".join(b'data: {"id":"c","choices":[{"index":0,"delta":{"content":'
                     + json.dumps(w).encode() + b"}}]}\n\n"
                     for w in ANSWER.split(" ", 3))
          + b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
          + b"data: [DONE]\n\n")


def test_openai_stream_without_usage_is_estimated() -> None:
    # A provider that cannot be asked for the usage chunk (stream_usage_option false).
    call = _call("openai")
    ex = _ex()
    assert _run(UsageTap(ex, call), _pieces(OPENAI, "random")) == OPENAI
    assert ex.usage == Usage(input_tokens=estimate_tokens(call.canonical()),
                             output_tokens=_tokens(ANSWER))
    assert ex.estimated
    assert ex.outcome == "ok"


def test_openai_usage_chunk_is_whole() -> None:
    usage = (b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,'
             b'"total_tokens":9}}\n\n')
    stream = OPENAI.replace(b"data: [DONE]", usage + b"data: [DONE]")
    ex = _ex()
    _run(UsageTap(ex, _call("openai")), [stream])
    assert ex.usage == Usage(input_tokens=7, output_tokens=2)
    assert not ex.estimated


@pytest.mark.parametrize("dialect", ["openai", "anthropic", "gemini"])
def test_stream_tap_is_the_dialects(dialect: Dialect) -> None:
    tap = stream_tap(_ex(), _call(dialect))
    assert tap.dialect == dialect
    assert repr(tap) == f"<{type(tap).__name__} rid bytes=0 kept=0 tail=0>"


def test_client_gone_after_message_delta_keeps_the_reported_usage() -> None:
    ex = _ex()
    tap = AnthropicTap(ex)
    tap.feed(ANTHROPIC[:ANTHROPIC.index(b"event: message_stop")])
    tap.first_byte(12.5)
    tap.finish("client_closed", 1.5)
    assert (ex.outcome, ex.first_byte, ex.body_wait) == ("client_closed", 12.5, 1.5)
    assert ex.usage is not None and ex.usage.output_tokens == 9
    assert not ex.estimated


def test_a_stream_past_the_kept_bytes_still_finds_its_final_usage(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metering, "KEEP_BYTES", 1500)
    monkeypatch.setattr(metering, "_TAIL_BYTES", 600)
    events = _anthropic_events(_anthropic_reply(text=" ".join(["word"] * 200)))
    ex = _ex()
    tap = AnthropicTap(ex)
    _run(tap, events)
    assert sum(map(len, events)) > 10_000
    assert ex.usage == Usage(input_tokens=18, output_tokens=9, cached_tokens=10,
                             cache_write_tokens=5)
    assert "bytes=" in repr(tap) and "tail=0>" not in repr(tap)


def test_a_cut_stream_past_the_kept_bytes_is_estimated_in_proportion(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metering, "KEEP_BYTES", 4000)
    monkeypatch.setattr(metering, "_TAIL_BYTES", 600)
    text = " ".join(["word"] * 400)
    events = _anthropic_events(_anthropic_reply(text=text))[:-2]  # no message_delta
    ex = _ex()
    _run(AnthropicTap(ex, _call("anthropic")), events, "cut")
    assert ex.estimated and ex.usage is not None
    # ~1 token per delta event (" word"), whether decoded or extrapolated from the byte count.
    assert 0.8 * 400 <= ex.usage.output_tokens <= 1.25 * 400


# --- non-stream bodies ------------------------------------------------------------------------


def test_body_usage_of_each_dialect() -> None:
    openai = json.dumps({"choices": [], "usage": {
        "prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2}}}).encode()
    assert body_usage("openai", openai) == Usage(7, 5, cached_tokens=4, reasoning_tokens=2)
    anthropic = json.dumps(aw.message_body(_anthropic_reply())).encode()
    assert body_usage("anthropic", anthropic) == Usage(18, 9, cached_tokens=10,
                                                       cache_write_tokens=5)
    gemini = gw.dumps(gw.generate_response(_gemini_reply()))
    assert body_usage("gemini", gemini) == Usage(3, WORDS + 7, cached_tokens=2,
                                                 reasoning_tokens=7)


def test_body_usage_of_a_gemini_array_is_its_last_running_total() -> None:
    array = json.dumps(GEMINI_CHUNKS).encode()
    assert body_usage("gemini", array) == Usage(3, WORDS + 7, cached_tokens=2,
                                                reasoning_tokens=7)


@pytest.mark.parametrize("dialect", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("body", [b"{}", b"not json", b'{"usage": 3, "usageMetadata": []}',
                                  b"[]"])
def test_body_without_readable_usage_has_none(dialect: Dialect, body: bytes) -> None:
    assert body_usage(dialect, body) is None


# --- estimates --------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["openai", "anthropic", "gemini"])
def test_prompt_estimate_counts_the_canonical_request(dialect: Dialect) -> None:
    call = _call(dialect)
    assert estimate_input(call) == estimate_tokens(call.canonical())
    assert estimate_input(call) >= _tokens(PROMPT)


def test_prompt_that_cannot_be_read_is_estimated_from_its_size() -> None:
    body = b'{"model": "m", "max_tokens": 5, "messages": "not a list"}'
    call = Call("anthropic", "chat", body, "m", True, decode_envelope(body))
    assert estimate_input(call) == estimate_prompt_tokens(len(body))


def test_large_prompt_is_estimated_from_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metering, "PROMPT_COUNT_MAX", 10)
    call = _call("anthropic")
    assert estimate_input(call) == estimate_prompt_tokens(len(call.body))
    assert estimate_input(None) == 0


def test_long_text_is_counted_in_part_and_extrapolated(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "lorem ipsum dolor sit amet " * 100
    exact = count_text([text])
    monkeypatch.setattr(metering, "TEXT_COUNT_MAX", len(text) // 4)
    assert abs(count_text([text]) - exact) <= exact * 0.05
    assert count_text([]) == 0


def test_estimate_keeps_what_was_reported() -> None:
    reported = Usage(input_tokens=50, output_tokens=40, cached_tokens=20, cache_write_tokens=3,
                     reasoning_tokens=30)
    assert estimate_usage(reported, None, 12) == reported  # the running total is the floor
    assert estimate_usage(reported, None, 90) == Usage(50, 90, 20, 3, 30)
    call = _call("openai")
    assert estimate_usage(None, call, 7) == Usage(estimate_input(call), 7)
    assert estimate_usage(Usage(output_tokens=2), call, 7) == Usage(estimate_input(call), 7)


# --- `python -m tests.unit.test_metering`: what a tap adds to a 20-chunk stream ----------------


def _bench() -> None:
    anthropic = _anthropic_events(_anthropic_reply(text=" ".join(["word"] * 14)))
    gemini = _gemini_stream(gw.stream_chunks(_gemini_reply(text=" ".join(["word"] * 20))), "sse")
    assert len(anthropic) == len(gemini) == 20

    def plain(chunks: list[bytes]) -> None:
        _ex()
        tap: StreamTap | None = None
        for chunk in chunks:
            out = tap.feed(chunk) if tap is not None else chunk
            assert out

    def tapped(kind: type[StreamTap], chunks: list[bytes]) -> None:
        ex = _ex()
        tap = kind(ex)
        for i, chunk in enumerate(chunks):
            out = tap.feed(chunk)
            if out and not i:
                tap.first_byte(0.0)
        tap.finish("ok", 0.0)
        assert not ex.estimated

    for name, kind, chunks in (("anthropic", AnthropicTap, anthropic),
                               ("gemini", GeminiTap, gemini)):
        n = 20_000
        base = min(timeit.repeat(partial(plain, chunks), number=n, repeat=7)) / n * 1e6
        cost = min(timeit.repeat(partial(tapped, kind, chunks), number=n, repeat=7)) / n * 1e6
        print(f"{name}: +{cost - base:.1f} µs per 20-chunk stream "
              f"({(cost - base) / 20:.2f} µs per chunk)")


if __name__ == "__main__":
    _bench()
