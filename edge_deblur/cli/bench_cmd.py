"""edge-deblur bench [--model M] [--size WxH] [--backend B] [--runs N] [--warmup N] [--json]"""
from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument("--model", "-m", default=None, help=".onnx, .safetensors, .engine or a model folder (default: the bundled model)")
    p.add_argument("--size", default="1280x720", help="frame size WIDTHxHEIGHT (default 1280x720)")
    p.add_argument("--backend", default=None, help="onnxruntime | torch | tensorrt | torch-cuda (default: from the file)")
    p.add_argument("--device", default=None, help="cpu | cuda | tensorrt (ONNX Runtime providers), cpu | cuda (torch)")
    p.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--batch", type=int, default=1, help="frames per call (default 1)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--tile", type=int, default=None, help="tile size (default: whole frame)")
    p.add_argument("--overlap", type=int, default=128, help="tile overlap in pixels (default 128: about the receptive field of edgenet)")
    p.add_argument("--no-peak", action="store_true", help="skip measuring the 3x3-conv peak")
    p.add_argument("--peak-runs", type=int, default=10, help="timed runs per conv-peak configuration (default 10)")
    p.add_argument("--select", choices=["features", "measure"], default=None,
                   help="for a model folder: choose the file by the CPU's instruction sets (default) or by timing "
                        "the candidates once on this machine (cached)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    from ..runtime.bench import bench, format_bench

    r = bench(
        args.model, size=args.size, backend=args.backend, runs=args.runs, warmup=args.warmup, batch=args.batch,
        threads=args.threads, device=args.device, tile=args.tile, overlap=args.overlap, peak=not args.no_peak,
        peak_runs=args.peak_runs, select=args.select,
    )
    print(json.dumps(r) if args.json else format_bench(r))
    return 0
