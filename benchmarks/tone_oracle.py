#!/usr/bin/env python3
"""How much of a model's PSNR gain on real blur pairs is tone, and how much is detail.

    python benchmarks/tone_oracle.py [--model M] [--data ../shared/data/pairs/REDS_320x180] [--scenes ...]

Real blurred frames (REDS, GoPro) are averages of sub-frames in linear light, so around every
edge the dark side is lifted more than the bright side is lowered: the blurred frame is brighter
than its sharp frame (on REDS test_001, 4-11 levels on average). Per scene this prints the PSNR of
the blurry input and of the model's output, and of each after an oracle tone correction fitted to
the sharp frame: a per-frame mean shift ("+shift"), and a per-frame, per-channel lookup table
mapping each 8-bit level to the mean sharp value under it ("+LUT", which cannot sharpen anything).
A model whose gain is close to the blurry input's "+LUT" gain is mostly fixing tone; the distance
between the output and its own "+LUT" is tone the model still gets wrong. The oracles use the
ground truth: they are diagnostics, never a result.
"""
from __future__ import annotations

import argparse

import numpy as np

from edge_deblur import Deblurrer
from edge_deblur.data.pairs import find_pairs, load_pair, select_scenes
from edge_deblur.metrics import psnr


def shift(img: np.ndarray, sharp: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) - (img.astype(np.float64) - sharp).mean()


def lut(img: np.ndarray, sharp: np.ndarray) -> np.ndarray:
    out = np.empty(img.shape, np.float64)
    for c in range(img.shape[2]):
        idx = img[..., c].astype(np.int64).ravel()
        total = np.bincount(idx, sharp[..., c].ravel().astype(np.float64), 256)
        count = np.bincount(idx, minlength=256)
        out[..., c] = (total / np.maximum(count, 1))[img[..., c].astype(np.int64)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--data", default="../shared/data/pairs/REDS_320x180")
    ap.add_argument("--scenes", nargs="*", default=[])
    args = ap.parse_args()

    pairs = select_scenes(find_pairs(args.data), args.scenes, args.data)
    rows: dict[str, list[list[float]]] = {}
    with Deblurrer.open(args.model, rgb=True) as d:
        for scene, bp, sp in pairs:
            blur, sharp = load_pair(bp, sp)
            if blur.dtype != np.uint8:
                raise SystemExit(f"{bp}: 8-bit frames only (got {blur.dtype})")
            out = d(blur)
            s = sharp.astype(np.float64)
            rows.setdefault(scene, []).append([
                psnr(blur.astype(np.float64) / 255, s / 255),
                psnr(np.clip(shift(blur, s), 0, 255) / 255, s / 255),
                psnr(lut(blur, s) / 255, s / 255),
                psnr(out.astype(np.float64) / 255, s / 255),
                psnr(np.clip(shift(out, s), 0, 255) / 255, s / 255),
                psnr(lut(out, s) / 255, s / 255),
                float((blur.astype(np.float64) - s).mean()),
                float((out.astype(np.float64) - s).mean()),
            ])
    print(f"{'scene':<12}{'input':>8}{'+shift':>8}{'+LUT':>8}{'output':>8}{'+shift':>8}{'+LUT':>8}"
          f"{'in-sharp':>10}{'out-sharp':>10}   (PSNR dB; mean level offsets)")
    for scene, r in rows.items():
        m = np.mean(r, axis=0)
        print(f"{scene:<12}" + "".join(f"{v:>8.2f}" for v in m[:6]) + f"{m[6]:>+10.1f}{m[7]:>+10.1f}")


if __name__ == "__main__":
    main()
