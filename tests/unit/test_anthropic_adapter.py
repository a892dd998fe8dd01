"""The Anthropic dialect adapter: requests, answers, streams and errors, both ways.

Bodies the adapter builds for a provider are checked with the fake provider's validator (the
SDK's own `MessageCreateParams`, made eager and strict, plus the API's rules beyond the types);
answers and streams it builds for a caller are parsed by the SDK itself (`Message`,
`MessageStream`'s accumulator, the SDK's exception classes).
"""

from __future__ import annotations

import base64
import json
from typing import Any, cast

import anthropic
import httpx2
import msgspec
import pytest
from anthropic import NOT_GIVEN, Stream
from anthropic.lib.streaming import MessageStream
from anthropic.types import Message, RawMessageStreamEvent

from adapters import anthropic as ad
from adapters import canonical as c
from adapters.anthropic import wire
from adapters.anthropic.stream import REDACTED_KEY
from adapters.sse import SSEDecoder, SSEEvent
from tests.fakes import anthropic_checks as fake_checks
from tests.fakes import anthropic_wire as fake

pytestmark = pytest.mark.timeout(10)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
PDF = base64.b64encode(b"%PDF-1.4 fake").decode()
SCHEMA = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def valid(body: bytes) -> dict[str, Any]:
    """The body as the API would take it (eager, strict SDK types and the API's rules)."""
    parsed, problem = fake_checks.validate_body("messages", body, beta=False, version="2023-06-01",
                                                forbid_extra=True, signed=False)
    assert problem is None, problem.detail
    assert isinstance(parsed, dict)
    return parsed


def provider_body(req: c.Request, model: str = "claude-sonnet-4-6") -> dict[str, Any]:
    return valid(ad.from_canonical_request(req, model=model))


def request(*messages: c.Message, **kw: Any) -> c.Request:
    return c.Request(model="m", messages=list(messages), **kw)


def user(*blocks: c.Block) -> c.Message:
    return c.Message("user", list(blocks))


def assistant(*blocks: c.Block) -> c.Message:
    return c.Message("assistant", list(blocks))


# --- caller side: to_canonical_request ---------------------------------------------------------

CACHE = {"type": "ephemeral"}

CLAUDE_CODE_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {"type": "text", "text": "You are Claude Code.", "cache_control": CACHE},
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
            {"type": "text", "text": "list the files", "cache_control": CACHE},
        ]},
        {"role": "system", "content": "The user is in /repo."},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should run ls.", "signature": "c2lnLTE="},
            {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"},
            {"type": "text", "text": "Running ls.", "citations": None},
            {"type": "tool_use", "id": "toolu_01A", "name": "Bash",
             "input": {"command": "ls", "description": "list"}, "caller": {"type": "direct"}},
            {"type": "tool_use", "id": "toolu_01B", "name": "Read", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "a.txt\nb.txt",
             "cache_control": CACHE},
            {"type": "tool_result", "tool_use_id": "toolu_01B", "is_error": True,
             "content": [{"type": "text", "text": "no such file"},
                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                      "data": PNG}}]},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
            {"type": "document", "title": "spec", "context": "ignored",
             "citations": {"enabled": True},
             "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                            "data": "plain doc"}},
            {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}},
            {"type": "document", "source": {"type": "content", "content": [
                {"type": "text", "text": "part 1"}, {"type": "text", "text": "part 2"}]}},
            {"type": "search_result", "source": "https://x.test", "title": "Result",
             "content": [{"type": "text", "text": "found it"}]},
        ]},
    ],
    "tools": [
        {"name": "Bash", "description": "Run a command", "input_schema": SCHEMA,
         "cache_control": CACHE, "strict": True, "eager_input_streaming": True},
        {"type": "custom", "name": "Read", "input_schema": {"type": "object", "properties": {}},
         "defer_loading": False},
    ],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "adaptive", "display": "summarized"},
    "output_config": {"effort": "xhigh", "format": {"type": "json_schema", "schema": SCHEMA}},
    "metadata": {"user_id": "user_abc_account_def_session_ghi"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "service_tier": "auto",
    "speed": "standard",
    "cache_control": CACHE,
    "diagnostics": {"previous_message_id": "msg_0"},
    "inference_geo": "us",
    "container": None,
    "a_field_from_the_future": {"nested": [1, {"x": None}]},
}


def test_claude_code_body_keeps_what_matters() -> None:
    req = ad.to_canonical_request(dumps(CLAUDE_CODE_BODY))
    assert (req.model, req.max_tokens, req.stream, req.stream_usage) == (
        "claude-sonnet-4-6", 32000, True, True)
    # The system entry inside `messages` joins the system prompt, in order.
    assert req.system == [c.Text("You are Claude Code."), c.Text("Be brief."),
                          c.Text("The user is in /repo.")]
    assert [m.role for m in req.messages] == ["user", "assistant", "user"]
    assert req.messages[0].content == [c.Text("<system-reminder>ctx</system-reminder>"),
                                       c.Text("list the files")]
    think, redacted, text, bash, read = req.messages[1].content
    assert think == c.Thinking("I should run ls.", "c2lnLTE=", "anthropic")
    assert redacted == c.Thinking(redacted="ZW5jcnlwdGVk", source="anthropic")
    assert text == c.Text("Running ls.")
    assert isinstance(bash, c.ToolCall) and isinstance(read, c.ToolCall)
    assert (bash.id, bash.name, json.loads(bash.arguments)) == (
        "toolu_01A", "Bash", {"command": "ls", "description": "list"})
    assert (read.id, read.arguments) == ("toolu_01B", "{}")
    r1, r2, img, pdf, txt, url_doc, content_doc, search = req.messages[2].content
    assert r1 == c.ToolResult("toolu_01A", [c.Text("a.txt\nb.txt")])
    assert r2 == c.ToolResult("toolu_01B", [c.Text("no such file"),
                                            c.Image(media_type="image/png", data=PNG)], True)
    assert img == c.Image(url="https://x.test/a.png")
    assert pdf == c.Document(media_type="application/pdf", data=PDF, title="spec")
    assert txt == c.Document(media_type="text/plain", text="plain doc")
    assert url_doc == c.Document(media_type="application/pdf", url="https://x.test/a.pdf")
    assert content_doc == c.Document(media_type="text/plain", text="part 1\npart 2")
    assert search == c.Text("Result\nhttps://x.test\n\nfound it")
    assert req.tools == [c.Tool("Bash", "Run a command", SCHEMA),
                         c.Tool("Read", None, {"type": "object", "properties": {}})]
    assert req.tool_choice == c.ToolChoice("auto", parallel=False)
    assert req.reasoning == c.Reasoning(effort="high")  # xhigh has no canonical word
    assert req.response_format == c.ResponseFormat("json_schema", SCHEMA)


def test_unknown_fields_anywhere_never_fail() -> None:
    body = {
        "model": "m", "max_tokens": 5, "new_top": {"a": 1},
        "system": [{"type": "text", "text": "s", "new": [1]}],
        "messages": [{"role": "user", "new": True, "content": [
            {"type": "text", "text": "hi", "new": {"deep": [None]}},
            {"type": "image", "new": 1, "source": {"type": "base64", "media_type": "image/png",
                                                   "data": PNG, "new": "x"}},
        ]}],
        "tools": [{"name": "t", "input_schema": {"type": "object"}, "new": {}}],
        "tool_choice": {"type": "any", "new": 1},
        "thinking": {"type": "enabled", "budget_tokens": 2048, "new": 1},
    }
    req = ad.to_canonical_request(dumps(body))
    assert req.messages[0].content == [c.Text("hi"), c.Image(media_type="image/png", data=PNG)]
    assert req.tool_choice == c.ToolChoice("required")
    assert req.reasoning == c.Reasoning(budget_tokens=2048)


@pytest.mark.parametrize(("thinking", "output_config", "expected"), [
    ({"type": "enabled", "budget_tokens": 4096}, None, c.Reasoning(budget_tokens=4096)),
    ({"type": "adaptive"}, {"effort": "low"}, c.Reasoning(effort="low")),
    ({"type": "adaptive", "display": "omitted"}, None, c.Reasoning(include_thoughts=False)),
    ({"type": "between_tools"}, None, c.Reasoning()),
    ({"type": "disabled"}, {"effort": "max"}, c.Reasoning(enabled=False)),
    (None, {"effort": "medium"}, c.Reasoning(effort="medium")),
    (None, None, None),
])
def test_thinking_and_effort_map_to_reasoning(
    thinking: Any, output_config: Any, expected: c.Reasoning | None
) -> None:
    body: dict[str, Any] = {"model": "m", "max_tokens": 9000,
                            "messages": [{"role": "user", "content": "q"}]}
    if thinking is not None:
        body["thinking"] = thinking
    if output_config is not None:
        body["output_config"] = output_config
    assert ad.to_canonical_request(dumps(body)).reasoning == expected


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, c.ToolChoice("auto")),
    ({"type": "any", "disable_parallel_tool_use": True}, c.ToolChoice("required", parallel=False)),
    ({"type": "tool", "name": "Bash"}, c.ToolChoice("tool", "Bash")),
    ({"type": "none"}, c.ToolChoice("none")),
])
def test_tool_choice(choice: Any, expected: c.ToolChoice) -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "q"}],
            "tools": [{"name": "Bash", "input_schema": SCHEMA}], "tool_choice": choice}
    assert ad.to_canonical_request(dumps(body)).tool_choice == expected


def test_legacy_output_format_and_stop_sampling_fields() -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "q"}],
            "output_format": {"type": "json_schema", "schema": SCHEMA},
            "stop_sequences": ["END"], "temperature": 0.2, "top_p": 0.9, "top_k": 40}
    req = ad.to_canonical_request(dumps(body))
    assert req.response_format == c.ResponseFormat("json_schema", SCHEMA)
    assert (req.stop, req.temperature, req.top_p, req.top_k) == (["END"], 0.2, 0.9, 40)


def test_model_and_stream_come_from_the_body_and_arguments_stand_in() -> None:
    body = dumps({"max_tokens": 1, "messages": [{"role": "user", "content": "q"}]})
    req = ad.to_canonical_request(body, model="from-url", stream=True)
    assert (req.model, req.stream) == ("from-url", True)
    body = dumps({"model": "b", "stream": False, "max_tokens": 1, "messages": []})
    req = ad.to_canonical_request(body, model="from-url", stream=True)
    assert (req.model, req.stream, req.stream_usage) == ("b", False, False)


def test_server_tool_is_unsupported_naming_the_tool() -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "q"}],
            "tools": [{"name": "Bash", "input_schema": SCHEMA},
                      {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}
    with pytest.raises(c.Unsupported, match="web_search_20250305") as exc:
        ad.to_canonical_request(dumps(body))
    assert exc.value.param == "tools.1"


def test_server_tool_blocks_in_history_are_unsupported_by_name() -> None:
    history: list[Any] = [
        {"role": "user", "content": "search"},
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
             "input": {"query": "q"}}]},
    ]
    body = {"model": "m", "max_tokens": 1, "messages": history}
    with pytest.raises(c.Unsupported) as exc:
        ad.to_canonical_request(dumps(body))
    assert exc.value.param == "messages.1.content.0"
    # Its result, here the error form whose `content` is an object, fails the typed decode;
    # the diagnosis still names the block.
    history.append({"role": "assistant", "content": [
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1",
         "content": {"type": "web_search_tool_result_error", "error_code": "unavailable"}}]})
    history[1] = {"role": "assistant", "content": "ok"}
    with pytest.raises(c.Unsupported, match="web_search_tool_result") as exc:
        ad.to_canonical_request(dumps(body))
    assert exc.value.param == "messages.2.content.0"


@pytest.mark.parametrize(("block", "param"), [
    ({"type": "image", "source": {"type": "file", "file_id": "file_1"}},
     "messages.0.content.0.source"),
    ({"type": "document", "source": {"type": "file", "file_id": "file_1"}},
     "messages.0.content.0.source"),
    ({"type": "container_upload", "file_id": "file_1"}, "messages.0.content.0"),
    ({"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "tool_reference", "tool_name": "x"}]}, "messages.0.content.0.content.0"),
])
def test_what_other_providers_cannot_read_is_unsupported(block: Any, param: str) -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [block]}]}
    with pytest.raises(c.Unsupported) as exc:
        ad.to_canonical_request(dumps(body))
    assert exc.value.param == param


def test_mcp_servers_are_unsupported() -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "q"}],
            "mcp_servers": [{"type": "url", "url": "https://mcp.test", "name": "x"}]}
    with pytest.raises(c.Unsupported) as exc:
        ad.to_canonical_request(dumps(body))
    assert exc.value.param == "mcp_servers"


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"messages": "no"}',
    b'{"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}',
    b'{"messages": [{"role": "robot", "content": "hi"}]}',
    b'{"messages": [{"role": "user", "content": "q"}], "tool_choice": {"type": "sometimes"}}',
])
def test_malformed_bodies_are_translation_errors_not_crashes(body: bytes) -> None:
    with pytest.raises(c.TranslationError) as exc:
        ad.to_canonical_request(body)
    assert not isinstance(exc.value, c.Unsupported)


# --- provider side: from_canonical_request -----------------------------------------------------


def tool_loop(*, thinking: bool) -> list[c.Message]:
    first: list[c.Block] = [c.Thinking("plan", "sig-1", "anthropic")] if thinking else []
    return [
        user(c.Text("What is in the repo? Show me.")),
        assistant(*first, c.Text("Looking."), c.ToolCall("toolu_1", "Bash", '{"command": "ls"}')),
        user(c.ToolResult("toolu_1", [c.Text("a.txt")])),
    ]


def test_round_trip_canonical_anthropic_canonical() -> None:
    req = request(
        user(c.Text("Describe"), c.Image(media_type="image/png", data=PNG),
             c.Image(url="https://x.test/cat.jpg"),
             c.Document(media_type="application/pdf", data=PDF, title="paper")),
        assistant(c.Thinking("hmm", "sig-a", "anthropic"), c.Thinking(redacted="ZW5j",
                                                                      source="anthropic"),
                  c.Text("Two calls."),
                  c.ToolCall("toolu_a", "Bash", '{"command":"ls"}'),
                  c.ToolCall("toolu_b", "Read", '{"path":"a.txt"}')),
        user(c.ToolResult("toolu_a", [c.Text("a.txt")]),
             c.ToolResult("toolu_b", [c.Text("denied")], is_error=True),
             c.Text("Go on.")),
        system=[c.Text("sys one"), c.Text("sys two")],
        max_tokens=20000, stop=["STOP"], stream=True,
        tools=[c.Tool("Bash", "Run", SCHEMA), c.Tool("Read", None, {"type": "object"})],
        tool_choice=c.ToolChoice("auto"),
        reasoning=c.Reasoning(budget_tokens=8000),
    )
    body = ad.from_canonical_request(req, model="claude-sonnet-4-6")
    sent = valid(body)
    assert sent["model"] == "claude-sonnet-4-6"
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8000}
    assert sent["tool_choice"] == {"type": "auto"}
    assert sent["messages"][1]["content"][3] == {
        "type": "tool_use", "id": "toolu_a", "name": "Bash", "input": {"command": "ls"}}
    back = ad.to_canonical_request(body)
    assert back.messages == req.messages
    assert (back.system, back.max_tokens, back.stop, back.stream) == (
        req.system, 20000, ["STOP"], True)
    assert back.tools == req.tools
    assert back.reasoning == c.Reasoning(budget_tokens=8000)


def test_defaults_and_absent_options_stay_absent() -> None:
    sent = provider_body(request(user(c.Text("hi"))))
    assert sent == {"model": "claude-sonnet-4-6", "max_tokens": ad.request.DEFAULT_MAX_TOKENS,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert ad.request_path(model="claude-x", stream=True) == b"/v1/messages"


def test_sampling_is_clamped_and_top_p_yields_to_temperature() -> None:
    sent = provider_body(request(user(c.Text("q")), temperature=1.6, top_p=0.5, top_k=20))
    assert (sent["temperature"], sent.get("top_p"), sent["top_k"]) == (1.0, None, 20)
    sent = provider_body(request(user(c.Text("q")), top_p=0.5))
    assert sent["top_p"] == 0.5 and "temperature" not in sent


def test_thinking_drops_temperature_and_top_k_and_raises_top_p() -> None:
    sent = provider_body(request(user(c.Text("q")), temperature=0.3, top_p=0.5, top_k=5,
                                 reasoning=c.Reasoning(effort="medium")))
    assert sent["thinking"] == {"type": "adaptive"}
    assert sent["output_config"] == {"effort": "medium"}
    assert "temperature" not in sent and "top_k" not in sent and sent["top_p"] == 0.95
    assert sent["max_tokens"] == 16384


@pytest.mark.parametrize(("budget", "max_tokens", "sent_budget", "sent_max"), [
    (500, None, 1024, 1024 + 4096),  # raised to the API's minimum
    (8000, 4000, 8000, 12000),  # max_tokens must exceed the budget: the limit is the answer's
    (2048, 10000, 2048, 10000),
])
def test_thinking_budget_rules(budget: int, max_tokens: int | None, sent_budget: int,
                               sent_max: int) -> None:
    sent = provider_body(request(user(c.Text("q")), max_tokens=max_tokens,
                                 reasoning=c.Reasoning(budget_tokens=budget)))
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": sent_budget}
    assert sent["max_tokens"] == sent_max


@pytest.mark.parametrize(("model", "reasoning", "thinking", "effort"), [
    # 4.7 and later: adaptive only; a budget becomes an effort.
    ("claude-opus-4-8", c.Reasoning(budget_tokens=30000), {"type": "adaptive"}, "high"),
    ("claude-sonnet-5", c.Reasoning(budget_tokens=1500), {"type": "adaptive"}, "low"),
    ("claude-opus-4-7", c.Reasoning(effort="medium"), {"type": "adaptive"}, "medium"),
    # Before 4.6: budgets only; an effort becomes a budget.
    ("claude-haiku-4-5-20251001", c.Reasoning(effort="high"),
     {"type": "enabled", "budget_tokens": 16384}, None),
    ("claude-3-7-sonnet-20250219", c.Reasoning(), {"type": "enabled", "budget_tokens": 4096},
     None),
    # 4.6, or a name without a version: the caller's form.
    ("claude-opus-4-6", c.Reasoning(budget_tokens=3000),
     {"type": "enabled", "budget_tokens": 3000}, None),
    ("my-claude", c.Reasoning(effort="low"), {"type": "adaptive"}, "low"),
])
def test_thinking_form_follows_the_model_generation(
    model: str, reasoning: c.Reasoning, thinking: dict[str, Any], effort: str | None
) -> None:
    sent = provider_body(request(user(c.Text("q")), reasoning=reasoning), model=model)
    assert sent["thinking"] == thinking
    assert sent.get("output_config", {}).get("effort") == effort
    assert sent["max_tokens"] > thinking.get("budget_tokens", 0)


def test_sampling_is_left_out_for_models_that_fix_it() -> None:
    sent = provider_body(request(user(c.Text("q")), temperature=0.2, top_p=0.9, top_k=3),
                         model="claude-opus-4-7")
    assert not {"temperature", "top_p", "top_k"} & set(sent)


@pytest.mark.parametrize("reasoning", [c.Reasoning(enabled=False), c.Reasoning(budget_tokens=0)])
def test_reasoning_off_is_thinking_disabled(reasoning: c.Reasoning) -> None:
    sent = provider_body(request(user(c.Text("q")), temperature=0.5, reasoning=reasoning))
    assert sent["thinking"] == {"type": "disabled"} and sent["temperature"] == 0.5


def test_forced_tool_choice_turns_thinking_off() -> None:
    sent = provider_body(request(user(c.Text("q")), tools=[c.Tool("Bash", None, SCHEMA)],
                                 tool_choice=c.ToolChoice("tool", "Bash", parallel=False),
                                 reasoning=c.Reasoning(budget_tokens=2048)))
    assert sent["thinking"] == {"type": "disabled"}
    assert sent["tool_choice"] == {"type": "tool", "name": "Bash",
                                   "disable_parallel_tool_use": True}


def test_tool_loop_without_its_thinking_block_turns_thinking_off() -> None:
    # The caller's dialect could not hold the thinking block: without this the API answers
    # "a final `assistant` message must start with a thinking block".
    reasoning = c.Reasoning(budget_tokens=2048)
    body = ad.from_canonical_request(request(*tool_loop(thinking=False), reasoning=reasoning,
                                             tools=[c.Tool("Bash", None, SCHEMA)]), model="m")
    parsed, problem = fake_checks.validate_body("messages", body, beta=False, version="2023-06-01",
                                                forbid_extra=True, signed=False)
    assert problem is None and parsed["thinking"] == {"type": "disabled"}
    sent = provider_body(request(*tool_loop(thinking=True), reasoning=reasoning,
                                 tools=[c.Tool("Bash", None, SCHEMA)]))
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["messages"][1]["content"][0] == {"type": "thinking", "thinking": "plan",
                                                 "signature": "sig-1"}


def test_later_steps_of_a_tool_loop_need_thinking_only_at_the_turns_start() -> None:
    # Without interleaved thinking only the turn's first assistant message thinks (docs:
    # "Claude will not output another thinking block until after the next non-tool_result
    # user turn"), so thinking stays on.
    messages = [*tool_loop(thinking=True),
                assistant(c.ToolCall("toolu_2", "Bash", '{"command": "cat a.txt"}')),
                user(c.ToolResult("toolu_2", [c.Text("hello")]))]
    body = ad.from_canonical_request(request(*messages, reasoning=c.Reasoning(budget_tokens=2048),
                                             tools=[c.Tool("Bash", None, SCHEMA)]), model="m")
    assert msgspec.json.decode(body)["thinking"]["type"] == "enabled"


def test_turns_are_merged_tool_results_first_and_empty_text_left_out() -> None:
    sent = provider_body(request(
        user(c.Text("run it")),
        assistant(c.Text(""), c.ToolCall("call_1", "Bash", "{}"), c.ToolCall("call_2", "Bash", "")),
        user(c.Text("   ")),
        user(c.Text("also this"), c.ToolResult("call_1", [c.Text("")])),
        user(c.ToolResult("call_2", [c.Text("two")])),
        assistant(c.Text("")),
    ))
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "run it"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {}},
            {"type": "tool_use", "id": "call_2", "name": "Bash", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1"},
            {"type": "tool_result", "tool_use_id": "call_2",
             "content": [{"type": "text", "text": "two"}]},
            {"type": "text", "text": "also this"}]},
    ]


def test_thinking_of_other_providers_and_unsigned_thinking_is_not_sent() -> None:
    sent = provider_body(request(
        user(c.Text("q")),
        assistant(c.Thinking("gemini thought", "gsig", "gemini"), c.Thinking("unsigned"),
                  c.Thinking("from a caller", "sig-x"), c.Text("answer")),
        user(c.Text("more")),
    ))
    assert sent["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "from a caller", "signature": "sig-x"},
        {"type": "text", "text": "answer"}]


def test_tool_ids_are_kept_within_the_apis_pattern() -> None:
    sent = provider_body(request(
        user(c.Text("q")),
        assistant(c.ToolCall("fc.1/x", "Bash", "{}")),
        user(c.ToolResult("fc.1/x", [c.Text("ok")])),
    ))
    assert sent["messages"][1]["content"][0]["id"] == "fc_1_x"
    assert sent["messages"][2]["content"][0]["tool_use_id"] == "fc_1_x"


@pytest.mark.parametrize("arguments", ['{"a": ', "[1, 2]", '"text"'])
def test_tool_arguments_that_are_not_a_json_object_are_refused(arguments: str) -> None:
    req = request(user(c.Text("q")), assistant(c.ToolCall("t1", "Bash", arguments)),
                  user(c.ToolResult("t1", [])))
    with pytest.raises(c.TranslationError) as exc:
        ad.from_canonical_request(req, model="m")
    assert exc.value.param == "messages.1.content.0"


def test_images_base64_sniffed_data_url_and_http_url() -> None:
    jpeg = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 8).decode()
    sent = provider_body(request(user(
        c.Image(data=PNG), c.Image(url=f"data:image/jpeg;base64,{jpeg}"),
        c.Image(url="https://x.test/a.webp"), c.Text("what?"))))
    sources = [b["source"] for b in sent["messages"][0]["content"][:3]]
    assert sources == [{"type": "base64", "media_type": "image/png", "data": PNG},
                       {"type": "base64", "media_type": "image/jpeg", "data": jpeg},
                       {"type": "url", "url": "https://x.test/a.webp"}]


@pytest.mark.parametrize("image", [
    c.Image(media_type="image/tiff", data="AAAA"),
    c.Image(url="gs://bucket/a.png"),
    c.Image(url="data:image/png,rawbytes"),
])
def test_images_anthropic_cannot_read_are_unsupported(image: c.Image) -> None:
    with pytest.raises(c.Unsupported) as exc:
        ad.from_canonical_request(request(user(c.Text("q"), image)), model="m")
    assert exc.value.param == "messages.0.content.1"


def test_documents_pdf_text_and_url() -> None:
    txt = base64.b64encode("héllo".encode()).decode()
    sent = provider_body(request(user(
        c.Document(media_type="application/pdf", data=PDF, title="t"),
        c.Document(text="plain"),
        c.Document(media_type="text/markdown", data=txt),
        c.Document(url="https://x.test/a.pdf"),
        c.Text("summarise"))))
    docs = sent["messages"][0]["content"][:4]
    assert docs == [
        {"type": "document", "title": "t",
         "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                        "data": "plain"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                        "data": "héllo"}},
        {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}},
    ]
    with pytest.raises(c.Unsupported):
        ad.from_canonical_request(request(user(c.Document(
            media_type="application/msword", data="AAAA"))), model="m")


def test_response_formats() -> None:
    sent = provider_body(request(user(c.Text("q")),
                                 response_format=c.ResponseFormat("json_schema", SCHEMA, "x")))
    assert sent["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    sent = provider_body(request(user(c.Text("q")), system=[c.Text("sys")],
                                 response_format=c.ResponseFormat("json_object")))
    assert "output_config" not in sent
    assert sent["system"][0] == {"type": "text", "text": "sys"}
    assert "JSON object" in sent["system"][1]["text"]


def test_whitespace_stop_sequence_is_unsupported_not_dropped() -> None:
    with pytest.raises(c.Unsupported) as exc:
        ad.from_canonical_request(request(user(c.Text("q")), stop=["END", "\n"]), model="m")
    assert exc.value.param == "stop"


def test_tool_choice_without_tools_is_left_out_and_schemas_get_an_object_type() -> None:
    sent = provider_body(request(user(c.Text("q")), tool_choice=c.ToolChoice("required")))
    assert "tool_choice" not in sent and "tools" not in sent
    sent = provider_body(request(user(c.Text("q")), tools=[
        c.Tool("a"), c.Tool("b", "d", {"properties": {"x": {"type": "string"}}})],
        tool_choice=c.ToolChoice("none")))
    assert [t["input_schema"] for t in sent["tools"]] == [
        {"type": "object", "properties": {}},
        {"type": "object", "properties": {"x": {"type": "string"}}}]
    assert sent["tool_choice"] == {"type": "none"}


# --- answers -----------------------------------------------------------------------------------


def message(**kw: Any) -> bytes:
    base: dict[str, Any] = {
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-opus-4-8",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 3},
    }
    return dumps(base | kw)


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"), (None, "stop"),
    ("max_tokens", "length"), ("model_context_window_exceeded", "length"),
    ("tool_use", "tool_calls"), ("refusal", "refusal"), ("a_new_reason", "stop"),
])
def test_every_stop_reason(stop_reason: str | None, finish: str) -> None:
    resp = ad.to_canonical_response(message(stop_reason=stop_reason), model="m")
    assert resp.finish == finish


def test_response_usage_counts_every_prompt_token() -> None:
    resp = ad.to_canonical_response(message(usage={
        "input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20,
        "output_tokens": 7, "output_tokens_details": {"thinking_tokens": 4},
        "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard"}, stop_reason="stop_sequence", stop_sequence="END"),
        model="m")
    assert resp.usage == c.Usage(input_tokens=130, output_tokens=7, cached_tokens=100,
                                 cache_write_tokens=20, reasoning_tokens=4)
    assert (resp.id, resp.model, resp.stop_sequence) == ("msg_01", "claude-opus-4-8", "END")


def test_response_blocks_and_server_blocks_skipped() -> None:
    resp = ad.to_canonical_response(message(content=[
        {"type": "thinking", "thinking": "t", "signature": "s"},
        {"type": "redacted_thinking", "data": "enc"},
        {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}},
        {"type": "web_search_tool_result", "tool_use_id": "srv",
         "content": {"type": "web_search_tool_result_error", "error_code": "unavailable"}},
        {"type": "text", "text": "answer", "citations": [{"type": "char_location"}]},
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
    ], stop_reason="tool_use"), model="m")
    assert resp.content == [
        c.Thinking("t", "s", "anthropic"), c.Thinking(redacted="enc", source="anthropic"),
        c.Text("answer"), c.ToolCall("toolu_1", "Bash", '{"command": "ls"}')]
    with pytest.raises(c.TranslationError):
        ad.to_canonical_response(b'{"content": 5}', model="m")


@pytest.mark.parametrize(("finish", "stop_sequence", "stop_reason"), [
    ("stop", None, "end_turn"), ("stop", "END", "stop_sequence"), ("length", None, "max_tokens"),
    ("tool_calls", None, "tool_use"), ("content_filter", None, "refusal"),
    ("refusal", None, "refusal"), ("error", None, "end_turn"),
])
def test_answer_for_a_caller_parses_with_the_sdk(finish: c.FinishReason,
                                                 stop_sequence: str | None,
                                                 stop_reason: str) -> None:
    resp = c.Response(id="chatcmpl-9", model="gpt-x", content=[c.Text("hello")], finish=finish,
                      stop_sequence=stop_sequence,
                      usage=c.Usage(input_tokens=130, output_tokens=7, cached_tokens=100,
                                    cache_write_tokens=20, reasoning_tokens=4))
    msg = Message.model_validate_json(ad.from_canonical_response(resp, model="claude-alias"))
    assert (msg.id, msg.model, msg.stop_reason, msg.stop_sequence) == (
        "msg_chatcmpl-9", "claude-alias", stop_reason, stop_sequence)
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens,
            msg.usage.cache_creation_input_tokens, msg.usage.output_tokens) == (10, 100, 20, 7)
    assert msg.usage.output_tokens_details is not None
    assert msg.usage.output_tokens_details.thinking_tokens == 4


def test_answer_tool_ids_carry_provider_data_and_come_back_on_the_next_turn() -> None:
    data = {"thoughtSignature": "Zm9v"}
    resp = c.Response(id="r1", model="gemini-x", finish="stop", content=[
        c.Thinking("gemini thought", "g-sig", "gemini"),
        c.Thinking("deepseek reasoning", None, "openai"),
        c.Thinking("claude", "c-sig", "anthropic"),
        c.ToolCall("call_1", "Bash", '{"command": "ls"}', data),
        c.ToolCall("", "Read", "{broken"),
    ])
    msg = Message.model_validate_json(ad.from_canonical_response(resp, model="claude-alias"))
    assert msg.stop_reason == "tool_use"  # STOP with calls is still a tool-use turn
    g, o, a, call, broken = msg.content
    assert (g.type, o.type, a.type, call.type, broken.type) == (
        "thinking", "thinking", "thinking", "tool_use", "tool_use")
    assert a.signature == "c-sig"  # type: ignore[union-attr]
    assert broken.input == {"_raw_arguments": "{broken"}  # type: ignore[union-attr]
    assert broken.id == "toolu_msg_r1_4"  # type: ignore[union-attr]
    # Claude Code echoes the assistant message and answers the call.
    echoed = {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "q"},
        msg.to_param() | {"content": [b.model_dump(exclude_none=True) for b in msg.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,  # type: ignore[union-attr]
                                      "content": "ok"}]}]}
    back = ad.to_canonical_request(dumps(echoed)).messages
    assert back[1].content[:4] == [
        c.Thinking("gemini thought", "g-sig", "gemini"),
        c.Thinking("deepseek reasoning", None, "openai"),
        c.Thinking("claude", "c-sig", "anthropic"),
        c.ToolCall("call_1", "Bash", '{"command": "ls"}', data)]
    assert back[2].content == [c.ToolResult("call_1", [c.Text("ok")])]


# --- stream decoder ----------------------------------------------------------------------------


def ev(name: str, data: dict[str, Any]) -> SSEEvent:
    return SSEEvent(json.dumps({"type": name, **data}), name)


def start(usage: dict[str, int] | None = None) -> SSEEvent:
    usage = usage or {"input_tokens": 25, "output_tokens": 1}
    return ev("message_start", {"message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-opus-4-8",
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}})


def block(index: int, content_block: dict[str, Any]) -> SSEEvent:
    return ev("content_block_start", {"index": index, "content_block": content_block})


def delta(index: int, **d: Any) -> SSEEvent:
    return ev("content_block_delta", {"index": index, "delta": d})


def stop(index: int) -> SSEEvent:
    return ev("content_block_stop", {"index": index})


def end(stop_reason: str, usage: dict[str, Any], stop_sequence: str | None = None
        ) -> list[SSEEvent]:
    return [ev("message_delta", {"delta": {"stop_reason": stop_reason,
                                           "stop_sequence": stop_sequence}, "usage": usage}),
            ev("message_stop", {})]


def decode_all(events: list[SSEEvent]) -> list[c.Event]:
    dec = ad.StreamDecoder(model="m")
    out: list[c.Event] = []
    for e in events:  # one at a time, as they arrive
        out += dec.feed(e)
    return out + dec.close()


TEXT_TRANSCRIPT = [
    start(), block(0, {"type": "text", "text": ""}), ev("ping", {}),
    delta(0, type="text_delta", text="Hello"), delta(0, type="text_delta", text=" world"),
    stop(0), *end("end_turn", {"output_tokens": 15}),
]


def test_decoder_text_transcript() -> None:
    assert decode_all(TEXT_TRANSCRIPT) == [
        c.StreamStart("msg_1", "claude-opus-4-8", c.Usage(input_tokens=25)),
        c.BlockStart(0, "text"), c.TextDelta(0, "Hello"), c.TextDelta(0, " world"),
        c.BlockStop(0),
        c.StreamEnd("stop", None, c.Usage(input_tokens=25, output_tokens=15)),
    ]


def test_decoder_tool_use_with_fragmented_arguments() -> None:
    events = [
        start({"input_tokens": 5, "cache_read_input_tokens": 90, "output_tokens": 1}),
        block(0, {"type": "text", "text": ""}), delta(0, type="text_delta", text="Let me check."),
        stop(0),
        block(1, {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}),
        delta(1, type="input_json_delta", partial_json=""),
        delta(1, type="input_json_delta", partial_json='{"locat'),
        delta(1, type="input_json_delta", partial_json='ion": "Par'),
        delta(1, type="input_json_delta", partial_json='is"}'),
        stop(1), *end("tool_use", {"output_tokens": 40}),
    ]
    out = decode_all(events)
    assert out[0] == c.StreamStart("msg_1", "claude-opus-4-8",
                                   c.Usage(input_tokens=95, cached_tokens=90))
    assert c.BlockStart(1, "tool_call", "toolu_01", "get_weather") in out
    args = "".join(e.partial_json for e in out if isinstance(e, c.ToolArgsDelta))
    assert json.loads(args) == {"location": "Paris"}
    assert sum(isinstance(e, c.ToolArgsDelta) for e in out) == 3  # the empty one is not passed
    assert out[-1] == c.StreamEnd("tool_calls", None, c.Usage(95, 40, 90))


def test_decoder_thinking_with_signature_and_redacted_thinking() -> None:
    events = [
        start(), block(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, type="thinking_delta", thinking="Let me "),
        delta(0, type="thinking_delta", thinking="think."),
        delta(0, type="signature_delta", signature="EqQBCgIYAhIM"), stop(0),
        block(1, {"type": "redacted_thinking", "data": "EmwKAhgB"}), stop(1),
        block(2, {"type": "text", "text": ""}), delta(2, type="text_delta", text="42"), stop(2),
        *end("end_turn", {"output_tokens": 9, "output_tokens_details": {"thinking_tokens": 6}}),
    ]
    out = decode_all(events)
    assert out[1:8] == [
        c.BlockStart(0, "thinking"),
        c.ThinkingDelta(0, "Let me ", None, "anthropic"),
        c.ThinkingDelta(0, "think.", None, "anthropic"),
        c.ThinkingDelta(0, "", "EqQBCgIYAhIM", "anthropic"),
        c.BlockStop(0),
        c.BlockStart(1, "thinking", provider_data={REDACTED_KEY: "EmwKAhgB"}),
        c.BlockStop(1),
    ]
    assert isinstance(out[-1], c.StreamEnd) and out[-1].usage is not None
    assert out[-1].usage.reasoning_tokens == 6


def test_decoder_skips_server_tool_blocks_and_renumbers() -> None:
    events = [
        start(),
        block(0, {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}}),
        delta(0, type="input_json_delta", partial_json='{"q": 1}'), stop(0),
        block(1, {"type": "web_search_tool_result", "tool_use_id": "srv", "content": []}),
        stop(1),
        block(2, {"type": "text", "text": ""}),
        delta(2, type="citations_delta", citation={"type": "char_location"}),
        delta(2, type="text_delta", text="found"), stop(2),
        *end("end_turn", {"output_tokens": 3}),
    ]
    out = decode_all(events)
    assert out[1:4] == [c.BlockStart(0, "text"), c.TextDelta(0, "found"), c.BlockStop(0)]


def test_decoder_message_delta_usage_is_cumulative_and_replaces() -> None:
    events = [start({"input_tokens": 0, "output_tokens": 0}),
              *end("max_tokens", {"input_tokens": 30, "cache_creation_input_tokens": 12,
                                  "output_tokens": 8})]
    assert decode_all(events)[-1] == c.StreamEnd("length", None, c.Usage(
        input_tokens=42, output_tokens=8, cache_write_tokens=12))
    events = [start(), *end("stop_sequence", {"output_tokens": 2}, "END")]
    assert decode_all(events)[-1] == c.StreamEnd("stop", "END", c.Usage(25, 2))


def test_decoder_error_event_ends_the_stream() -> None:
    dec = ad.StreamDecoder(model="m")
    dec.feed(start())
    out = dec.feed(SSEEvent(
        '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
        "error"))
    assert out == [c.StreamError(c.CanonicalError(529, "Overloaded", "overloaded"))]
    assert dec.feed(TEXT_TRANSCRIPT[1]) == [] and dec.close() == []


def test_decoder_truncated_stream_and_malformed_event_are_stream_errors() -> None:
    out = decode_all(TEXT_TRANSCRIPT[:4])
    assert isinstance(out[-1], c.StreamError)
    assert (out[-1].error.status, out[-1].error.kind) == (502, "server")
    dec = ad.StreamDecoder(model="m")
    bad = dec.feed(SSEEvent('{"type": "content_block_delta", "index": "x"}',
                            "content_block_delta"))
    assert isinstance(bad[0], c.StreamError) and dec.close() == []
    dec = ad.StreamDecoder(model="m")
    for e in TEXT_TRANSCRIPT:
        dec.feed(e)
    assert dec.close() == []
    assert "done=True" in repr(dec)


def test_decoder_reads_unnamed_events_by_their_type() -> None:
    events = [SSEEvent(e.data) for e in TEXT_TRANSCRIPT]
    assert decode_all(events) == decode_all(TEXT_TRANSCRIPT)


def test_decoder_on_the_fakes_bytes_split_anywhere() -> None:
    reply = fake.Reply(id="msg_f", model="claude-opus-4-8", thinking="deep thought", text="hi",
                       tools=[{"id": "toolu_f", "name": "Bash", "input": {"command": "ls -la"}}],
                       stop_reason="tool_use", input_tokens=12, output_tokens=30, cache_read=8,
                       chunks=3)
    raw = b"".join(fake.sse(name, data) for name, data in fake.stream_events(reply))
    sse, dec = SSEDecoder(), ad.StreamDecoder(model="m")
    out: list[c.Event] = []
    for i in range(0, len(raw), 7):  # network chunks cut mid-event
        for e in sse.feed(raw[i:i + 7]):
            out += dec.feed(e)
    out += dec.close()
    thinking = "".join(e.text for e in out if isinstance(e, c.ThinkingDelta))
    signature = [e.signature for e in out if isinstance(e, c.ThinkingDelta) and e.signature]
    args = "".join(e.partial_json for e in out if isinstance(e, c.ToolArgsDelta))
    assert thinking == "deep thought"
    assert signature == [fake.thinking_signature("deep thought")]
    assert json.loads(args) == {"command": "ls -la"}
    assert out[-1] == c.StreamEnd("tool_calls", None, c.Usage(20, 30, 8))


# --- stream encoder ----------------------------------------------------------------------------


def encode_all(events: list[c.Event], model: str = "claude-alias") -> bytes:
    enc = ad.StreamEncoder(model=model)
    return b"".join(enc.feed(e) for e in events) + enc.close()


def sdk_message(data: bytes) -> Any:
    """The final Message as the SDK's own MessageStream accumulates it from our bytes."""
    client = anthropic.Anthropic(api_key="unused", base_url="http://127.0.0.1:9")
    try:
        response = httpx2.Response(200, content=data,
                                   headers={"content-type": "text/event-stream"},
                                   request=httpx2.Request("POST", "http://127.0.0.1:9/v1/messages"))
        raw: Stream[RawMessageStreamEvent] = Stream(
            cast_to=cast(Any, RawMessageStreamEvent), response=response, client=client)
        return MessageStream(raw, NOT_GIVEN).get_final_message()
    finally:
        client.close()


def names(data: bytes) -> list[tuple[str | None, Any]]:
    return [(e.event, json.loads(e.data)) for e in SSEDecoder().feed(data)]


def check_sequence(data: bytes) -> None:
    """The documented order: message_start; per block start, deltas, stop with indexes from 0
    in order; every block stopped before message_delta; message_stop last."""
    events = names(data)
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    assert events[-2][0] == "message_delta"
    started, stopped = [], []
    for name, payload in events:
        assert payload["type"] == name
        if name == "content_block_start":
            started.append(payload["index"])
        elif name == "content_block_stop":
            stopped.append(payload["index"])
        elif name == "content_block_delta":
            assert payload["index"] in started and payload["index"] not in stopped
    assert started == list(range(len(started))) and sorted(stopped) == started


def test_encoder_output_is_rebuilt_by_the_sdk() -> None:
    data = encode_all([
        c.StreamStart("chatcmpl-1", "gpt-x", c.Usage(input_tokens=130, cached_tokens=100,
                                                     cache_write_tokens=20)),
        c.BlockStart(0, "text"), c.TextDelta(0, "Let me "), c.TextDelta(0, "look."),
        c.BlockStop(0),
        c.BlockStart(1, "tool_call", "call_9", "Bash", {"thoughtSignature": "c2ln"}),
        c.ToolArgsDelta(1, '{"comm'), c.ToolArgsDelta(1, 'and": "ls"}'), c.BlockStop(1),
        c.StreamEnd("tool_calls", None, c.Usage(130, 12, 100, 20)),
    ])
    check_sequence(data)
    first = names(data)[0][1]["message"]
    assert first["usage"]["input_tokens"] == 10  # the real count, never a placeholder 0
    msg = sdk_message(data)
    assert (msg.id, msg.model, msg.stop_reason) == ("msg_chatcmpl-1", "claude-alias", "tool_use")
    text, call = msg.content
    assert text.text == "Let me look."
    assert (call.name, call.input) == ("Bash", {"command": "ls"})
    assert c.unpack_call_id(call.id) == ("call_9", {"thoughtSignature": "c2ln"})
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens,
            msg.usage.cache_creation_input_tokens, msg.usage.output_tokens) == (10, 100, 20, 12)


def test_encoder_usage_known_only_at_the_end() -> None:
    # An OpenAI provider reports usage in its last chunk: message_start can say only 0, and
    # message_delta carries the full usage, which the SDK takes over.
    data = encode_all([c.StreamStart("x", "gpt"), c.BlockStart(0, "text"), c.TextDelta(0, "hi"),
                       c.StreamEnd("stop", None, c.Usage(input_tokens=50, output_tokens=2,
                                                         cached_tokens=40))])
    check_sequence(data)
    delta_usage = names(data)[-2][1]["usage"]
    assert delta_usage == {"input_tokens": 10, "cache_creation_input_tokens": 0,
                           "cache_read_input_tokens": 40, "output_tokens": 2}
    msg = sdk_message(data)
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (10, 2)
    assert msg.stop_reason == "end_turn"


def test_encoder_closes_what_the_provider_left_open_and_keeps_interleaved_calls() -> None:
    data = encode_all([
        c.StreamStart("x", "gpt", c.Usage(input_tokens=3)),
        c.BlockStart(0, "text"), c.TextDelta(0, "two calls"),
        c.BlockStart(1, "tool_call", "call_a", "f"), c.BlockStart(2, "tool_call", "call_b", "g"),
        c.ToolArgsDelta(1, '{"a":'), c.ToolArgsDelta(2, '{"b":'), c.ToolArgsDelta(1, " 1}"),
        c.ToolArgsDelta(2, " 2}"),
        c.TextDelta(0, "!"),  # late text for a stopped text block: a new text block
        c.StreamEnd("tool_calls", None, c.Usage(3, 9)),
    ])
    events = names(data)
    assert events[-2][0] == "message_delta"
    stops = [p["index"] for n, p in events if n == "content_block_stop"]
    assert sorted(stops) == [0, 1, 2, 3]
    msg = sdk_message(data)
    assert [b.type for b in msg.content] == ["text", "tool_use", "tool_use", "text"]
    assert (msg.content[1].input, msg.content[2].input) == ({"a": 1}, {"b": 2})
    assert msg.content[3].text == "!"


def test_encoder_thinking_anthropic_foreign_and_redacted() -> None:
    data = encode_all([
        c.StreamStart("x", "m", c.Usage(input_tokens=1)),
        c.BlockStart(0, "thinking"), c.ThinkingDelta(0, "mine", None, "anthropic"),
        c.ThinkingDelta(0, "", "sig-A", "anthropic"), c.BlockStop(0),
        c.BlockStart(1, "thinking", provider_data={REDACTED_KEY: "ENC"}),
        c.ThinkingDelta(1, "ignored"), c.BlockStop(1),
        c.BlockStart(2, "thinking"), c.ThinkingDelta(2, "gemini's", None, "gemini"),
        c.ThinkingDelta(2, "", "g-sig", "gemini"),
        c.BlockStart(3, "thinking"), c.ThinkingDelta(3, "deepseek's", None, "openai"),
        c.StreamEnd("stop", None, c.Usage(1, 5)),
    ])
    check_sequence(data)
    mine, redacted, gemini, deepseek = sdk_message(data).content
    assert (mine.thinking, mine.signature) == ("mine", "sig-A")
    assert (redacted.type, redacted.data) == ("redacted_thinking", "ENC")
    assert wire.unpack_signature(gemini.signature) == ("gemini", "g-sig")
    assert wire.unpack_signature(deepseek.signature) == ("openai", None)


def test_same_dialect_through_canonical_gives_the_providers_message_back() -> None:
    reply = fake.Reply(id="msg_f", model="claude-opus-4-8", thinking="why not", text="answer",
                       tools=[{"id": "toolu_f", "name": "Bash", "input": {"command": "ls"}}],
                       stop_reason="tool_use", input_tokens=12, output_tokens=30, cache_read=8)
    dec, enc = ad.StreamDecoder(model="m"), ad.StreamEncoder(model="claude-opus-4-8")
    data = b"".join(enc.feed(e) for name, payload in fake.stream_events(reply)
                    for e in dec.feed(SSEEvent(json.dumps(payload), name)))
    check_sequence(data)
    got = sdk_message(data).model_dump(exclude_none=True)
    want = Message.model_validate(fake.message_body(reply)).model_dump(exclude_none=True)
    for msg in (got, want):
        msg["usage"].pop("cache_creation", None)
        msg["usage"].pop("service_tier", None)
    assert got == want


def test_encoder_synthesises_message_start_and_ignores_after_the_end() -> None:
    enc = ad.StreamEncoder(model="claude-alias")
    data = enc.feed(c.TextDelta(0, "no start"))
    assert data.startswith(b"event: message_start\n")
    data += enc.feed(c.StreamEnd("length", None, None))
    assert enc.feed(c.TextDelta(0, "late")) == b"" and enc.close() == b""
    check_sequence(data)
    assert sdk_message(data).stop_reason == "max_tokens"
    assert "done=True" in repr(enc)


def test_encoder_stream_error_is_the_sdks_error_event() -> None:
    err = c.CanonicalError(429, "slow down", "rate_limit")
    enc = ad.StreamEncoder(model="x")
    data = enc.feed(c.StreamStart("x", "m")) + enc.feed(c.BlockStart(0, "text"))
    data += enc.feed(c.StreamError(err))
    assert data.endswith(ad.stream_error_event(err))
    with pytest.raises(anthropic.APIStatusError) as exc:
        sdk_message(data)
    assert exc.value.body == {"type": "error", "error": {"type": "rate_limit_error",
                                                         "message": "slow down"}}


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "error_type", "kind"), [
    (400, "invalid_request_error", "invalid_request"),
    (401, "authentication_error", "authentication"),
    (402, "billing_error", "permission"),
    (403, "permission_error", "permission"),
    (404, "not_found_error", "not_found"),
    (413, "request_too_large", "request_too_large"),
    (429, "rate_limit_error", "rate_limit"),
    (500, "api_error", "server"),
    (504, "timeout_error", "timeout"),
    (529, "overloaded_error", "overloaded"),
])
def test_provider_errors_to_canonical(status: int, error_type: str, kind: str) -> None:
    body = dumps({"type": "error", "error": {"type": error_type, "message": "words"},
                  "request_id": "req_1"})
    assert ad.to_canonical_error(status, body) == c.CanonicalError(status, "words", kind)  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "body", "kind"), [
    (529, b"", "overloaded"), (503, b"<html>busy</html>", "server"), (408, b"", "timeout"),
    (422, b'{"detail": "bad"}', "invalid_request"), (429, b'{"error": {}}', "rate_limit"),
])
def test_non_anthropic_error_bodies_map_by_status(status: int, body: bytes, kind: str) -> None:
    err = ad.to_canonical_error(status, body)
    assert (err.status, err.kind) == (status, kind)
    assert err.message


@pytest.mark.parametrize(("err", "status", "error_type", "sdk_class"), [
    (c.CanonicalError(400, "bad", "invalid_request"), 400, "invalid_request_error",
     anthropic.BadRequestError),
    (c.CanonicalError(422, "bad", "invalid_request"), 422, "invalid_request_error",
     anthropic.UnprocessableEntityError),
    (c.CanonicalError(401, "key", "authentication"), 401, "authentication_error",
     anthropic.AuthenticationError),
    (c.CanonicalError(402, "pay", "permission"), 402, "permission_error",
     anthropic.PaymentRequiredError),
    (c.CanonicalError(403, "no", "permission"), 403, "permission_error",
     anthropic.PermissionDeniedError),
    (c.CanonicalError(404, "gone", "not_found"), 404, "not_found_error", anthropic.NotFoundError),
    (c.CanonicalError(413, "big", "request_too_large"), 413, "request_too_large",
     anthropic.ContentTooLargeError),
    (c.CanonicalError(429, "slow", "rate_limit"), 429, "rate_limit_error",
     anthropic.RateLimitError),
    (c.CanonicalError(503, "busy", "overloaded"), 529, "overloaded_error",
     anthropic.OverloadedError),
    (c.CanonicalError(502, "bad gateway", "server"), 502, "api_error",
     anthropic.InternalServerError),
    (c.CanonicalError(400, "odd", "server"), 500, "api_error", anthropic.InternalServerError),
    (c.CanonicalError(408, "slow", "timeout"), 504, "timeout_error",
     anthropic.GatewayTimeoutError),
])
def test_canonical_errors_for_a_caller_are_the_sdks_classes(
    err: c.CanonicalError, status: int, error_type: str, sdk_class: type[Exception]
) -> None:
    got_status, body = ad.from_canonical_error(err)
    assert (got_status, json.loads(body)) == (
        status, {"type": "error", "error": {"type": error_type, "message": err.message}})
    client = anthropic.Anthropic(api_key="unused", base_url="http://127.0.0.1:9")
    try:
        response = httpx2.Response(got_status, content=body, request=httpx2.Request(
            "POST", "http://127.0.0.1:9/v1/messages"))
        exc = client._make_status_error_from_response(response)
    finally:
        client.close()
    assert type(exc) is sdk_class
    # And back: the kind survives the crossing.
    assert ad.to_canonical_error(got_status, body).kind == err.kind


def test_stream_error_event_framing() -> None:
    data = ad.stream_error_event(c.CanonicalError(529, "Overloaded", "overloaded"))
    assert data == (b'event: error\ndata: {"error":{"type":"overloaded_error","message":'
                    b'"Overloaded"},"type":"error"}\n\n')
    assert ad.StreamDecoder(model="m").feed(SSEDecoder().feed(data)[0]) == [
        c.StreamError(c.CanonicalError(529, "Overloaded", "overloaded"))]
