"""Do the two blur synthesis paths make the same blur? Distributions over samples of one recipe.

The OpenCV path (``data.datasets.SyntheticDataset``, what CPU training uses) and the batched torch
path (``train.device_data.DeviceBatches``, ``data.synth: torch``, what the GPU session uses) are
run on the same recipe with real pairs off, and per sample:

- ``psnr``: PSNR of the blurred crop against its sharp crop (how much the blur destroys);
- ``shift``: mean(blurred) - mean(sharp) in 8-bit levels (the tone the model would learn to undo);
- ``grad``: gradient energy of the blurred crop over the sharp crop's (1: no blur, -> 0: smeared);
- ``hf``: the blurred crop's residual after a 3x3 median, RMS in levels (noise, JPEG, halos).

    python benchmarks/synth_compare.py --config configs/train/edgenet_m5_discrete.yaml --samples 96

Prints quantiles of each for both paths, as one JSON object.
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def stats(blur: np.ndarray, sharp: np.ndarray) -> dict:
    """blur, sharp: (3, H, W) float in [0, 1]."""
    import cv2

    b, s = blur.astype(np.float64) * 255, sharp.astype(np.float64) * 255
    mse = np.mean((b - s) ** 2)

    def genergy(x):
        g = x.mean(0)
        return np.mean(np.diff(g, axis=0) ** 2) + np.mean(np.diff(g, axis=1) ** 2)

    bu8 = np.clip(np.round(b.mean(0)), 0, 255).astype(np.uint8)
    hf = b.mean(0) - cv2.medianBlur(bu8, 3).astype(np.float64)
    return {"psnr": 10 * np.log10(255 ** 2 / max(mse, 1e-10)), "shift": b.mean() - s.mean(),
            "grad": genergy(b) / max(genergy(s), 1e-10), "hf": float(np.sqrt(np.mean(hf ** 2)))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args(argv)

    import cv2
    import torch

    from edge_deblur.config import load_train_config
    from synth_throughput import build_paths  # benchmarks/: the same two paths, the same photos

    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    cfg = load_train_config(a.config, ["data.pair_prob=0", *a.overrides])
    d = cfg.data
    ds, db = build_paths(cfg, "cpu", a.batch, seed=a.seed)
    rows = {"opencv": [], "torch": []}
    for i in range(a.samples):
        it = ds[i]
        rows["opencv"].append(stats(it["blur"].numpy(), it["sharp"].numpy()))
    while len(rows["torch"]) < a.samples:
        bt = db.next()
        for bl, sh in zip(bt["blur"].float().numpy(), bt["sharp"].float().numpy()):
            rows["torch"].append(stats(bl, sh))
    qs = [0.1, 0.25, 0.5, 0.75, 0.9]
    out = {"config": a.config, "crop": d.crop, "samples": a.samples, "quantiles": qs}
    for path, r in rows.items():
        r = r[: a.samples]
        out[path] = {k: [round(float(np.quantile([x[k] for x in r], q)), 3) for q in qs] for k in r[0]}
        out[path]["mean"] = {k: round(float(np.mean([x[k] for x in r])), 3) for k in r[0]}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
