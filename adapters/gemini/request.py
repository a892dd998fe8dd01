"""Gemini `generateContent` requests <-> canonical `Request`.

Caller side (`to_canonical_request`); the model and stream come from the URL. Tool call ids:
Gemini pairs a `functionResponse` with its `functionCall` by name and order, and only newer
models send an `id`, while canonical tool results need the call's id. So:
- a `functionCall` without `id` gets `synth_id(content index, call slot, name)`: it depends only
  on the call's place in the history, so each later request repeating that history names it
  the same way;
- a `functionResponse` pairs with the call of the preceding model turn that has its `id`; else
  with the first call of that turn with the same name not answered yet; else with the first
  call not answered yet; and takes that call's id. With no call to answer it keeps its own
  `id`, or gets `synth_id(content index, part index, name)`.
`safetySettings`, `cachedContent`, `labels`, penalties and logprob counts are dropped quietly;
what no other provider can do (several candidates, non-text output modalities, Gemini's own
tools, audio/video parts) is `Unsupported`, naming the field.

Provider side (`from_canonical_request`): roles user/model; consecutive turns of one role
merged (Gemini wants a function-call turn right after a user or function-response turn), tool
results first in their user turn as `functionResponse` parts named after their call (Gemini
matches by name); thinking from another dialect dropped; tool schemas as `parameters` when
they fit Gemini's subset, else as `parametersJsonSchema` (schema.py).
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any, Literal
from urllib.parse import quote

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
from adapters.gemini import schema as gschema
from adapters.gemini import wire
from adapters.gemini.response import (
    call_part,
    media_block,
    media_part,
    model_blocks,
    other_block,
    synth_id,
)
from adapters.gemini.wire import (
    Blob,
    Content,
    FileData,
    FunctionCallingConfig,
    FunctionResponse,
    FunctionResponsePart,
    GenerationConfig,
    OutFunctionDeclaration,
    OutRequest,
    OutTool,
    Part,
    ThinkingConfig,
    ToolConfig,
    pick,
)

__all__ = ["SKIP_SIGNATURE", "from_canonical_request", "request_path", "to_canonical_request"]

Effort = Literal["minimal", "low", "medium", "high"]
_LEVELS: dict[str, Effort] = {"MINIMAL": "minimal", "LOW": "low", "MEDIUM": "medium",
                              "HIGH": "high", "XHIGH": "high"}
_NO_CONFIG = GenerationConfig()
_DECLARATIONS = ("functionDeclarations", "function_declarations")
_AT = re.compile(r"at `\$\.?([^`]*)`")


# --- caller side: a Gemini request -> canonical ------------------------------------------------


def to_canonical_request(body: bytes, *, model: str | None = None,
                         stream: bool | None = None) -> Request:
    try:
        req = wire.REQUEST.decode(body)
    except msgspec.DecodeError as exc:
        at = _AT.search(str(exc))
        raise TranslationError(f"Invalid JSON payload received. {exc}",
                               at.group(1) if at else None) from None
    name = model or (req.model or "").removeprefix("models/")
    if not name:
        raise TranslationError("The model is named in the path: models/{model}:generateContent",
                               "model")
    tools, choice = _tools(req.tools, pick(req.tool_config, req.tool_config_))
    config = pick(req.generation_config, req.generation_config_) or _NO_CONFIG
    return Request(
        model=name,
        messages=_messages(req.contents),
        system=_system(pick(req.system_instruction, req.system_instruction_)),
        stream=bool(stream),
        tools=tools,
        tool_choice=choice,
        # Gemini streams always carry usageMetadata, and its clients read it.
        stream_usage=True,
        **_config(config),
    )


def _system(content: Content | None) -> list[Text]:
    out: list[Text] = []
    for j, part in enumerate(content.parts or () if content else ()):
        if part.text is None:
            raise Unsupported("Only text can be carried in a system instruction.",
                              f"systemInstruction.parts[{j}]")
        if part.text and not part.thought:
            out.append(Text(part.text))
    return out


def _messages(contents: list[Content]) -> list[Message]:
    out: list[Message] = []
    pending: list[list[Any]] = []  # [id, name, answered] per call of the last model turn
    for i, content in enumerate(contents):
        role = content.role or "user"
        if role == "model":
            blocks, _ = model_blocks(content.parts, partial(synth_id, i), f"contents[{i}].parts")
            pending = [[b.id, b.name, False] for b in blocks if isinstance(b, ToolCall)]
            if blocks:
                out.append(Message("assistant", blocks))
        elif role in ("user", "function"):  # "function": the v1beta role of old for results
            blocks = _user_blocks(content.parts, i, pending)
            if blocks:
                out.append(Message("user", blocks))
        else:
            raise TranslationError("Please use a valid role: user, model.",
                                   f"contents[{i}].role")
    return out


def _user_blocks(parts: list[Part] | None, i: int, pending: list[list[Any]]) -> list[Block]:
    blocks: list[Block] = []
    for j, part in enumerate(parts or ()):
        param = f"contents[{i}].parts[{j}]"
        result = pick(part.function_response, part.function_response_)
        if result is not None:
            blocks.append(_tool_result(result, pending, (i, j), param))
        elif pick(part.function_call, part.function_call_) is not None:
            raise TranslationError("A functionCall part belongs in a model turn.", param)
        elif part.text is not None:
            if part.text and not part.thought:
                blocks.append(Text(part.text))
        elif (block := other_block(part, param)) is not None:
            blocks.append(block)
    return blocks


def _tool_result(fr: FunctionResponse, pending: list[list[Any]], at: tuple[int, int],
                 param: str) -> ToolResult:
    call_id = _answer(pending, fr.id, fr.name) or synth_id(*at, fr.name)
    response = fr.response or {}
    # The documented convention: "output" holds the result, "error" the failure; any other
    # object is the output as a whole.
    is_error = "error" in response and "output" not in response
    if len(response) == 1 and ("output" in response or is_error):
        value = next(iter(response.values()))
        text = value if isinstance(value, str) else wire.ENCODER.encode(value).decode()
    else:
        text = wire.ENCODER.encode(response).decode() if response else ""
    content: list[Text | Image | Document] = [Text(text)] if text else []
    for k, media in enumerate(fr.parts or ()):
        blob = pick(media.inline_data, media.inline_data_)
        file = pick(media.file_data, media.file_data_)
        if blob is not None or file is not None:
            content.append(media_block(blob, file, f"{param}.functionResponse.parts[{k}]"))
    return ToolResult(call_id, content, is_error, fr.name or None)


def _answer(pending: list[list[Any]], call_id: str | None, name: str) -> str | None:
    """The id of the call this response answers, marking that call answered. A response id
    that names no call of the turn is not trusted: Gemini CLI mints its own ids for calls the
    model sent without one, and the call in its history keeps having none."""
    for entry in pending:
        if not entry[2] and call_id and entry[0] == call_id:
            entry[2] = True
            return call_id
    for entry in pending:
        if not entry[2] and entry[1] == name:
            entry[2] = True
            return str(entry[0])
    for entry in pending:
        if not entry[2]:
            entry[2] = True
            return str(entry[0])
    return call_id


def _tools(raw: list[dict[str, Any]] | None, config: ToolConfig | None
           ) -> tuple[list[Tool], ToolChoice | None]:
    tools: list[Tool] = []
    for i, tool in enumerate(raw or ()):
        for key, value in tool.items():
            if key in _DECLARATIONS:
                for d, decl in enumerate(value or ()):
                    tools.append(_tool(decl, f"tools[{i}].functionDeclarations[{d}]"))
            elif value is not None:
                raise Unsupported(f"Gemini's built-in tool '{key}' has no equivalent on this "
                                  "model; declare it as a function instead.", f"tools[{i}].{key}")
    fcc = pick(config.function_calling_config, config.function_calling_config_) if config else None
    if fcc is None:
        return tools, None
    names = pick(fcc.allowed_function_names, fcc.allowed_function_names_)
    match (fcc.mode or "AUTO").upper():
        case "NONE":
            return tools, ToolChoice("none")
        case "ANY" if names and len(names) == 1:
            return tools, ToolChoice("tool", names[0])
        case "ANY" if names:
            # Several allowed functions: no canonical choice names a subset, so the tools
            # offered are cut to that subset, which means the same to the model.
            return [t for t in tools if t.name in names], ToolChoice("required")
        case "ANY":
            return tools, ToolChoice("required")
        case "AUTO" | "VALIDATED" | "MODE_UNSPECIFIED":
            return tools, ToolChoice("auto")
    raise TranslationError(f"Invalid function calling mode {fcc.mode!r}.",
                           "toolConfig.functionCallingConfig.mode")


def _tool(decl: Any, param: str) -> Tool:
    if not isinstance(decl, dict) or not isinstance(decl.get("name"), str):
        raise TranslationError("A function declaration needs a name.", param)
    schema = decl.get("parametersJsonSchema", decl.get("parameters_json_schema"))
    if schema is None and decl.get("parameters") is not None:
        schema = gschema.from_gemini_schema(decl["parameters"])
    description = decl.get("description")
    return Tool(decl["name"], description if isinstance(description, str) else None,
                schema if isinstance(schema, dict) else None)


def _config(c: GenerationConfig) -> dict[str, Any]:
    count = pick(c.candidate_count, c.candidate_count_)
    if count is not None and count > 1:
        raise Unsupported("Only one candidate can be generated through this gateway.",
                          "generationConfig.candidateCount")
    modalities = pick(c.response_modalities, c.response_modalities_)
    if modalities and any(m.upper() != "TEXT" for m in modalities):
        raise Unsupported("Only text output can be generated by this model.",
                          "generationConfig.responseModalities")
    if pick(c.response_logprobs, c.response_logprobs_):
        raise Unsupported("Log probabilities cannot be carried to this model.",
                          "generationConfig.responseLogprobs")
    top_k = pick(c.top_k, c.top_k_)
    return {
        "max_tokens": pick(c.max_output_tokens, c.max_output_tokens_),
        "temperature": c.temperature,
        "top_p": pick(c.top_p, c.top_p_),
        "top_k": int(top_k) if top_k is not None else None,
        "stop": pick(c.stop_sequences, c.stop_sequences_) or [],
        "seed": c.seed,
        "response_format": _format(c),
        "reasoning": _reasoning(pick(c.thinking_config, c.thinking_config_)),
    }


def _format(c: GenerationConfig) -> ResponseFormat | None:
    mime = pick(c.response_mime_type, c.response_mime_type_)
    if mime is None or mime == "text/plain":
        return None
    if mime != "application/json":
        raise Unsupported(f"responseMimeType '{mime}' cannot be carried to this model.",
                          "generationConfig.responseMimeType")
    schema = pick(c.response_json_schema, c.response_json_schema_)
    if isinstance(schema, dict):
        schema = gschema.lower_types(schema)
    else:
        gemini_schema = pick(c.response_schema, c.response_schema_)
        schema = gschema.from_gemini_schema(gemini_schema) if gemini_schema else None
    if schema is None:
        return ResponseFormat("json_object")
    return ResponseFormat("json_schema", schema, name="response")


def _reasoning(tc: ThinkingConfig | None) -> Reasoning | None:
    if tc is None:
        return None
    budget = pick(tc.thinking_budget, tc.thinking_budget_)
    level = pick(tc.thinking_level, tc.thinking_level_)
    include = bool(pick(tc.include_thoughts, tc.include_thoughts_))
    if budget == 0:
        return Reasoning(enabled=False, include_thoughts=False)
    # -1 is "dynamic": thinking on, the amount left to the model.
    return Reasoning(budget_tokens=budget if budget and budget > 0 else None,
                     effort=_LEVELS.get(level.upper()) if level else None,
                     include_thoughts=include)


# --- provider side: canonical -> a Gemini request ----------------------------------------------

# Google's documented stand-in for a thought signature on function calls Gemini did not make
# (history from another model): Gemini 3 refuses a current-turn step whose first functionCall
# part carries no signature (ai.google.dev/gemini-api/docs/thought-signatures).
SKIP_SIGNATURE = "skip_thought_signature_validator"
_FILES_API = "https://generativelanguage.googleapis.com/"
_MAX_STOP = 5  # "at most 5 stop sequences" (GenerationConfig.stopSequences)
# Gemini 2.x takes thinkingBudget and refuses thinkingLevel; these budgets stand for an effort.
_EFFORT_BUDGET = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
_GENERATION = re.compile(r"gemini-(\d+)")


def request_path(*, model: str, stream: bool) -> bytes:
    name = quote(model.removeprefix("models/"), safe="-._~")
    if stream:
        return f"/v1beta/models/{name}:streamGenerateContent?alt=sse".encode()
    return f"/v1beta/models/{name}:generateContent".encode()


def from_canonical_request(req: Request, *, model: str) -> bytes:
    out = OutRequest(
        contents=_contents(req.messages),
        system_instruction=_system_content(req.system),
        tools=[OutTool([_declaration(t) for t in req.tools])] if req.tools else None,
        tool_config=_tool_config(req),
        generation_config=_generation_config(req, model),
    )
    return wire.ENCODER.encode(out)


def _system_content(system: list[Text]) -> Content | None:
    parts = [Part(text=t.text) for t in system if t.text]
    return Content(parts=parts) if parts else None


def _contents(messages: list[Message]) -> list[Content]:
    names: dict[str, str] = {}  # tool call id (packed and bare) -> function name
    contents: list[Content] = []
    for i, msg in enumerate(messages):
        if msg.role == "assistant":
            role, parts = "model", _model_parts(msg.content, i, names)
        else:
            role, parts = "user", _user_parts(msg.content, i, names)
        if not parts:
            continue
        last = contents[-1] if contents else None
        if last is not None and last.role == role and last.parts is not None:
            last.parts.extend(parts)
        else:
            contents.append(Content(role=role, parts=parts))
    for content in contents:
        if content.role == "user" and content.parts:
            # Function responses first: Gemini wants them right after the call turn.
            content.parts.sort(key=lambda p: p.function_response is None)
    _sign_current_turn(contents)
    return contents


def _model_parts(blocks: list[Block], i: int, names: dict[str, str]) -> list[Part]:
    parts: list[Part] = []
    loose: str | None = None  # a signature-only thinking block's signature, not yet placed
    for j, block in enumerate(blocks):
        part: Part | None = None
        match block:
            case Text(text=text):
                part = Part(text=text) if text else None
            case Thinking(source="gemini" | None):
                if block.text:
                    part = Part(text=block.text, thought=True, thought_signature=block.signature)
                elif block.signature and not _sign_last(parts, block.signature):
                    loose = block.signature
            case ToolCall():
                part = _call(block, names)
            case Image() | Document():
                part = _media(block, f"messages[{i}].content[{j}]")
            case ToolResult():
                raise TranslationError("A tool result belongs in a user turn.",
                                       f"messages[{i}].content[{j}]")
        if part is not None:
            if loose and not part.thought and part.thought_signature is None:
                part.thought_signature, loose = loose, None
            parts.append(part)
    return parts


def _sign_last(parts: list[Part], signature: str) -> bool:
    """Put a signature back on the part it came from: the last one, if it has none."""
    if parts and not parts[-1].thought and parts[-1].thought_signature is None:
        parts[-1].thought_signature = signature
        return True
    return False


def _call(block: ToolCall, names: dict[str, str]) -> Part:
    base, packed = unpack_call_id(block.id)
    names[block.id] = names[base] = block.name
    return call_part(ToolCall(base, block.name, block.arguments, block.provider_data or packed))


def _user_parts(blocks: list[Block], i: int, names: dict[str, str]) -> list[Part]:
    parts: list[Part] = []
    for j, block in enumerate(blocks):
        param = f"messages[{i}].content[{j}]"
        match block:
            case Text(text=text):
                if text:
                    parts.append(Part(text=text))
            case Image() | Document():
                parts.append(_media(block, param))
            case ToolResult():
                parts.append(_function_response(block, names, param))
            case ToolCall():
                raise TranslationError("A tool call belongs in an assistant turn.", param)
    return parts


def _media(block: Image | Document, param: str) -> Part:
    if block.data is not None or (isinstance(block, Document) and block.text is not None):
        part = media_part(block)
        if isinstance(block, Document) and block.title and part.text is not None:
            part.text = f"{block.title}\n\n{part.text}"
        return part
    url = block.url or ""
    if url.startswith("data:"):
        mime, data = _data_url(url, param)
        return Part(inline_data=Blob(mime_type=block.media_type or mime, data=data))
    if url.startswith(_FILES_API):
        return Part(file_data=FileData(mime_type=block.media_type, file_uri=url))
    raise Unsupported("Gemini takes images and documents as base64 data or as files uploaded "
                      "to its Files API, and this gateway does not fetch URLs: send the "
                      "content as base64.", param)


def _data_url(url: str, param: str) -> tuple[str, str]:
    header, _, data = url[5:].partition(",")
    if not header.endswith(";base64"):
        raise Unsupported("Only base64 data: URLs can be carried to Gemini.", param)
    return header[:-7] or "application/octet-stream", data


def _function_response(block: ToolResult, names: dict[str, str], param: str) -> Part:
    base, _ = unpack_call_id(block.call_id)
    name = block.name or names.get(block.call_id) or names.get(base)
    if not name:
        raise TranslationError(f"The tool result for call '{base}' answers no tool call in "
                               "the conversation, and Gemini needs the function's name.", param)
    texts: list[str] = []
    media: list[FunctionResponsePart] = []
    for k, item in enumerate(block.content):
        match item:
            case Text(text=text) | Document(data=None, text=str(text)):
                texts.append(text)
            case _:
                part = _media(item, f"{param}.content[{k}]")
                media.append(FunctionResponsePart(inline_data=part.inline_data,
                                                  file_data=part.file_data))
    text = "\n".join(texts)
    response = {"error": text} if block.is_error else {"output": text}
    return Part(function_response=FunctionResponse(name=name, response=response, id=base,
                                                   parts=media or None))


def _sign_current_turn(contents: list[Content]) -> None:
    """Give the first functionCall part of each model step of the current turn a signature if
    it has none. Gemini starts the turn at the last user turn with standard content; a turn
    mixing text with function responses is counted as a step here, to be safe both ways."""
    start = 0
    for k, content in enumerate(contents):
        if content.role == "user" and all(p.function_response is None
                                          for p in content.parts or ()):
            start = k
    for content in contents[start:]:
        if content.role != "model":
            continue
        for part in content.parts or ():
            if part.function_call is not None:
                if part.thought_signature is None:
                    part.thought_signature = SKIP_SIGNATURE
                break


def _declaration(tool: Tool) -> OutFunctionDeclaration:
    params = tool.parameters
    if params is None or gschema.object_without_properties(params):
        return OutFunctionDeclaration(tool.name, tool.description)
    cleaned = gschema.to_gemini_schema(params)
    if cleaned is not None and cleaned.get("type") == "OBJECT":
        return OutFunctionDeclaration(tool.name, tool.description, parameters=cleaned)
    return OutFunctionDeclaration(tool.name, tool.description,
                                  parameters_json_schema=gschema.without_meta(params))


def _tool_config(req: Request) -> ToolConfig | None:
    choice = req.tool_choice
    if choice is None or not req.tools:
        return None  # parallel=False has no Gemini spelling; Gemini decides per turn
    match choice.mode:
        case "none":
            fcc = FunctionCallingConfig(mode="NONE")
        case "required":
            fcc = FunctionCallingConfig(mode="ANY")
        case "tool":
            fcc = FunctionCallingConfig(mode="ANY", allowed_function_names=[choice.name or ""])
        case _:
            fcc = FunctionCallingConfig(mode="AUTO")
    return ToolConfig(function_calling_config=fcc)


def _generation_config(req: Request, model: str) -> GenerationConfig | None:
    if len(req.stop) > _MAX_STOP:
        raise Unsupported(f"Gemini takes at most {_MAX_STOP} stop sequences.", "stop")
    config = GenerationConfig(
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        max_output_tokens=req.max_tokens,
        stop_sequences=req.stop or None,
        seed=req.seed,
        thinking_config=_thinking(req.reasoning, model),
    )
    fmt = req.response_format
    if fmt is not None and fmt.type != "text":
        config.response_mime_type = "application/json"
        if fmt.type == "json_schema" and fmt.schema:
            cleaned = gschema.to_gemini_schema(fmt.schema)
            if cleaned is not None:
                config.response_schema = cleaned
            else:
                config.response_json_schema = gschema.without_meta(fmt.schema)
    return None if config == _NO_CONFIG else config


def _thinking(r: Reasoning | None, model: str) -> ThinkingConfig | None:
    """Gemini 3 and later take thinkingLevel; 2.x (and names we cannot date) take
    thinkingBudget, which Gemini 3 also accepts. Never both: that is a 400."""
    if r is None:
        return None
    generation = _GENERATION.search(model)
    leveled = generation is not None and int(generation.group(1)) >= 3
    if not r.enabled:
        # Gemini 3 cannot turn thinking off; "low" is the least every Gemini 3 model takes.
        return ThinkingConfig(thinking_level="LOW") if leveled else ThinkingConfig(
            thinking_budget=0)
    include = True if r.include_thoughts else None
    if r.budget_tokens is not None:
        return ThinkingConfig(include_thoughts=include, thinking_budget=r.budget_tokens)
    if r.effort is not None:
        if leveled:
            return ThinkingConfig(include_thoughts=include, thinking_level=r.effort.upper())
        return ThinkingConfig(include_thoughts=include,
                              thinking_budget=_EFFORT_BUDGET[r.effort])
    return ThinkingConfig(include_thoughts=include) if include else None
