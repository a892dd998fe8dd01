"""The fake Anthropic provider, proved with the official `anthropic` SDK and raw HTTP.

If these pass, an e2e failure against the fake is the gateway's, not the fake's.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest

from tests.fakes import anthropic_provider
from tests.fakes import anthropic_wire as wire
from tests.fakes.anthropic_provider import FakeAnthropic

pytestmark = pytest.mark.timeout(10)

KEY = "sk-ant-up-test"
MODEL = "claude-opus-4-8"  # neither deprecated nor warned about by the SDK (warnings are errors)
HELLO: list[Any] = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
RAW_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=KEY) as f:
        yield f


def sdk(base_url: str, api_key: str = KEY) -> anthropic.AsyncAnthropic:
    # The fake is plain HTTP: verify=False skips loading the CA bundle for every client.
    return anthropic.AsyncAnthropic(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,
        http_client=anthropic.DefaultAsyncHttpxClient(verify=False),
    )


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    c = sdk(fake.base_url)
    yield c
    await c.close()


async def raw_post(
    fake: FakeAnthropic,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    hdrs = RAW_HEADERS if headers is None else headers
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.base_url + path, json=body, headers=hdrs) as resp,
    ):
        return resp.status, await resp.read(), dict(resp.headers)


def sse_events(raw: bytes) -> list[tuple[str, Any]]:
    """Every SSE event of a body as `(event name, JSON data)`; each must have both lines."""
    chunks = raw.decode().split("\n\n")
    assert chunks[-1] == "", "the body must end with a blank line"
    out = []
    for chunk in chunks[:-1]:
        event_line, data_line = chunk.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: "), chunk
        out.append((event_line[len("event: ") :], json.loads(data_line[len("data: ") :])))
    return out


async def collect(stream: AsyncIterator[Any], into: list[Any]) -> None:
    """Drain an SDK stream into `into`, so a test sees what arrived before it raised."""
    async for event in stream:
        into.append(event)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 256, "messages": HELLO, **extra}


# --- text ------------------------------------------------------------------------------------


async def test_text_non_stream_is_parsed_with_deterministic_usage(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    msg = await client.messages.create(
        model=MODEL, max_tokens=256, system="be brief now", messages=HELLO
    )

    assert msg.id.startswith("msg_")
    assert (msg.type, msg.role, msg.model) == ("message", "assistant", MODEL)
    [block] = msg.content
    assert block.type == "text"
    assert block.text == "echo: hello there"
    assert (msg.stop_reason, msg.stop_sequence) == ("end_turn", None)
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (5, 3)  # "be brief now" + 2
    assert (msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (0, 0)
    [rec] = fake.requests
    # SDK 2.x: API version 2026-10-21, and the key as a Bearer token, not x-api-key.
    assert (rec.version, rec.auth, rec.beta) == ("2026-10-21", "bearer", False)
    assert rec.json["messages"] == HELLO
    assert fake.calls["/v1/messages"] == 1
    fake.assert_clean()


async def test_text_wire_body_is_exactly_the_message_shape(fake: FakeAnthropic) -> None:
    status, raw, headers = await raw_post(fake, "/v1/messages", body())

    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert headers["request-id"].startswith("req_")
    message = json.loads(raw)
    assert message == {
        "id": message["id"],
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "echo: hello there"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "stop_details": None,
        "usage": {
            "input_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 3,
            "service_tier": "standard",
        },
    }
    assert fake.requests[0].auth == "x-api-key"


async def test_stream_helper_text_and_final_message(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    async with client.messages.stream(model=MODEL, max_tokens=256, messages=HELLO) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()

    assert text == "echo: hello there"
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2, 3)
    assert fake.completed_streams == 1
    fake.assert_clean()


async def test_raw_stream_event_sequence_through_the_sdk(client: anthropic.AsyncAnthropic) -> None:
    stream = await client.messages.create(model=MODEL, max_tokens=256, messages=HELLO, stream=True)
    events = [e async for e in stream]

    kinds = [e.type for e in events]
    deltas = len(kinds) - 5
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert deltas == 3  # one per word: "echo:", " hello", " there"
    start = events[0]
    assert start.type == "message_start"
    assert start.message.content == []
    assert start.message.stop_reason is None
    assert start.message.usage.input_tokens == 2  # the real count, never a placeholder 0
    delta = events[-2]
    assert delta.type == "message_delta"
    assert (delta.delta.stop_reason, delta.usage.output_tokens) == ("end_turn", 3)


async def test_stream_wire_framing_with_ping(fake: FakeAnthropic) -> None:
    status, raw, headers = await raw_post(fake, "/v1/messages", body(stream=True))

    assert status == 200
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    events = sse_events(raw)
    assert all(name == data["type"] for name, data in events)  # SSE name == data.type
    assert [name for name, _ in events][:3] == ["message_start", "content_block_start", "ping"]
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "echo:"}
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None, "stop_details": None},
        "usage": {
            "input_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 3,
        },
    }
    assert events[-1] == ("message_stop", {"type": "message_stop"})
    assert fake.requests[0].events_sent == len(events)


async def test_max_tokens_truncates_by_words(client: anthropic.AsyncAnthropic) -> None:
    msg = await client.messages.create(
        model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "a b c d"}]
    )
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "echo: a"
    assert (msg.stop_reason, msg.usage.output_tokens) == ("max_tokens", 2)


async def test_stop_sequence_cuts_the_answer(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(
        model=MODEL,
        max_tokens=256,
        stop_sequences=["ZZ", "STOP"],
        messages=[{"role": "user", "content": "a b STOP c"}],
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "text"
    assert final.content[0].text == "echo: a b "
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "STOP")


async def test_count_tokens_uses_the_same_counting(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    counted = await client.messages.count_tokens(
        model=MODEL, system=[{"type": "text", "text": "one two"}], messages=HELLO
    )
    assert counted.input_tokens == 4
    assert fake.calls["/v1/messages/count_tokens"] == 1
    status, raw, _ = await raw_post(fake, "/v1/messages/count_tokens", body())
    assert (status, json.loads(raw)["error"]["message"]) == (
        400,
        "max_tokens: Extra inputs are not permitted",
    )


async def test_models_list_and_retrieve(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    listed = [m.id async for m in client.models.list()]
    assert listed == fake.models
    info = await client.models.retrieve(MODEL)
    assert (info.id, info.type, info.lifecycle) == (MODEL, "model", "active")
    with pytest.raises(anthropic.NotFoundError):
        await client.models.retrieve("claude-nope")
    fake.assert_clean()


# --- tools -----------------------------------------------------------------------------------


async def test_tool_use_streamed_in_fragments_is_reassembled_by_the_sdk(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    tool_input = {"city": "Paris", "unit": "celsius"}
    fake.behavior.tool_use = {"name": "get_weather", "input": tool_input}
    async with client.messages.stream(
        model=MODEL, max_tokens=256, messages=HELLO, tools=[WEATHER_TOOL]
    ) as stream:
        fragments = [
            e.delta.partial_json
            async for e in stream
            if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        ]
        final = await stream.get_final_message()

    [block] = final.content
    assert block.type == "tool_use"
    assert block.id.startswith("toolu_")
    assert (block.name, block.input) == ("get_weather", tool_input)
    assert final.stop_reason == "tool_use"
    assert fragments[0] == ""  # as the reference's example opens
    assert len(fragments) >= 4
    assert json.loads("".join(fragments)) == tool_input
    fake.assert_clean()


async def test_parallel_tools_and_tool_result_round_trip(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.behavior.parallel_tools = [{"input": {"city": "Oslo"}}, {"input": {"city": "Rome"}}]
    fake.behavior.content = "Checking both."
    first = await client.messages.create(
        model=MODEL, max_tokens=256, messages=HELLO, tools=[WEATHER_TOOL]
    )
    assert [b.type for b in first.content] == ["text", "tool_use", "tool_use"]
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_weather", {"city": "Rome"}),
    ]
    assert len({u.id for u in uses}) == 2

    fake.behavior = anthropic_provider.Behavior()
    results: Any = [
        {"type": "tool_result", "tool_use_id": uses[0].id, "content": "5 C"},
        {"type": "tool_result", "tool_use_id": uses[1].id, "content": "20 C", "is_error": False},
    ]
    history: Any = [*HELLO, first.to_param(), {"role": "user", "content": results}]
    second = await client.messages.create(
        model=MODEL, max_tokens=256, messages=history, tools=[WEATHER_TOOL]
    )
    assert second.content[0].type == "text"
    assert second.content[0].text == "echo: 5 C 20 C"  # tool results echoed when no text
    fake.assert_clean()


async def test_tool_result_without_matching_tool_use_is_400(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    orphan: Any = [
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}],
        }
    ]
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.messages.create(model=MODEL, max_tokens=256, messages=orphan)
    assert err.value.type == "invalid_request_error"
    assert err.value.api_message == (
        "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_x. "
        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
    )
    assert err.value.request_id is not None
    [violation] = fake.invalid
    assert violation.kind == "invalid_body"


async def test_tool_use_left_unanswered_is_400(fake: FakeAnthropic) -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    history = [*HELLO, {"role": "assistant", "content": [use]}, {"role": "user", "content": "and?"}]
    status, raw, _ = await raw_post(fake, "/v1/messages", body(messages=history))
    assert status == 400
    assert json.loads(raw)["error"]["message"].startswith(
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1."
    )


@pytest.mark.parametrize(
    ("choice", "calls"),
    [({"type": "any"}, ["get_weather"]), ({"type": "none"}, []), ({"type": "auto"}, [])],
)
async def test_tool_choice_forces_or_forbids_a_call(
    client: anthropic.AsyncAnthropic, choice: Any, calls: list[str]
) -> None:
    msg = await client.messages.create(
        model=MODEL, max_tokens=256, messages=HELLO, tools=[WEATHER_TOOL], tool_choice=choice
    )
    assert [b.name for b in msg.content if b.type == "tool_use"] == calls


# --- thinking --------------------------------------------------------------------------------


async def test_thinking_block_with_signature_round_trips(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.behavior.thinking = "the user greets me"
    fake.behavior.tool_use = {"input": {"city": "Oslo"}}
    async with client.messages.stream(
        model=MODEL, max_tokens=2048, thinking=THINKING, messages=HELLO, tools=[WEATHER_TOOL]
    ) as stream:
        kinds = [e.delta.type async for e in stream if e.type == "content_block_delta"]
        final = await stream.get_final_message()

    thinking, use = final.content
    assert thinking.type == "thinking"
    assert thinking.thinking == "the user greets me"
    assert thinking.signature == wire.thinking_signature("the user greets me")
    assert use.type == "tool_use"
    assert kinds[-1] == "input_json_delta"
    assert "signature_delta" in kinds
    assert kinds.index("signature_delta") == kinds.count("thinking_delta")  # right after thinking
    assert final.usage.output_tokens == 4 + 3  # thinking words + "get_weather {...}"

    fake.behavior = anthropic_provider.Behavior()
    result: Any = {"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}
    replayed = {
        "role": "assistant",
        "content": [b.model_dump(exclude_none=True) for b in final.content],
    }
    history: Any = [*HELLO, replayed, {"role": "user", "content": [result]}]
    again = await client.messages.create(
        model=MODEL, max_tokens=2048, thinking=THINKING, messages=history, tools=[WEATHER_TOOL]
    )
    assert again.content[0].type == "text"
    fake.assert_clean()

    # A gateway that rewrites the block (or invents a signature) is refused, as the API does ...
    history[1]["content"][0] = {**history[1]["content"][0], "signature": "Zm9yZ2Vk"}
    with pytest.raises(anthropic.BadRequestError, match="Invalid `signature` in `thinking` block"):
        await client.messages.create(
            model=MODEL, max_tokens=2048, thinking=THINKING, messages=history, tools=[WEATHER_TOOL]
        )
    # ... and so is one that drops it while thinking is on in a tool loop.
    history[1]["content"] = history[1]["content"][1:]
    with pytest.raises(anthropic.BadRequestError, match="must start with a thinking block"):
        await client.messages.create(
            model=MODEL, max_tokens=2048, thinking=THINKING, messages=history, tools=[WEATHER_TOOL]
        )


async def test_thinking_only_when_the_request_enables_it(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.behavior.thinking = "hidden"
    msg = await client.messages.create(model=MODEL, max_tokens=256, messages=HELLO)
    assert [b.type for b in msg.content] == ["text"]
    omitted = await client.messages.create(
        model=MODEL,
        max_tokens=256,
        messages=HELLO,
        thinking={"type": "adaptive", "display": "omitted"},
    )
    assert omitted.content[0].type == "thinking"
    assert omitted.content[0].thinking == ""
    assert omitted.content[0].signature == wire.thinking_signature("")


async def test_thinking_budget_rules(fake: FakeAnthropic) -> None:
    status, raw, _ = await raw_post(fake, "/v1/messages", body(max_tokens=1024, thinking=THINKING))
    assert status == 400
    assert json.loads(raw)["error"]["message"].startswith(
        "`max_tokens` must be greater than `thinking.budget_tokens`."
    )
    low = {"type": "enabled", "budget_tokens": 100}
    status, raw, _ = await raw_post(fake, "/v1/messages", body(max_tokens=4096, thinking=low))
    assert json.loads(raw)["error"]["message"] == (
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    )


# --- other content ---------------------------------------------------------------------------


async def test_images_and_documents_are_recorded(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    content: Any = [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        },
        {"type": "text", "text": "what are these"},
    ]
    msg = await client.messages.create(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": content}]
    )
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "echo: what are these"
    media = fake.requests[0].media
    assert [(m["type"], m["source"], m["path"]) for m in media] == [
        ("image", "base64", "messages.0.content.0"),
        ("image", "url", "messages.0.content.1"),
        ("document", "base64", "messages.0.content.2"),
    ]
    assert media[1]["url"] == "https://example.com/cat.jpg"
    assert (media[0]["media_type"], media[0]["data_len"]) == ("image/png", 12)


async def test_refusal_cache_and_usage_switches(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.behavior.refusal = True
    fake.behavior.cache_read = 100
    msg = await client.messages.create(model=MODEL, max_tokens=256, messages=HELLO)
    assert msg.stop_reason == "refusal"
    assert msg.stop_details is not None
    assert msg.stop_details.type == "refusal"
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens) == (2, 100)

    fake.behavior = anthropic_provider.Behavior(usage={"output_tokens": 42}, content="fixed reply")
    async with client.messages.stream(model=MODEL, max_tokens=256, messages=HELLO) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "text"
    assert final.content[0].text == "fixed reply"
    assert final.usage.output_tokens == 42


async def test_beta_requests_use_the_beta_types(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    edits: Any = {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
    msg = await client.beta.messages.create(
        model=MODEL,
        max_tokens=256,
        messages=HELLO,
        context_management=edits,
        betas=["context-management-2025-06-27"],
    )
    assert msg.content[0].type == "text"
    rec = fake.requests[0]
    # The Python SDK 2.x marks beta calls with the header only; Claude Code adds `?beta=true`.
    assert (rec.beta, rec.betas) == (False, ["context-management-2025-06-27"])
    assert "betas" not in rec.json  # a header parameter, never a body field
    status, _, _ = await raw_post(fake, "/v1/messages?beta=true", body(context_management=edits))
    assert (status, fake.requests[1].beta) == (200, True)
    fake.assert_clean()

    status, raw, _ = await raw_post(fake, "/v1/messages", body(context_management=edits))
    assert (status, json.loads(raw)["error"]["message"]) == (
        400,
        "context_management: Extra inputs are not permitted",
    )


# --- refusals of the request -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"model": MODEL, "messages": HELLO}, "max_tokens: Field required"),
        (body(max_tokens="5"), "max_tokens: Input should be a valid integer"),
        (body(foo=1), "foo: Extra inputs are not permitted"),
        (
            body(messages=[{"role": "user", "content": [{"type": "text", "text": "x", "bar": 1}]}]),
            "messages.0.content.0.text.bar: Extra inputs are not permitted",
        ),
        (
            body(
                system=[
                    {"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "x": 1}}
                ]
            ),
            "system.0.cache_control.ephemeral.x: Extra inputs are not permitted",
        ),
        (
            body(
                messages=[{"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}]}]
            ),
            "messages.0.content.0.thinking.signature: Field required",
        ),
        (body(messages=[]), "messages: at least one message is required"),
        (
            body(messages=[{"role": "user", "content": ""}]),
            "messages.0: all messages must have non-empty content except for the optional final assistant message",
        ),
        (
            body(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]),
            "messages: text content blocks must be non-empty",
        ),
        (body(temperature=1.5), "temperature: Input should be less than or equal to 1"),
    ],
)
async def test_malformed_bodies_are_400_with_the_apis_words(
    fake: FakeAnthropic, payload: dict[str, Any], message: str
) -> None:
    status, raw, headers = await raw_post(fake, "/v1/messages", payload)
    assert status == 400
    error = json.loads(raw)
    assert error == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": message},
        "request_id": headers["request-id"],
    }
    assert headers["x-should-retry"] == "false"
    [violation] = fake.invalid
    assert violation.kind == "invalid_body"
    with pytest.raises(AssertionError, match="invalid_body"):
        fake.assert_clean()


async def test_sampling_parameters_depend_on_the_api_version(fake: FakeAnthropic) -> None:
    status, _, _ = await raw_post(fake, "/v1/messages", body(temperature=0.2, top_k=5))
    assert status == 200  # 2023-06-01 still has them
    latest = {**RAW_HEADERS, "anthropic-version": "2026-10-21"}
    status, raw, _ = await raw_post(fake, "/v1/messages", body(temperature=1.0), latest)
    assert (status, json.loads(raw)["error"]["message"]) == (
        400,
        "temperature: Extra inputs are not permitted",
    )


async def test_not_json_is_400(fake: FakeAnthropic) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            fake.base_url + "/v1/messages",
            data=b'{"model": ',
            headers={**RAW_HEADERS, "Content-Type": "application/json"},
        ) as resp,
    ):
        assert resp.status == 400
        message = (await resp.json())["error"]["message"]
    assert message.startswith("The request body is not valid JSON: ")
    assert fake.requests[0].json is None
    assert fake.invalid[0].kind == "invalid_body"


async def test_system_messages_inside_messages_follow_the_placement_rules(
    fake: FakeAnthropic,
) -> None:
    hint = {"role": "system", "content": "answer in French"}
    status, _, _ = await raw_post(fake, "/v1/messages", body(messages=[*HELLO, hint]))
    assert status == 200
    status, raw, _ = await raw_post(fake, "/v1/messages", body(messages=[hint, *HELLO]))
    assert status == 400
    assert json.loads(raw)["error"]["message"].startswith("messages.0: a `system` message")


async def test_auth_and_version_headers(fake: FakeAnthropic) -> None:
    cases = [
        ({"anthropic-version": "2023-06-01"}, 401, "x-api-key header is required"),
        ({"x-api-key": "sk-wrong", "anthropic-version": "2023-06-01"}, 401, "invalid x-api-key"),
        ({"x-api-key": KEY}, 400, "anthropic-version: header is required"),
    ]
    for headers, status, message in cases:
        got, raw, _ = await raw_post(fake, "/v1/messages", body(), headers)
        error = json.loads(raw)
        assert (got, error["error"]["message"]) == (status, message)
        assert error["request_id"].startswith("req_")
    assert len(fake.unauthorized) == 2
    assert [v.kind for v in fake.invalid] == ["version"]
    # x-api-key wins over Authorization when both are sent, as the API does.
    both = {**RAW_HEADERS, "Authorization": "Bearer whatever"}
    assert (await raw_post(fake, "/v1/messages", body(), both))[0] == 200


async def test_wrong_key_via_sdk_is_authentication_error(fake: FakeAnthropic) -> None:
    c = sdk(fake.base_url, "sk-ant-gateway-own-key")
    try:
        with pytest.raises(anthropic.AuthenticationError) as err:
            await c.messages.create(model=MODEL, max_tokens=256, messages=HELLO)
    finally:
        await c.close()
    assert err.value.status_code == 401
    assert (err.value.type, err.value.api_message) == (
        "authentication_error",
        "Invalid bearer token",
    )
    assert len(fake.unauthorized) == 1


async def test_forbidden_headers_values_and_unknown_routes_are_recorded() -> None:
    async with FakeAnthropic(api_key=KEY, forbidden_values=["sk-gw-secret"]) as f:
        headers = {**RAW_HEADERS, "Keep-Alive": "timeout=5", "X-Caller": "sk-gw-secret"}
        status, _, _ = await raw_post(f, "/v1/messages", body(), headers)
        assert status == 200  # recorded, not refused: the e2e test fails on assert_clean()
        assert sorted(v.detail for v in f.forbidden) == [
            "Keep-Alive: timeout=5",
            "X-Caller carries 'sk-gw-secret'",
        ]
        status, raw, _ = await raw_post(f, "/messages", body())  # a base URL with /v1 lost
        assert (status, json.loads(raw)["error"]["type"]) == (404, "not_found_error")
        assert f.invalid[0].kind == "unknown_route"


async def test_lenient_options() -> None:
    async with FakeAnthropic(
        api_key=KEY, forbid_extra_fields=False, accept_bearer=False, verify_signatures=False
    ) as f:
        thought = {"type": "thinking", "thinking": "t", "signature": "from-elsewhere"}
        history = [*HELLO, {"role": "assistant", "content": [thought]}]
        status, _, _ = await raw_post(f, "/v1/messages", body(foo=1, messages=history))
        assert status == 200  # unknown field ignored, foreign signature let through
        bearer = {"Authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
        status, raw, _ = await raw_post(f, "/v1/messages", body(), bearer)
        assert (status, json.loads(raw)["error"]["message"]) == (
            401,
            "x-api-key header is required",
        )


async def test_oversized_body_is_413_request_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anthropic_provider, "MAX_BODY_BYTES", 1024)
    async with FakeAnthropic(api_key=KEY) as f:
        status, raw, _ = await raw_post(f, "/v1/messages", body(system="x " * 1024))
    assert (status, json.loads(raw)["error"]["type"]) == (413, "request_too_large")


# --- switches: statuses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exc", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.ContentTooLargeError, "request_too_large"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_status_switch_maps_to_the_sdks_exceptions(
    fake: FakeAnthropic,
    client: anthropic.AsyncAnthropic,
    status: int,
    exc: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    fake.behavior.status = status
    with pytest.raises(exc) as err:
        await client.messages.create(model=MODEL, max_tokens=256, messages=HELLO)
    assert (err.value.status_code, err.value.type) == (status, error_type)
    assert err.value.request_id == err.value.response.headers["request-id"]
    fake.assert_clean()  # a forced status is not the caller's fault


async def test_rate_limit_with_retry_after_for_the_next_request_only(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.behavior.status, fake.behavior.times, fake.behavior.retry_after = 429, 1, 7
    with pytest.raises(anthropic.RateLimitError) as err:
        async with client.messages.stream(model=MODEL, max_tokens=256, messages=HELLO) as s:
            await s.get_final_message()
    headers = err.value.response.headers
    assert headers["retry-after"] == "7"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert (headers["x-should-retry"], err.value.type) == ("true", "rate_limit_error")

    msg = await client.messages.create(model=MODEL, max_tokens=256, messages=HELLO)
    assert msg.content[0].type == "text"


async def test_status_switch_with_raw_body_and_headers(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.behavior.status = 503
    fake.behavior.body = b"<html>upstream down</html>"
    fake.behavior.headers = {"x-extra": "1"}
    with pytest.raises(anthropic.ServiceUnavailableError) as err:
        await client.messages.count_tokens(model=MODEL, messages=HELLO)
    assert err.value.response.text == "<html>upstream down</html>"
    assert err.value.response.headers["x-extra"] == "1"
    fake.reset()
    assert (await client.messages.count_tokens(model=MODEL, messages=HELLO)).input_tokens == 2
    assert fake.calls["/v1/messages/count_tokens"] == 1  # reset() forgot the first


async def test_first_byte_delay(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.behavior.first_byte_delay = 0.15
    started = time.monotonic()
    await client.models.retrieve(MODEL)
    assert time.monotonic() - started >= 0.15


# --- switches: broken streams ----------------------------------------------------------------


@pytest.mark.parametrize("cut_after", [0, 3])
async def test_cut_after_makes_the_sdk_raise(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic, cut_after: int
) -> None:
    fake.behavior.cut_after = cut_after
    stream = await client.messages.create(model=MODEL, max_tokens=256, messages=HELLO, stream=True)
    got: list[Any] = []
    # The SDK does not wrap a transport error met while reading a stream's body.
    with pytest.raises(httpx2.RemoteProtocolError):
        await collect(stream, got)
    assert len(got) == max(cut_after - 1, 0)  # the SDK hides the ping
    rec = fake.requests[0]
    assert (rec.events_sent, rec.completed) == (cut_after, False)
    assert fake.disconnects == 0  # the fake's own cut is not a client disconnect


async def test_cut_after_on_non_stream_truncates_body(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.behavior.cut_after = 0
    with pytest.raises(anthropic.APIConnectionError):
        await client.messages.create(model=MODEL, max_tokens=256, messages=HELLO)


async def test_error_after_sends_anthropics_stream_error(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.behavior.error_after = 3
    with pytest.raises(anthropic.APIStatusError) as err:
        async with client.messages.stream(model=MODEL, max_tokens=256, messages=HELLO) as s:
            await s.get_final_message()
    # Raised from an HTTP 200 stream, so only `type` tells it is an overload.
    assert (err.value.status_code, err.value.type) == (200, "overloaded_error")
    _, raw, _ = await raw_post(fake, "/v1/messages", body(stream=True))
    events = sse_events(raw)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    assert len(events) == 4
    assert fake.completed_streams == 2


# --- disconnects -----------------------------------------------------------------------------


async def test_client_closing_mid_stream_counts_one_disconnect_promptly(
    fake: FakeAnthropic,
) -> None:
    fake.behavior.chunk_delay = 0.5  # the fake sleeps between events when the client leaves
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            fake.base_url + "/v1/messages", json=body(stream=True), headers=RAW_HEADERS
        )
        assert (await resp.content.readline()).startswith(b"event: message_start")
        await fake.wait_for(lambda f: f.active_streams == 1, 1.0)
        resp.close()  # drops the connection, as a gateway cancelling its upstream read must
        closed_at = time.monotonic()

    assert await fake.wait_disconnect(1.0) == 1
    rec = fake.requests[0]
    assert rec.disconnected_at is not None
    assert rec.disconnected_at - closed_at < 0.2  # seen at once, not at the next write
    assert (rec.completed, fake.active_streams, fake.completed_streams) == (False, 0, 0)


async def test_finished_stream_is_not_a_disconnect(fake: FakeAnthropic) -> None:
    status, raw, _ = await raw_post(fake, "/v1/messages", body(stream=True))
    assert status == 200
    assert raw.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    await fake.wait_for(lambda f: f.completed_streams == 1, 1.0)
    with pytest.raises(TimeoutError):
        await fake.wait_disconnect(0.05)


# --- pure helpers ----------------------------------------------------------------------------


def test_truncate_prefers_the_earliest_stop_sequence() -> None:
    assert wire.truncate("a X b Y c", {"stop_sequences": ["Y", "X"]}) == (
        "a ",
        "stop_sequence",
        "X",
    )
    assert wire.truncate("a b c", {"max_tokens": 2}) == ("a b", "max_tokens", None)
    assert wire.truncate("a b", {"max_tokens": 2}) == ("a b", "end_turn", None)


def test_input_tokens_counts_system_text_and_tool_results() -> None:
    history = {
        "system": "s1 s2",
        "messages": [
            {"role": "user", "content": "u1"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r1 r2"}],
            },
        ],
    }
    assert wire.input_tokens(history) == 5
    assert wire.last_user_text(history) == "r1 r2"
