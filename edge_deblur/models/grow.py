"""Function-preserving growth of an edgenet checkpoint (Net2Net-style): add residual blocks that
start as exact identities, so training continues from the smaller model's quality instead of
from scratch. Used to grow the shipped model (see export/*/MODEL_CARD.md): ``train.init_from`` a
checkpoint whose spec is a subset of the configured model grows it with :func:`grow_to`; an image
edgenet checkpoint starts a recurrent ``edgenet_rnn`` or ``edgenet_frames`` with
:func:`to_recurrent` (its first frame, from a zero state, is exactly the image model's output)."""
from __future__ import annotations

import torch

from .blocks import RepConv3x3, StripBlock
from .registry import build_model

# spec keys that growth may change; every other key must match
_GROWABLE = ("mid_blocks", "strip_levels", "strip_kernel", "enc_blocks", "dec_blocks", "widths")


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
    blocks ``spec`` adds (more bottleneck blocks, more blocks at a level, strip blocks at new
    levels) start as identities, and the channels it adds (wider levels) are read by nothing yet.
    Raises ``ValueError`` when ``spec`` is not a growth of ``model.spec``."""
    old_spec = dict(model.spec)
    new_spec = dict(spec)
    if new_spec.get("type") != old_spec.get("type") or not str(old_spec.get("type", "")).startswith("edgenet"):
        raise ValueError(f"can only grow an edgenet into the same type, not {old_spec.get('type')!r} into {new_spec.get('type')!r}")
    new = build_model(new_spec)
    if len(new.spec["widths"]) == len(old_spec["widths"]) + 1:
        # add the level with the old levels' blocks as they are; more blocks per level come below
        step = dict(new.spec, enc_blocks=list(old_spec["enc_blocks"]) + [new.spec["enc_blocks"][-1]],
                    dec_blocks=list(old_spec["dec_blocks"]) + [new.spec["dec_blocks"][-1]])
        model = _add_level(model, step)
        old_spec = dict(model.spec)
    if list(new.spec["widths"]) != list(old_spec["widths"]):
        model = _widen(model, list(new.spec["widths"]))
        old_spec = dict(model.spec)
    full_old = dict(old_spec, **{k: v for k, v in new.spec.items() if k not in old_spec})
    diff = sorted(k for k in set(full_old) | set(new.spec) if full_old.get(k) != new.spec.get(k) and k not in _GROWABLE)
    if diff:
        raise ValueError(f"spec keys {diff} differ; growth only adds blocks ({', '.join(_GROWABLE)})")
    old_mid = len(model.mid)
    if len(new.mid) < old_mid:
        raise ValueError(f"mid_blocks={len(new.mid)} is fewer than the model's {old_mid}; growth only adds blocks")
    old_enc, old_dec = [len(e) for e in model.enc], [len(d) for d in model.dec]
    new_enc, new_dec = [len(e) for e in new.enc], [len(d) for d in new.dec]
    if len(new_enc) != len(old_enc) or any(n < o for n, o in zip(new_enc + new_dec, old_enc + old_dec)):
        raise ValueError(f"enc_blocks {new_enc} / dec_blocks {new_dec} must keep at least the model's "
                         f"{old_enc} / {old_dec} per level; growth only adds blocks")
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
    for i in range(len(new_enc)):  # blocks appended to a level's encoder/decoder start as identities
        for j in range(old_enc[i], new_enc[i]):
            _zero_residual(new.enc[i][j])
        for j in range(old_dec[i], new_dec[i]):
            _zero_residual(new.dec[i][j])
    for i in set(new.strip_levels) - old_strips:
        _zero_residual(new.enc_strip[str(i)])
        _zero_residual(new.dec_strip[str(i)])
    return new


@torch.no_grad()
def _widen(model, widths: list[int]):
    """Return ``model`` with more channels at some levels (``widths`` >= its own, level by level),
    computing exactly what ``model`` computes.

    Every conv of the wider model keeps the old weights in its first rows and columns; the new
    rows (new channels' outputs, new middle channels of a block) keep the fresh model's random
    initialisation, and the old rows' columns that read new channels are set to zero. New channels
    therefore carry non-zero activations (ReLU passes gradients) that no old channel reads yet, so
    the output is unchanged, and the zeroed columns get gradients at the first step. Layouts keep
    old channels first: PixelShuffle's channel ``c`` is rows ``4c..4c+3`` of the up-projection,
    a prefix when ``c`` is an old channel."""
    old = dict(model.spec)
    ow, nw = list(old["widths"]), [int(w) for w in widths]
    if len(nw) != len(ow) or any(n < o for n, o in zip(nw, ow)):
        raise ValueError(f"widening keeps the levels and adds channels: widths {nw} must be at least {ow}, level by level")
    wide = build_model(dict(old, widths=nw))
    sd = wide.state_dict()
    for k, v in model.state_dict().items():
        t = sd.get(k)
        if t is None or t.dim() != v.dim() or any(a < b for a, b in zip(t.shape, v.shape)):
            raise ValueError(f"weight {k} {tuple(v.shape)} has no place in the widened model")
        if k.endswith("fuse_state.weight") and v.shape[1] == 2 * v.shape[0] and t.shape[1] == 2 * t.shape[0]:
            # a recurrent edgenet's 1x1 conv over cat([features, state]): the old state columns
            # move with the state's start (a prefix copy had them read new feature channels)
            o, n = v.shape[0], t.shape[0]
            t[:o] = 0
            t[:o, :o] = v[:, :o]
            t[:o, n:n + o] = v[:, o:]
            continue
        t[tuple(slice(0, n) for n in v.shape)] = v
        if v.dim() == 4:  # old outputs do not read new input channels (yet)
            t[: v.shape[0], v.shape[1]:] = 0
    wide.load_state_dict(sd)
    old_mods = dict(model.named_modules())
    for name, mod in wide.named_modules():  # a RepConv whose in == out only after widening (or before)
        was = old_mods.get(name)             # gains (loses) its identity branch: fold the difference in
        if isinstance(mod, RepConv3x3) and isinstance(was, RepConv3x3) and mod.has_identity != was.has_identity:
            idx = torch.arange(was.out_ch)
            mod.conv3.weight[idx, idx, 1, 1] += -1.0 if mod.has_identity else 1.0
    return wide


@torch.no_grad()
def _add_level(model, spec: dict):
    """Grow ``model`` by one coarser level (a bottleneck at half the resolution of its own).

    The old bottleneck blocks become the new deepest encoder and decoder blocks of their level
    (the first ``enc_blocks[-1]`` of them before the skip, the rest after it), and the new level
    hangs off that skip: its up-projection starts at zero, so the skip carries exactly what the
    old bottleneck computed and the output is unchanged. The new level's blocks get gradients as
    soon as the up-projection moves away from zero. Other keys of ``spec`` (more bottleneck
    blocks, strips) are left to :func:`grow_to`."""
    old = dict(model.spec)
    ow, nw = list(old["widths"]), list(spec["widths"])
    e, d = int(spec["enc_blocks"][-1]), int(spec["dec_blocks"][-1])
    if nw[:-1] != ow or list(spec["enc_blocks"][:-1]) != list(old["enc_blocks"]) \
            or list(spec["dec_blocks"][:-1]) != list(old["dec_blocks"]):
        raise ValueError(f"adding a level keeps the old widths and blocks: {ow}, {old['enc_blocks']}, {old['dec_blocks']} "
                         f"must prefix {nw}, {spec['enc_blocks']}, {spec['dec_blocks']}")
    if e + d != len(model.mid):
        raise ValueError(f"the model's {len(model.mid)} bottleneck blocks become the new level's encoder and decoder "
                         f"blocks: enc_blocks[-1] + dec_blocks[-1] must be {len(model.mid)}, got {e} + {d}")
    if old.get("block_mid"):
        raise ValueError("cannot add a level to a pruned model (block_mid set); grow before pruning")
    if getattr(model, "recurrent", False) or str(old.get("type", "")).endswith("_rnn"):
        raise ValueError("cannot add a level to a recurrent edgenet (its state fuse sits at the bottleneck); add the "
                         "level to the image model, then make it recurrent (train.init_from with type edgenet_rnn)")
    # strips the spec adds are left to grow_to, which starts them as identities
    grown = build_model(dict(spec, strip_levels=old.get("strip_levels", []), strip_kernel=old.get("strip_kernel", 21)))
    lvl = len(ow) - 1  # index of the old bottleneck's level among the new encoder/decoder levels
    sd = {}
    for k, v in model.state_dict().items():
        if k.startswith("mid."):
            j, rest = k[4:].split(".", 1)
            j = int(j)
            k = f"enc.{lvl}.{j}.{rest}" if j < e else f"dec.{lvl}.{j - e}.{rest}"
        sd[k] = v
    missing, unexpected = grown.load_state_dict(sd, strict=False)
    if unexpected:
        raise ValueError(f"weights without a place in the grown model: {unexpected[:4]}")
    grown.up[lvl][0].weight.zero_()
    grown.up[lvl][0].bias.zero_()
    return grown


def grow_edgenet(model, mid_blocks: int):
    """Return a copy of edgenet ``model`` with ``mid_blocks`` bottleneck blocks (>= the current
    count); the new blocks are appended as identities, so the output is unchanged."""
    return grow_to(model, dict(model.spec, mid_blocks=mid_blocks))


def to_recurrent(image_model, spec: dict):
    """Return the recurrent edgenet ``spec`` (``type: edgenet_rnn`` or ``edgenet_frames``) that
    computes exactly what the image edgenet ``image_model`` computes as long as its state is zero:
    every image weight is copied (after growing the image model when ``spec`` has more blocks), and
    the recurrent additions keep their initialisation (``edgenet_rnn``'s state fuse passes the image
    features through and ignores the state, ``edgenet_frames``' state head is zero, until trained). Raises ``ValueError`` when the two do not fit."""
    new = build_model(spec)
    if not getattr(new, "recurrent", False):
        raise ValueError(f"{spec.get('type')!r} is not a recurrent model")
    img_type = str(image_model.spec.get("type", ""))
    if img_type != "edgenet":
        raise ValueError(f"a recurrent edgenet starts from an image edgenet, not {img_type!r}")
    img_spec = {k: v for k, v in new.spec.items() if k != "prev_frames"}  # edgenet_frames' own key
    img_spec["type"] = img_type
    if any(image_model.spec.get(k) != img_spec.get(k) for k in set(image_model.spec) | set(img_spec)):
        image_model = grow_to(image_model, img_spec)
    missing, unexpected = new.load_state_dict(image_model.state_dict(), strict=False)
    extra = set(new.recurrent_parameter_names())
    if unexpected or set(missing) - extra:
        raise ValueError(f"image weights do not fit the recurrent model: missing {sorted(set(missing) - extra)[:4]}, "
                         f"unexpected {sorted(unexpected)[:4]}")
    return new
