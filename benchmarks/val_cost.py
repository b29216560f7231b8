#!/usr/bin/env python3
"""What the trainer's validation costs per set, and what the cheaper GoPro options change.

    python benchmarks/val_cost.py [--checkpoint export/edgenet_s/model.safetensors]
                                  [--suite multi_camera] [--threads 2] [--crop 640x360] [--max-pairs 5]

Runs the trainer's own validator (edge_deblur.train.loop.Validator: torch on the CPU, the runtime's
preprocessing, full frames) over every set of the suite, then over each real set again with a
centre crop (``crop``) and with a subset spread over its scenes (``max_pairs``), and prints the
seconds and the gains measured each way as one JSON object. The GoPro set is 17 frames of
1280x720: the dearest set by far.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import torch

from edge_deblur.cli.info_cmd import parse_size
from edge_deblur.config.validation import load_suite
from edge_deblur.models.checkpoint import load_model
from edge_deblur.train.loop import Validator


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor()
    want = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
    return " ".join(f for f in want if f in flags)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="export/edgenet_s/model.safetensors")
    ap.add_argument("--suite", default="multi_camera")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--crop", default="640x360")
    ap.add_argument("--max-pairs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint).eval()
    sets = load_suite(args.suite)
    crop = list(parse_size(args.crop))
    runs = [("full", sets)]
    for s in sets:
        if s.kind == "real":
            runs.append((f"{s.name} crop {crop[0]}x{crop[1]}", [dataclasses.replace(s, crop=crop)]))
            runs.append((f"{s.name} max_pairs {args.max_pairs}", [dataclasses.replace(s, max_pairs=args.max_pairs)]))
    out = {"checkpoint": args.checkpoint, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
           "cpu_flags": cpu_flags(), "runs": {}}
    for label, cfgs in runs:
        v = Validator(cfgs, torch.device("cpu"))
        t0 = time.perf_counter()
        r = v(model)
        total = time.perf_counter() - t0
        out["runs"][label] = {"seconds": round(total, 2), "sets": {
            n: {"pairs": m["pairs"], "seconds": round(m["seconds"], 2), "psnr_gain": round(m["psnr_gain"], 3),
                "tone_gain": round(m["tone_gain"], 3), "worst_scene": m["worst_scene"],
                "worst_scene_gain": round(m["worst_scene_gain"], 3)} for n, m in r["sets"].items()},
            "mean_gain": round(r["mean_gain"], 3)}
        print(label, json.dumps(out["runs"][label]), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
