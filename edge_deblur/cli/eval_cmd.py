"""edge-deblur eval --model CKPT|ONNX|ENGINE --data DIR [--scenes ...] [--json] [--save DIR]"""
from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument("--model", "-m", default=None, help="checkpoint (.safetensors), ONNX or engine; default: the bundled model")
    p.add_argument("--data", "-d", required=True, help="blur/sharp pairs (GoPro or REDS layout)")
    p.add_argument("--scenes", nargs="*", default=None, help="only these scenes (e.g. a held-out REDS scene)")
    p.add_argument("--backend", default=None, help="onnxruntime | torch | tensorrt | torch-cuda (default: from the file)")
    p.add_argument("--tile", type=int, default=None, help="tile size for large frames (default: whole frame)")
    p.add_argument("--save", default=None, metavar="DIR", help="write side-by-side PNGs (blurry | deblurred | sharp) here")
    p.add_argument("--save-count", type=int, default=3)
    p.add_argument("--no-ssim", action="store_true", help="skip SSIM (faster)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--make-synthetic", metavar="SHARP_DIR", default=None,
                   help="first write the fixed full-resolution synthetic set (default blur model) from the sharp "
                        "images in SHARP_DIR into --data (kept if already made with the same settings)")
    p.add_argument("--synthetic-count", type=int, default=4)
    p.add_argument("--synthetic-size", default="1280x720")
    p.add_argument("--seed", type=int, default=1234)


def run(args) -> int:
    from ..data.pairs import find_pairs, select_scenes
    from ..metrics.evaluate import evaluate_pairs
    from ..runtime.deblurrer import Deblurrer

    if args.make_synthetic:
        from ..config.schema import BlurConfig
        from ..data.datasets import make_synthetic_val_set
        from .info_cmd import parse_size

        make_synthetic_val_set(args.make_synthetic, args.data, count=args.synthetic_count,
                               size=parse_size(args.synthetic_size), seed=args.seed, blur_cfg=BlurConfig())
    pairs = find_pairs(args.data)
    pairs = select_scenes(pairs, args.scenes, args.data)
    with Deblurrer.open(args.model, backend=args.backend, tile=args.tile) as d:
        result = evaluate_pairs(d, pairs, save_dir=args.save, save_count=args.save_count, with_ssim=not args.no_ssim)
        result["model"] = str(d.info.get("model", args.model))
        result["backend"] = d.info.get("backend")
    result["data"] = args.data
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'scene':<28}{'pairs':>6}{'PSNR':>9}{'input':>9}{'gain':>8}" + ("" if args.no_ssim else f"{'SSIM':>8}{'input':>8}"))
    for name, s in result["scenes"].items():
        line = f"{name:<28}{s['pairs']:>6}{s['psnr']:>9.2f}{s['input_psnr']:>9.2f}{s['psnr'] - s['input_psnr']:>+8.2f}"
        if not args.no_ssim:
            line += f"{s['ssim']:>8.4f}{s['input_ssim']:>8.4f}"
        print(line)
    r = result
    line = f"{'overall':<28}{r['pairs']:>6}{r['psnr']:>9.2f}{r['input_psnr']:>9.2f}{r['psnr_gain']:>+8.2f}"
    if not args.no_ssim:
        line += f"{r['ssim']:>8.4f}{r['input_ssim']:>8.4f}"
    print(line)
    return 0
