"""edge-deblur info --model SPEC_OR_FILE [--size WxH]: params and GMACs."""
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
                   help="a checkpoint (.safetensors), a YAML spec file, or an inline spec like '{type: edgenet, size: S}'")
    p.add_argument("--size", default="1280x720", help="frame size WxH for the MAC count (default 1280x720)")
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    import yaml

    from ..models import build_model
    from ..models.checkpoint import load_model
    from ..models.profile import summary

    size = parse_size(args.size)
    path = Path(args.model)
    if path.suffix == ".safetensors":
        model = load_model(path)
    else:
        spec = yaml.safe_load(path.read_text()) if path.is_file() else yaml.safe_load(args.model)
        if isinstance(spec, dict) and "model" in spec and "type" not in spec:
            spec = spec["model"]
        model = build_model(spec)
    s = summary(model, size)
    s["spec"] = model.spec
    if args.json:
        print(json.dumps(s))
    else:
        print(f"{s['spec']}\nparams: {s['params'] / 1e6:.3f} M   GMACs at 1280x720: {s['gmacs_1280x720']:.2f}"
              + (f"   GMACs at {args.size}: {s[f'gmacs_{size[0]}x{size[1]}']:.2f}"
                 if tuple(size) != (1280, 720) and f"gmacs_{size[0]}x{size[1]}" in s else ""))
    return 0
