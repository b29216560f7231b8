#!/usr/bin/env python3
"""What the trainer's validation costs per set, and what the cheaper GoPro options change.

    python benchmarks/val_cost.py [--checkpoint checkpoints/edgenet_s/model.safetensors]
                                  [--suite multi_camera] [--threads 2] [--crop 640x360] [--max-pairs 5]

Runs the trainer's own validator (edge_deblur.train.loop.Validator: torch on the CPU, the runtime's
preprocessing, full frames) over each set of the suite, then over one set (``--set``, default
gopro: 17 frames of 1280x720, the dearest by far) again with a centre crop (``--crop``) and with a
subset spread over its scenes (``--max-pairs``), and prints the wall and CPU seconds and the gains
measured each way as one JSON object. CPU seconds (process time, all threads) are the figure to
compare on a shared machine: wall time there depends on what else runs.
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


def cpu_name() -> str:
    """The CPU's model name and the vector features that matter for conv speed."""
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = next(line for line in lines if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
    want = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
    return f"{name} ({' '.join(f for f in want if f in flags)})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/edgenet_s/model.safetensors")
    ap.add_argument("--suite", default="multi_camera")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--crop", default="640x360")
    ap.add_argument("--max-pairs", type=int, default=5)
    ap.add_argument("--set", default="gopro", help="the set to try the cheaper options on")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint).eval()
    sets = load_suite(args.suite)
    crop = list(parse_size(args.crop))
    runs = [(s.name, [s]) for s in sets]
    for s in sets:
        if s.name == args.set:
            runs.append((f"{s.name} crop {crop[0]}x{crop[1]}", [dataclasses.replace(s, crop=crop)]))
            runs.append((f"{s.name} max_pairs {args.max_pairs}", [dataclasses.replace(s, max_pairs=args.max_pairs)]))
    out = {"checkpoint": args.checkpoint, "threads": args.threads, "cpu": cpu_name(), "runs": {}}
    for label, cfgs in runs:
        v = Validator(cfgs, torch.device("cpu"))
        t0, c0 = time.perf_counter(), time.process_time()
        r = v(model)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        (name, m), = r["sets"].items()
        out["runs"][label] = {"set": name, "pairs": m["pairs"], "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                              "cpu_s_per_pair": round(cpu / m["pairs"], 2), "psnr_gain": round(m["psnr_gain"], 3),
                              "tone_gain": round(m["tone_gain"], 3), "worst_scene": m["worst_scene"],
                              "worst_scene_gain": round(m["worst_scene_gain"], 3)}
        print(label, json.dumps(out["runs"][label]), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
