"""Generic dataclass <-> dict mapping with strict keys, typo suggestions and overrides.

Nothing here evaluates strings: override values are parsed as YAML scalars/lists
(``yaml.safe_load``), which gives ints, floats, bools, null, strings and lists.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from typing import Any, Iterable

import yaml

from ..errors import ConfigError


def suggest(name: str, valid: Iterable[str], list_valid: bool = True) -> str:
    """Return ' (did you mean 'x'?)' for the nearest valid name, or (``list_valid``) a list of
    valid names."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (valid keys: {', '.join(valid)})" if valid and list_valid else ""


def _keyed(message: str, key: str) -> ConfigError:
    """A ConfigError that remembers the dotted key it is about (``e.key``), so a loader that
    knows where each key was written can add the file and line."""
    e = ConfigError(message)
    e.key = key
    return e


def error_key(e: ConfigError) -> str | None:
    """The dotted key a ConfigError is about: the one it was raised with, else the one its message
    starts with (validation messages read ``data.blur.jpeg_prob: ...``), else None."""
    key = getattr(e, "key", None)
    if key:
        return key
    m = re.match(r"([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*|\[\d+\])*):", str(e))
    return m.group(1) if m else None


def load_yaml(path: str | os.PathLike) -> dict:
    from .inherit import read_mapping

    return read_mapping(path)[1]


def _strip_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str):
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise _keyed(f"{where}: null is not allowed here; give a value of type {getattr(tp, '__name__', tp)}", where)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _keyed(f"{where}: expected a mapping, got {value!r}", where)
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _keyed(f"{where}: expected a list, got {value!r}", where)
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise _keyed(f"{where}: expected a mapping, got {value!r}", where)
        return dict(value)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise _keyed(f"{where}: {value!r} is not one of {list(choices)}{suggest(str(value), map(str, choices))}", where)
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _keyed(f"{where}: expected true/false, got {value!r}", where)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise _keyed(f"{where}: expected an integer, got {value!r}", where)
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e6 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _keyed(f"{where}: expected a number, got {value!r}", where)
        if not math.isfinite(float(value)):  # YAML's .nan/.inf pass every '< 0' check
            raise _keyed(f"{where}: must be a finite number, got {value!r}", where)
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise _keyed(f"{where}: expected a string, got {value!r}", where)
        return str(value)
    return value


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from ``data``; unknown keys raise ConfigError with a suggestion."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            loc = f"{where}.{key}" if where else key
            raise _keyed(f"unknown config key {loc!r}{suggest(str(key), fields)}", loc)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            loc = f"{where}.{name}" if where else name
            kwargs[name] = _coerce(data[name], hints[name], loc)
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise _keyed(f"{where or cls.__name__}: {e}", where) from e
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(where)
    return obj


def to_dict(obj) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into (['a','b','c'], value). The value is a YAML scalar or list."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. train.iters=1000)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key; use dotted keys like train.lr=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: cannot parse value {raw!r}: {e}") from e
    # YAML 1.1 reads "3e-4" as a string; accept it as a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: dict, overrides: Iterable[str], schema=None) -> dict:
    """Apply ``key=value`` overrides to a nested dict (copying it). With ``schema`` (a dataclass),
    unknown keys are reported with the nearest valid key."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        cls = schema
        for i, part in enumerate(path):
            if cls is not None and dataclasses.is_dataclass(cls):
                names = {f.name: f for f in dataclasses.fields(cls)}
                if part not in names:
                    loc = ".".join(path[: i + 1])
                    raise ConfigError(f"override {text!r}: unknown key {loc!r}{suggest(part, names)}")
                hint = typing.get_type_hints(cls)[part]
                hint, _ = _strip_optional(hint)
                cls = hint if dataclasses.is_dataclass(hint) else None
            if i == len(path) - 1:
                node[part] = value
            else:
                nxt = node.get(part)
                if nxt is None:
                    nxt = node[part] = {}
                if not isinstance(nxt, dict):
                    raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])!r} is not a mapping")
                node = nxt
    return data
