"""Samples/s of the two blur synthesis paths for one training recipe, measured in one run:
the OpenCV path (data.datasets.SyntheticDataset, one item at a time, as a DataLoader worker makes
them) and the batched torch path (train.device_data.DeviceBatches, data.synth: torch) on the
given device. The two alternate in short windows so that a machine shared with other work
slows both alike; the ratio is the figure to compare.

    python benchmarks/synth_throughput.py --config configs/train/edgenet_gpu.yaml --device cpu \\
        --threads 1 --batch 16 --rounds 3 --seconds 10

Real pairs are left out (data.pair_prob=0): this measures synthesis. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor()
    keep = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    return f"{model} ({', '.join(keep)})"


def build_paths(cfg, device, batch: int, seed: int = 1):
    """(OpenCV dataset, torch batches) for one recipe with real pairs off; with a pack, both blur
    the same pixels (the pack's photos)."""
    from edge_deblur.data.datasets import SyntheticDataset
    from edge_deblur.train.device_data import DeviceBatches

    d = cfg.data
    db = DeviceBatches(cfg, device, seed=seed, batch_size=batch, prefetch=False)
    ds = SyntheticDataset(d.sharp_roots, d.crop, d.blur, d.scale, seed=seed, length=10**9, downscale=d.downscale,
                          cache=False)
    if d.pack:
        from edge_deblur.data.pack import open_pack

        pc = open_pack(d.pack, d.sharp_roots, check_sources=False)
        ds.images.images, ds.images.paths = pc.sharp, [Path(n) for n in pc.sharp_names]
    return ds, db


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads")
    ap.add_argument("--batch", type=int, default=16, help="torch path batch size")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="per path per round")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()

    import cv2
    import torch

    from edge_deblur.config import load_train_config
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    cfg = load_train_config(a.config, ["data.pair_prob=0", *a.overrides])
    d = cfg.data
    ds, db = build_paths(cfg, a.device, a.batch, seed=1)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    ds[0], db.next()  # warm-up (first-call costs, cudnn/kernels)
    sync()
    counts = {"opencv": [0, 0.0], "torch": [0, 0.0]}
    i = 1
    for _ in range(a.rounds):
        t = time.perf_counter()
        while time.perf_counter() - t < a.seconds:
            ds[i]
            i += 1
            counts["opencv"][0] += 1
        counts["opencv"][1] += time.perf_counter() - t
        t = time.perf_counter()
        while time.perf_counter() - t < a.seconds:
            db.next()
            counts["torch"][0] += a.batch
        sync()
        counts["torch"][1] += time.perf_counter() - t
    res = {k: round(n / s, 2) for k, (n, s) in counts.items()}
    print(json.dumps({"config": a.config, "crop": d.crop, "length": d.blur.length, "device": a.device,
                      "threads": a.threads, "batch": a.batch, "samples_per_s": res,
                      "torch_over_opencv": round(res["torch"] / res["opencv"], 2), "cpu": cpu_flags(),
                      "torch_version": torch.__version__, "cv2": cv2.__version__}, indent=1))


if __name__ == "__main__":
    main()
