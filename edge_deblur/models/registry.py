"""Architectures built from a spec: ``{"type": name, **constructor arguments}`` (BasicSR style).

``size: S|M|L`` in a spec is shorthand resolved from ``configs/models/<type>.yaml``; resolved
specs (as stored in checkpoints) never carry ``size``.
"""
from __future__ import annotations

import copy
import importlib
import inspect
from pathlib import Path

import yaml

from ..config.core import _keyed, suggest
from ..errors import ConfigError

# name -> (module, class). Modules are imported only when a model is built.
ARCHS = {
    "edgenet": ("edge_deblur.models.edgenet", "EdgeNet"),
    "nafnet": ("edge_deblur.models.nafnet", "NAFNetLite"),
    "edgenet_rnn": ("edge_deblur.models.edgenet", "EdgeNetRecurrent"),
    "edgenet_frames": ("edge_deblur.models.edgenet", "EdgeNetFrames"),
}

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "models"


def arch_class(name: str):
    if name not in ARCHS:
        raise _keyed(f"unknown model type {name!r}{suggest(name, ARCHS)}", "type")
    mod, cls = ARCHS[name]
    return getattr(importlib.import_module(mod), cls)


def size_presets(name: str) -> dict:
    path = CONFIG_DIR / f"{name.split('_')[0]}.yaml"  # edgenet_rnn / edgenet_frames share edgenet's sizes
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return data.get("sizes", {})


def resolve_spec(spec: dict) -> dict:
    """Expand ``size`` into constructor arguments and check every key against the constructor."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"a model spec needs a 'type:' key (one of {sorted(ARCHS)}), got {spec!r}")
    spec = copy.deepcopy(spec)
    name = spec["type"]
    cls = arch_class(name)
    if "size" in spec:
        size = str(spec.pop("size"))
        presets = size_presets(name)
        if size not in presets:
            raise _keyed(
                f"unknown size {size!r} for model type {name!r}{suggest(size, presets)}; sizes live in {CONFIG_DIR / (name.split('_')[0] + '.yaml')}",
                "size")
        merged = dict(presets[size])
        merged.update({k: v for k, v in spec.items() if k != "type"})
        spec = {"type": name, **merged}
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p != "self"]
    for key in spec:
        if key != "type" and key not in params:
            raise _keyed(f"unknown argument {key!r} for model type {name!r}{suggest(key, valid)}", key)
    return spec


def validate_spec(spec: dict) -> dict:
    return resolve_spec(spec)


def build_model(spec: dict):
    spec = resolve_spec(spec)
    cls = arch_class(spec["type"])
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    try:
        model = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot build model {spec!r}: {e}") from e
    model.spec = spec
    return model


def deploy_spec(spec: dict) -> dict:
    """The spec of the re-parameterized (deployment) form of ``spec``."""
    spec = resolve_spec(spec)
    if "rep" in inspect.signature(arch_class(spec["type"]).__init__).parameters:
        spec["rep"] = False
    return spec


def to_deploy(model):
    """Return a deployment copy: RepConv branches folded into plain convs, eval mode."""
    from .blocks import reparameterize_

    m = copy.deepcopy(model).eval()
    reparameterize_(m)
    m.spec = deploy_spec(getattr(model, "spec", {"type": "edgenet"}))
    return m
