"""Frozen dataclasses to JSON and back, checked against their type hints.

The result schema (:mod:`thermojax.pipeline.results.schema`) is plain dataclasses; these helpers turn
them into JSON-ready data (non-finite floats as ``null``) and build them back from parsed JSON,
checking every key and value type on the way, so a malformed file fails with the path of the
offending value instead of producing a half-valid object.

Example:
    >>> @dataclasses.dataclass(frozen=True)
    ... class Point:
    ...     x: float
    ...     tags: tuple[str, ...] = ()
    >>> to_json(Point(float("nan"), ("a",)))
    {'x': None, 'tags': ['a']}
    >>> dataclass_from_json(Point, {"x": 1}, "point")
    Point(x=1.0, tags=())
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["dataclass_from_json", "fields_as_plain_data", "from_json", "to_json"]


def from_json(tp: Any, value: Any, where: str) -> Any:
    """Convert JSON data ``value`` to type ``tp`` (dataclasses, tuples, dicts, scalars, unions).

    A dataclass with a ``from_dict`` classmethod builds itself; ``where`` names the value in errors.

    Raises:
        ValueError: ``value`` does not fit ``tp``.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return from_json(inner, value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
        if hasattr(tp, "from_dict"):
            return tp.from_dict(value)
        return dataclass_from_json(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(from_json(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        _, value_type = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
        return {str(k): from_json(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if value is None:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported schema type {tp!r}")


def dataclass_from_json(tp: type, value: Mapping[str, Any], where: str) -> Any:
    """The dataclass ``tp`` from a JSON object: every key known, every required key present.

    Fields with ``metadata={"json": False}`` are not read.
    """
    fields = {f.name: f for f in dataclasses.fields(tp) if f.metadata.get("json", True)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}")
    hints = typing.get_type_hints(tp)
    kwargs = {}
    for name, field in fields.items():
        if name in value:
            kwargs[name] = from_json(hints[name], value[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where}: missing key {name!r}")
    return tp(**kwargs)


def to_json(value: Any) -> Any:
    """JSON-ready data of dataclasses (their ``to_dict`` when they have one), mappings,
    sequences and numpy values; non-finite floats become ``None``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict"):
            return to_json(value.to_dict())
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def fields_as_plain_data(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as plain Python data, one level deep: arrays become lists of floats,
    mappings ``{str: float}``, tuples lists, numpy floats floats (NaN kept, unlike
    :func:`to_json`: the evaluators' figures go to the stage cache as they are)."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, np.ndarray):
            value = [float(v) for v in value]
        elif isinstance(value, Mapping):
            value = {str(k): float(v) for k, v in value.items()}
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, float | np.floating):
            value = float(value)
        out[field.name] = value
    return out
