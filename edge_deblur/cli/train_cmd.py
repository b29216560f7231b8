"""edge-deblur train --config configs/train/<name>.yaml [key=value ...]"""
from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument("--config", "-c", required=True, help="training YAML (see configs/train/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. train.iters=2000")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def run(args) -> int:
    from ..config import load_train_config, to_dict

    cfg = load_train_config(args.config, args.overrides)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    import signal

    from ..train import train
    from ..train.loop import ignore_worker_deaths

    def _stop(signum, frame):  # SIGTERM stops like Ctrl-C: save a checkpoint to resume from
        # the same signal reaches the DataLoader workers (a terminal's Ctrl-C, pkill -f): their
        # deaths must not turn this stop into PyTorch's "worker is killed" error before the save
        ignore_worker_deaths()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    result = train(cfg, progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return 0
