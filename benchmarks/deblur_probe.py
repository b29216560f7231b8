"""Does a model deblur, or only retone? Its gain on clean synthetic blur of fixed lengths, and on
real pairs shrunk (shorter blur).

- ``synthetic``: ``--crops`` crops (384x384) of the high-resolution photos, each blurred by
  ``blur.synthesize`` with warped camera shake of exactly L px (no noise, JPEG, defocus, layers or
  highlights), averaged in display space (no brightening: no tone to undo) and in linear light,
  with the target at the sub-frames' centroid or at mid-exposure (``--align``). Per L: PSNR gain,
  tone-aligned gain (what is left after a per-channel gain/offset fit), and the PSNR between the
  model's output and its input (how much the model changes the frame at all).
- ``pairs``: real pairs (``--pairs``) shrunk by each of ``--scales`` with an area filter (the
  blur gets as much shorter), gain and tone-aligned gain.

    python benchmarks/deblur_probe.py --model export/edgenet_m5/model.onnx \\
        --pairs ../shared/data/pairs/GoPro_1280x720

Any model ``Deblurrer.open`` takes (ONNX, or a checkpoint with torch). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import cv2
import numpy as np


def _photos(root: str, n: int, seed: int) -> list[np.ndarray]:
    from edge_deblur.data.pairs import list_images

    paths = list_images(root)
    random.Random(seed).shuffle(paths)
    out = []
    for p in paths:
        im = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if im is not None and min(im.shape[:2]) >= 640:
            out.append(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
        if len(out) == n:
            break
    if not out:
        raise SystemExit(f"no photos of at least 640 px on the short side under {root}")
    return out


def _scores(deb, blur_rgb8: np.ndarray, sharp_rgb8: np.ndarray) -> tuple[float, float, float]:
    from edge_deblur.metrics.quality import psnr, to_float01
    from edge_deblur.metrics.tone import tone_aligned_psnr

    deb.reset()
    out = cv2.cvtColor(deb(cv2.cvtColor(blur_rgb8, cv2.COLOR_RGB2BGR)), cv2.COLOR_BGR2RGB)
    f = to_float01
    return (psnr(f(out), f(sharp_rgb8)) - psnr(f(blur_rgb8), f(sharp_rgb8)),
            tone_aligned_psnr(out, sharp_rgb8) - tone_aligned_psnr(blur_rgb8, sharp_rgb8),
            psnr(f(out), f(blur_rgb8)))


def main(argv=None) -> int:
    from edge_deblur.config.schema import BlurConfig
    from edge_deblur.data.blur import synthesize
    from edge_deblur.data.pairs import find_pairs
    from edge_deblur.runtime import Deblurrer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="export/edgenet_m5/model.onnx")
    ap.add_argument("--photos", default="../shared/data/natural_hr")
    ap.add_argument("--crops", type=int, default=16)
    ap.add_argument("--lengths", type=float, nargs="*", default=[8.0, 32.0])
    ap.add_argument("--align", nargs="*", default=["centroid", "mid_time"], choices=["centroid", "mid_time"])
    ap.add_argument("--pairs", nargs="*", default=[])
    ap.add_argument("--scales", type=float, nargs="*", default=[1.0, 0.5, 0.25])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    r3 = lambda v: round(float(v), 3)  # noqa: E731
    report = {"model": args.model, "synthetic": [], "pairs": {}}
    with Deblurrer.open(args.model) as deb:
        imgs = _photos(args.photos, args.crops, args.seed) if args.lengths else []
        for align in args.align:
            for space, disp in (("display", 1.0), ("linear", 0.0)):
                for L in args.lengths:
                    cfg = BlurConfig(length=[L, L], homography_prob=1.0, display_prob=disp, noise_prob=0.0,
                                     jpeg_prob=0.0, sharp_prob=0.0, defocus_prob=0.0, layer_prob=0.0,
                                     highlight_gain=[1.0, 1.0], align=align)
                    rows = []
                    for i, im in enumerate(imgs):
                        b, s = synthesize(im, np.random.default_rng([args.seed, i]), cfg, crop=384)
                        to8 = lambda x: (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)  # noqa: E731
                        rows.append(_scores(deb, to8(b), to8(s)))
                    g, t, c = np.mean(rows, 0)
                    report["synthetic"].append({"align": align, "space": space, "length": L, "gain": r3(g),
                                                "tone_aligned_gain": r3(t), "out_vs_in_db": r3(c)})
                    print(f"{align:8s} {space:7s} L={L:4.0f}: gain {g:+.3f}, tone-aligned {t:+.3f}, "
                          f"output vs input {c:.1f} dB", flush=True)
        for root in args.pairs:
            rep = {}
            for sc in args.scales:
                rows = []
                for _scene, bp, sp in find_pairs(root):
                    b = cv2.cvtColor(cv2.imread(str(bp)), cv2.COLOR_BGR2RGB)
                    s = cv2.cvtColor(cv2.imread(str(sp)), cv2.COLOR_BGR2RGB)
                    if sc != 1.0:
                        b = cv2.resize(b, None, fx=sc, fy=sc, interpolation=cv2.INTER_AREA)
                        s = cv2.resize(s, None, fx=sc, fy=sc, interpolation=cv2.INTER_AREA)
                    rows.append(_scores(deb, b, s))
                g, t, c = np.mean(rows, 0)
                rep[str(sc)] = {"pairs": len(rows), "gain": r3(g), "tone_aligned_gain": r3(t), "out_vs_in_db": r3(c)}
                print(f"{Path(root).name} x{sc}: gain {g:+.3f}, tone-aligned {t:+.3f} ({len(rows)} pairs)", flush=True)
            report["pairs"][str(root)] = rep
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
