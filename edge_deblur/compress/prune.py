"""Structured channel pruning of edgenet with Torch-Pruning's DepGraph.

What is pruned: the DEPLOY form of the model (RepConv branches folded into plain convs), so
every channel that is removed is removed from the convolution that actually runs.

Channel groups (found by DepGraph, not by hand):
  * one group per resolution level: the head's output, every residual block's output, the
    down conv's input, the up path's output and the next level's inputs are tied together by
    the residual adds, so a level's width is pruned as a whole;
  * one group per residual block's middle width (conv1 out / conv2 in).
Groups are ranked by weight magnitude (L2, Torch-Pruning's MagnitudeImportance) and each keeps
``round(C * (1 - ratio))`` channels rounded to the nearest multiple of ``round_to`` (at least
``round_to``, at most C).

Kept as they are: the head's input (12 = 3 x 4 PixelUnshuffle channels, fed by the image) and the
tail's output (12, folded back to RGB by PixelShuffle and added to the input).

PixelShuffle: the up path is ``conv1x1(C_{i+1} -> 4 C_i) -> PixelShuffle(2) -> + skip``. Output
channel c of the shuffle is made of the four consecutive conv channels 4c..4c+3. Torch-Pruning
traces pixel_shuffle as an element-wise op (index i -> i), which ties conv channel i to skip
channel i: a naive pass removes the wrong channels and leaves the residual adds with mismatched
widths (the model no longer runs). Here each up path is wrapped, while pruning, in ``_ShuffleUp``,
a leaf layer with its own pruning function that maps post-shuffle channel c to conv channels
4c..4c+3 (and its input side to the conv's input channels), so DepGraph couples the right
channels.

The pruned model's arch spec (widths per level + ``block_mid`` for residual-block middle widths)
is derived from the pruned layers and checked by rebuilding the model from it: the checkpoint
loads with ``load_model`` alone, with no defaults from the dense model.
"""
from __future__ import annotations

import copy
import logging
from typing import Sequence

import torch
import torch.nn as nn

from ..errors import InputError, ModelError

log = logging.getLogger("edge_deblur.compress.prune")

ROUND_TO = 8


def check_ratio(ratio) -> float:
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise InputError(f"pruning ratio {ratio!r} is not a number; pass the share of channels to remove, e.g. --ratio 0.5") from None
    if not 0.0 < r < 1.0:
        raise InputError(
            f"pruning ratio {ratio!r} is outside (0, 1); it is the share of channels removed per group, "
            "e.g. --ratio 0.5 removes half of them"
        )
    return r


def check_output(src, dst, ratio: float | None = None) -> None:
    """Refuse an output that is a folder or the input checkpoint itself (mirrors ``quantize``)."""
    from pathlib import Path

    src, dst = Path(src), Path(dst)
    tag = f"_p{round(float(ratio) * 100)}" if ratio is not None else "_pruned"
    example = src.with_name(f"{src.stem}{tag}.safetensors").name
    if dst.is_dir():
        raise InputError(f"output {str(dst)!r} is a folder; pass a checkpoint file path, e.g. -o {str(dst / example)!r}")
    if dst.resolve() == src.resolve() or (dst.exists() and src.exists() and dst.samefile(src)):
        raise InputError(f"output {str(dst)!r} would overwrite the input checkpoint; pass another -o (e.g. {example})")


def kept_channels(channels: int, ratio: float, round_to: int = ROUND_TO) -> int:
    """Channels a group of ``channels`` keeps at ``ratio``: nearest multiple of ``round_to``,
    at least ``round_to`` (or all of them when the group is smaller), at most ``channels``."""
    if channels <= round_to:
        return channels
    keep = int(round(channels * (1.0 - ratio) / round_to)) * round_to
    return max(round_to, min(channels, keep))


# --------------------------------------------------------------------------------------------
# PixelShuffle coupling


class _ShuffleUp(nn.Module):
    """conv1x1 -> PixelShuffle(r) as one leaf layer for DepGraph (used only while pruning)."""

    def __init__(self, conv: nn.Conv2d, r: int):
        super().__init__()
        self.conv = conv
        self.r = r

    def forward(self, x):
        return nn.functional.pixel_shuffle(self.conv(x), self.r)


def _shuffle_pruner():
    import torch_pruning as tp

    class ShuffleUpPruner(tp.pruner.function.BasePruningFunc):
        TARGET_MODULES = (_ShuffleUp,)

        def prune_out_channels(self, layer: _ShuffleUp, idxs: Sequence[int]):
            rr = layer.r * layer.r
            conv_idxs = [c * rr + k for c in idxs for k in range(rr)]
            tp.prune_conv_out_channels(layer.conv, conv_idxs)
            return layer

        def prune_in_channels(self, layer: _ShuffleUp, idxs: Sequence[int]):
            tp.prune_conv_in_channels(layer.conv, list(idxs))
            return layer

        def get_out_channels(self, layer: _ShuffleUp):
            return layer.conv.out_channels // (layer.r * layer.r)

        def get_in_channels(self, layer: _ShuffleUp):
            return layer.conv.in_channels

    return ShuffleUpPruner()


def _wrap_shuffles(model) -> None:
    for i, seq in enumerate(model.up):
        conv, shuffle = seq[0], seq[1]
        model.up[i] = _ShuffleUp(conv, shuffle.upscale_factor)


def _unwrap_shuffles(model) -> None:
    for i, m in enumerate(model.up):
        model.up[i] = nn.Sequential(m.conv, nn.PixelShuffle(m.r))


# --------------------------------------------------------------------------------------------
# spec of a (pruned) edgenet


def edgenet_spec(model) -> dict:
    """The full constructor spec of a deploy-form EdgeNet, read from its layers."""
    from ..models.blocks import ResBlock

    widths = [model.head.out_channels] + [d.out_channels for d in model.down]
    block_mid = {}

    def visit(prefix, seq, ch):
        for j, blk in enumerate(seq):
            if not isinstance(blk, ResBlock):
                raise ModelError(f"{prefix}.{j} is a {type(blk).__name__}, not a ResBlock; cannot describe it in an edgenet spec")
            mid = blk.conv1.out_channels
            if blk.conv1.in_channels != ch or blk.conv2.out_channels != ch:
                raise ModelError(f"{prefix}.{j}: block width {blk.conv1.in_channels}/{blk.conv2.out_channels} != level width {ch}")
            if mid != ch:
                block_mid[f"{prefix}.{j}"] = mid

    for i, seq in enumerate(model.enc):
        visit(f"enc.{i}", seq, widths[i])
    visit("mid", model.mid, widths[-1])
    for i, seq in enumerate(model.dec):
        visit(f"dec.{i}", seq, widths[i])
    for side in ("enc_strip", "dec_strip"):
        for key, blk in getattr(model, side, {}).items():
            ch = widths[int(key)]
            if blk.pw1.in_channels != ch or blk.pw2.out_channels != ch:
                raise ModelError(f"{side}.{key}: block width {blk.pw1.in_channels}/{blk.pw2.out_channels} != level width {ch}")
            if blk.pw1.out_channels != ch:
                block_mid[f"{side}.{key}"] = blk.pw1.out_channels
    base = dict(getattr(model, "spec", {}) or {})
    spec = {
        "type": "edgenet",
        "widths": widths,
        "enc_blocks": [len(s) for s in model.enc],
        "mid_blocks": len(model.mid),
        "dec_blocks": [len(s) for s in model.dec],
        "block_mid": block_mid,
        "in_ch": model.tail.out_channels // 4,
        "rep": False,
    }
    for k, v in base.items():  # keep any other constructor argument (strip_levels, strip_kernel)
        if k not in spec and k != "size":
            spec[k] = v
    return spec


def _is_deploy(model) -> bool:
    from ..models.blocks import RepConv3x3

    return not any(isinstance(m, RepConv3x3) for m in model.modules())


# --------------------------------------------------------------------------------------------


def prune_edgenet(model: nn.Module, ratio: float, round_to: int = ROUND_TO, example_hw: tuple[int, int] | None = None):
    """Return a pruned deploy copy of ``model`` (an EdgeNet, train or deploy form) with ``.spec``
    set to its own full arch spec. ``ratio`` is the share of channels removed per group."""
    import torch_pruning as tp

    from ..models.edgenet import EdgeNet
    from ..models.registry import build_model, to_deploy

    ratio = check_ratio(ratio)
    if not isinstance(model, EdgeNet):
        raise ModelError(f"pruning supports edgenet models, got {type(model).__name__}; prune an edgenet checkpoint")
    if getattr(model, "recurrent", False) or (getattr(model, "spec", {}) or {}).get("type", "edgenet") != "edgenet":
        raise ModelError(
            f"pruning supports the feed-forward edgenet only, not {type(model).__name__} "
            "(its state input/output would need its own channel groups); prune an 'edgenet' checkpoint"
        )
    if round_to < 1:
        raise InputError(f"round_to must be >= 1, got {round_to}")
    m = copy.deepcopy(model) if _is_deploy(model) else to_deploy(model)
    m = m.float().cpu().eval()
    in_ch = m.head.in_channels
    out_ch = m.tail.out_channels
    s = m.stride
    h, w = example_hw or (2 * s, 2 * s)
    example = torch.rand(1, in_ch // 4, h, w)

    _wrap_shuffles(m)
    for mod in m.modules():  # in-place ReLUs rewrite autograd nodes and hide convs from the trace
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    shuffle_type = _ShuffleUp
    with torch.enable_grad():
        dg = tp.DependencyGraph().build_dependency(
            m, example_inputs=example, customized_pruners={shuffle_type: _shuffle_pruner()},
        )
    importance = tp.importance.MagnitudeImportance(p=2)
    plan = []
    for group in dg.get_all_groups(ignored_layers=[m.tail], root_module_types=[nn.Conv2d]):
        root = group[0].dep.target.module
        fn = group[0].dep.handler
        if fn not in (tp.prune_conv_out_channels, tp.prune_depthwise_conv_out_channels):
            continue
        c = root.out_channels
        keep = kept_channels(c, ratio, round_to)
        if keep >= c:
            continue
        imp = importance(group)
        if imp is None or imp.numel() != c:
            raise ModelError(f"Torch-Pruning returned {None if imp is None else imp.numel()} scores for a group of {c} channels")
        order = torch.argsort(imp)  # ascending: least important first
        idxs = sorted(order[: c - keep].tolist())
        plan.append((dg.get_module_name(root) if hasattr(dg, "get_module_name") else str(root), c, keep))
        group.prune(idxs=idxs)
    _unwrap_shuffles(m)

    if m.head.in_channels != in_ch or m.tail.out_channels != out_ch:
        raise ModelError(
            f"pruning changed the image channels (head in {m.head.in_channels}, tail out {m.tail.out_channels}); "
            "this is a bug in the pruning groups"
        )
    spec = edgenet_spec(m)
    # the spec must rebuild exactly this model
    rebuilt = build_model(spec)
    try:
        rebuilt.load_state_dict(m.state_dict(), strict=True)
    except RuntimeError as e:
        raise ModelError(f"pruned model does not match its own spec {spec}: {e}") from e
    rebuilt.eval()
    with torch.no_grad():
        y = rebuilt(example)
        if y.shape != example.shape:
            raise ModelError(f"pruned model returns shape {tuple(y.shape)} for input {tuple(example.shape)}")
        if not torch.equal(y, m(example)):
            raise ModelError("pruned model and the model rebuilt from its spec disagree; this is a bug")
    rebuilt.spec = spec
    rebuilt.prune_plan = plan
    for name, c, keep in plan:
        log.debug(f"pruned group at {name}: {c} -> {keep}")
    return rebuilt


def prune_checkpoint(src, dst, ratio: float, round_to: int = ROUND_TO, finetune=None, progress: bool = True) -> dict:
    """Prune checkpoint ``src`` and write ``dst`` (weights + its own spec + meta).

    ``finetune``: a TrainConfig (with ``train.iters`` fine-tuning iterations) run through the normal
    training loop starting from the pruned weights; None skips fine-tuning. Returns a report with
    params / GMACs at 1280x720 before and after."""
    from dataclasses import replace
    from pathlib import Path

    from ..config import to_dict
    from ..models.checkpoint import load_model, read_checkpoint, save_checkpoint, sha256_file
    from ..models.profile import summary

    ratio = check_ratio(ratio)
    check_output(src, dst, ratio)
    dense = load_model(src, deploy=True)
    _, _, dense_config, dense_meta = read_checkpoint(src)
    before = summary(dense)
    pruned = prune_edgenet(dense, ratio, round_to)
    after_prune = summary(pruned)
    report = {
        "source": str(src),
        "source_sha256": sha256_file(src),
        "ratio": ratio,
        "round_to": round_to,
        "before": {"params": before["params"], "gmacs_1280x720": before["gmacs_1280x720"], "spec": dense.spec},
        "after": {"params": after_prune["params"], "gmacs_1280x720": after_prune["gmacs_1280x720"], "spec": pruned.spec},
        "finetune": None,
    }
    log.info(
        "pruned at ratio %g: widths %s -> %s; params %.3f M -> %.3f M; GMACs at 1280x720 %.2f -> %.2f",
        ratio, dense.spec.get("widths"), pruned.spec["widths"], before["params"] / 1e6, after_prune["params"] / 1e6,
        before["gmacs_1280x720"], after_prune["gmacs_1280x720"],
    )
    config = dense_config
    model = pruned
    if finetune is not None and finetune.train.iters > 0:
        from ..train import train

        cfg = replace(finetune, model=dict(pruned.spec), train=replace(finetune.train, init_from=None))
        _claim_finetune_dir(Path(cfg.out_dir), {k: report[k] for k in ("source_sha256", "ratio", "round_to")})
        result = train(cfg, model=pruned, progress=progress)
        last = Path(cfg.out_dir) / "last.safetensors"
        model = load_model(last)
        if model.spec != pruned.spec:
            raise ModelError(f"fine-tuned checkpoint {str(last)!r} has spec {model.spec}, expected {pruned.spec}")
        config = to_dict(cfg)
        report["finetune"] = {"iters": result.get("iters"), "out_dir": cfg.out_dir, "metrics": result.get("metrics")}
    meta = {
        "pruned": {"ratio": ratio, "round_to": round_to, "from": str(src), "from_sha256": report["source_sha256"],
                   "before": {k: report["before"][k] for k in ("params", "gmacs_1280x720")},
                   "dense_spec": dense.spec},
        "params": report["after"]["params"],
        "gmacs_1280x720": report["after"]["gmacs_1280x720"],
        "dense_meta": {k: dense_meta[k] for k in ("iters", "total_iters", "metrics") if k in dense_meta},
    }
    if report["finetune"]:
        meta["finetune"] = report["finetune"]
        meta["metrics"] = report["finetune"].get("metrics")
    save_checkpoint(dst, model.state_dict(), pruned.spec, config, meta)
    report["output"] = str(dst)
    return report


def _claim_finetune_dir(out_dir: Path, what: dict) -> None:
    """The fine-tune folder resumes only the prune it was made for: a ``state.pt`` left by another
    source, ratio or rounding would otherwise be resumed, and its weights returned as this prune's."""
    import json

    marker = out_dir / "pruned_from.json"
    if (out_dir / "state.pt").exists():
        try:
            prior = json.loads(marker.read_text())
        except (OSError, ValueError):
            prior = None
        if prior != what:
            raise InputError(
                f"the fine-tune folder {str(out_dir)!r} holds a run of another prune ({prior or 'unknown source'}; "
                f"this one: {what}); give another with out_dir=DIR, or delete the folder to start over")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(what))
    tmp.replace(marker)
