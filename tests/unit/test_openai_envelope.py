"""The same-dialect fast path: only `model` and `stream_options` change; all else is byte-exact."""

from __future__ import annotations

import json

import pytest

from adapters.openai import RequestError, decode_envelope, decode_usage, parse_error

BODY = (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "say \\"model\\""}],'
        b' "tools": [{"type": "function", "function": {"name": "f", "parameters":'
        b' {"type": "object", "properties": {"model": {"type": "string"}}}}}],'
        b' "temperature": 0.25, "stream": true}')


def test_envelope_reads_only_the_top_level() -> None:
    env = decode_envelope(BODY)
    assert (env.model, env.stream, env.include_usage) == ("gpt-4o-mini", True, False)
    assert set(env.fields) == {"model", "messages", "tools", "temperature", "stream"}


def test_patch_renames_model_and_keeps_every_other_value_exact() -> None:
    env = decode_envelope(BODY)
    out = env.patch(BODY, "openai/gpt-4o-mini", want_usage=True)
    before, after = json.loads(BODY), json.loads(out)
    assert after.pop("model") == "openai/gpt-4o-mini"
    assert after.pop("stream_options") == {"include_usage": True}
    before.pop("model")
    assert after == before
    # The nested "model" keys (a property name, a quoted string) are untouched.
    assert b'"properties": {"model": {"type": "string"}}' in out
    assert b'"content": "say \\"model\\""' in out


def test_patch_returns_the_same_bytes_when_nothing_changes() -> None:
    env = decode_envelope(BODY)
    assert env.patch(BODY, "gpt-4o-mini", want_usage=False) is BODY
    plain = b'{"model":"m","messages":[]}'
    assert decode_envelope(plain).patch(plain, "m", want_usage=True) is plain  # not a stream


def test_callers_own_stream_options_are_kept() -> None:
    body = b'{"model":"m","stream":true,"stream_options":{"include_obfuscation":false}}'
    env = decode_envelope(body)
    out = json.loads(env.patch(body, "m", want_usage=True))
    assert out["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    asked = b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'
    env = decode_envelope(asked)
    assert env.include_usage
    assert env.patch(asked, "m", want_usage=True) is asked


@pytest.mark.parametrize(("body", "param", "text"), [
    (b"{not json", None, "not valid JSON"),
    (b"[1, 2]", None, "must be a JSON object"),
    (b'{"messages": []}', "model", "Missing required parameter: 'model'"),
    (b'{"model": 5}', "model", "'model' must be a string"),
    (b'{"model": ""}', "model", "must not be empty"),
    (b'{"model": "m", "stream": "yes"}', "stream", "'stream' must be a boolean"),
    (b'{"model": "m", "stream_options": {"include_usage": 1}}', "stream_options", "Invalid"),
])
def test_bad_envelopes_name_the_field(body: bytes, param: str | None, text: str) -> None:
    with pytest.raises(RequestError, match=text) as info:
        decode_envelope(body)
    assert info.value.param == param


def test_require_names_the_missing_field() -> None:
    env = decode_envelope(b'{"model": "m"}')
    with pytest.raises(RequestError) as info:
        env.require("messages")
    assert info.value.param == "messages" and info.value.missing


def test_usage_is_read_from_bodies_and_chunks() -> None:
    usage, has_choices = decode_usage(
        b'{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,'
        b'"total_tokens":8,"prompt_tokens_details":{"cached_tokens":2}}}')
    assert usage is not None and has_choices is False
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 5)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 2
    assert decode_usage(b'{"choices":[{"index":0}],"usage":null}') == (None, True)
    assert decode_usage(b"garbage") == (None, True)


@pytest.mark.parametrize(("body", "message", "code"), [
    (b'{"error":{"message":"bad","type":"invalid_request_error","param":"x","code":"c"}}',
     "bad", "c"),
    (b'{"object":"error","message":"vllm says no","type":"BadRequestError","code":400}',
     "vllm says no", "400"),
    (b'{"error":"plain text"}', "plain text", None),
    (b'{"detail":"Not Found"}', "Not Found", None),
    (b'{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"x"}}}',
     "Provider returned error", "429"),
])
def test_provider_errors_are_read_however_shaped(body: bytes, message: str,
                                                 code: str | None) -> None:
    info = parse_error(body)
    assert info is not None and (info.message, info.code) == (message, code)
    assert parse_error(b"<html>502</html>") is None
