"""Function-preserving growth of an edgenet checkpoint (Net2Net-style): add residual blocks that
start as exact identities, so training continues from the smaller model's quality instead of
from scratch. Used to grow the shipped model (see export/*/MODEL_CARD.md): ``train.init_from`` a
checkpoint whose spec is a subset of the configured model grows it with :func:`grow_to`."""
from __future__ import annotations

import torch

from .blocks import RepConv3x3, ResBlock, StripBlock
from .registry import build_model

# spec keys that growth may change; every other key must match
_GROWABLE = ("mid_blocks", "strip_levels", "strip_kernel")


@torch.no_grad()
def _zero_residual(block):
    """Make a residual ``block`` the identity: its last conv outputs exactly zero."""
    if isinstance(block, StripBlock):
        block.pw2.weight.zero_()
        block.pw2.bias.zero_()
        return
    conv = block.conv2
    if isinstance(conv, RepConv3x3):
        conv.conv3.weight.zero_()
        conv.conv1.weight.zero_()
        conv.conv3.bias.zero_()
        conv.conv1.bias.zero_()
        if conv.has_identity:  # cancel the identity branch: folded kernel = 0
            idx = torch.arange(conv.out_ch)
            conv.conv3.weight[idx, idx, 1, 1] = -1.0
    else:
        conv.weight.zero_()
        conv.bias.zero_()


def grow_to(model, spec: dict):
    """Return an edgenet built from ``spec`` that computes exactly what ``model`` computes: the
    blocks ``spec`` adds (more bottleneck blocks, strip blocks at new levels) start as identities.
    Raises ``ValueError`` when ``spec`` is not a growth of ``model.spec``."""
    old_spec = dict(model.spec)
    new_spec = dict(spec)
    if new_spec.get("type") != old_spec.get("type") or not str(old_spec.get("type", "")).startswith("edgenet"):
        raise ValueError(f"can only grow an edgenet into the same type, not {old_spec.get('type')!r} into {new_spec.get('type')!r}")
    new = build_model(new_spec)
    full_old = dict(old_spec, **{k: v for k, v in new.spec.items() if k not in old_spec})
    diff = sorted(k for k in set(full_old) | set(new.spec) if full_old.get(k) != new.spec.get(k) and k not in _GROWABLE)
    if diff:
        raise ValueError(f"spec keys {diff} differ; growth only adds blocks ({', '.join(_GROWABLE)})")
    old_mid = len(model.mid)
    if len(new.mid) < old_mid:
        raise ValueError(f"mid_blocks={len(new.mid)} is fewer than the model's {old_mid}; growth only adds blocks")
    old_strips = set(getattr(model, "strip_levels", []))
    if not old_strips <= set(new.strip_levels):
        raise ValueError(f"strip_levels {new.strip_levels} drop levels {sorted(old_strips - set(new.strip_levels))}; growth only adds blocks")
    if old_strips and new.spec.get("strip_kernel") != model.spec.get("strip_kernel", new.spec.get("strip_kernel")):
        raise ValueError("strip_kernel cannot change once the model has strip blocks")
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"the grown spec lacks weights the model has: {unexpected[:4]}")
    for j in range(old_mid, len(new.mid)):
        _zero_residual(new.mid[j])
    for i in set(new.strip_levels) - old_strips:
        _zero_residual(new.enc_strip[str(i)])
        _zero_residual(new.dec_strip[str(i)])
    return new


def grow_edgenet(model, mid_blocks: int):
    """Return a copy of edgenet ``model`` with ``mid_blocks`` bottleneck blocks (>= the current
    count); the new blocks are appended as identities, so the output is unchanged."""
    return grow_to(model, dict(model.spec, mid_blocks=mid_blocks))
