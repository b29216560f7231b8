"""Checkpoints: one ``.safetensors`` file with the weights and, in its metadata, the resolved
arch spec, the resolved training config and progress counters. Loading never unpickles code."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError, ModelError
from ..runtime.manifest import atomic_write_bytes, sha256_file  # noqa: F401 (re-exported)

FORMAT = "edge_deblur.checkpoint.v1"


def save_checkpoint(path, state_dict: dict, spec: dict, config: dict | None = None, meta: dict | None = None):
    """Write weights + spec + config atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    metadata = {
        "format": FORMAT,
        "arch": json.dumps(spec),
        "config": json.dumps(config or {}),
        "meta": json.dumps(meta or {}),
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_checkpoint(path) -> tuple[dict, dict, dict, dict]:
    """Return (state_dict, spec, config, meta)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint not found: {str(p)!r}; pass a .safetensors file written by 'edge-deblur train'")
    try:
        with safe_open(str(p), framework="pt") as f:
            md = f.metadata() or {}
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{str(p)!r} is not a readable safetensors checkpoint ({e}); re-export or re-train it") from e
    if md.get("format") != FORMAT or "arch" not in md:
        raise ModelError(
            f"{str(p)!r} has no edge-deblur metadata (format {md.get('format')!r}); "
            "it was not written by edge-deblur train/prune"
        )
    try:
        spec = json.loads(md["arch"])
        config = json.loads(md.get("config", "{}"))
        meta = json.loads(md.get("meta", "{}"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{str(p)!r}: corrupt metadata ({e})") from e
    return state, spec, config, meta


def load_model(path, deploy: bool = False, map_location: str = "cpu"):
    """Build the architecture from the checkpoint's spec and load its weights.

    Returns the model in eval mode (folded for deployment when ``deploy``), with ``.spec``
    and ``.meta`` attached."""
    from .registry import build_model, to_deploy

    state, spec, config, meta = read_checkpoint(path)
    model = build_model(spec)
    missing, unexpected = _match(model.state_dict(), state)
    if missing or unexpected:
        raise ModelError(
            f"checkpoint {str(path)!r} does not fit architecture {spec.get('type')!r}: "
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}; "
            "it was saved from another architecture or edited by hand"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"checkpoint {str(path)!r}: weights do not match its arch spec: {e}") from e
    model = model.to(map_location).eval()
    if deploy:
        model = to_deploy(model)
    model.meta = meta
    model.train_config = config
    return model


def _match(expected: dict, got: dict):
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shape = [k for k in set(expected) & set(got) if tuple(expected[k].shape) != tuple(got[k].shape)]
    return missing + [f"{k} (shape)" for k in sorted(shape)], unexpected


def average_checkpoints(paths, out) -> dict:
    """Uniform weight average of checkpoints of one architecture (SWA / a "model soup" along one
    training run): the same spec and tensor names are required. Writes ``out`` atomically with
    the last checkpoint's config, ``total_iters`` the largest of the inputs, and the inputs listed
    under ``averaged_from``; each tensor in the widest float dtype among the inputs (a float16
    export averaged with float32 run checkpoints stays float32). Returns the written meta."""
    import torch

    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ModelError(f"averaging needs at least two checkpoints, got {len(paths)}")
    out = Path(out)
    example = paths[0].with_name(f"{paths[0].stem}_avg.safetensors").name
    if out.is_dir():
        raise InputError(f"output {str(out)!r} is a folder; pass a checkpoint file path, e.g. -o {str(out / example)!r}")
    for p in paths:
        if out.resolve() == p.resolve() or (out.exists() and p.exists() and out.samefile(p)):
            raise InputError(f"output {str(out)!r} would overwrite the input checkpoint {str(p)!r}; "
                             f"pass another -o (e.g. {example})")
    spec0, total, sources = None, {}, []
    for p in paths:
        state, spec, config, meta = read_checkpoint(p)
        if spec0 is None:
            spec0 = spec
            total = {k: v.to(torch.float64) for k, v in state.items()}
            dtypes = {k: v.dtype for k, v in state.items()}
        else:
            if spec != spec0:
                raise ModelError(f"{str(p)!r} has arch {spec}, not {spec0} like {str(paths[0])!r}; "
                                 "average checkpoints of one architecture only")
            missing, unexpected = _match(total, state)
            if missing or unexpected:
                raise ModelError(f"{str(p)!r} does not match {str(paths[0])!r}: missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]}; average checkpoints of one architecture only")
            for k, v in state.items():
                total[k] += v.to(torch.float64)
                if v.is_floating_point() and dtypes[k].is_floating_point:  # float16 + float32 -> float32
                    dtypes[k] = torch.promote_types(dtypes[k], v.dtype)
        sources.append({"path": str(p), "iters": meta.get("iters"), "total_iters": meta.get("total_iters")})
        last_config, last_meta = config, meta
    avg = {k: (v / len(paths)).to(dtypes[k]) for k, v in total.items()}
    meta = {k: v for k, v in last_meta.items() if k not in ("metrics", "best", "saved")}
    meta["total_iters"] = max(int(s["total_iters"] or 0) for s in sources)
    meta["averaged_from"] = sources
    save_checkpoint(out, avg, spec0, last_config, meta)
    return meta
