"""JSON Schema <-> Gemini's `Schema`, the OpenAPI 3.0 subset that `parameters` and
`responseSchema` take.

Gemini has two ways to receive a schema:
- `parameters` / `responseSchema`: a `Schema` message (generativelanguage v1beta `Schema`:
  type, format, title, description, nullable, enum, properties, required, propertyOrdering,
  items, minItems, maxItems, minLength, maxLength, pattern, minProperties, maxProperties,
  minimum, maximum, anyOf, example, default). The API parses it as proto JSON, so a name it does
  not know is a 400 (`Unknown name "additionalProperties" at 'tools[0].function_declarations[0]
  .parameters': Cannot find field.`), and `type` is one enum value, never a list.
- `parametersJsonSchema` / `responseJsonSchema`: plain JSON Schema, `$ref`/`$defs`, `anyOf`,
  `additionalProperties` included.

`to_gemini_schema` converts a JSON Schema into the subset when that loses no constraint (it
resolves `$ref`s, turns `["string", "null"]` into `nullable`, drops annotations such as
`$schema`, `examples`, `default`, `additionalProperties: false`), and answers None when it
would: the request encoder then sends the schema as JSON Schema instead. `default` is dropped
although the current `Schema` message lists it: older v1beta deployments refused it by name,
and it is an annotation only.

`from_gemini_schema` goes the other way for a Gemini caller's `parameters`, whose keys may be
camelCase or snake_case (the google-genai SDK sends `any_of`, `property_ordering`, ...).
Pure functions over dicts; no IO.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["from_gemini_schema", "lower_types", "object_without_properties", "to_gemini_schema",
           "without_meta"]

# A `$ref` chain deeper than this, or a schema that expands past this many nodes once refs are
# inlined, goes to Gemini as JSON Schema instead: inlining must not blow up a recursive or
# heavily shared schema.
MAX_REF_DEPTH = 16
MAX_NODES = 5000

_TYPES = {"string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN",
          "array": "ARRAY", "object": "OBJECT"}
# The formats the Gemini docs list per type; any other `format` is an annotation we drop.
_FORMATS = {"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"},
            "INTEGER": {"int32", "int64"}}
_COUNTS = {"minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties"}
# Keywords the subset has under the same name and meaning: copied as they are.
_COPY = frozenset({"title", "description", "pattern", "propertyOrdering", "example", "minimum",
                   "maximum", *_COUNTS})
_LEAF = frozenset({"type", "title", "description"})
# Annotations with no effect on what the model may produce.
_DROP = {"$schema", "$id", "$comment", "$defs", "definitions", "$anchor", "default", "examples",
         "deprecated", "readOnly", "writeOnly", "contentMediaType", "contentEncoding", "format",
         "strict"}


class _Lossy(Exception):
    """The schema needs a construct the `Schema` subset cannot express."""


class _Ctx:
    __slots__ = ("defs", "nodes", "refs")

    def __init__(self, root: dict[str, Any]) -> None:
        defs = root.get("$defs")
        legacy = root.get("definitions")
        self.defs: dict[str, Any] = {}
        if isinstance(legacy, dict):
            self.defs.update({f"#/definitions/{k}": v for k, v in legacy.items()})
        if isinstance(defs, dict):
            self.defs.update({f"#/$defs/{k}": v for k, v in defs.items()})
        self.refs: list[str] = []
        self.nodes = 0


def to_gemini_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The same schema in Gemini's `Schema` subset, or None when that would lose a constraint."""
    try:
        return _node(schema, _Ctx(schema))
    except _Lossy:
        return None


def without_meta(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema for `parametersJsonSchema`: the root's `$schema` dialect marker removed."""
    if "$schema" not in schema:
        return schema
    return {k: v for k, v in schema.items() if k != "$schema"}


def object_without_properties(schema: dict[str, Any]) -> bool:
    """A function taking no arguments: Gemini refuses an OBJECT with empty `properties`
    ("properties: should be non-empty for OBJECT type"), so `parameters` is left out."""
    if schema.get("type") not in ("object", "OBJECT", None):
        return False
    extra = set(schema) - _DROP - {"type", "properties", "required", "additionalProperties",
                                   "title", "description"}
    typed_map = not isinstance(schema.get("additionalProperties", False), bool)
    return not schema.get("properties") and not extra and not typed_map


def _node(s: Any, ctx: _Ctx) -> dict[str, Any]:
    if not isinstance(s, dict):
        raise _Lossy  # `true` / `false` schemas: "anything" and "nothing"
    ctx.nodes += 1
    if ctx.nodes > MAX_NODES:
        raise _Lossy
    declared = s.get("type")
    kind = _TYPES.get(declared, "") if isinstance(declared, str) else ""
    if kind and kind != "OBJECT" and s.keys() <= _LEAF:
        # Most nodes are scalar leaves with a description: copy, fix the type. Measured: a
        # 15-tool request's schemas convert in ~half the time with this path.
        out = dict(s)
        out["type"] = kind
        return out
    if "$ref" in s:
        return _ref(s, ctx)
    out = {}
    for key, value in s.items():
        _keyword(key, value, out, ctx)
    if "type" not in out:
        _infer_type(out)
    _finish(out)
    return out


def _ref(s: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
    ref = s["$ref"]
    target = ctx.defs.get(ref) if isinstance(ref, str) else None
    if target is None or ref in ctx.refs or len(ctx.refs) >= MAX_REF_DEPTH:
        raise _Lossy  # external, unknown or recursive: only JSON Schema can say it
    ctx.refs.append(ref)
    try:
        out = _node(target, ctx)
    finally:
        ctx.refs.pop()
    if len(s) > 1:
        # Keywords next to a $ref (usually a description) refine the referenced schema.
        extra: dict[str, Any] = {}
        for key, value in s.items():
            if key != "$ref":
                _keyword(key, value, extra, ctx)
        out = {**out, **extra}
        _finish(out)
    return out


def _keyword(key: str, value: Any, out: dict[str, Any], ctx: _Ctx) -> None:
    handler = _KEYWORDS.get(key)
    if handler is not None:
        handler(key, value, out, ctx)
    elif key in _COPY:
        out[key] = value
    elif key not in _DROP and not key.startswith("x-"):
        raise _Lossy  # not, if/then/else, patternProperties, uniqueItems, multipleOf, ...


def _kw_type(key: str, value: Any, out: dict[str, Any], ctx: _Ctx) -> None:
    _type(value, out)


def _kw_nullable(key: str, value: Any, out: dict[str, Any], ctx: _Ctx) -> None:
    if value:
        out["nullable"] = True


def _kw_properties(key: str, value: Any, out: dict[str, Any], ctx: _Ctx) -> None:
    if not isinstance(value, dict):
        raise _Lossy
    out["properties"] = {name: _node(sub, ctx) for name, sub in value.items()}


def _kw_copy(key: str, value: Any, out: dict[str, Any], ctx: _Ctx) -> None:
    out[key] = value  # `format` is kept or dropped in _finish, once the type is known


def _kw_items(key: str, value: Any, out: dict[str, Any], ctx: _Ctx) -> None:
    out["items"] = _node(value, ctx)


def _kw_any_of(key: str, value: Any, out: dict[str, Any], ctx: _Ctx) -> None:
    # oneOf ("exactly one") reads as anyOf for generation: the model emits one branch.
    _any_of(value, out, ctx)


def _kw_all_of(key: str, value: Any, out: dict[str, Any], ctx: _Ctx) -> None:
    if not isinstance(value, list) or len(value) != 1:
        raise _Lossy
    out.update(_node(value[0], ctx))


def _kw_enum(key: str, value: Any, out: dict[str, Any], ctx: _Ctx) -> None:
    _enum(value if key == "enum" else [value], out)


def _kw_additional(key: str, value: Any, out: dict[str, Any], ctx: _Ctx) -> None:
    if not isinstance(value, bool):
        raise _Lossy  # a map of typed values has no `Schema` spelling


_KEYWORDS: dict[str, Callable[[str, Any, dict[str, Any], _Ctx], None]] = {
    "type": _kw_type, "nullable": _kw_nullable, "properties": _kw_properties,
    "required": _kw_copy, "format": _kw_copy, "items": _kw_items, "anyOf": _kw_any_of,
    "oneOf": _kw_any_of, "allOf": _kw_all_of, "enum": _kw_enum, "const": _kw_enum,
    "additionalProperties": _kw_additional,
}


def _type(value: Any, out: dict[str, Any]) -> None:
    if value.__class__ is str and value in _TYPES:
        out["type"] = _TYPES[value]
        return
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _Lossy
    kinds = [v for v in value if v != "null"]
    if len(kinds) != len(value):
        out["nullable"] = True
    if len(kinds) != 1 or kinds[0] not in _TYPES:
        raise _Lossy  # a union of types, or `null` alone
    out["type"] = _TYPES[kinds[0]]


def _any_of(value: Any, out: dict[str, Any], ctx: _Ctx) -> None:
    if not isinstance(value, list) or not value:
        raise _Lossy
    branches = []
    for sub in value:
        if isinstance(sub, dict) and sub.get("type") == "null" and len(sub) == 1:
            out["nullable"] = True  # Optional[X] as pydantic writes it: anyOf [X, null]
        else:
            branches.append(_node(sub, ctx))
    if len(branches) == 1:
        for k, v in branches[0].items():
            out.setdefault(k, v)
    elif branches:
        out["anyOf"] = branches
    else:
        raise _Lossy


def _enum(value: Any, out: dict[str, Any]) -> None:
    if not isinstance(value, list):
        raise _Lossy
    if None in value:
        out["nullable"] = True
        value = [v for v in value if v is not None]
    if not value or not all(isinstance(v, str) for v in value):
        raise _Lossy  # Gemini's enum holds strings only
    out["enum"] = value


def _infer_type(out: dict[str, Any]) -> None:
    if "properties" in out:
        out["type"] = "OBJECT"
    elif "items" in out:
        out["type"] = "ARRAY"
    elif "enum" in out:
        out["type"] = "STRING"
    elif "anyOf" not in out:
        raise _Lossy  # an untyped schema accepts anything; the subset has no "any"


def _finish(out: dict[str, Any]) -> None:
    kind = out.get("type")
    if "format" in out:
        fmt = out.pop("format")
        if isinstance(fmt, str) and fmt in _FORMATS.get(kind or "", ()):
            out["format"] = fmt
    if kind == "OBJECT":
        props = out.get("properties")
        if not props:
            raise _Lossy  # a free-form object; Gemini wants its properties listed
        required = out.get("required")
        if isinstance(required, list):
            out["required"] = [name for name in required if name in props]
    if "enum" in out and kind not in ("STRING", None):
        raise _Lossy


# --- Gemini `Schema` -> JSON Schema -------------------------------------------------------------

_SNAKE = {
    "any_of": "anyOf", "property_ordering": "propertyOrdering", "min_items": "minItems",
    "max_items": "maxItems", "min_length": "minLength", "max_length": "maxLength",
    "min_properties": "minProperties", "max_properties": "maxProperties",
}
_PLAIN = {"title", "description", "pattern", "minimum", "maximum", "default", "required",
          *_COUNTS}


def from_gemini_schema(schema: Any) -> Any:
    """A Gemini `Schema` (camelCase or snake_case keys) as standard JSON Schema."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    nullable = False
    for raw_key, value in schema.items():
        key = _SNAKE.get(raw_key, raw_key)
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key == "nullable":
            nullable = bool(value)
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {k: from_gemini_schema(v) for k, v in value.items()}
        elif key == "items":
            out["items"] = from_gemini_schema(value)
        elif key == "anyOf" and isinstance(value, list):
            out["anyOf"] = [from_gemini_schema(v) for v in value]
        elif key == "enum":
            out["enum"] = value
        elif key == "format" and value != "enum":
            out["format"] = value
        elif key == "example":
            out["examples"] = [value]
        elif key in _PLAIN:
            out[key] = value
        # propertyOrdering and any other Gemini-only key mean nothing in JSON Schema.
    if nullable:
        if isinstance(out.get("enum"), list):
            out["enum"] = [*out["enum"], None]
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


def lower_types(schema: Any) -> Any:
    """JSON Schema with its `type` names lower-cased.

    Gemini CLI sends responseJsonSchema with the OpenAPI enum spellings ("OBJECT", "STRING"),
    which Gemini accepts and OpenAI and Anthropic refuse; JSON Schema's type names are
    lower-case. Nothing else is touched.
    """
    if isinstance(schema, list):
        return [lower_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: lower_types(v) for k, v in schema.items()}
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = kind.lower()
    elif isinstance(kind, list):
        out["type"] = [k.lower() if isinstance(k, str) else k for k in kind]
    return out
