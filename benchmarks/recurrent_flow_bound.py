"""How much could an earlier frame add, once aligned? A bound for a recurrent model (issue 17).

For each frame t >= 1 of each REDS scene, the image model's output for frame t-1 is aligned to
frame t by dense optical flow (OpenCV DIS, computed between the two outputs, or between the two
blurry inputs) and compared with the sharp frame t:

- ``out``: the image model on frame t alone (what a recurrent model must beat);
- ``warped prev out``: its output for t-1, aligned to t;
- ``mean``: the per-pixel mean of the two (a fixed temporal filter, no learning);
- ``warped prev sharp``: the sharp frame t-1 aligned the same way: what the earlier frame holds
  at best once aligned by this flow (an oracle: a stream never has it);
- ``oracle pick``: per pixel, whichever of ``out`` and ``warped prev out`` is closer to the
  sharp frame (an upper bound on any per-pixel choice between the two; not reachable).

    python benchmarks/recurrent_flow_bound.py --model export/edgenet_m5/model.onnx
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a = np.clip(np.round(a), 0, 255)
    return float(10 * np.log10(255.0 ** 2 / np.mean((a - b.astype(np.float64)) ** 2)))


def main(argv=None) -> int:
    from edge_deblur.runtime import Deblurrer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="export/edgenet_m5/model.onnx")
    ap.add_argument("--pairs", default="../shared/data/pairs/REDS_320x180")
    ap.add_argument("--scenes", nargs="*", default=["test_001", "test_000", "test_002"])
    ap.add_argument("--preset", choices=["ultrafast", "fast", "medium"], default="medium",
                    help="OpenCV DIS preset (default: medium)")
    args = ap.parse_args(argv)

    preset = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
              "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[args.preset]
    dis = cv2.DISOpticalFlow_create(preset)

    def gray(img):
        return cv2.cvtColor(np.clip(np.round(img), 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)

    def align(src, ref_guide, src_guide):
        """``src`` resampled onto the frame of ``ref_guide``, by the flow from ref_guide to src_guide."""
        f = dis.calc(gray(ref_guide), gray(src_guide), None)
        h, w = f.shape[:2]
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        return cv2.remap(src.astype(np.float32), gx + f[..., 0], gy + f[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)

    cols = ["input", "out", "warped prev out (flow on inputs)", "warped prev out (flow on outputs)",
            "mean of out and warped", "warped prev sharp", "oracle pick"]
    print(f"model {args.model}, DIS preset {args.preset}; PSNR in dB over frames 1.. of each scene")
    print("| scene | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    with Deblurrer.open(args.model) as deb:
        for scene in args.scenes:
            root = Path(args.pairs) / scene
            blur = [cv2.imread(str(p)) for p in sorted((root / "blur").glob("*.png"))]
            sharp = [cv2.imread(str(p)) for p in sorted((root / "sharp").glob("*.png"))]
            if not blur or len(blur) != len(sharp):
                raise SystemExit(f"{root}: expected blur/ and sharp/ with the same number of PNGs")
            outs = []
            for b in blur:
                deb.reset()
                outs.append(deb(b).astype(np.float32))
            rows = []
            for t in range(1, len(blur)):
                s = sharp[t]
                w_in = align(outs[t - 1], blur[t], blur[t - 1])
                w_out = align(outs[t - 1], outs[t], outs[t - 1])
                w_gt = align(sharp[t - 1], blur[t], blur[t - 1])
                pick = np.where(np.abs(outs[t] - s) <= np.abs(w_out - s), outs[t], w_out)
                rows.append([psnr(blur[t], s), psnr(outs[t], s), psnr(w_in, s), psnr(w_out, s),
                             psnr(0.5 * (outs[t] + w_out), s), psnr(w_gt, s), psnr(pick, s)])
            m = np.mean(rows, axis=0)
            print(f"| {scene} | " + " | ".join(f"{v:.2f}" for v in m) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
