#!/usr/bin/env python3
"""The README's picture: blurry | deblurred | sharp on a real dash-cam frame with synthetic shake.

    python benchmarks/readme_figure.py [-m MODEL] [--image FRAME] [--seed 0] [--blur 10 14]
                                       [--crop X,Y,W,H] [--out docs/figure.png] [--json]

Reads a sharp 1280x720 dash-cam frame (default: ``test1.jpg`` of the Udacity vehicle-detection
stills in ``../shared/data/driving``, MIT-licensed), blurs the whole frame with
``edge_deblur.data.blur.synthesize`` (camera shake along a random trajectory, averaged in linear
light, with sensor noise, the sharp frame at the blur's centre of mass; ``--blur`` sets its extent in pixels and ``--seed`` the draw), deblurs it
with the bundled model (or ``-m``) through ``Deblurrer`` exactly as the runtime does, and prints
the PSNR of the blurry and the deblurred frame against the sharp one (whole frame and crop). It
writes a PNG of one crop of the three frames side by side, each labelled with its PSNR, and
refuses to write one over ``--max-kb`` (300 KB: the README must stay light). The PNG is written
atomically. Uses numpy, OpenCV and ONNX Runtime only (no torch).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "driving" / "udacity_vehicle_detection" / "test_images" / "test1.jpg"


def label(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((26, img.shape[1], 3), 24, np.uint8)
    cv2.putText(bar, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


def parse_crop(text: str, w: int, h: int) -> tuple[int, int, int, int]:
    from edge_deblur.errors import InputError

    try:
        x, y, cw, ch = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--crop {text!r} must look like X,Y,W,H, e.g. 780,330,400,240") from None
    if cw < 16 or ch < 16 or x < 0 or y < 0 or x + cw > w or y + ch > h:
        raise InputError(f"--crop {text!r} does not fit the {w}x{h} frame")
    return x, y, cw, ch


def make_figure(sharp_bgr: np.ndarray, model=None, seed: int = 0, blur=(8.0, 12.0), crop="800,340,360,220"):
    """(figure BGR uint8, result dict)."""
    from edge_deblur import Deblurrer
    from edge_deblur.config.schema import BlurConfig
    from edge_deblur.data.blur import synthesize
    from edge_deblur.metrics import psnr

    h, w = sharp_bgr.shape[:2]
    x, y, cw, ch = parse_crop(crop, w, h)
    # camera shake only (no defocus, no JPEG, always blurred) so that the picture shows motion blur
    # the sharp frame where the blurred one is centred (align: centroid): with the default
    # mid-exposure target, seed 0's 8 px shake puts it 3.3 px away from what the blur shows
    cfg = BlurConfig(length=[float(blur[0]), float(blur[1])], defocus_prob=0.0, jpeg_prob=0.0, sharp_prob=0.0,
                     align="centroid")
    rgb = cv2.cvtColor(sharp_bgr, cv2.COLOR_BGR2RGB)
    blurred, target = synthesize(rgb, np.random.default_rng(seed), cfg, return_info=False)

    def to_bgr8(f):
        return cv2.cvtColor(np.clip(f * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)

    blurry, sharp = to_bgr8(blurred), to_bgr8(target)
    with Deblurrer.open(model) as d:
        deblurred = d(blurry)
        info = d.info
    # rounded once, so that the labels, the printout and the JSON agree
    p_b, p_d = round(psnr(blurry, sharp), 2), round(psnr(deblurred, sharp), 2)
    c = (slice(y, y + ch), slice(x, x + cw))
    pc_b, pc_d = round(psnr(blurry[c], sharp[c]), 2), round(psnr(deblurred[c], sharp[c]), 2)
    fig = np.concatenate([
        label(blurry[c], f"blurry  {pc_b:.2f} dB"),
        label(deblurred[c], f"deblurred  {pc_d:.2f} dB ({pc_d - pc_b:+.2f})"),
        label(sharp[c], "sharp"),
    ], axis=1)
    result = {
        "psnr_blurry": p_b, "psnr_deblurred": p_d, "psnr_gain": round(p_d - p_b, 2),
        "crop": [x, y, cw, ch], "psnr_blurry_crop": pc_b, "psnr_deblurred_crop": pc_d,
        "psnr_gain_crop": round(pc_d - pc_b, 2), "blur_px": list(blur), "seed": seed, "size": f"{w}x{h}",
        "model": str(info.get("model")), "backend": info.get("backend"), "precision": info.get("precision"),
    }
    return fig, result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None, help="model file or folder (default: the bundled model)")
    ap.add_argument("--image", default=str(DEFAULT_IMAGE), help="a sharp frame (default: Udacity test1.jpg, 1280x720)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the camera-shake draw (default 0)")
    ap.add_argument("--blur", type=float, nargs=2, default=[8.0, 12.0], metavar=("MIN", "MAX"),
                    help="extent of the shake in pixels (default 8 12: the demo's 5 px at 640x360, at 1280x720)")
    ap.add_argument("--crop", default="800,340,360,220", help="X,Y,W,H of the region shown (default: the two cars)")
    ap.add_argument("--out", default=str(REPO / "docs" / "figure.png"), help="PNG to write (default docs/figure.png)")
    ap.add_argument("--max-kb", type=float, default=300.0, help="refuse a PNG larger than this (default 300)")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = ap.parse_args(argv)

    from edge_deblur.errors import EdgeDeblurError, InputError
    from edge_deblur.runtime.manifest import atomic_write_bytes
    from edge_deblur.io.sources import imread

    try:
        sharp = imread(args.image)
        if sharp is None:
            raise InputError(f"cannot read the frame {args.image!r}; pass --image with a sharp photo "
                             "(the default lies in ../shared/data/driving)")
        sharp = sharp[..., :3] if sharp.ndim == 3 else cv2.cvtColor(sharp, cv2.COLOR_GRAY2BGR)
        fig, r = make_figure(sharp, args.model, args.seed, tuple(args.blur), args.crop)
        ok, buf = cv2.imencode(".png", fig, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        kb = len(buf) / 1024 if ok else float("inf")
        if kb > args.max_kb:
            raise InputError(f"the PNG would be {kb:.0f} KB, over --max-kb {args.max_kb:.0f}; pass a smaller --crop")
        out = Path(args.out)
        atomic_write_bytes(out, buf.tobytes())
    except EdgeDeblurError as e:
        print(f"readme_figure: error: {e}", file=sys.stderr)
        return 2
    r.update(image=str(args.image), out=str(out), png_kb=round(kb, 1))
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{Path(args.image).name} ({r['size']}), synthetic shake {args.blur[0]:g}-{args.blur[1]:g} px, seed {args.seed}; "
              f"model {r['model']} ({r['backend']}, {r['precision']})")
        print(f"PSNR whole frame: blurry {r['psnr_blurry']:.2f} dB -> deblurred {r['psnr_deblurred']:.2f} dB "
              f"(gain {r['psnr_gain']:+.2f} dB)")
        print(f"PSNR crop {args.crop}: blurry {r['psnr_blurry_crop']:.2f} dB -> deblurred {r['psnr_deblurred_crop']:.2f} dB "
              f"(gain {r['psnr_gain_crop']:+.2f} dB)")
        print(f"wrote {out} ({kb:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
