"""JSON forms of the attrs records superv keeps on disk (spec, snapshot, registry entry)."""

from __future__ import annotations

import types
import typing
from typing import Any, Self

import attrs

_resolved: set[type] = set()


class JsonRecord:
    """``to_json``/``from_json`` for an attrs class; unknown keys are ignored on load, so a
    file written by a newer superv still loads.

    ``from_json`` checks the JSON against the field types (a file on disk is input like any
    other): a value that is not an object, or a field of the wrong type, is a TypeError
    naming it, never a record that breaks whoever uses it later.
    """

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, data: Any) -> Self:
        if not isinstance(data, dict):
            raise TypeError(f"{_json_type(data)}, not an object")
        if cls not in _resolved:
            attrs.resolve_types(cls)  # type: ignore[type-var]
            _resolved.add(cls)
        values = {}
        for field in attrs.fields(cls):  # type: ignore[misc]
            if field.name not in data:
                continue
            value = data[field.name]
            if not _conforms(value, field.type):
                raise TypeError(f"{field.name} is {_json_type(value)}, not {_describe(field.type)}")
            values[field.name] = value
        return cls(**values)


def _conforms(value: Any, hint: Any) -> bool:
    """Is the JSON ``value`` of the type ``hint`` (the annotations our records use)?"""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (types.UnionType, typing.Union):
        return any(_conforms(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items())
    return True  # a type our records do not use: not ours to judge


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint):
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", str(hint))
