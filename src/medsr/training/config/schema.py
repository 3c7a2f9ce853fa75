"""YAML values → typed section dataclasses: type checks and conversions with errors that name the
key (``data.patch_size must be a positive integer, got -3``), and unknown keys refused."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from medsr.errors import InvalidParameterError
from medsr.training.config.data import FileEntry, NormSpec
from medsr.training.config.model import LowBandConfig, ModelConfig

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(
            _describe_type(a) if a is not type(None) else "null" for a in typing.get_args(tp)
        )
    return str(tp)


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the annotated type, or raise a clear error."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise InvalidParameterError(f"{where} must be {_describe_type(tp)}, got null")
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:  # Optional[X]: X's own, more precise error
            return _convert(value, members[0], where)
        for a in members:
            try:
                return _convert(value, a, where)
            except InvalidParameterError:
                continue
        raise InvalidParameterError(f"{where} must be {_describe_type(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        v = value.strip().lower() if isinstance(value, str) else value
        if v not in allowed:
            raise InvalidParameterError(
                f"{where} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}"
            )
        return v
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and tp is FileEntry:
            return FileEntry(path=value)
        if isinstance(value, str) and tp is ModelConfig:
            return ModelConfig(name=value)
        if isinstance(value, str) and tp is LowBandConfig:
            return LowBandConfig(base=value)
        if isinstance(value, str) and tp is NormSpec:
            return build_dataclass(tp, {"kind": value}, where)
        return build_dataclass(tp, value, where)
    if origin is list:
        (item,) = typing.get_args(tp)
        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            if item is FileEntry:
                value = [value]
            else:
                raise InvalidParameterError(f"{where} must be a list, got {value!r}")
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _kt, vt = typing.get_args(tp)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InvalidParameterError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise InvalidParameterError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool):
            raise InvalidParameterError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                f = math.nan
            if math.isfinite(f) and f.is_integer():
                return int(f)
        raise InvalidParameterError(f"{where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise InvalidParameterError(f"{where} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise InvalidParameterError(f"{where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise InvalidParameterError(f"{where} must be a string, got {value!r}")
    return value


def build_dataclass(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidParameterError(f"{where or 'the config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    unknown = sorted(set(map(str, data)) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise InvalidParameterError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + u for u in unknown)} "
            f"(allowed{' in ' + where if where else ''}: {', '.join(names)})"
        )
    kwargs = {}
    for name in names:
        if name in data:
            sub = f"{where}.{name}" if where else name
            kwargs[name] = _convert(data[name], hints[name], sub)
    return cls(**kwargs)
