"""The usage tap on the same-dialect SSE pipe: bytes pass untouched, the injected usage chunk
is cut, partial events are held back, and usage is captured however the chunks are split."""

from __future__ import annotations

import random

import pytest

from adapters.sse import MAX_EVENT_BYTES, EventTooLarge
from proxy.config import GatewayKey, ModelRoute
from proxy.dispatch import Exchange
from proxy.stream import UsageTap

CHUNK = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
FINAL = b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'
USAGE = (b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,'
         b'"total_tokens":9}}\n\n')
DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": OPENROUTER PROCESSING\n\n"
STREAM = KEEPALIVE + CHUNK * 3 + FINAL + USAGE + DONE


def _tap(strip: bool) -> tuple[UsageTap, Exchange]:
    ex = Exchange("rid", GatewayKey("k", ""), ModelRoute("m", ()), "m")
    ex.strip_usage = strip
    return UsageTap(ex), ex


def _run(tap: UsageTap, pieces: list[bytes]) -> bytes:
    return b"".join(tap.feed(p) for p in pieces) + tap.close()


def _splits(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), 12))
    return [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.parametrize("how", ["whole", "bytewise", "random"])
def test_injected_usage_chunk_is_cut_and_captured(how: str) -> None:
    pieces = {"whole": [STREAM], "bytewise": [STREAM[i:i + 1] for i in range(len(STREAM))],
              "random": _splits(STREAM, random.Random(3))}[how]
    tap, ex = _tap(strip=True)
    unasked = (KEEPALIVE + CHUNK * 3 + FINAL + DONE).replace(b',"usage":null', b"")
    assert _run(tap, pieces) == unasked
    assert b"usage" not in unasked
    assert ex.usage is not None
    assert (ex.usage.input_tokens, ex.usage.output_tokens) == (7, 2)


def test_callers_own_usage_chunk_passes_byte_for_byte() -> None:
    tap, ex = _tap(strip=False)
    assert _run(tap, _splits(STREAM, random.Random(5))) == STREAM
    assert ex.usage is not None and ex.usage.input_tokens + ex.usage.output_tokens == 9


def test_usage_on_a_chunk_with_choices_is_never_cut() -> None:
    # Some servers put usage on the final chunk itself; cutting it would lose the finish reason.
    final_with_usage = (b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
                        b'"usage": {"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}\n\n')
    tap, ex = _tap(strip=False)
    assert _run(tap, [CHUNK, final_with_usage, DONE]) == CHUNK + final_with_usage + DONE
    tap, ex = _tap(strip=True)
    assert _run(tap, [final_with_usage]) == final_with_usage
    assert ex.usage is not None and ex.usage.input_tokens + ex.usage.output_tokens == 2


def test_crlf_framed_stream() -> None:
    crlf = STREAM.replace(b"\n", b"\r\n")
    tap, ex = _tap(strip=True)
    out = _run(tap, [crlf[i:i + 7] for i in range(0, len(crlf), 7)])
    unasked = (KEEPALIVE + CHUNK * 3 + FINAL + DONE).replace(b',"usage":null', b"")
    assert out == unasked.replace(b"\n", b"\r\n")
    assert ex.usage is not None


def test_usage_null_as_first_key_is_removed_too() -> None:
    tap, _ = _tap(strip=True)
    assert tap.feed(b'data: {"usage":null,"choices":[]}\n\n') == b'data: {"choices":[]}\n\n'


def test_partial_event_is_held_until_whole() -> None:
    tap, _ = _tap(strip=False)
    assert tap.feed(CHUNK[:20]) == b""
    assert tap.feed(CHUNK[20:]) == CHUNK


def test_an_event_that_never_ends_is_bounded() -> None:
    tap, _ = _tap(strip=True)
    for _ in range(MAX_EVENT_BYTES // 65536):
        tap.feed(b"x" * 65536)
    with pytest.raises(EventTooLarge):
        tap.feed(b"x")
