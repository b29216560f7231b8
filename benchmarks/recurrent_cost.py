#!/usr/bin/env python3
"""Per-frame streaming cost of a recurrent model against an image model, measured in one run.

    python benchmarks/recurrent_cost.py RECURRENT.onnx [--image checkpoints/edgenet_s/model.onnx]
        [--size 640x360] [--frames 40] [--rounds 5] [--threads 2] [--json]

Both models run as the stream runs them (``Deblurrer``: pre-processing, the model, post-processing;
the recurrent one with its state carried and the scene-cut detector on) over the same consecutive
frames of a synthetic camera pan, alternating model by model in each round, so that load from
other processes hits both alike. Prints the median wall time per frame of each, their ratio (the
median over rounds of the per-round ratio), the same for the process's CPU time (the fairer figure
on a machine shared with other jobs) and the GMACs per frame from the manifests.
"""
from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from edge_deblur import Deblurrer
from edge_deblur.runtime.bench import machine_info


def pan(size, n, seed=0):
    w, h = size
    rng = np.random.default_rng(seed)
    big = cv2.resize(rng.integers(0, 256, (h // 8 + 8, w // 8 + n, 3), dtype=np.uint8), (w + 8 * n, h + 64),
                     interpolation=cv2.INTER_CUBIC)
    return [np.ascontiguousarray(big[32:32 + h, 8 * i:8 * i + w]) for i in range(n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recurrent")
    ap.add_argument("--image", default=None,
                    help="image model (default: the bundled folder, whose fastest measured file is chosen: compare "
                         "the same precision by naming the file, e.g. checkpoints/edgenet_s/model.onnx)")
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    frames = pan(size, args.frames)
    models = {"image": Deblurrer.open(args.image, threads=args.threads),
              "recurrent": Deblurrer.open(args.recurrent, threads=args.threads)}
    try:
        if not models["recurrent"].recurrent:
            raise SystemExit(f"{args.recurrent} is not a recurrent model")
        for d in models.values():
            d.warmup(size[1], size[0])
        per = {k: [] for k in models}
        cpu = {k: [] for k in models}
        for _ in range(args.rounds):
            for k, d in models.items():
                d.reset()
                t0, c0 = time.perf_counter(), time.process_time()
                for f in frames:
                    d(f)
                per[k].append((time.perf_counter() - t0) / len(frames) * 1e3)
                cpu[k].append((time.process_time() - c0) / len(frames) * 1e3)
        ratios = [r / i for r, i in zip(per["recurrent"], per["image"])]
        cpu_ratios = [r / i for r, i in zip(cpu["recurrent"], cpu["image"])]
        gm = {}
        for k, d in models.items():
            mpp = d.info.get("macs_per_pixel")
            hp, wp = -(-size[1] // d.stride) * d.stride, -(-size[0] // d.stride) * d.stride
            gm[k] = mpp * hp * wp / 1e9 if mpp else None
        result = {
            "size": args.size, "frames": args.frames, "rounds": args.rounds,
            "ms_per_frame": {k: float(np.median(v)) for k, v in per.items()},
            "ratio": float(np.median(ratios)), "ratios": ratios,
            "cpu_ms_per_frame": {k: float(np.median(v)) for k, v in cpu.items()},
            "cpu_ratio": float(np.median(cpu_ratios)), "cpu_ratios": cpu_ratios,
            "gmacs_per_frame": gm,
            "gmacs_ratio": gm["recurrent"] / gm["image"] if all(gm.values()) else None,
            "models": {k: d.info.get("model") for k, d in models.items()},
            "precision": {k: d.info.get("precision") for k, d in models.items()},
            "state": models["recurrent"].state_stats(),
            "threads": models["image"].info.get("threads"),
            "machine": machine_info(),
        }
    finally:
        for d in models.values():
            d.close()
    if args.json:
        print(json.dumps(result))
        return
    ms = result["ms_per_frame"]
    print(f"{args.size}, {args.frames} frames x {args.rounds} rounds, {result['threads']} threads")
    for k in ("image", "recurrent"):
        print(f"{k:<10} {ms[k]:.1f} ms/frame  {gm[k]:.3f} GMACs  {result['models'][k]} ({result['precision'][k]})")
    print(f"ratio      {result['ratio']:.3f} wall (per round: {', '.join(f'{r:.3f}' for r in ratios)}); "
          f"GMACs ratio {result['gmacs_ratio']:.4f}")
    c = result["cpu_ms_per_frame"]
    print(f"CPU time   image {c['image']:.1f} ms/frame, recurrent {c['recurrent']:.1f} ms/frame: ratio "
          f"{result['cpu_ratio']:.3f} (per round: {', '.join(f'{r:.3f}' for r in cpu_ratios)})")
    m = result["machine"]
    print(f"machine    {m['cpu']} ({m['cores']} cores), load {m.get('load_avg_1_5_15min')}")


if __name__ == "__main__":
    main()
