"""Anthropic content blocks both ways: a caller's blocks -> canonical, canonical -> a provider's.

Caller side: text, images and documents (base64, url, plain text, text content), tool_use,
tool_result (string or blocks, `is_error`), thinking (with the source its signature names) and
redacted_thinking are mapped; `search_result` becomes text with its title and source; citations
and `cache_control` are dropped. Blocks of Anthropic's server tools and Files API ids mean
nothing to another provider and are refused (`Unsupported`) by their path.

Provider side: turns as the API takes them ("all messages must have non-empty content", "text
content blocks must contain non-whitespace text", tool_result blocks first in the user turn
right after the calls, consecutive same-role turns merged as the API itself merges them), with
only Anthropic-signed thinking echoed back.

Paths such as `messages.3.content.1` are built only when an error needs one: formatting one per
block costs about as much as translating a text block.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

import msgspec

from adapters import canonical
from adapters.anthropic import wire
from adapters.canonical import TranslationError, Unsupported

__all__ = ["KNOWN_BLOCKS", "blocks_to_canonical", "turns_from_canonical", "unsupported_block"]

_DIALECTS: dict[str, canonical.Dialect] = {"anthropic": "anthropic", "openai": "openai",
                                           "gemini": "gemini"}
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# The first bytes of each accepted image type, base64-encoded: a media type for base64 data that
# came without one (the API requires it).
_IMAGE_MAGIC = (("/9j/", "image/jpeg"), ("iVBORw0KGgo", "image/png"), ("R0lGOD", "image/gif"),
                ("UklGR", "image/webp"))
# tool_use ids: "String should match pattern '^[a-zA-Z0-9_-]+$'".
_BAD_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


# --- caller side -------------------------------------------------------------------------------

KNOWN_BLOCKS = frozenset({"text", "image", "document", "search_result", "tool_use",
                          "tool_result", "thinking", "redacted_thinking"})


def blocks_to_canonical(content: str | list[wire.Block], i: int) -> list[canonical.Block]:
    if isinstance(content, str):
        return [canonical.Text(content)] if content else []
    return [_block(block, i, j) for j, block in enumerate(content)]


def _block(b: wire.Block, i: int, j: int) -> canonical.Block:
    match b.type:
        case "text":
            return canonical.Text(b.text or "")
        case "tool_use":
            call_id, data = canonical.unpack_call_id(b.id or "")
            return canonical.ToolCall(call_id, b.name or "", bytes(b.input).decode(), data)
        case "tool_result":
            return canonical.ToolResult(canonical.unpack_call_id(b.tool_use_id or "")[0],
                                        _result_content(b.content, i, j), b.is_error)
        case "thinking":
            source, signature = wire.unpack_signature(b.signature or "")
            return canonical.Thinking(b.thinking or "", signature, _DIALECTS.get(source or ""))
        case "redacted_thinking":
            return canonical.Thinking(redacted=b.data or "", source="anthropic")
        case "image" | "document" | "search_result":
            return _media(b, f"messages.{i}.content.{j}")
        case _:
            raise unsupported_block(b.type, f"messages.{i}.content.{j}")


def unsupported_block(kind: str, path: str) -> Unsupported:
    return Unsupported(f"{path}: `{kind}` blocks come from Anthropic's server tools or files "
                       "and cannot be sent to this model's provider", param=path)


def _media(b: wire.Block, path: str) -> canonical.Text | canonical.Image | canonical.Document:
    match b.type:
        case "image":
            return _image(b.source, path)
        case "document":
            return _document(b, path)
        case _:  # search_result: a text the caller retrieved, with where it came from
            source = b.source if isinstance(b.source, str) else ""
            content = b.content or []
            texts = [content] if isinstance(content, str) else [c.text or "" for c in content]
            head = "\n".join(t for t in (b.title, source) if t)
            return canonical.Text("\n\n".join([head, *texts]) if head else "\n\n".join(texts))


def _result_content(content: str | list[wire.Block] | None, i: int, j: int
                    ) -> list[canonical.Text | canonical.Image | canonical.Document]:
    if not content:
        return []
    if isinstance(content, str):
        return [canonical.Text(content)]
    out: list[canonical.Text | canonical.Image | canonical.Document] = []
    for k, b in enumerate(content):
        if b.type == "text":
            out.append(canonical.Text(b.text or ""))
        elif b.type in ("image", "document", "search_result"):
            out.append(_media(b, f"messages.{i}.content.{j}.content.{k}"))
        else:
            raise unsupported_block(b.type, f"messages.{i}.content.{j}.content.{k}")
    return out


def _image(source: wire.Source | str | None, path: str) -> canonical.Image:
    match source:
        case wire.Source(type="base64"):
            return canonical.Image(media_type=source.media_type, data=source.data or "")
        case wire.Source(type="url"):
            return canonical.Image(url=source.url or "")
        case _:
            raise _bad_source(source, path)


def _document(b: wire.Block, path: str) -> canonical.Document:
    match source := b.source:
        case wire.Source(type="base64"):
            return canonical.Document(media_type=source.media_type or "application/pdf",
                                      data=source.data or "", title=b.title)
        case wire.Source(type="text"):
            return canonical.Document(media_type=source.media_type or "text/plain",
                                      text=source.data or "", title=b.title)
        case wire.Source(type="url"):  # URLPDFSource: a URL document is a PDF
            return canonical.Document(media_type="application/pdf", url=source.url or "",
                                      title=b.title)
        case wire.Source(type="content", content=str() as text):
            return canonical.Document(media_type="text/plain", text=text, title=b.title)
        case wire.Source(type="content", content=list() as parts) if all(
                c.type == "text" for c in parts):
            return canonical.Document(media_type="text/plain", title=b.title,
                                      text="\n".join(c.text or "" for c in parts))
        case _:
            raise _bad_source(source, path)


def _bad_source(source: wire.Source | str | None, path: str) -> TranslationError:
    path += ".source"
    if not isinstance(source, wire.Source):
        return TranslationError(f"{path}: a source object is required", path)
    if source.type == "file":
        return Unsupported(f"{path}: a `file_id` names a file in Anthropic's Files API, which "
                           "this model's provider cannot read; send it inline or by url", path)
    return Unsupported(f"{path}: a `{source.type}` source cannot be sent to this model's "
                       "provider", path)



# --- provider side -----------------------------------------------------------------------------


def turns_from_canonical(messages: Sequence[canonical.Message]) -> list[wire.OutMessage]:
    out: list[wire.OutMessage] = []
    for i, m in enumerate(messages):
        blocks = [ob for j, b in enumerate(m.content) if (ob := _out_block(b, i, j)) is not None]
        if not blocks:
            continue  # "all messages must have non-empty content"
        if out and out[-1].role == m.role:
            out[-1].content.extend(blocks)
        else:
            out.append(wire.OutMessage(m.role, blocks))
    for turn in out:
        if turn.role == "user":
            _results_first(turn.content)
    return out


def _results_first(blocks: list[wire.OutBlock]) -> None:
    """Move tool_result blocks ahead of the others, keeping each group's order."""
    seen_other = False
    for b in blocks:
        if not isinstance(b, wire.OutToolResult):
            seen_other = True
        elif seen_other:
            blocks.sort(key=lambda x: not isinstance(x, wire.OutToolResult))  # stable
            return


def _out_block(b: canonical.Block, i: int, j: int) -> wire.OutBlock | None:
    match b:
        case canonical.Text(text=text):
            return wire.OutText(text) if text and not text.isspace() else None
        case canonical.ToolResult():
            return wire.OutToolResult(_tool_id(b.call_id), _out_result(b.content, i, j),
                                      b.is_error)
        case canonical.ToolCall():
            return wire.OutToolUse(_tool_id(b.id), b.name, _arguments(b.arguments, i, j))
        case canonical.Thinking():
            # A signature is only valid where it was made: thinking from another dialect is
            # dropped, as is unsigned thinking (the API requires the signature).
            if b.source is not None and b.source != "anthropic":
                return None
            if b.redacted is not None:
                return wire.OutRedacted(b.redacted)
            return wire.OutThinking(b.text, b.signature) if b.signature else None
        case _:
            return _out_media(b, f"messages.{i}.content.{j}")


def _out_result(content: list[canonical.Text | canonical.Image | canonical.Document], i: int,
                j: int) -> list[wire.OutText | wire.OutImage | wire.OutDocument] | None:
    out: list[wire.OutText | wire.OutImage | wire.OutDocument] = []
    for k, c in enumerate(content):
        if isinstance(c, canonical.Text):
            if c.text and not c.text.isspace():
                out.append(wire.OutText(c.text))
        elif (ob := _out_media(c, f"messages.{i}.content.{j}.content.{k}")) is not None:
            out.append(ob)
    return out or None


def _out_media(b: canonical.Block, path: str
               ) -> wire.OutText | wire.OutImage | wire.OutDocument | None:
    match b:
        case canonical.Text(text=text):
            return wire.OutText(text) if text and not text.isspace() else None
        case canonical.Image():
            return wire.OutImage(_image_source(b, path))
        case canonical.Document():
            return wire.OutDocument(_document_source(b, path), b.title)
        case _:
            raise TranslationError(f"{path}: a tool result holds text, images and documents "
                                   "only", path)


def _tool_id(call_id: str) -> str:
    if not call_id:
        return "toolu_none"
    return _BAD_ID_CHARS.sub("_", call_id) if _BAD_ID_CHARS.search(call_id) else call_id


def _arguments(arguments: str, i: int, j: int) -> msgspec.Raw:
    """The call's JSON arguments as the `input` object, passed through undecoded once checked:
    the API requires an object, and a body with invalid JSON in it would be refused whole."""
    text = arguments.strip() or "{}"
    try:
        raw = wire.RAW.decode(text)
    except msgspec.DecodeError:
        raw = None
    if raw is None or text[0] != "{":
        path = f"messages.{i}.content.{j}"
        raise TranslationError(f"{path}: the tool call's arguments must be a JSON object",
                               path) from None
    return raw


def _image_source(img: canonical.Image, path: str) -> wire.OutSource:
    if img.data is not None:
        return _base64_image(img.media_type, img.data, path)
    url = img.url or ""
    if url.startswith("data:"):
        media_type, data = _data_url(url, path)
        return _base64_image(media_type, data, path)
    if url.startswith(("https://", "http://")):
        return wire.OutSource("url", url=url)
    raise Unsupported(f"{path}: Anthropic takes images as base64 or http(s) URLs", param=path)


def _base64_image(media_type: str | None, data: str, path: str) -> wire.OutSource:
    if media_type is None:
        media_type = next((t for magic, t in _IMAGE_MAGIC if data.startswith(magic)), None)
    if media_type not in _IMAGE_TYPES:
        raise Unsupported(f"{path}: Anthropic reads JPEG, PNG, GIF and WebP images, not "
                          f"{media_type or 'this format'}", param=path)
    return wire.OutSource("base64", media_type, data)


def _document_source(doc: canonical.Document, path: str) -> wire.OutSource:
    if doc.text is not None:
        return wire.OutSource("text", "text/plain", doc.text)
    media_type, data, url = doc.media_type, doc.data, doc.url or ""
    if data is None and url.startswith("data:"):
        media_type, data = _data_url(url, path)
    if data is not None:
        media_type = media_type or "application/pdf"
        if media_type == "application/pdf":
            return wire.OutSource("base64", media_type, data)
        if media_type.startswith("text/"):
            try:
                text = base64.b64decode(data, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise TranslationError(f"{path}: the document is not base64 UTF-8 text",
                                       path) from None
            return wire.OutSource("text", "text/plain", text)
        raise Unsupported(f"{path}: Anthropic reads documents as PDF or plain text, not "
                          f"{media_type}", param=path)
    if url.startswith(("https://", "http://")):
        return wire.OutSource("url", url=url)
    raise TranslationError(f"{path}: a document needs data, text or an http(s) URL", path)


def _data_url(url: str, path: str) -> tuple[str, str]:
    """`data:<media type>;base64,<data>` -> (media type, data)."""
    head, comma, data = url.partition(",")
    if not comma or not head.endswith(";base64"):
        raise Unsupported(f"{path}: only base64 data: URLs can be sent to Anthropic", param=path)
    return head[5:-7], data

