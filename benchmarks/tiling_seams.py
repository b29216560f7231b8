#!/usr/bin/env python3
"""How close tiled inference comes to whole-frame inference on a large frame, per overlap.

    python benchmarks/tiling_seams.py IMAGE [IMAGE ...] [--tile 512] [--overlaps 16,24,32,48,64,128]
        [--models export/edgenet_m5,export/edgenet_m5/model.onnx] [--threads 1]

For every model, deblurs every IMAGE once whole and once per overlap in tiles of --tile pixels,
and prints the PSNR of the tiled output against the same model's whole-frame output, the largest
and 99.99th-percentile absolute difference (8-bit levels) and the time of each pass. The overlap
the tiler really uses is printed too: tile starts sit on the model's stride grid, so the overlap
is rounded up to a multiple of the stride (32 for edgenet: 16 and 24 run as 32, 48 as 64).

For scale, with two or more models the first model's whole-frame output is also compared with
every other model's (e.g. the INT8 file the runtime picks against the FP32 export): tiling
differences well below that are below the model's own precision.
"""
from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from edge_deblur import Deblurrer
from edge_deblur.metrics import psnr
from edge_deblur.runtime.tiling import _round_up


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlaps", default="16,24,32,48,64,128")
    ap.add_argument("--models", default=None, help="comma-separated models (default: the bundled one)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    models = args.models.split(",") if args.models else [None]
    out = {"tile": args.tile, "images": [], "models": []}
    wholes: dict = {}
    for path in args.images:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise SystemExit(f"cannot read image {path!r}")
        out["images"].append({"image": path, "size": f"{img.shape[1]}x{img.shape[0]}"})
        for m in models:
            with Deblurrer.open(m, threads=args.threads) as d:
                name = d.info["model"]
                stride = d.stride
                t = time.perf_counter()
                whole = d(img)
                t_whole = time.perf_counter() - t
            wholes[(path, m)] = whole
            rows = []
            for ov in (int(v) for v in args.overlaps.split(",")):
                with Deblurrer.open(m, threads=args.threads, tile=args.tile, overlap=ov) as d:
                    t = time.perf_counter()
                    tiled = d(img)
                    dt = time.perf_counter() - t
                diff = np.abs(tiled.astype(np.int32) - whole.astype(np.int32))
                rows.append({"overlap": ov, "overlap_used": _round_up(ov, stride), "psnr_vs_whole": round(psnr(tiled, whole), 2),
                             "max_abs": int(diff.max()), "p9999_abs": float(np.percentile(diff, 99.99)),
                             "seconds": round(dt, 3)})
            rec = {"image": path, "model": name, "stride": stride, "whole_seconds": round(t_whole, 3), "rows": rows}
            if m != models[0]:
                ref = wholes[(path, models[0])]
                diff = np.abs(ref.astype(np.int32) - whole.astype(np.int32))
                rec["whole_vs_first_model"] = {"psnr": round(psnr(whole, ref), 2), "max_abs": int(diff.max()),
                                               "p9999_abs": float(np.percentile(diff, 99.99))}
            out["models"].append(rec)
            print(json.dumps(rec), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
