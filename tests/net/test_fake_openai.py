"""The fake OpenAI provider, proved with the official `openai` SDK and raw HTTP.

If these pass, an e2e failure against the fake is the gateway's, not the fake's.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.fakes import openai_wire as wire
from tests.fakes.openai_provider import FakeOpenAI

pytestmark = pytest.mark.timeout(10)

KEY = "sk-up-test"
HELLO = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=KEY) as f:
        yield f


def sdk(base_url: str, api_key: str = KEY) -> openai.AsyncOpenAI:
    # The fake is plain HTTP: verify=False skips loading the CA bundle, ~0.1 s per client.
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(verify=False),
    )


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    c = sdk(fake.base_url)
    yield c
    await c.close()


async def raw_post(
    fake: FakeOpenAI, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    hdrs = {"Authorization": f"Bearer {KEY}"} if headers is None else headers
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.base_url + path, json=body, headers=hdrs) as resp,
    ):
        return resp.status, await resp.read()


async def collect(stream: AsyncIterator[Any], into: list[Any]) -> None:
    """Drain an SDK stream into `into`, so a test sees what arrived before it raised."""
    async for chunk in stream:
        into.append(chunk)


def sse_objects(raw: bytes) -> list[Any]:
    """Every `data:` event of an SSE body, JSON-decoded; '[DONE]' kept as the string."""
    events = raw.decode().split("\n\n")
    assert events[-1] == "", "the body must end with a blank line"
    out = []
    for event in events[:-1]:
        assert event.startswith("data: "), event
        assert "\n" not in event, event
        data = event[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


# --- chat ------------------------------------------------------------------------------------


async def test_chat_non_stream_is_parsed_with_deterministic_usage(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    resp = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)

    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == "gpt-4o-mini"
    choice = resp.choices[0]
    assert (choice.index, choice.finish_reason) == (0, "stop")
    assert choice.message.role == "assistant"
    assert choice.message.content == "echo: hello there"
    assert choice.message.refusal is None
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (2, 3)
    assert resp.usage.total_tokens == 5
    assert resp.system_fingerprint
    assert fake.calls["/chat/completions"] == 1
    [rec] = fake.requests
    assert rec.json["messages"] == HELLO
    assert rec.headers["Authorization"] == f"Bearer {KEY}"
    fake.assert_clean()


async def test_chat_wire_body_has_openai_fields(fake: FakeOpenAI) -> None:
    status, raw = await raw_post(fake, "/chat/completions", {"model": "m", "messages": HELLO})

    body = json.loads(raw)
    assert status == 200
    assert set(body) >= {"id", "object", "created", "model", "choices", "usage"}
    assert body["choices"][0] == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": "echo: hello there",
            "refusal": None,
            "annotations": [],
        },
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert isinstance(body["created"], int)


async def test_chat_stream_with_include_usage_ends_with_usage_chunk(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]

    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop"
    assert set(finish[:-1]) == {None}
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (2, 3)
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1
    fake.assert_clean()


async def test_chat_stream_wire_usage_null_only_when_asked(fake: FakeOpenAI) -> None:
    asked = {
        "model": "m",
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _, raw = await raw_post(fake, "/chat/completions", asked)
    events = sse_objects(raw)
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk = events[:-1]
    assert all("usage" in c and c["usage"] is None for c in chunks)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["total_tokens"] == 5

    _, raw = await raw_post(fake, "/chat/completions", {**asked, "stream_options": None})
    events = sse_objects(raw)
    assert all("usage" not in c and c["choices"] for c in events[:-1])
    assert events[-1] == "[DONE]"


async def test_chat_stream_without_include_usage_has_no_usage_chunk(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True)
    chunks = [c async for c in stream]

    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert fake.requests[0].headers["Accept"]  # recorded as sent
    assert fake.completed_streams == 1


async def test_chunks_switch_sets_number_of_content_deltas(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake.behavior.chunks = 7
    fake.behavior.content = "abc def"
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True)
    deltas = [
        c.choices[0].delta.content async for c in stream if c.choices[0].delta.content is not None
    ]

    # role chunk carries content "", then exactly 7 content deltas
    assert deltas[0] == ""
    assert len(deltas[1:]) == 7
    assert "".join(deltas) == "abc def"


async def test_max_tokens_truncates_with_finish_reason_length(client: openai.AsyncOpenAI) -> None:
    resp = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "a b c d"}], max_tokens=2
    )
    assert resp.choices[0].message.content == "echo: a"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 2


# --- tool calls ------------------------------------------------------------------------------


async def test_tool_call_streamed_in_fragments_reassembles(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    arguments = '{"city": "Paris", "unit": "celsius"}'
    fake.behavior.tool_call = {"name": "get_weather", "arguments": arguments}
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, tools=[WEATHER_TOOL], stream=True
    )
    chunks = [c async for c in stream]

    calls: dict[int, dict[str, str]] = {}
    fragments = 0
    for chunk in chunks:
        for tc in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += tc.id or ""
            if tc.function is not None:
                call["name"] += tc.function.name or ""
                call["arguments"] += tc.function.arguments or ""
                fragments += bool(tc.function.arguments)
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("call_")
    assert calls[0]["name"] == "get_weather"
    assert calls[0]["arguments"] == arguments
    assert fragments >= 3
    assert chunks[0].choices[0].delta.tool_calls[0].type == "function"  # type: ignore[index]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    fake.assert_clean()


async def test_tool_call_non_stream(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.behavior.tool_call = {"arguments": '{"city": "Oslo"}'}  # name: the first tool's
    resp = await client.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, tools=[WEATHER_TOOL]
    )
    message = resp.choices[0].message
    assert resp.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    [call] = message.tool_calls or []
    assert call.type == "function"
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Oslo"}')


async def test_tool_call_switch_needs_tools_in_request(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake.behavior.tool_call = {"name": "get_weather", "arguments": "{}"}
    resp = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert resp.choices[0].message.tool_calls is None
    assert resp.choices[0].finish_reason == "stop"


# --- legacy completions, embeddings, models --------------------------------------------------


async def test_completions_non_stream_and_stream(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    resp = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say this")
    assert resp.object == "text_completion"
    assert resp.choices[0].text == "echo: say this"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.total_tokens) == (2, 5)

    stream = await client.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="say this",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: say this"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert fake.calls["/completions"] == 2
    fake.assert_clean()


async def test_embeddings_sdk_default_base64_matches_float(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    default = await client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    floats = await client.embeddings.create(
        model="text-embedding-3-small", input=["a b", "c"], encoding_format="float"
    )

    assert fake.requests[0].json["encoding_format"] == "base64"  # what the SDK sends by default
    assert isinstance(json.loads(await _raw_embedding(fake))["data"][0]["embedding"], str)
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 8
    assert floats.data[0].embedding != floats.data[1].embedding
    assert (floats.usage.prompt_tokens, floats.usage.total_tokens) == (3, 3)
    assert floats.data[0].embedding == wire.embedding_vector("a b", 8)
    fake.assert_clean()


async def _raw_embedding(fake: FakeOpenAI) -> bytes:
    _, raw = await raw_post(
        fake, "/embeddings", {"model": "e", "input": "x", "encoding_format": "base64"}
    )
    return raw


async def test_embeddings_dimensions(client: openai.AsyncOpenAI) -> None:
    resp = await client.embeddings.create(
        model="text-embedding-3-small", input="x", dimensions=40, encoding_format="float"
    )
    assert len(resp.data[0].embedding) == 40


async def test_models_list_retrieve_and_unknown(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    listed = [m.id async for m in client.models.list()]
    assert listed == fake.models

    model = await client.models.retrieve("gpt-4o")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o", "model", "system")

    with pytest.raises(openai.NotFoundError) as err:
        await client.models.retrieve("no-such-model")
    assert err.value.code == "model_not_found"
    fake.assert_clean()  # a 404 for a model the caller asked about is not the gateway's fault


async def test_prefix_is_configurable() -> None:
    async with FakeOpenAI(prefix="/api/v1", api_key=None) as f:
        assert f.base_url.endswith("/api/v1")
        c = sdk(f.base_url, "anything")
        try:
            resp = await c.chat.completions.create(model="x", messages=HELLO)
        finally:
            await c.close()
        assert resp.choices[0].message.content == "echo: hello there"
        assert f.requests[0].path == "/api/v1/chat/completions"
        f.assert_clean()


# --- refusals and violations -----------------------------------------------------------------


async def test_missing_messages_is_400_and_recorded(fake: FakeOpenAI) -> None:
    status, raw = await raw_post(fake, "/chat/completions", {"model": "gpt-4o-mini"})

    assert status == 400
    assert json.loads(raw) == {
        "error": {
            "message": "Missing required parameter: 'messages'.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "missing_required_parameter",
        }
    }
    [violation] = fake.invalid
    assert violation.kind == "invalid_body"
    assert "messages" in violation.detail
    with pytest.raises(AssertionError, match="invalid_body"):
        fake.assert_clean()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "m", "messages": HELLO, "max_tokens": "5"}, "max_tokens"),
        ({"model": "m", "messages": HELLO, "stream": True, "stream_options": {"x": 1}}, None),
        ({"messages": HELLO}, "model"),
    ],
)
async def test_malformed_chat_bodies_are_refused(
    fake: FakeOpenAI, body: dict[str, Any], param: str | None
) -> None:
    status, raw = await raw_post(fake, "/chat/completions", body)
    assert status == 400
    assert json.loads(raw)["error"]["param"] == param
    assert len(fake.invalid) == 1


async def test_stream_options_without_stream_refused_like_openai(fake: FakeOpenAI) -> None:
    body = {"model": "m", "messages": HELLO, "stream_options": {"include_usage": True}}
    status, raw = await raw_post(fake, "/chat/completions", body)
    assert status == 400
    assert json.loads(raw)["error"] == {
        "message": "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        "type": "invalid_request_error",
        "param": "stream_options",
        "code": None,
    }
    assert len(fake.invalid) == 1


async def test_unknown_field_refused_like_openai(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: foo"):
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, extra_body={"foo": 1}
        )
    assert len(fake.invalid) == 1


async def test_not_json_is_400(fake: FakeOpenAI) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            fake.base_url + "/chat/completions",
            data=b"{nope",
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        ) as resp,
    ):
        assert resp.status == 400
        assert "could not parse the JSON body" in (await resp.json())["error"]["message"]
    assert fake.invalid
    assert fake.requests[0].json is None


async def test_wrong_key_is_401_authentication_error(fake: FakeOpenAI) -> None:
    c = sdk(fake.base_url, "sk-gateway-own-key-1234")
    try:
        with pytest.raises(openai.AuthenticationError) as err:
            await c.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    finally:
        await c.close()
    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"
    assert err.value.type == "invalid_request_error"
    assert "Incorrect API key provided: sk-gatew" in err.value.message
    assert "1234" in err.value.message
    assert "own-key" not in err.value.message
    assert len(fake.unauthorized) == 1
    with pytest.raises(AssertionError, match="unauthorized"):
        fake.assert_clean()


async def test_missing_bearer_is_401_even_when_any_key_accepted() -> None:
    async with FakeOpenAI(api_key=None) as f:
        status, raw = await raw_post(f, "/chat/completions", {"model": "m", "messages": HELLO}, {})
        assert status == 401
        error = json.loads(raw)["error"]
        assert error["message"].startswith("You didn't provide an API key.")
        assert error["code"] is None
        assert len(f.unauthorized) == 1


async def test_forbidden_headers_and_values_are_recorded() -> None:
    async with FakeOpenAI(forbidden_values=["sk-gw-secret"]) as f:
        headers = {
            "Authorization": f"Bearer {KEY}",
            "Keep-Alive": "timeout=5",
            "X-Caller": "sk-gw-secret",
        }
        status, _ = await raw_post(
            f, "/chat/completions", {"model": "m", "messages": HELLO}, headers
        )
        assert status == 200  # recorded, not refused: the e2e test fails on assert_clean()
        details = sorted(v.detail for v in f.forbidden)
        assert details == ["Keep-Alive: timeout=5", "X-Caller carries 'sk-gw-secret'"]
        with pytest.raises(AssertionError, match="forbidden_header"):
            f.assert_clean()


async def test_unknown_route_is_404_and_recorded(fake: FakeOpenAI) -> None:
    status, raw = await raw_post(fake, "/chat/complete", {"model": "m"})
    assert status == 404
    assert json.loads(raw)["error"]["message"] == "Invalid URL (POST /v1/chat/complete)"
    assert fake.invalid[0].kind == "unknown_route"


# --- switches --------------------------------------------------------------------------------


async def test_status_switch_rate_limit_with_retry_after_for_next_request_only(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake.behavior.status, fake.behavior.times, fake.behavior.retry_after = 429, 1, 7

    with pytest.raises(openai.RateLimitError) as err:
        await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True)
    assert err.value.response.headers["retry-after"] == "7"
    assert err.value.code == "rate_limit_exceeded"

    resp = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert resp.choices[0].message.content == "echo: hello there"
    fake.assert_clean()


async def test_status_switch_with_raw_body_and_headers(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake.behavior.status = 503
    fake.behavior.body = b"<html>upstream down</html>"
    fake.behavior.headers = {"x-ratelimit-remaining-requests": "0"}
    for _ in range(2):  # times=None: every request
        with pytest.raises(openai.InternalServerError) as err:
            await client.embeddings.create(model="e", input="x")
        assert err.value.response.text == "<html>upstream down</html>"
        assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"

    fake.reset()
    resp = await client.embeddings.create(model="e", input="x")
    assert len(resp.data) == 1
    assert fake.calls["/embeddings"] == 1  # reset() forgot the first two


async def test_first_byte_delay(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.behavior.first_byte_delay = 0.15
    started = time.monotonic()
    await client.models.retrieve("gpt-4o")
    assert time.monotonic() - started >= 0.15


@pytest.mark.parametrize("cut_after", [0, 2])
async def test_cut_after_makes_sdk_stream_raise(
    fake: FakeOpenAI, client: openai.AsyncOpenAI, cut_after: int
) -> None:
    fake.behavior.cut_after = cut_after
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "a b c d e"}], stream=True
    )
    got: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        await collect(stream, got)
    assert len(got) == cut_after
    rec = fake.requests[0]
    assert (rec.events_sent, rec.completed) == (cut_after, False)
    assert fake.disconnects == 0  # the fake's own cut is not a client disconnect


async def test_cut_after_on_non_stream_truncates_body(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake.behavior.cut_after = 0
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)


async def test_error_after_sends_openai_stream_error(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake.behavior.error_after = 2
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True)
    got: list[Any] = []
    with pytest.raises(openai.APIError, match="The server had an error"):
        await collect(stream, got)
    assert len(got) == 2


async def test_compress_switch_gzips_json_answers(fake: FakeOpenAI) -> None:
    fake.behavior.compress = True
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(
            fake.base_url + "/models",
            headers={"Authorization": f"Bearer {KEY}", "Accept-Encoding": "gzip"},
        ) as resp,
    ):
        assert resp.headers["Content-Encoding"] == "gzip"
        assert json.loads(gzip.decompress(await resp.read()))["object"] == "list"


async def test_usage_override(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.behavior.usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    resp = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert resp.usage is not None
    assert resp.usage.total_tokens == 120


# --- disconnects -----------------------------------------------------------------------------


async def test_client_closing_mid_stream_counts_one_disconnect_promptly(fake: FakeOpenAI) -> None:
    fake.behavior.chunk_delay = 0.5  # the fake sleeps between chunks when the client leaves
    body = {"model": "m", "messages": [{"role": "user", "content": "a b c d e f"}], "stream": True}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            fake.base_url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert (await resp.content.readline()).startswith(b"data: ")
        await fake.wait_for(lambda f: f.active_streams == 1, 1.0)
        resp.close()  # drops the connection, as a gateway cancelling its upstream read must
        closed_at = time.monotonic()

    assert await fake.wait_disconnect(1.0) == 1
    rec = fake.requests[0]
    assert rec.disconnected_at is not None
    assert rec.disconnected_at - closed_at < 0.2  # seen at once, not at the next write
    assert not rec.completed
    assert fake.active_streams == 0
    assert fake.completed_streams == 0


async def test_finished_stream_is_not_a_disconnect(fake: FakeOpenAI) -> None:
    body = {"model": "m", "messages": HELLO, "stream": True}
    status, raw = await raw_post(fake, "/chat/completions", body)
    assert status == 200
    assert raw.endswith(b"data: [DONE]\n\n")
    await fake.wait_for(lambda f: f.completed_streams == 1, 1.0)
    assert fake.disconnects == 0
    with pytest.raises(TimeoutError):
        await fake.wait_disconnect(0.05)


async def test_client_leaving_during_first_byte_delay_counts(fake: FakeOpenAI) -> None:
    fake.behavior.first_byte_delay = 5.0
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TimeoutError):
            await session.post(
                fake.base_url + "/chat/completions",
                json={"model": "m", "messages": HELLO},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=aiohttp.ClientTimeout(total=0.1),
            )
    assert await fake.wait_disconnect(1.0) == 1


# --- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "n"),
    [("echo: a b", None), ("echo: a b", 2), ("ab", 5), ("", None), ("x  y ", 3), ("abc", 1)],
)
def test_split_text_concatenates_to_the_text(text: str, n: int | None) -> None:
    pieces = wire.split_text(text, n)
    assert "".join(pieces) == text
    if n is not None:
        assert len(pieces) == n


def test_mask_key_like_openai() -> None:
    assert wire.mask_key("sk-proj-abcdefghijklMxYA") == "sk-proj-************MxYA"
    assert wire.mask_key("kk") == "kk"
