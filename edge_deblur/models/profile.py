"""Parameter and MAC counting (hooks on a meta-device copy: no compute, any input size)."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

REFERENCE_SIZE = (1280, 720)  # (width, height): deployment frames


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: tuple[int, int] = REFERENCE_SIZE, in_ch: int = 3) -> int:
    """Multiply-accumulates of one forward pass at ``size`` = (width, height); the size is padded
    up to the model's stride as the runtime does."""
    w, h = size
    s = getattr(model, "stride", 1)
    h, w = -(-h // s) * s, -(-w // s) * s
    from .blocks import reparameterize_

    m = reparameterize_(copy.deepcopy(model)).to("meta")  # count the deployed form
    total = 0

    def conv_hook(mod, inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += out.numel() * (mod.in_channels // mod.groups) * k

    def linear_hook(mod, inp, out):
        nonlocal total
        total += out.numel() * mod.in_features

    hooks = []
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(linear_hook))
    with torch.no_grad():
        x = torch.zeros(1, in_ch, h, w, device="meta")
        if getattr(m, "recurrent", False):
            m(x, torch.zeros(m.state_shape(h, w), device="meta"))
        else:
            m(x)
    for hk in hooks:
        hk.remove()
    return int(total)


def deployed_params(model: nn.Module) -> int:
    """Parameters of ``model`` as exported: its re-parameterizable branches folded into plain convs
    (what a manifest counts; ``count_params`` counts the training form)."""
    import copy

    from .blocks import reparameterize_

    return count_params(reparameterize_(copy.deepcopy(model).cpu()))


def summary(model: nn.Module, size: tuple[int, int] | None = None) -> dict:
    out = {
        "params": count_params(model),
        "gmacs_1280x720": count_macs(model, REFERENCE_SIZE) / 1e9,
        "stride": getattr(model, "stride", 1),
    }
    if size is not None and tuple(size) != REFERENCE_SIZE:
        out[f"gmacs_{size[0]}x{size[1]}"] = count_macs(model, tuple(size)) / 1e9
    return out
