#!/usr/bin/env python3
"""The training objective of several checkpoints on the same fresh training samples.

Draws ``--samples`` samples from a recipe's training distribution with a seed the run did not
train on (synthetic blur and real pairs, as ``data`` says), and reports for each checkpoint the
recipe's loss (pixel loss + ``freq_weight`` x FFT loss + ``lowpass_weight`` x box-mean loss) and
the PSNR, per kind of sample. Set against the validation figures of the same checkpoints, it says
whether a run that gets worse on validation is failing to optimize its objective (the loss here
rises) or optimizing an objective that does not carry over to the validation sets (it falls).

  python benchmarks/loss_probe.py -c configs/train/edgenet_m5_centroid.yaml \\
      export/edgenet_m5/model.safetensors runs/edgenet_m5_s17/ckpt_000750.safetensors --samples 36
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config", required=True, help="the training recipe whose data and loss to use")
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--samples", type=int, default=36)
    ap.add_argument("--seed", type=int, default=4242, help="not the run's own seed (train.seed, 0 by default)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from edge_deblur.config.schema import load_train_config
    from edge_deblur.data.datasets import build_train_dataset
    from edge_deblur.models.checkpoint import load_model
    from edge_deblur.train.losses import PIXEL_LOSSES, frequency_loss, lowpass_loss

    torch.set_num_threads(args.threads)
    cfg = load_train_config(args.config)
    t = cfg.train
    ds = build_train_dataset(cfg.data, seed=args.seed, length=max(args.samples, 1) * 10)
    items = [ds[i] for i in range(args.samples)]
    kinds = ["synthetic" if it["scene"] == "synthetic" else "pairs" for it in items]
    pixel = PIXEL_LOSSES[t.loss]
    print(f"{args.samples} samples of {args.config} (seed {args.seed}): "
          + ", ".join(f"{kinds.count(k)} {k}" for k in sorted(set(kinds))))
    for path in args.checkpoints:
        model = load_model(path).eval()
        loss, psnr = {k: [] for k in set(kinds)}, {k: [] for k in set(kinds)}
        with torch.no_grad():
            for it, kind in zip(items, kinds):
                x, y = it["blur"][None], it["sharp"][None]
                pred = model(x)
                kw = {"eps": t.charbonnier_eps} if t.loss == "charbonnier" else {}
                value = pixel(pred, y, **kw)
                if t.freq_weight > 0:
                    value = value + t.freq_weight * frequency_loss(pred, y)
                if t.lowpass_weight > 0:
                    value = value + t.lowpass_weight * lowpass_loss(pred, y, t.lowpass_scale)
                loss[kind].append(float(value))
                psnr[kind].append(float(10 * np.log10(1.0 / float(torch.mean((pred.clamp(0, 1) - y) ** 2)))))
        print(f"{path}: " + "; ".join(f"{k} loss {np.mean(loss[k]):.5f}, PSNR {np.mean(psnr[k]):.3f} dB"
                                      for k in sorted(loss)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
