"""Function-preserving growth of an edgenet checkpoint (Net2Net-style): add residual blocks that
start as exact identities, so training continues from the smaller model's quality instead of
from scratch. Used to grow the shipped model's bottleneck (see export/*/MODEL_CARD.md)."""
from __future__ import annotations

import torch

from .blocks import RepConv3x3, ResBlock
from .registry import build_model


@torch.no_grad()
def _zero_residual(block: ResBlock):
    """Make ``block`` the identity: its second conv outputs exactly zero."""
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


def grow_edgenet(model, mid_blocks: int):
    """Return a copy of edgenet ``model`` with ``mid_blocks`` bottleneck blocks (>= the current
    count); the new blocks are appended as identities, so the output is unchanged."""
    spec = dict(model.spec)
    old = spec.get("mid_blocks", len(model.mid))
    if mid_blocks < old:
        raise ValueError(f"mid_blocks={mid_blocks} is fewer than the model's {old}; growth only adds blocks")
    spec["mid_blocks"] = mid_blocks
    new = build_model(spec)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected, unexpected
    for j in range(old, mid_blocks):
        _zero_residual(new.mid[j])
    return new
