"""edge-deblur quantize model.onnx --calib SOURCE -o model.int8.onnx [--method minmax|percentile|entropy]
[--samples N] [--tile 256x256] [--pairs DIR] [--table calibration/<model>/table.json]

FP32 ONNX -> INT8 ONNX with explicit Q/DQ (signed, symmetric, per-channel weights, per-tensor
activations; graph I/O float32). SOURCE: a folder of images, a video file, or synthetic:FOLDER
(synthetic blur over the sharp images in FOLDER). The ranges and the recipe go to
calibration/<model>/; --table re-quantizes from a saved table without calibrating."""
from __future__ import annotations

import json
from pathlib import Path


def add_arguments(p):
    p.add_argument("model", help="FP32 ONNX model (e.g. export/<name>/model.onnx)")
    p.add_argument("--calib", default=None, help="calibration frames: image folder, video file, or synthetic:FOLDER")
    p.add_argument("--output", "-o", default=None, help="INT8 ONNX to write (default: <model>.int8.onnx beside it)")
    p.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"], help="range calibration (default minmax)")
    p.add_argument("--samples", type=int, default=64, help="calibration tiles (default 64, at least 8)")
    p.add_argument("--tile", default="256x256", help="deploy tile size WxH the frames are cut to (default 256x256)")
    p.add_argument("--seed", type=int, default=0, help="seed for the crops and the synthetic blur")
    p.add_argument("--percentile", type=float, default=99.999, help="for --method percentile (default 99.999)")
    p.add_argument("--table", default=None, help="re-quantize from this saved calibration table (no calibration)")
    p.add_argument("--pairs", default=None, help="blur/sharp pairs folder (<scene>/blur, <scene>/sharp): PSNR against ground truth")
    p.add_argument("--scenes", default=None, help="comma-separated scenes of --pairs to evaluate (default: all)")
    p.add_argument("--calib-dir", default="calibration", help="where tables and recipes go (default: calibration/)")
    p.add_argument("--name", default=None, help="model name for calibration/<name>/ (default: the model's folder name)")
    p.add_argument("--stride", type=int, default=None, help="model stride when the ONNX file does not record it")
    p.add_argument("--quantize-output-add", action="store_true",
                   help="also quantize the final global-residual Add (default: keep it float)")
    p.add_argument("--quantize-input-conv", action="store_true",
                   help="also quantize the first conv that reads the image (default: keep it float; it costs "
                        "~15 dB of INT8-vs-FP32 PSNR quantized)")
    p.add_argument("--json", action="store_true", help="print the recipe as JSON")


def run(args) -> int:
    from ..compress.quantize import QuantizeOptions, parse_tile, quantize_model

    src = Path(args.model)
    out = Path(args.output) if args.output else src.with_name(src.name[: -len(".onnx")] + ".int8.onnx" if src.name.endswith(".onnx") else src.name + ".int8.onnx")
    opts = QuantizeOptions(method=args.method, samples=args.samples, tile=parse_tile(args.tile), seed=args.seed,
                           percentile=args.percentile, keep_output_add_fp=not args.quantize_output_add,
                           keep_input_conv_fp=not args.quantize_input_conv)
    scenes = [s.strip() for s in args.scenes.split(",") if s.strip()] if args.scenes else None
    recipe = quantize_model(src, out, calib=args.calib, options=opts, table=args.table, calib_dir=args.calib_dir,
                            name=args.name, pairs=args.pairs, pair_scenes=scenes, stride=args.stride)
    if args.json:
        print(json.dumps(recipe, indent=2))
        return 0
    g = recipe["graph"]
    print(f"wrote {out} ({g['quantize_linear']} QuantizeLinear, {g['dequantize_linear']} DequantizeLinear; "
          f"int8 symmetric, per-channel weights; I/O float32)")
    if recipe["quantization"]["float_nodes"]:
        print(f"kept float: {', '.join(recipe['quantization']['float_nodes'])}")
    print(f"calibration: {recipe['method']}, {recipe['samples']} tiles of {recipe['tile'][0]}x{recipe['tile'][1]} "
          f"from {recipe['source']}; table and recipe in {Path(recipe['table']).parent}")
    acc = recipe["accuracy"]
    if "held_out_tiles" in acc:
        h = acc["held_out_tiles"]
        print(f"INT8 vs FP32 output PSNR on {h['inputs']} held-out tiles: {h['psnr_int8_vs_fp32']:.2f} dB")
    if "pairs" in acc:
        p = acc["pairs"]
        print(f"on {p['count']} pairs: PSNR vs ground truth FP32 {p['fp32']['psnr']:.3f} dB, INT8 {p['int8']['psnr']:.3f} dB "
              f"({p['delta_psnr']:+.3f}); INT8 vs FP32 output PSNR {p['psnr_int8_vs_fp32']:.2f} dB; "
              f"blurry input {p['fp32']['input_psnr']:.3f} dB")
    return 0
