"""edge-deblur prune CKPT [key=value ...] --ratio R [--config YAML] [--set key=value ...] [--finetune-iters N] -o CKPT_OUT

Structured channel pruning of an edgenet checkpoint (Torch-Pruning DepGraph, magnitude ranking,
channel counts rounded to multiples of 8), then a fine-tune with the normal training loop. The
fine-tune uses --config, or else the training config stored in the checkpoint, with the
key=value overrides applied; train.iters is set by --finetune-iters."""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(p):
    p.add_argument("checkpoint", help="dense checkpoint (.safetensors) written by 'edge-deblur train'")
    p.add_argument("--ratio", "-r", required=True, help="share of channels removed per channel group, in (0, 1), e.g. 0.5")
    p.add_argument("--output", "-o", required=True, help="pruned checkpoint to write (.safetensors)")
    p.add_argument("--config", "-c", default=None,
                   help="training YAML for the fine-tune (default: the config stored in the checkpoint)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override fine-tune config keys right after CKPT, e.g. train.lr=2e-4 out_dir=runs/pruned "
                        "(or anywhere with --set)")
    p.add_argument("--set", dest="set_overrides", nargs="+", action="extend", default=[], metavar="key=value",
                   help="more key=value overrides of the fine-tune config")
    p.add_argument("--finetune-iters", type=int, default=2000,
                   help="fine-tuning iterations with the normal training loop (default 2000; 0: no fine-tune)")
    p.add_argument("--round-to", type=int, default=8, help="channel counts are rounded to multiples of this (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar during the fine-tune")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    plain = getattr(p, "unrecognized", None)  # edge_deblur.cli.Parser's hook for leftover arguments

    def unrecognized(extras):  # key=value after the options: say where overrides go
        kv = [t for t in extras if "=" in t and not t.startswith("-")]
        if kv:
            p.error(f"unrecognized arguments: {' '.join(extras)}; key=value overrides go right after CKPT "
                    f"(edge-deblur prune CKPT {' '.join(kv)} --ratio ...) or after --set (--set {' '.join(kv)})")
        plain(extras)

    if plain is not None:
        p.unrecognized = unrecognized


def _finetune_config(args):
    from ..config import load_train_config
    from ..errors import ConfigError, InputError
    from ..models.checkpoint import read_checkpoint

    if args.finetune_iters < 0:
        raise InputError(f"--finetune-iters must be >= 0, got {args.finetune_iters}")
    args.overrides = list(args.overrides) + list(getattr(args, "set_overrides", []) or [])
    if args.finetune_iters == 0:
        if args.overrides or args.config:
            # nothing is fine-tuned, but a typo or a bad value must not pass silently
            load_train_config(args.config, args.overrides)
            unused = ([f"--config {args.config}"] if args.config else []) + args.overrides
            log.warning("--finetune-iters 0: no fine-tune, so these are checked but not used: %s", " ".join(unused))
        return None
    overrides = list(args.overrides) + [f"train.iters={args.finetune_iters}"]
    if not any(o.split("=", 1)[0].strip() == "out_dir" for o in args.overrides):
        out = Path(args.output)
        overrides.append(f"out_dir={out.parent / (out.stem + '_finetune')}")
    if not any(o.split("=", 1)[0].strip() == "train.init_from" for o in args.overrides):
        overrides.append("train.init_from=null")
    if args.config:
        return load_train_config(args.config, overrides)
    _, _, stored, _ = read_checkpoint(args.checkpoint)
    if not stored:
        raise ConfigError(
            f"{args.checkpoint!r} stores no training config for the fine-tune; pass --config configs/train/<name>.yaml "
            "or --finetune-iters 0 to skip fine-tuning"
        )
    return load_train_config(None, overrides, base=stored)


def run(args) -> int:
    from ..compress.prune import check_output, check_ratio, prune_checkpoint

    ratio = check_ratio(args.ratio)
    check_output(args.checkpoint, args.output, ratio)  # before reading configs or pruning
    cfg = _finetune_config(args)
    report = prune_checkpoint(args.checkpoint, args.output, ratio, round_to=args.round_to, finetune=cfg,
                              progress=not args.no_progress)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    b, a = report["before"], report["after"]
    print(f"pruned {args.checkpoint} at ratio {ratio:g} (round to {args.round_to})")
    print(f"  widths     {b['spec'].get('widths')} -> {a['spec'].get('widths')}")
    if a["spec"].get("block_mid"):
        print(f"  block_mid  {a['spec']['block_mid']}")
    print(f"  params (deployed)  {b['params'] / 1e6:.3f} M -> {a['params'] / 1e6:.3f} M ({100 * (a['params'] / b['params'] - 1):+.1f}%)")
    print(f"  GMACs at 1280x720  {b['gmacs_1280x720']:.2f} -> {a['gmacs_1280x720']:.2f} "
          f"({100 * (a['gmacs_1280x720'] / b['gmacs_1280x720'] - 1):+.1f}%)")
    ft = report["finetune"]
    if ft:
        print(f"  fine-tuned {ft['iters']} iterations in {ft['out_dir']}; metrics: {json.dumps(ft.get('metrics'))}")
    else:
        print("  not fine-tuned (--finetune-iters 0): expect a large quality drop until it is")
    print(f"wrote {report['output']}")
    return 0
