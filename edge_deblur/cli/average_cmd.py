"""edge-deblur average CKPT CKPT [...] -o OUT: uniform weight average of checkpoints of one run
(stochastic weight averaging along a training run; BN-free models need no statistics update)."""
from __future__ import annotations

import glob


def add_arguments(p):
    p.add_argument("checkpoints", nargs="+", help="checkpoints (.safetensors) of one architecture; globs are expanded")
    p.add_argument("--output", "-o", required=True, help="averaged checkpoint to write")


def run(args) -> int:
    from pathlib import Path

    from ..errors import InputError, ModelError
    from ..models.checkpoint import average_checkpoints

    paths = []
    for pattern in args.checkpoints:
        found = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not found:
            raise ModelError(f"no checkpoint matches {pattern!r}")
        if found != [pattern]:  # a glob: the output left by an earlier run must not be averaged into itself
            out = Path(args.output).resolve()
            if any(Path(f).resolve() == out for f in found):
                raise InputError(f"the glob {pattern!r} matches the output {args.output!r}, which would overwrite an "
                                 "input; pass another -o (outside the glob) or list the checkpoints one by one")
        paths += found
    seen: dict = {}
    for p in paths:  # one file twice (listed and globbed, say) would get twice the weight
        r = Path(p).resolve()
        if r in seen:
            raise InputError(f"checkpoint {p!r} is given twice (also as {seen[r]!r}); list each checkpoint once")
        seen[r] = p
    meta = average_checkpoints(paths, args.output)
    print(f"averaged {len(paths)} checkpoints -> {args.output} ({meta['total_iters']} iterations in total)")
    return 0
