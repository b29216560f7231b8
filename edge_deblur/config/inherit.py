"""``base:`` inheritance for YAML configs, with the file and line every key was written at.

A config may name the file it builds on::

    base: edgenet_s_pan_ft.yaml      # relative to this file's folder
    name: edgenet_s_tone_ft
    train: {lowpass_weight: 1.0}

The base is loaded first (it may have a base of its own), then this file is merged over it:
mappings merge key by key, at any depth; everything else (lists, scalars, null) replaces the
base's value. A missing base or a cycle of bases is a ConfigError naming the files.

``load_layers`` returns the merged mapping and a :class:`Origins` that answers, for a dotted key
such as ``data.blur.lenght`` or ``data.val_sets[1].path``, which file and line wrote it.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from ..errors import ConfigError

BASE_KEY = "base"


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged onto a copy of ``base``: mappings merge recursively, other values replace."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _positions(node, prefix: str, out: dict):
    """Dotted key -> 1-based line of every mapping key and list item under ``node``."""
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            key = str(knode.value)
            if key == "<<":  # YAML merge key: its entries belong to this mapping
                _positions(vnode, prefix, out)
                continue
            loc = f"{prefix}.{key}" if prefix else key
            out.setdefault(loc, knode.start_mark.line + 1)
            _positions(vnode, loc, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, vnode in enumerate(node.value):
            loc = f"{prefix}[{i}]"
            out.setdefault(loc, vnode.start_mark.line + 1)
            _positions(vnode, loc, out)


class Origins:
    """Where each key of a merged config was written: the last file in the chain (the most
    derived) that has it, or a command-line override."""

    def __init__(self):
        self.layers: list[tuple[str, dict]] = []   # (file, {dotted key: line}), base first
        self.overrides: list[tuple[str, str]] = []  # (dotted key, "key=value" as typed)

    def add_file(self, path: str, lines: dict):
        self.layers.append((path, lines))

    def add_override(self, key: str, text: str):
        self.overrides.append((key, text))

    def of(self, key: str | None) -> str | None:
        """``'path/file.yaml line 12'``, ``"override 'a.b=1'"``, or None when unknown."""
        if not key:
            return None
        for okey, text in reversed(self.overrides):
            if key == okey or key.startswith(okey + ".") or key.startswith(okey + "["):
                return f"override {text!r}"
        for path, lines in reversed(self.layers):
            if key in lines:
                return f"{path} line {lines[key]}"
        return None

    @property
    def files(self) -> list[str]:
        return [p for p, _ in self.layers]


def read_mapping(path: str | os.PathLike) -> tuple[str, dict]:
    """The text of the YAML file ``path`` and the mapping it holds (``{}`` for an empty file); a
    missing file, bad YAML or a top level that is not a mapping raise ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {str(path)!r}; pass an existing YAML file (see configs/)")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r} ({e}); check its permissions") from e
    try:
        text = raw.decode("utf-8")
        why = "it holds NUL bytes" if "\x00" in text else None
    except UnicodeDecodeError as e:
        text, why = "", f"not UTF-8 text at byte {e.start}"
    if why:
        raise ConfigError(f"{str(path)!r} is not a text YAML file ({why}); pass a YAML config "
                          "(e.g. one under configs/), not a model, image or other binary file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse YAML {str(path)!r}: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{str(path)!r} must hold a mapping at the top level, got {type(data).__name__}")
    return text, data


def _read(path: Path) -> tuple[dict, dict]:
    """The mapping in ``path`` and the line of each of its keys."""
    text, data = read_mapping(path)
    lines: dict = {}
    node = yaml.compose(text, Loader=yaml.SafeLoader)  # parsed above: it cannot fail here
    if node is not None:
        _positions(node, "", lines)
    return data, lines


def load_layers(path: str | os.PathLike) -> tuple[dict, Origins]:
    """Load ``path`` and its chain of ``base:`` files; return the merged mapping (without the
    ``base`` key) and where each key came from."""
    chain: list[Path] = []  # from the file asked for down to the root base
    layers: list[tuple[Path, dict, dict]] = []
    p = Path(path)
    while True:
        key = p.resolve()
        if key in chain:
            cycle = " -> ".join(str(c) for c in chain[chain.index(key):] + [key])
            raise ConfigError(f"config bases form a cycle: {cycle}; remove the 'base:' key from one of these files")
        chain.append(key)
        data, lines = _read(p)
        layers.append((p, data, lines))
        if BASE_KEY not in data:
            break
        ref = data.pop(BASE_KEY)
        where = f"{p} line {lines.get(BASE_KEY, '?')}"
        if not isinstance(ref, str) or not ref.strip():
            raise ConfigError(f"{where}: 'base' must be one file name (a string, relative to this file), "
                              f"got {ref!r}")
        nxt = (p.parent / ref) if not os.path.isabs(ref) else Path(ref)
        if not nxt.is_file():
            raise ConfigError(f"{where}: base {ref!r} not found (looked for {str(nxt)!r}); 'base:' is resolved "
                              f"relative to the folder of the file that names it: fix the name or remove the key")
        p = nxt
    merged: dict = {}
    origins = Origins()
    for lp, data, lines in reversed(layers):
        merged = deep_merge(merged, data)
        origins.add_file(str(lp), lines)
    return merged, origins
