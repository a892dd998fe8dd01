"""OpenAI Chat Completions requests to and from the canonical request.

Caller side (`to_canonical_request`), decisions where the dialects differ:
- `system` and `developer` messages, wherever they stand in `messages`, are folded in order into
  the canonical system prompt: Anthropic and Gemini hold one system prompt ahead of the turns.
  A system message in the middle of a history loses its position, not its text.
- `tool` messages become ToolResult blocks of a user turn; consecutive tool messages and the
  user message right after them make one turn (Anthropic's shape: results first, then text).
  The function name of each result is looked up from the assistant's `tool_calls`, because
  Gemini answers a call by name.
- Requested behaviour no other dialect can express is refused with `Unsupported` naming the
  field (a 400, never a silent drop): `n > 1`, `logprobs`/`top_logprobs`, non-zero
  `frequency_penalty`/`presence_penalty`, `logit_bias`, audio input or output, `file_id`
  references to OpenAI's Files API, custom tools, `web_search_options`. Hints with no meaning
  elsewhere are dropped quietly: `user`, `metadata`, `store`, `service_tier`, `prediction`,
  `prompt_cache_key`, `safety_identifier`, `verbosity`, image `detail`, a tool's `strict`, the
  `name` of a participant.
- `reasoning_effort` "none" disables reasoning; "xhigh" and "max" become canonical "high" (the
  highest it has). OpenRouter's `reasoning` object and the `thinking` object LiteLLM and
  DeepSeek take are read too.

Provider side (`from_canonical_request`), see the comments at each choice.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

import msgspec

from adapters.canonical import (
    Block,
    Document,
    Image,
    Message,
    Reasoning,
    Request,
    ResponseFormat,
    Text,
    Thinking,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    TranslationError,
    Unsupported,
    unpack_call_id,
)
from adapters.openai import wire
from adapters.openai.wire import (
    ENCODE,
    REQUEST,
    AllowedTools,
    AssistantOut,
    ChatRequestIn,
    ChatRequestOut,
    ContentPartIn,
    FileIn,
    FileOut,
    FilePartOut,
    FunctionCallIn,
    FunctionDefOut,
    FunctionOut,
    ImagePartOut,
    ImageURLIn,
    ImageURLOut,
    JSONSchemaOut,
    MessageIn,
    MessageOut,
    NamedChoiceOut,
    NamedFunction,
    ResponseFormatOut,
    StreamOptionsOut,
    SystemOut,
    TextPartOut,
    ToolCallOut,
    ToolChoiceIn,
    ToolMessageOut,
    ToolOut,
    UserOut,
)

__all__ = ["from_canonical_request", "request_path", "to_canonical_request"]

_PATH = b"/chat/completions"
_Effort = Literal["minimal", "low", "medium", "high"]
_EFFORTS: dict[str, _Effort] = {
    "minimal": "minimal", "low": "low", "medium": "medium", "high": "high",
    # The SDK also documents these two; the canonical scale tops out at "high".
    "xhigh": "high", "max": "high",
}


def request_path(*, model: str, stream: bool) -> bytes:
    """OpenAI base URLs end in /v1 (https://api.openai.com/v1), so the path is the same for
    every model and for streams."""
    return _PATH


# --- caller side ------------------------------------------------------------------------------


def to_canonical_request(body: bytes, *, model: str | None = None,
                         stream: bool | None = None) -> Request:
    """A caller's chat completion request. `model` and `stream` come from the body; the
    arguments are only a fallback for a body without `model`."""
    try:
        req = REQUEST.decode(body)
    except msgspec.ValidationError as err:
        raise TranslationError(f"Invalid request body: {err}", _error_path(err)) from None
    except msgspec.DecodeError as err:
        raise TranslationError(f"The body is not valid JSON: {err}") from None
    _refuse_unexpressible(req)
    name = req.model or model
    if not name:
        raise TranslationError("Missing required parameter: 'model'.", "model")
    system, messages = _Messages().convert(req.messages)
    tools = _tools(req)
    choice, tools = _tool_choice(req, tools)
    streaming = bool(req.stream)
    return Request(
        model=name,
        messages=messages,
        system=system,
        max_tokens=req.max_completion_tokens if req.max_completion_tokens is not None
        else req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        stop=[req.stop] if isinstance(req.stop, str) else list(req.stop or ()),
        stream=streaming,
        tools=tools,
        tool_choice=choice,
        response_format=_response_format(req),
        reasoning=_reasoning(req),
        seed=req.seed,
        stream_usage=streaming and bool(req.stream_options and req.stream_options.include_usage),
    )


def _error_path(err: msgspec.ValidationError) -> str | None:
    # msgspec ends its message with "- at `$.messages[0].content`", and names a missing field
    # as "Object missing required field `url`".
    text, mark, path = str(err).rpartition(" - at `$")
    path = path.rstrip("`").lstrip(".") if mark else ""
    _, missing, field = (text if mark else str(err)).partition("missing required field `")
    if missing:
        field = field.rstrip("`")
        path = f"{path}.{field}" if path else field
    return path or None


def _refuse_unexpressible(req: ChatRequestIn) -> None:
    if req.n is not None and req.n > 1:
        raise Unsupported("Only one choice per request can be translated (n must be 1).", "n")
    if req.logprobs:
        raise Unsupported("Log probabilities cannot be translated to this model.", "logprobs")
    if req.top_logprobs:
        raise Unsupported("Log probabilities cannot be translated to this model.",
                          "top_logprobs")
    for param in ("frequency_penalty", "presence_penalty"):
        if getattr(req, param):
            raise Unsupported(f"'{param}' cannot be translated to this model.", param)
    if req.logit_bias:
        raise Unsupported("'logit_bias' cannot be translated to this model.", "logit_bias")
    if req.audio is not None or (req.modalities and "audio" in req.modalities):
        raise Unsupported("Audio output cannot be translated to this model.",
                          "audio" if req.audio is not None else "modalities")
    if req.web_search_options is not None:
        raise Unsupported("The web search tool cannot be translated to this model.",
                          "web_search_options")


class _Messages:
    """Walks `messages` once: system prompt, turns, and the id → name map of tool calls."""

    __slots__ = ("legacy", "names", "out", "results", "system")

    def __init__(self) -> None:
        self.system: list[Text] = []
        self.out: list[Message] = []
        self.names: dict[str, str] = {}  # tool call id -> function name
        self.legacy: dict[str, str] = {}  # legacy function name -> id we gave its last call
        self.results: list[Block] | None = None  # the user turn tool results are joining

    def convert(self, messages: list[MessageIn]) -> tuple[list[Text], list[Message]]:
        for i, m in enumerate(messages):
            match m.role:
                case "system" | "developer":
                    self.system.extend(_texts(m.content, f"messages[{i}]"))
                case "user":
                    blocks = _parts(m.content, f"messages[{i}]")
                    if self.results is not None:
                        self.results.extend(blocks)
                        self.results = None
                    else:
                        self.out.append(Message("user", blocks))
                case "assistant":
                    self.results = None
                    self.out.append(self._assistant(m, i))
                case "tool" | "function":
                    result = self._result(m, i)
                    if self.results is None:
                        self.results = [result]
                        self.out.append(Message("user", self.results))
                    else:
                        self.results.append(result)
                case role:
                    raise TranslationError(f"Invalid value for 'messages[{i}].role': {role!r}.",
                                           f"messages[{i}].role")
        return self.system, self.out

    def _assistant(self, m: MessageIn, i: int) -> Message:
        if m.audio is not None:
            raise Unsupported("An earlier audio answer cannot be translated to this model.",
                              f"messages[{i}].audio")
        blocks: list[Block] = _thinking(m)
        blocks.extend(_parts(m.content, f"messages[{i}]", assistant=True))
        for j, call in enumerate(m.tool_calls or ()):
            param = f"messages[{i}].tool_calls[{j}]"
            if call.type != "function" or call.function is None:
                raise Unsupported(f"Tool calls of type {call.type!r} cannot be translated.",
                                  param)
            call_id, data = unpack_call_id(call.id)
            self.names[call_id] = call.function.name
            blocks.append(ToolCall(call_id, call.function.name, _arguments(call.function),
                                   data))
        if m.function_call is not None:
            call_id = f"call_fn{i}"
            self.legacy[m.function_call.name] = call_id
            self.names[call_id] = m.function_call.name
            blocks.append(ToolCall(call_id, m.function_call.name, _arguments(m.function_call)))
        return Message("assistant", blocks)

    def _result(self, m: MessageIn, i: int) -> ToolResult:
        content = [b for b in _parts(m.content, f"messages[{i}]")
                   if isinstance(b, Text | Image | Document)]
        if m.role == "function":
            # Legacy function messages answer by name; pair them with the call we named.
            fn = m.name or ""
            return ToolResult(self.legacy.get(fn, f"call_fn_{fn}"), content, name=fn or None)
        if not m.tool_call_id:
            raise TranslationError("Missing required parameter: "
                                   f"'messages[{i}].tool_call_id'.", f"messages[{i}].tool_call_id")
        call_id, _ = unpack_call_id(m.tool_call_id)
        return ToolResult(call_id, content, name=self.names.get(call_id))


def _arguments(fn: FunctionCallIn) -> str:
    args = fn.arguments
    return args if isinstance(args, str) else ENCODE.encode(args).decode()


def _thinking(m: MessageIn) -> list[Block]:
    # thinking_blocks carry the signatures (LiteLLM's convention, which we also answer with);
    # reasoning_content then repeats their text, so it is read only when they are absent.
    if m.thinking_blocks:
        return [
            Thinking(redacted=b.data) if b.type == "redacted_thinking"
            else Thinking(b.thinking or "", b.signature or None)
            for b in m.thinking_blocks
        ]
    text = m.reasoning_content or m.reasoning
    return [Thinking(text)] if text else []


def _texts(content: str | list[ContentPartIn] | None, where: str) -> list[Text]:
    if isinstance(content, str):
        return [Text(content)] if content else []
    out: list[Text] = []
    for j, part in enumerate(content or ()):
        if part.type != "text":
            raise Unsupported(f"Content of type {part.type!r} is not allowed here.",
                              f"{where}.content[{j}]")
        if part.text:
            out.append(Text(part.text))
    return out


def _parts(content: str | list[ContentPartIn] | None, where: str, *,
           assistant: bool = False) -> list[Block]:
    if isinstance(content, str):
        return [Text(content)] if content else []
    out: list[Block] = []
    for j, part in enumerate(content or ()):
        param = f"{where}.content[{j}]"
        match part:
            case ContentPartIn(type="text", text=str(text)):
                if text:
                    out.append(Text(text))
            case ContentPartIn(type="refusal", refusal=str(text)) if assistant:
                out.append(Text(text))
            case ContentPartIn(type="image_url", image_url=ImageURLIn(url=url)) \
                    | ContentPartIn(type="image_url", image_url=str(url)) if not assistant:
                out.append(_image(url))
            case ContentPartIn(type="file", file=FileIn() as file) if not assistant:
                out.append(_document(file, param))
            case ContentPartIn(type="input_audio"):
                raise Unsupported("Audio input cannot be translated to this model.", param)
            case _:
                raise Unsupported(f"Content of type {part.type!r} cannot be translated here.",
                                  param)
    return out


def _split_data_url(url: str) -> tuple[str | None, str] | None:
    """(media type, base64 data) of a base64 data: URL, None for anything else."""
    if not url.startswith("data:"):
        return None
    head, comma, data = url[5:].partition(",")
    if not comma or not head.endswith(";base64"):
        return None
    return head[:-7] or None, data


def _image(url: str) -> Image:
    split = _split_data_url(url)
    if split is None:
        return Image(url=url)  # http(s), or a data: URL that is not base64, kept as given
    return Image(media_type=split[0], data=split[1])


def _document(file: FileIn, param: str) -> Document:
    if not file.file_data:
        raise Unsupported("Files uploaded to OpenAI (file_id) cannot be read by another "
                          "provider; send the file as file_data.", param)
    split = _split_data_url(file.file_data)
    if split is not None:
        return Document(media_type=split[0], data=split[1], title=file.filename)
    # Bare base64: Chat Completions takes only PDF files ("Chat Completions accepts only PDF
    # files as file content parts", OpenAI's file inputs guide).
    return Document(media_type="application/pdf", data=file.file_data, title=file.filename)


def _tools(req: ChatRequestIn) -> list[Tool]:
    tools: list[Tool] = []
    for i, tool in enumerate(req.tools or ()):
        if tool.type != "function" or tool.function is None:
            raise Unsupported(f"Tools of type {tool.type!r} cannot be translated to this model.",
                              f"tools[{i}]")
        fn = tool.function
        tools.append(Tool(fn.name, fn.description, fn.parameters))
    for fn in req.functions or ():
        tools.append(Tool(fn.name, fn.description, fn.parameters))
    return tools


def _tool_choice(req: ChatRequestIn, tools: list[Tool]) -> tuple[ToolChoice | None, list[Tool]]:
    choice = req.tool_choice if req.tool_choice is not None else req.function_call
    parallel = False if req.parallel_tool_calls is False else None
    mode: Literal["auto", "none", "required", "tool"] | None = None
    name: str | None = None
    match choice:
        case None:
            pass
        case "auto" | "none" | "required":
            mode = choice
        case NamedFunction(name=name) | ToolChoiceIn(type="function",
                                                     function=NamedFunction(name=name)):
            mode = "tool"
        case ToolChoiceIn(type="allowed_tools", allowed_tools=AllowedTools() as allowed) \
                if allowed.mode in ("auto", "required"):
            # Same meaning as listing only the allowed tools (OpenAI keeps the full list only
            # so that its prompt cache still hits).
            mode = "auto" if allowed.mode == "auto" else "required"
            keep = {t.function.name for t in allowed.tools if t.function is not None}
            tools = [t for t in tools if t.name in keep]
        case str():
            raise TranslationError(f"Invalid value for 'tool_choice': {choice!r}.", "tool_choice")
        case _:
            raise Unsupported("This tool_choice cannot be translated to this model.",
                              "tool_choice")
    if mode is None and parallel is None:
        return None, tools
    return ToolChoice(mode=mode or "auto", name=name, parallel=parallel), tools


def _response_format(req: ChatRequestIn) -> ResponseFormat | None:
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    if fmt.type == "json_schema" and fmt.json_schema is not None:
        spec = fmt.json_schema
        return ResponseFormat(type="json_schema", schema=spec.schema, name=spec.name,
                              strict=spec.strict)
    raise TranslationError(f"Invalid value for 'response_format.type': {fmt.type!r}.",
                           "response_format.type")


def _reasoning(req: ChatRequestIn) -> Reasoning | None:
    if req.reasoning_effort is not None:
        return _effort(req.reasoning_effort, "reasoning_effort")
    if req.reasoning is not None:  # OpenRouter's object
        r = req.reasoning
        if r.enabled is False or r.effort == "none":
            return Reasoning(enabled=False)
        base = _effort(r.effort, "reasoning.effort") if r.effort else Reasoning()
        return Reasoning(effort=base.effort, budget_tokens=r.max_tokens,
                         include_thoughts=not r.exclude)
    if req.thinking is not None:
        if req.thinking.type == "disabled":
            return Reasoning(enabled=False)
        return Reasoning(budget_tokens=req.thinking.budget_tokens)
    return None


def _effort(value: str, param: str) -> Reasoning:
    if value == "none":
        return Reasoning(enabled=False)
    effort = _EFFORTS.get(value)
    if effort is None:
        raise TranslationError(f"Invalid value for '{param}': {value!r}.", param)
    return Reasoning(effort=effort)


# --- provider side ----------------------------------------------------------------------------
# Choices:
# - The system prompt is one `system` message, its blocks joined by a blank line: DeepSeek and
#   many local servers' chat templates take a string system prompt and only one of them.
# - ToolResult blocks become `role: "tool"` messages, ahead of the rest of their user turn.
#   Tool messages hold text only (the SDK's type), so images and files a tool returned follow
#   in the user message after them. An error result has no flag in this dialect: its text is
#   prefixed "Error: " (unless it already says so) so the model still knows.
# - Thinking goes back as the assistant's `reasoning_content` when it is unsigned or came from
#   this dialect (DeepSeek's thinking mode answers 400 when the reasoning_content of a turn
#   with tool calls is not passed back; others ignore it). Thinking from another dialect is
#   dropped: its signature means nothing here.
# - Tool call ids are sent bare: provider_data (a Gemini thought signature) means nothing to an
#   OpenAI-dialect provider, and OpenAI refuses ids over 40 characters, which a packed
#   signature would exceed.
# - `max_tokens`, not `max_completion_tokens`: OpenAI deprecated it for o-series models, but
#   DeepSeek, Groq, DashScope, vLLM and Ollama document only `max_tokens`.
# - `reasoning_effort` from the effort, else from budget_tokens in buckets that invert
#   LiteLLM's effort -> budget table (minimal 128, low 1024, medium 2048, high 4096):
#   < 1024 minimal, < 2048 low, < 4096 medium, else high. Reasoning disabled sends nothing:
#   models without reasoning refuse the parameter outright.
# - A stream always asks for `stream_options.include_usage`: the gateway counts tokens.
# - `top_k` is sent when set: vLLM, OpenRouter and DashScope honour it; OpenAI refuses it with
#   its own 400, which reaches the caller translated.


def from_canonical_request(req: Request, *, model: str) -> bytes:
    messages: list[MessageOut] = []
    if req.system:
        messages.append(SystemOut("system", "\n\n".join(t.text for t in req.system)))
    for i, msg in enumerate(req.messages):
        if msg.role == "assistant":
            messages.append(_assistant_out(msg, i))
        else:
            _user_out(msg, i, messages)
    tools = [ToolOut(function=FunctionDefOut(t.name, t.description, t.parameters))
             for t in req.tools]
    tool_choice: str | NamedChoiceOut | None = None
    parallel = None
    if tools and req.tool_choice is not None:
        tc = req.tool_choice
        tool_choice = NamedChoiceOut(function=NamedFunction(tc.name or "")) \
            if tc.mode == "tool" else tc.mode
        parallel = False if tc.parallel is False else None
    out = ChatRequestOut(
        model=model,
        messages=messages,
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        stop=req.stop or None,
        seed=req.seed,
        tools=tools or None,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        response_format=_response_format_out(req.response_format),
        reasoning_effort=_effort_out(req.reasoning),
        stream=True if req.stream else None,
        stream_options=StreamOptionsOut() if req.stream else None,
    )
    return ENCODE.encode(out)


def _assistant_out(msg: Message, i: int) -> AssistantOut:
    texts: list[str] = []
    calls: list[ToolCallOut] = []
    reasoning: list[str] = []
    for j, block in enumerate(msg.content):
        match block:
            case Text(text=text):
                texts.append(text)
            case ToolCall():
                # An empty argument string is not JSON; servers that parse it would refuse it.
                args = block.arguments or "{}"
                calls.append(ToolCallOut(id=block.id,
                                         function=FunctionOut(block.name, args)))
            case Thinking(text=text, source=None | "openai") if text:
                reasoning.append(text)
            case Thinking():
                pass
            case _:
                raise Unsupported("An assistant message here holds text and tool calls only.",
                                  f"messages[{i}].content[{j}]")
    content = "".join(texts) if texts else (None if calls else "")
    return AssistantOut("assistant", content, calls or None, "".join(reasoning) or None)


def _user_out(msg: Message, i: int, out: list[MessageOut]) -> None:
    parts: list[wire.PartOut] = []
    for j, block in enumerate(msg.content):
        param = f"messages[{i}].content[{j}]"
        match block:
            case Text(text=text):
                parts.append(TextPartOut(text))
            case Image() | Document():
                parts.append(_media_out(block, param))
            case ToolResult():
                texts = []
                for k, item in enumerate(block.content):
                    if isinstance(item, Text) or (isinstance(item, Document) and item.text):
                        texts.append(item.text or "")
                    else:
                        parts.append(_media_out(item, f"{param}.content[{k}]"))
                text = "".join(texts)
                if block.is_error and text[:5].lower() != "error":
                    text = f"Error: {text}"
                out.append(ToolMessageOut("tool", block.call_id, text))
            case Thinking():
                pass
            case ToolCall():
                raise TranslationError("A tool call cannot stand in a user turn.", param)
    if len(parts) == 1 and isinstance(parts[0], TextPartOut):
        out.append(UserOut("user", parts[0].text))
    elif parts:
        out.append(UserOut("user", parts))


def _media_out(block: Image | Document, param: str) -> wire.PartOut:
    if isinstance(block, Image):
        if block.data is not None:
            media = block.media_type or "image/png"
            return ImagePartOut(ImageURLOut(f"data:{media};base64,{block.data}"))
        if block.url is not None:
            return ImagePartOut(ImageURLOut(block.url))
        raise TranslationError("An image needs data or a URL.", param)
    if block.text is not None:
        return TextPartOut(block.text)  # plain-text documents are text to this dialect
    if block.data is None:
        raise Unsupported("OpenAI Chat Completions takes files as base64 data only "
                          "(file URLs are not supported); send the file's data.", param)
    media = block.media_type or "application/pdf"
    if media.startswith("text/"):
        try:
            return TextPartOut(base64.b64decode(block.data, validate=True).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError):
            pass
    name = block.title or ("document.pdf" if media == "application/pdf" else "document")
    return FilePartOut(FileOut(name, f"data:{media};base64,{block.data}"))


def _response_format_out(fmt: ResponseFormat | None) -> ResponseFormatOut | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormatOut("json_object")
    # `name` is required by OpenAI (^[a-zA-Z0-9_-]{1,64}$); Gemini's schemas have none.
    return ResponseFormatOut("json_schema", JSONSchemaOut(fmt.name or "response", fmt.schema,
                                                          fmt.strict))


def _effort_out(reasoning: Reasoning | None) -> str | None:
    if reasoning is None or not reasoning.enabled:
        return None
    if reasoning.effort is not None:
        return reasoning.effort
    budget = reasoning.budget_tokens
    if budget is None:
        return None
    if budget < 1024:
        return "minimal"
    if budget < 2048:
        return "low"
    return "medium" if budget < 4096 else "high"
