"""Where do the sharp targets sit against what the blurred image shows? Synthetic recipe vs real pairs.

A model can only learn to put the sharp image where the blurred image says it is: for a blur
that is a sum of shifted copies, the copies' centre of mass (the PSF centroid). This measures:

- ``paths``: for the camera paths a recipe draws (its ``data.blur``: lengths, anxiety, shakes),
  the distance between the path at the middle of the exposure (``blur.align: mid_time``) and the
  sub-frames' centroid (``align: centroid``), in pixels and as a share of the blur length;
- ``point``: a point blurred by ``blur.synthesize`` with the recipe's warped blur, clean: the
  distance between the blurred point's centre of mass and the point in the target, for the
  recipe's own ``align`` and for the other one;
- ``pairs``: for each real pair under ``--pairs``, the integer shift (within +-``--radius`` px,
  at half resolution) that best lines the blurred frame up with the sharp frame (MSE). Real pairs
  whose targets sit where their blur is centred give (0, 0).

    python benchmarks/target_alignment.py --config configs/train/edgenet_m5_discrete.yaml \\
        --pairs ../shared/data/pairs/GoPro_1280x720

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np


def path_offsets(blur_cfg, n: int, seed: int) -> dict:
    from edge_deblur.data.blur import draw_length, random_trajectory

    rng = np.random.default_rng(seed)
    off, rel = [], []
    for _ in range(n):
        L = draw_length(rng, blur_cfg)
        if L <= 0:
            continue
        tr = random_trajectory(rng, L, max(int(blur_cfg.subframes), 2 * int(math.ceil(L)) + 2),
                               blur_cfg.anxiety, blur_cfg.impulsive_prob)
        t = np.linspace(0.0, 1.0, len(tr))
        mid = np.array([np.interp(0.5, t, tr[:, 0]), np.interp(0.5, t, tr[:, 1])])
        d = float(np.hypot(*(mid - tr.mean(0))))
        off.append(d)
        rel.append(d / L)
    off, rel = np.array(off), np.array(rel)
    q = lambda a, p: round(float(np.percentile(a, p)), 3)  # noqa: E731
    return {"samples": len(off), "offset_px": {"p50": q(off, 50), "p75": q(off, 75), "p90": q(off, 90),
                                                "max": q(off, 100)},
            "share_over_px": {str(k): round(float((off > k).mean()), 3) for k in (1, 2, 4)},
            "offset_over_length_p50": q(rel, 50)}


def point_offsets(blur_cfg, n: int, seed: int) -> dict:
    from edge_deblur.data.blur import synthesize

    out = {}
    for align in ("mid_time", "centroid"):
        cfg = dataclasses.replace(blur_cfg, align=align, homography_prob=1.0, display_prob=1.0, noise_prob=0.0,
                                  jpeg_prob=0.0, sharp_prob=0.0, defocus_prob=0.0, layer_prob=0.0,
                                  highlight_gain=[1.0, 1.0], quantize=False, rotation_deg=0.0, zoom=0.0)
        size = int(2 * cfg.length[1] + 64)
        yy, xx = np.mgrid[:size, :size]
        d = []
        for i in range(n):
            img = np.zeros((size, size, 3), np.float32)
            c = size // 2
            img[c - 1:c + 1, c - 1:c + 1] = 1.0
            b, s = synthesize(img, np.random.default_rng([seed, i]), cfg)
            pb, ps = b[..., 1], s[..., 1]
            cb = np.array([(pb * yy).sum(), (pb * xx).sum()]) / pb.sum()
            cs = np.array([(ps * yy).sum(), (ps * xx).sum()]) / ps.sum()
            d.append(float(np.hypot(*(cb - cs))))
        out[align] = {"p50": round(float(np.median(d)), 3), "max": round(float(np.max(d)), 3)}
    return out


def pair_shifts(root: str, radius: int) -> dict:
    import cv2

    from edge_deblur.data.pairs import find_pairs

    shifts = []
    for _scene, bp, sp in find_pairs(root):
        b = cv2.imread(str(bp), cv2.IMREAD_GRAYSCALE).astype(np.float32)[::2, ::2]
        s = cv2.imread(str(sp), cv2.IMREAD_GRAYSCALE).astype(np.float32)[::2, ::2]
        H, W, r = b.shape[0], b.shape[1], radius
        best = min(((float(((b[r + dy:H - r + dy, r + dx:W - r + dx] - s[r:H - r, r:W - r]) ** 2).mean()), dy, dx)
                    for dy in range(-r, r + 1) for dx in range(-r, r + 1)))
        shifts.append([best[1], best[2]])
    a = np.array(shifts)
    return {"pairs": len(shifts), "share_at_zero": round(float((a == 0).all(1).mean()), 3), "shifts": shifts}


def main(argv=None) -> int:
    from edge_deblur.config import load_train_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/train/edgenet_m5_discrete.yaml")
    ap.add_argument("--paths", type=int, default=3000, help="camera paths drawn (default 3000)")
    ap.add_argument("--points", type=int, default=16, help="blurred points per alignment (default 16)")
    ap.add_argument("--pairs", nargs="*", default=[], help="real pair folders (blur/ and sharp/ per scene)")
    ap.add_argument("--radius", type=int, default=3, help="shift search radius, half-resolution px (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    blur_cfg = load_train_config(args.config).data.blur
    report = {"config": args.config, "align": blur_cfg.align,
              "paths": path_offsets(blur_cfg, args.paths, args.seed),
              "point": point_offsets(blur_cfg, args.points, args.seed),
              "pairs": {str(Path(p)): pair_shifts(p, args.radius) for p in args.pairs}}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
