#!/usr/bin/env python3
"""How close tiled inference comes to whole-frame inference on a large frame, per overlap.

    python benchmarks/tiling_seams.py IMAGE [--tile 512] [--overlaps 32,64,128] [--model M]

Deblurs IMAGE once whole and once per overlap in tiles of --tile pixels, and prints the PSNR of
the tiled output against the whole-frame output, the largest and 99.99th-percentile absolute
difference (8-bit levels) and the time of each pass. Differences come from the context a tile
lacks at its edges; the raised-cosine blend hides the seams themselves.
"""
from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from edge_deblur import Deblurrer
from edge_deblur.metrics import psnr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlaps", default="32,64,128")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    img = cv2.imread(args.image, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SystemExit(f"cannot read image {args.image!r}")
    with Deblurrer.open(args.model) as d:
        t = time.perf_counter()
        whole = d(img)
        t_whole = time.perf_counter() - t
    rows = []
    for ov in (int(v) for v in args.overlaps.split(",")):
        with Deblurrer.open(args.model, tile=args.tile, overlap=ov) as d:
            t = time.perf_counter()
            tiled = d(img)
            dt = time.perf_counter() - t
        diff = np.abs(tiled.astype(np.int32) - whole.astype(np.int32))
        rows.append({"overlap": ov, "psnr_vs_whole": round(psnr(tiled, whole), 2), "max_abs": int(diff.max()),
                     "p9999_abs": float(np.percentile(diff, 99.99)), "seconds": round(dt, 3)})
    print(json.dumps({"image": args.image, "size": f"{img.shape[1]}x{img.shape[0]}", "tile": args.tile,
                      "whole_seconds": round(t_whole, 3), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
