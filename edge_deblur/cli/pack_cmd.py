"""edge-deblur pack --config RECIPE [--config ...] --out FILE: the sharp photos and real pairs that
training recipes name, in one compressed file with a manifest (it travels to a GPU machine that
has no ../shared/data). ``--val-pairs ROOT[@scene,...]`` adds lossless validation pairs."""
from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument("--config", "-c", action="append", default=[],
                   help="training YAML whose data.sharp_roots / pair_roots / pair_exclude to pack (repeatable; "
                        "the recipes must agree on pair_exclude)")
    p.add_argument("--sharp", action="append", default=[], metavar="ROOT", help="a folder of sharp photos to add")
    p.add_argument("--val-pairs", action="append", default=[], metavar="ROOT[@SCENE,...]",
                   help="validation pairs to store lossless (e.g. ../shared/data/pairs/REDS_320x180@test_001)")
    p.add_argument("--out", "-o", required=True, help="pack file to write (e.g. data_cache/gpu/train.pack)")
    p.add_argument("--max-side", type=int, default=1024, help="long side of sharp photos, px (default 1024)")
    p.add_argument("--quality", type=int, default=90, help="WebP quality of sharp photos (default 90)")
    p.add_argument("--lossless", action="store_true", help="store the sharp photos lossless too (large)")
    p.add_argument("--limit-mib", type=float, default=40.0, help="refuse to write a larger pack (default 40)")
    p.add_argument("--verify", action="store_true", help="check an existing pack (members and sources) instead")


def run(args) -> int:
    from ..config import load_train_config
    from ..data.pack import build_pack, open_pack
    from ..errors import ConfigError

    if args.verify:
        pc = open_pack(args.out, check_sources=True, want_val=True)
        m = pc.manifest
        print(f"{args.out}: OK ({m['counts']}, digest {m['digest'][:16]}); every member and every reachable "
              "source matches its checksum")
        return 0
    sharp, pairs, exclude = [], [], None
    for c in args.config:
        cfg = load_train_config(c)
        sharp += [r for r in cfg.data.sharp_roots if r not in sharp]
        pairs += [r for r in cfg.data.pair_roots if r not in pairs]
        if cfg.data.pair_roots:
            if exclude is not None and sorted(exclude) != sorted(cfg.data.pair_exclude):
                raise ConfigError(f"{c}: data.pair_exclude {cfg.data.pair_exclude} differs from {exclude} of an earlier "
                                  "--config; pack those recipes separately")
            exclude = list(cfg.data.pair_exclude)
    sharp += [r for r in args.sharp if r not in sharp]
    m = build_pack(args.out, sharp, pairs, exclude or [], args.val_pairs, max_side=args.max_side,
                   quality=None if args.lossless else args.quality, limit_mib=args.limit_mib, log=print)
    summary = {k: m[k] for k in ("counts", "sharp_roots", "pair_roots", "pair_exclude", "val_pairs", "encoding",
                                 "digest", "bytes", "seconds")}
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}: {m['bytes'] / 2**20:.1f} MiB")
    return 0
