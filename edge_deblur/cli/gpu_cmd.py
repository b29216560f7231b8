"""edge-deblur gpu --job 'CONFIG [key=value ...]' [--job ...] --pack PACK [--val-pack PACK] --out DIR:
the one-call GPU training session (edge_deblur/train/session.py, docs/GPU_TRAINING.md)."""
from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument("--job", action="append", default=[], metavar="'CONFIG [key=value ...]'",
                   help="a training recipe to train in this session (repeatable; jobs train side by side on the GPU)")
    p.add_argument("--pack", required=True, help="training data pack (edge-deblur pack)")
    p.add_argument("--val-pack", default=None, help="pack of validation pairs to evaluate on at the end")
    p.add_argument("--out", required=True, help="folder for the results (the device tool's $OUT): at most 8 files")
    p.add_argument("--budget", type=float, default=540.0, help="wall-clock seconds for the whole session (default 540)")
    p.add_argument("--train-seconds", type=float, default=None,
                   help="training seconds (default: what the budget leaves after start-up, evaluation and tests)")
    p.add_argument("--init", default=None,
                   help="checkpoint for jobs without a committed one in --checkpoints (grown into larger edgenets)")
    p.add_argument("--checkpoints", default="checkpoints/gpu",
                   help="committed checkpoints to resume from: <dir>/<job name>.safetensors (default checkpoints/gpu)")
    p.add_argument("--work", default="runs/gpu", help="working folder for the runs (default runs/gpu)")
    p.add_argument("--no-tests", action="store_true", help="skip the GPU tests at the end")
    p.add_argument("--dry-run", action="store_true", help="run every step on the CPU (checks the command; no GPU needed)")


def run(args) -> int:
    from ..train.session import parse_job, run_session

    report = run_session([parse_job(j) for j in args.job], args.out, args.pack, args.val_pack, budget_s=args.budget,
                         train_s=args.train_seconds, dry_run=args.dry_run, ckpt_dir=args.checkpoints, init=args.init,
                         work_dir=args.work, tests=not args.no_tests)
    summary = {n: {k: j.get(k) for k in ("exit_code", "iters", "total_iters", "samples_per_s", "checkpoint")}
               for n, j in report["jobs"].items()}
    print(json.dumps({"device": report["device"].get("gpu", "cpu"), "gpu": report.get("gpu"), "jobs": summary,
                      "gpu_tests": report.get("gpu_tests"), "seconds": report.get("seconds")}, indent=1))
    return 0 if all(j.get("exit_code") == 0 for j in report["jobs"].values()) else 1
