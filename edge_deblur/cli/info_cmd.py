"""edge-deblur info -m ARTIFACT_OR_SPEC [--size WxH] [--json]: what a model file is.

Describes an ONNX file (precision, I/O, opset, deployed parameters, GMACs, its manifest entry),
a checkpoint (parameters as trained and, with torch, deployed, GMACs), a TensorRT engine (from
its manifest: GPU, TensorRT, profile), an exported model folder (every artifact), or a model spec
(a YAML file or an inline spec; needs torch). Parameter counts say which form they count."""
from __future__ import annotations

import json
from pathlib import Path


def parse_size(text: str) -> tuple[int, int]:
    from ..errors import InputError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise InputError(f"size {text!r} must look like WIDTHxHEIGHT, e.g. 1280x720") from None
    return w, h


def add_arguments(p):
    p.add_argument("--model", "-m", required=True,
                   help="an .onnx, .safetensors checkpoint, .engine, exported model folder, a YAML spec file, "
                   "or an inline spec like '{type: edgenet, size: S}'")
    p.add_argument("--size", default="1280x720", help="frame size WxH for the MAC count (default 1280x720)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _torch_counts(model, size) -> dict:
    """Parameters as built and deployed (RepConv folded), GMACs (deployed form) of a torch model."""
    import copy

    from ..models.blocks import reparameterize_
    from ..models.profile import count_params, summary

    s = summary(model, size)
    out = {"params_as_trained": s.pop("params"), "stride": s.pop("stride")}
    out["params_deployed"] = count_params(reparameterize_(copy.deepcopy(model)))
    out.update(s)
    return out


def _spec(args) -> dict:
    import yaml

    from ..errors import ConfigError, ModelError

    path = Path(args.model)
    try:
        spec = yaml.safe_load(path.read_text()) if path.is_file() else yaml.safe_load(args.model)
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{args.model!r} is neither a model artifact nor a YAML spec ({type(e).__name__}); "
                          f"pass an .onnx, .safetensors, .engine, model folder or a spec like '{{type: edgenet, size: S}}'") from None
    if isinstance(spec, dict) and "base" in spec and path.is_file():
        from ..config import load_train_config  # a recipe: its model as its base: chain resolves it

        spec = {"model": load_train_config(path).model}
    if isinstance(spec, dict) and "model" in spec and "type" not in spec:
        spec = spec["model"]
    if not isinstance(spec, dict):
        if not path.exists() and ("/" in args.model or path.suffix):
            raise ModelError(f"{args.model!r} does not exist; pass an .onnx, .safetensors, .engine, a model folder "
                             "or a spec like '{type: edgenet, size: S}'")
        raise ConfigError(f"{args.model!r} is not a model spec (a mapping with 'type:'); "
                          "pass e.g. '{type: edgenet, size: S}' or a file")
    return spec


def run(args) -> int:
    from ..runtime.describe import artifact_kind, describe, format_description

    size = parse_size(args.size)
    path = Path(args.model)
    if path.exists() and (artifact_kind(path) or path.suffix.lower() not in (".yaml", ".yml")):
        d = describe(path, size)
        if d["kind"] == "checkpoint" and d.get("arch"):
            try:  # the deployed count and GMACs need the model built (torch)
                from ..models.checkpoint import load_model

                d.update(_torch_counts(load_model(path), size))
            except ImportError:
                d.setdefault("notes", []).append("install torch (pip install 'edge-deblur[train]') for the "
                                                 "deployed parameter count and GMACs")
    else:
        from ..models import build_model

        model = build_model(_spec(args))
        d = {"kind": "spec", "path": args.model, "arch": model.spec}
        d.update(_torch_counts(model, size))
    if args.json:
        print(json.dumps(d))
    else:
        print(format_description(d))
    return 0
