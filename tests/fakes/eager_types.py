"""Eager twins of an SDK's request TypedDicts, for the fakes' body checks. No IO.

The OpenAI and Anthropic SDKs type their request params as TypedDicts, and a plain `TypeAdapter`
over them is too lax for a fake that must refuse what the API refuses:

- lists are annotated `Iterable[...]`, which pydantic validates *lazily* (it returns a
  `ValidatorIterator` and checks the items only when iterated), so `messages: [{"bad": 1}]`
  passes;
- TypedDicts ignore unknown keys, where both APIs answer 400.

`EagerRewrite` rewrites the types once, at import or first use, into twins with `list` for
`Iterable`/`Sequence` and TypedDicts `extra="forbid"` (or `"ignore"`). A dialect whose unions need
more (dropping members a JSON body cannot be, discriminating on a tag) overrides `union`.
"""

from __future__ import annotations

import collections.abc as cabc
import typing
from typing import Any, Union, get_args, get_origin, get_type_hints

import typing_extensions as te

__all__ = ["EagerRewrite"]

# The functional TypedDict form with a computed name; typed Any because mypy only accepts literals.
_make_typeddict: Any = te.TypedDict


class EagerRewrite:
    """One rewrite: call it on a type to get its eager twin; twins are shared within it."""

    def __init__(self, *, forbid: bool) -> None:
        self.forbid = forbid
        self._memo: dict[Any, Any] = {}

    def __call__(self, tp: Any) -> Any:
        if te.is_typeddict(tp):
            if tp not in self._memo:
                self._memo[tp] = self.twin(tp.__name__, self.fields(tp))
            return self._memo[tp]
        origin = get_origin(tp)
        if origin is None:
            return tp
        args = get_args(tp)
        if origin in (cabc.Iterable, cabc.Sequence, list):
            return list[self(args[0])]  # type: ignore[misc]
        if origin is Union:
            return self.union(args)
        if origin in (dict, cabc.Mapping):
            key, value = (self(a) for a in args)
            return dict[key, value]  # type: ignore[valid-type]
        if origin in (typing.Literal, te.Literal):
            return tp
        if origin in (typing.Annotated, te.Annotated):
            return te.Annotated[(self(args[0]), *tp.__metadata__)]
        raise TypeError(f"fakes: no eager rewrite for {tp!r}")

    def union(self, args: tuple[Any, ...]) -> Any:
        return Union[tuple(self(a) for a in args)]  # noqa: UP007

    def fields(self, td: Any) -> dict[str, Any]:
        """The rewritten fields of TypedDict `td`, each `Required` or `NotRequired`."""
        fields: dict[str, Any] = {}
        for name, hint in get_type_hints(td, include_extras=True).items():
            origin = get_origin(hint)
            inner = get_args(hint)[0] if origin in (te.Required, te.NotRequired) else hint
            # The SDK modules use `from __future__ import annotations`, so `__required_keys__`
            # cannot see `Required[...]` in string annotations; the resolved hint can.
            required = origin is te.Required or (
                origin is not te.NotRequired and name in td.__required_keys__
            )
            new = self(inner)
            fields[name] = te.Required[new] if required else te.NotRequired[new]
        return fields

    def twin(self, name: str, fields: dict[str, Any]) -> Any:
        twin = _make_typeddict(name, fields, total=False)
        twin.__pydantic_config__ = {"extra": "forbid" if self.forbid else "ignore"}
        return twin
