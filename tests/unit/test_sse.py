"""Unit tests for adapters/sse.py: every stream is fed whole, byte by byte and in random splits.

A literal transcription of the WHATWG algorithm (`_reference`) is the oracle for both the
hand-written cases and a seeded fuzz corpus.
"""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest

from adapters.sse import (
    DONE,
    MAX_EVENT_BYTES,
    EventTooLarge,
    SSEDecoder,
    SSEError,
    SSEEvent,
    encode_event,
    event_data,
    events_end,
    first_event_end,
)

# (event, data, id, retry): the fields of one SSEEvent, comparable with ==.
Fields = tuple[str | None, str, str | None, int | None]

_SEED = 20241128


def _reference(stream: bytes) -> list[Fields]:
    """The standard's steps, one by one, on the whole stream decoded at once."""
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = re.split("\r\n|\r|\n", text)
    lines.pop()  # not ended by a terminator: never processed
    out: list[Fields] = []
    data, event, retry = "", "", None
    last_id: str | None = None
    for line in lines:
        if line == "":
            if data:
                out.append((event or None, data.removesuffix("\n"), last_id, retry))
            data, event, retry = "", "", None
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data += value + "\n"
        elif name == "event":
            event = value
        elif name == "id" and "\x00" not in value:
            last_id = value
        elif name == "retry" and value.isascii() and value.isdigit() and len(value) <= 16:
            retry = int(value)
    return out


def _fields(events: list[SSEEvent]) -> list[Fields]:
    return [(e.event, e.data, e.id, e.retry) for e in events]


def _random_chunks(stream: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(0, 12))))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def _by_event(stream: bytes) -> list[bytes]:
    """One chunk per `\\n\\n`-ended piece, as providers flush them (the decoder's fast path)."""
    return [piece for piece in re.split(b"(?<=\n\n)", stream) if piece]


def _splittings(stream: bytes) -> list[list[bytes]]:
    rng = random.Random(_SEED)
    whole = [stream]
    by_byte = [stream[i : i + 1] for i in range(len(stream))]
    randomly = [_random_chunks(stream, rng) for _ in range(20)]
    return [whole, by_byte, _by_event(stream), *randomly]


def _decode(chunks: list[bytes], **kwargs: int) -> list[SSEEvent]:
    decoder = SSEDecoder(**kwargs)
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    assert decoder.close() == []
    return events


_WARM = b"data: 0\n\n"


def _decode_warm(stream: bytes, **kwargs: int) -> list[SSEEvent]:
    """Decode after a first event, one chunk per event: the state where the fast path runs."""
    first, *events = _decode([_WARM, *_by_event(stream)], **kwargs)
    assert first == SSEEvent("0")
    return events


def _reference_warm(stream: bytes) -> list[Fields]:
    return _reference(_WARM + stream)[1:]


def _decode_everywhere(stream: bytes) -> list[SSEEvent]:
    """Decode `stream` under every splitting; all must agree, with each other and the oracle."""
    results = [_decode(chunks) for chunks in _splittings(stream)]
    assert _fields(_decode_warm(stream)) == _reference_warm(stream)
    for result in results[1:]:
        assert result == results[0]
    assert _fields(results[0]) == _reference(stream)
    data_only: list[bytes] = []
    decoder = SSEDecoder()
    for chunk in _splittings(stream)[1]:
        data_only += decoder.feed_data(chunk)
    assert [d.decode("utf-8", "replace") for d in data_only] == [e.data for e in results[0]]
    return results[0]


# --- framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stream",
    [
        b"data: a\n\ndata: b\n\n",
        b"data: a\r\n\r\ndata: b\r\n\r\n",
        b"data: a\r\rdata: b\r\r",
        b"data: a\r\n\ndata: b\r\r\ndata: c\n\r\n",
    ],
    ids=["LF", "CRLF", "CR", "mixed"],
)
def test_line_endings_all_frame_the_same_events(stream: bytes) -> None:
    events = _decode_everywhere(stream)
    assert [e.data for e in events][:2] == ["a", "b"]


def test_cr_at_chunk_end_then_lf_is_one_line_end() -> None:
    # A CRLF cut between two chunks must not count as CR and LF: that would be a blank line and
    # dispatch "a" alone.
    chunks = [b"data: a\r", b"\ndata: b\r", b"", b"\n\r", b"\n"]
    assert _fields(_decode(chunks)) == [(None, "a\nb", None, None)]


def test_cr_inside_a_one_line_chunk_ends_the_line() -> None:
    # After a first event, "data: a\rb\n\n" looks like the one-line fast path but holds two
    # lines ("data: a" and the unknown field "b") and a blank one.
    decoder = SSEDecoder()
    decoder.feed(b"data: 0\n\n")
    assert decoder.feed(b"data: a\rb\n\n") == [SSEEvent("a")]
    assert decoder.feed(b"data: c\r\n\n") == [SSEEvent("c")]


def test_lone_cr_at_chunk_end_then_other_byte() -> None:
    assert _fields(_decode([b"data: a\r", b"\r"])) == [(None, "a", None, None)]
    assert _fields(_decode([b"data: a\r", b"data: b\n\n"])) == [(None, "a\nb", None, None)]


def test_multi_byte_utf8_split_mid_character() -> None:
    stream = "data: 你好, 世界 🎉👩‍💻\nevent: ドーナツ\n\n".encode()
    for cut in range(1, len(stream)):
        events = _decode([stream[:cut], stream[cut:]])
        assert _fields(events) == [("ドーナツ", "你好, 世界 🎉👩‍💻", None, None)]
    _decode_everywhere(stream)


def test_invalid_utf8_becomes_replacement_char_and_data_bytes_stay_raw() -> None:
    stream = b"data: a\xffb\n\n"
    assert [e.data for e in _decode_everywhere(stream)] == ["a\ufffdb"]
    assert SSEDecoder().feed_data(stream) == [b"a\xffb"]


def test_multiple_data_lines_join_with_lf() -> None:
    events = _decode_everywhere(b"data: one\ndata:two\ndata:  three\ndata\ndata:\n\n")
    assert [e.data for e in events] == ["one\ntwo\n three\n\n"]


def test_comments_and_unknown_fields_are_ignored() -> None:
    stream = b": OPENROUTER PROCESSING\n\n:\ndata: x\n: mid-event\nfoo: bar\nDATA: no\n\n"
    assert _fields(_decode_everywhere(stream)) == [(None, "x", None, None)]


def test_blank_lines_without_data_dispatch_nothing_and_reset_the_type() -> None:
    stream = b"\n\n\nevent: lost\n\ndata: x\n\nevent: ping\ndata:\n\n"
    assert _fields(_decode_everywhere(stream)) == [
        (None, "x", None, None),
        ("ping", "", None, None),
    ]


def test_empty_event_field_means_unset() -> None:
    assert [e.event for e in _decode_everywhere(b"event:\ndata: x\n\n")] == [None]


@pytest.mark.parametrize(
    ("line", "retry"),
    [
        (b"retry: 3000", 3000),
        (b"retry:0", 0),
        (b"retry: 30x", None),
        (b"retry: -1", None),
        (b"retry: 1.5", None),
        (b"retry:", None),
        (b"retry:  100", None),  # only one space is removed; " 100" has a non-digit
        ("retry: ١٢".encode(), None),  # Arabic-Indic digits are digits, but not ASCII ones
        (b"retry: " + b"9" * 5000, None),  # int() would refuse it; ignored like non-digits
    ],
)
def test_retry_takes_only_ascii_digits(line: bytes, retry: int | None) -> None:
    decoder = SSEDecoder()
    (event,) = decoder.feed(line + b"\ndata: x\n\n")
    assert event.retry == retry
    assert decoder.retry == retry
    assert decoder.feed(b"data: y\n\n")[0].retry is None  # per event; the stream keeps it
    assert decoder.retry == retry


def test_retry_belongs_to_its_own_event() -> None:
    stream = b"retry: 5\n\ndata: x\n\nretry: 7\ndata: y\n\n"
    assert [e.retry for e in _decode_everywhere(stream)] == [None, 7]


def test_id_persists_until_changed_and_nul_is_ignored() -> None:
    stream = (
        b"data: 1\n\n"
        b"id: a\ndata: 2\n\n"
        b"data: 3\n\n"
        b"id: b\x00c\ndata: 4\n\n"
        b"id: d\n\n"  # no data: not dispatched, but the id still applies to what follows
        b"data: 5\n\n"
        b"id\ndata: 6\n\n"
    )
    events = _decode_everywhere(stream)
    assert [(e.data, e.id) for e in events] == [
        ("1", None),
        ("2", "a"),
        ("3", "a"),
        ("4", "a"),
        ("5", "d"),
        ("6", ""),
    ]


def test_bom_is_stripped_once_at_stream_start() -> None:
    bom = b"\xef\xbb\xbf"
    assert [e.data for e in _decode_everywhere(bom + b"data: x\n\n")] == ["x"]
    # A second BOM is part of the next field name, which is then unknown.
    assert _decode_everywhere(bom + bom + b"data: x\n\n") == []
    assert [e.data for e in _decode_everywhere(b"data: x\n\n" + bom + b"data: y\n\n")] == ["x"]
    assert _fields(_decode([b"\xef", b"", b"\xbb", b"\xbfdata: x\n\n"])) == [
        (None, "x", None, None)
    ]


# --- end of stream ----------------------------------------------------------------------------


def test_event_without_blank_line_is_not_dispatched_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n\ndata: cut") == [SSEEvent("1")]
    assert decoder.pending
    assert decoder.close() == []
    assert not decoder.pending

    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]\n") == []
    assert decoder.pending
    assert decoder.close() == []


def test_clean_end_of_stream_is_not_pending() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: 1\n\n: bye\n\n")
    assert not decoder.pending


def test_feed_after_close_is_a_caller_bug() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: 1\n\n")
    decoder.close()
    with pytest.raises(RuntimeError, match="after close"):
        decoder.feed(b"data: 2\n\n")


def test_repr_shows_state() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 7\ndata: abc\ndata: de")
    assert repr(decoder) == (
        "<SSEDecoder buffered=8 event_bytes=14 last_event_id='7' closed=False>"
    )


# --- the bound --------------------------------------------------------------------------------


def test_big_event_under_the_bound_passes() -> None:
    payload = b"A" * (MAX_EVENT_BYTES - 100)
    stream = b"data: " + payload + b"\n\n"
    for chunks in ([stream], [stream[i : i + 65536] for i in range(0, len(stream), 65536)]):
        assert SSEDecoder().feed_data(b"".join(chunks)) == [payload]
        decoder = SSEDecoder()
        got = [d for chunk in chunks for d in decoder.feed_data(chunk)]
        assert got == [payload]


def test_oversized_event_raises_whole_and_split() -> None:
    line = b"data: " + b"A" * 1000 + b"\n"
    stream = line * (MAX_EVENT_BYTES // 1000 + 1) + b"\n"
    with pytest.raises(EventTooLarge):
        SSEDecoder().feed(stream)
    decoder = SSEDecoder()
    with pytest.raises(EventTooLarge):  # noqa: PT012 - the raise comes at an unknown chunk
        for i in range(0, len(stream), 4096):
            decoder.feed(stream[i : i + 4096])


def test_oversized_partial_line_raises_before_any_newline() -> None:
    decoder = SSEDecoder()
    chunk = b"A" * 65536
    with pytest.raises(EventTooLarge) as info:  # noqa: PT012 - the raise comes at an unknown chunk
        for _ in range(MAX_EVENT_BYTES // len(chunk) + 1):
            decoder.feed(chunk)
    assert isinstance(info.value, SSEError)
    assert isinstance(info.value, ValueError)
    assert info.value.limit == MAX_EVENT_BYTES


@pytest.mark.parametrize(
    ("stream", "raises"),
    [
        (b"data: " + b"x" * 58 + b"\n\n", False),  # 64 bytes: at the bound
        (b"data: " + b"x" * 59 + b"\n\n", True),  # 65 bytes: over
        (b"data: " + b"x" * 30 + b"\ndata: " + b"x" * 22 + b"\n\n", False),  # 36 + 28 = 64
        (b"data: " + b"x" * 30 + b"\ndata: " + b"x" * 23 + b"\n\n", True),  # 65
        (b"event: e\ndata: " + b"x" * 50 + b"\n\n", False),  # 8 + 56 = 64
        (b"event: e\ndata: " + b"x" * 51 + b"\n\n", True),  # 65
        (b": " + b"c" * 63 + b"\ndata: x\n\n", True),  # comments count: held until their end
        (b"data: x\n\n" * 20, False),  # the bound is per event, not per stream
        (b"data: " + b"x" * 80, True),  # never ends its line
    ],
)
def test_bound_is_the_same_whole_or_split(stream: bytes, raises: bool) -> None:
    for chunks in _splittings(stream):
        if raises:
            with pytest.raises(EventTooLarge):
                _decode(chunks, max_event_bytes=64)
        else:
            assert _decode(chunks, max_event_bytes=64) == _decode([stream])
    if raises:
        with pytest.raises(EventTooLarge):
            _decode_warm(stream, max_event_bytes=64)
    else:
        assert _decode_warm(stream, max_event_bytes=64) == _decode([stream])


def test_bound_at_the_limit_passes_and_one_over_fails() -> None:
    assert _decode([b"data: " + b"x" * 58 + b"\n\n"], max_event_bytes=64) != []
    with pytest.raises(EventTooLarge):
        _decode([b"data: " + b"x" * 59 + b"\n\n"], max_event_bytes=64)


# --- encoding ---------------------------------------------------------------------------------


def test_encode_plain_and_done() -> None:
    assert encode_event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_event("") == b"data: \n\n"
    assert DONE == b"data: [DONE]\n\n"
    assert SSEDecoder().feed(DONE) == [SSEEvent("[DONE]")]


def test_encode_splits_data_lines_and_adds_fields() -> None:
    assert encode_event("a\nb", event="delta", id="7") == (
        b"event: delta\nid: 7\ndata: a\ndata: b\n\n"
    )
    # CR and CRLF end lines on the wire too, so they become LF after a round trip.
    assert encode_event(b"a\r\nb\rc") == b"data: a\ndata: b\ndata: c\n\n"


@pytest.mark.parametrize(
    ("data", "event", "id_"),
    [
        ("hello", None, None),
        ("", None, None),
        ("\n", None, None),
        ("  leading spaces\nand\n\nblank lines\n", "message_delta", "42"),
        ('{"text": "你好 🎉"}', "content_block_delta", ""),
        (": not a comment\ndata: not a field", None, "x"),
    ],
)
def test_encode_decode_round_trip(data: str, event: str | None, id_: str | None) -> None:
    stream = encode_event(data, event=event, id=id_) + encode_event(data.encode())
    (first, second) = _decode_everywhere(stream)
    assert first == SSEEvent(data, event or None, id_, None)
    assert second.data == data


@pytest.mark.parametrize(
    ("event", "id_"), [("a\nb", None), ("a\rb", None), (None, "1\n2"), (None, "1\x002")]
)
def test_encode_refuses_field_injection(event: str | None, id_: str | None) -> None:
    with pytest.raises(ValueError, match="SSE"):
        encode_event("x", event=event, id=id_)


# --- provider streams -------------------------------------------------------------------------


def _openai_chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-AbC123",
            "object": "chat.completion.chunk",
            "created": 1732800000,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        },
        separators=(",", ":"),
    ).encode()


def test_openai_chat_completion_stream() -> None:
    usage = (
        b'{"id":"chatcmpl-AbC123","object":"chat.completion.chunk","choices":[],'
        b'"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}'
    )
    stream = b"".join(
        [
            encode_event(_openai_chunk({"role": "assistant", "content": ""})),
            encode_event(_openai_chunk({"content": "Hel"})),
            encode_event(_openai_chunk({"content": "lo ✨"})),
            encode_event(_openai_chunk({}, finish="stop")),
            encode_event(usage),
            DONE,
        ]
    )
    events = _decode_everywhere(stream)
    assert [e.event for e in events] == [None] * 6
    assert events[-1].data == "[DONE]"
    content = "".join(
        json.loads(e.data)["choices"][0]["delta"].get("content", "") for e in events[:4]
    )
    assert content == "Hello ✨"
    decoder = SSEDecoder()
    data = [d for i in range(len(stream)) for d in decoder.feed_data(stream[i : i + 1])]
    assert data[-2] == usage
    assert data[-1] == b"[DONE]"


def test_anthropic_messages_stream() -> None:
    stream = (
        b"event: message_start\n"
        b'data: {"type":"message_start","message":{"id":"msg_01","type":"message",'
        b'"role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,'
        b'"usage":{"input_tokens":25,"output_tokens":1}}}\n\n'
        b"event: content_block_start\n"
        b'data: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n'
        b"event: ping\n"
        b'data: {"type": "ping"}\n\n'
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Hello"}}\n\n'
        b"event: content_block_stop\n"
        b'data: {"type":"content_block_stop","index":0}\n\n'
        b"event: message_delta\n"
        b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":15}}\n\n'
        b"event: message_stop\n"
        b'data: {"type":"message_stop"}\n\n'
    )
    events = _decode_everywhere(stream)
    assert [e.event for e in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(json.loads(e.data)["type"] == e.event for e in events)


# --- fuzz against the oracle ------------------------------------------------------------------

_PIECES = [
    b"data",
    b"event",
    b"id",
    b"retry",
    b"dat",
    b":",
    b" ",
    b"  ",
    b"\n",
    b"\n",
    b"\r",
    b"\r\n",
    b"x",
    b"42",
    "é".encode(),
    "🎉".encode(),
    b"\xe4\xbd",  # the first two bytes of a three-byte character
    b"\xff",
    b"\x00",
    b"\xef\xbb\xbf",
    b"data: ",
    b"\n\n",
]


def test_fuzz_against_reference() -> None:
    rng = random.Random(_SEED)
    for _ in range(400):
        stream = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 40)))
        expected = _reference(stream)
        splits = [[stream], _by_event(stream), [stream[i : i + 1] for i in range(len(stream))]]
        if len(stream) > 1:
            splits.append(_random_chunks(stream, rng))
        for chunks in splits:
            assert _fields(_decode(chunks)) == expected, (stream, chunks)
        assert _fields(_decode_warm(stream)) == _reference_warm(stream), stream


@pytest.mark.parametrize(
    "chunk",
    [
        b"data:x\n\n",
        b"data:  x\n\n",
        b"data: a\rb\n\n",
        b"data: x\r\n\n",
        b"datax: y\n\n",
        b"data: x\n\n\n",
        b"data: x\ndata: y\n\n",
        b"event: e\ndata: x\n\n",
        b"event: \ndata: x\n\n",
        b"event:\ndata: x\n\n",
        b"event:e\ndata: x\n\n",
        b"event: e\n\n",
        b"event: e\ndata: x\n",
        b"event: e\rdata: x\n\n",
        b"event: e\ndata: x\r\n",
        b"event: e\nevent: f\ndata: x\n\n",
        b"event: e\ndata:x\n\n",
        "event: ドーナツ\ndata: 🎉\n\n".encode(),
        b": c\n\n",
        b"\n\n",
        b"data: \n\n",
        b"data\n\n",
        b"data: x\n\ndata: y\n\n",
        b"data: x\n\ndata: y",
        b"data: \xef\xbb\xbfx\n\n",
    ],
)
def test_one_event_chunks_after_a_first_event(chunk: bytes) -> None:
    decoder = SSEDecoder()
    decoder.feed(_WARM)
    assert _fields(decoder.feed(chunk)) == _reference_warm(chunk)


# --- raw framing for the same-dialect pipe, checked against the decoder -----------------------


def test_raw_framing_agrees_with_the_decoder() -> None:
    # The pipe forwards bytes up to events_end() and holds the rest: that prefix must complete
    # every event the decoder would dispatch, and each framed event must carry the same data.
    rng = random.Random(_SEED)
    for _ in range(400):
        stream = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 40)))
        if stream.startswith(b"\xef\xbb\xbf") or b"data\n" in stream or b"data\r" in stream:
            continue  # the raw helpers leave the BOM and bare `data` lines to the decoder
        end = events_end(stream)
        assert SSEDecoder().feed_data(stream[:end]) == SSEDecoder().feed_data(stream), stream
        framed: list[bytes] = []
        start = 0
        while start < end:
            stop = first_event_end(stream[:end], start)
            event = stream[start:stop]
            start = stop
            framed += [event_data(event)] if SSEDecoder().feed_data(event) else []
        assert framed == SSEDecoder().feed_data(stream), stream


def test_raw_framing_of_an_openai_stream() -> None:
    usage = b'{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}'
    stream = encode_event(_openai_chunk({"content": "hi"})) + encode_event(usage) + DONE
    cut = len(stream) - 3
    assert events_end(stream[:cut]) == len(stream) - len(DONE)
    start = first_event_end(stream)
    assert event_data(stream[start : first_event_end(stream, start)]) == usage
