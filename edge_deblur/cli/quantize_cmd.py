"""edge-deblur quantize model.onnx --calib SOURCE [--target tensorrt|cpu|cpu-avx2] [-o OUT]
[--method minmax|percentile|entropy] [--samples N] [--tile 256x256] [--pairs DIR[:scenes]]...
[--table calibration/<model>/table.json]

FP32 ONNX -> INT8 ONNX with explicit Q/DQ (graph I/O float32), for one target:

* ``--target tensorrt`` (default) -> model.int8.onnx: signed symmetric INT8, per-channel weights,
  per-tensor activations: what ``edge-deblur build`` turns into a TensorRT engine;
* ``--target cpu`` -> model.int8-cpu.onnx: uint8 activations, int8 per-channel weights, laid out
  for ONNX Runtime on x86 CPUs with VNNI/AMX (the runtime picks it there);
* ``--target cpu-avx2`` -> model.int8-avx2.onnx: the same with weights on 7 bits, exact on the
  16-bit pair sums ONNX Runtime uses on x86 without VNNI (AVX2), where 8-bit weights saturate
  (the runtime picks it there).

SOURCE: a folder of images, a video file, or synthetic:FOLDER (synthetic blur over the sharp
images in FOLDER). The ranges and the recipe go to calibration/<model>/ (cpu:
calibration/<model>/int8-cpu/, cpu-avx2: calibration/<model>/int8-cpu-avx2/; the two CPU targets
share their ranges, so either's table serves the other); when that folder already holds the record of another INT8 file
(``-o elsewhere.onnx`` beside the default model.int8.onnx), to its subfolder named after the
output (calibration/<model>/[int8-cpu/]elsewhere/), so no file's record is overwritten.
--table re-quantizes from a saved table without calibrating. The output, table and recipe are
written once the INT8 graph is made and checked (temporary file + rename).
--pairs (repeatable; DIR:scene1,scene2 picks scenes) measures PSNR against ground truth."""
from __future__ import annotations

import json
from pathlib import Path


def add_arguments(p):
    p.add_argument("model", help="FP32 ONNX model (e.g. export/<name>/model.onnx)")
    p.add_argument("--target", default="tensorrt",
                   help="tensorrt (model.int8.onnx, symmetric INT8 for TensorRT), cpu (model.int8-cpu.onnx, "
                        "uint8 activations for ONNX Runtime on x86 with VNNI/AMX) or cpu-avx2 (model.int8-avx2.onnx, "
                        "the same with 7-bit weights for x86 without VNNI); default tensorrt")
    p.add_argument("--calib", default=None, help="calibration frames: image folder, video file, or synthetic:FOLDER")
    p.add_argument("--output", "-o", default=None, help="INT8 ONNX to write (default: model.int8.onnx / model.int8-cpu.onnx / model.int8-avx2.onnx beside it)")
    p.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"], help="range calibration (default minmax)")
    p.add_argument("--samples", type=int, default=64, help="calibration tiles (default 64, at least 8, at most 4096)")
    p.add_argument("--tile", default="256x256", help="deploy tile size WxH the frames are cut to (default 256x256)")
    p.add_argument("--seed", type=int, default=0, help="seed for the crops and the synthetic blur")
    p.add_argument("--percentile", type=float, default=99.999, help="for --method percentile (default 99.999)")
    p.add_argument("--table", default=None, help="re-quantize from this saved calibration table (no calibration)")
    p.add_argument("--pairs", action="append", default=None,
                   help="blur/sharp pairs folder (GoPro or REDS layout), optionally DIR:scene1,scene2; repeat for "
                        "several sets: PSNR against ground truth, FP32 vs INT8")
    p.add_argument("--scenes", default=None, help="comma-separated scenes for --pairs given without ':scenes' (default: all)")
    p.add_argument("--calib-dir", default="calibration", help="where tables and recipes go (default: calibration/)")
    p.add_argument("--name", default=None, help="model name for calibration/<name>/ (default: the model's folder name; another -o than the "
                        "default gets a subfolder there when the folder holds another file's record)")
    p.add_argument("--stride", type=int, default=None, help="model stride when the ONNX file does not record it")
    p.add_argument("--quantize-output-add", action="store_true",
                   help="also quantize the final global-residual Add (tensorrt and cpu-avx2 default: keep it float; cpu: quantized)")
    p.add_argument("--quantize-input-conv", action="store_true",
                   help="also quantize the first conv that reads the image (tensorrt and cpu-avx2 default: keep it float; cpu: quantized)")
    p.add_argument("--keep-float", choices=["input-conv", "output-add", "both"], default=None,
                   help="keep these ends float (for --target cpu, whose default quantizes both)")
    p.add_argument("--threads", type=int, default=0, help="threads for the accuracy runs (default: ONNX Runtime's)")
    p.add_argument("--json", action="store_true", help="print the recipe as JSON")


def run(args) -> int:
    from ..compress.calib_frames import parse_tile
    from ..compress.qdq_graph import get_target
    from ..compress.quantize import QuantizeOptions, default_output, quantize_model

    target = get_target(args.target).name  # InputError naming the bad value first
    src = Path(args.model)
    out = Path(args.output) if args.output else default_output(src, target)
    keep_in = keep_out = None
    if args.keep_float:
        keep_in = args.keep_float in ("input-conv", "both")
        keep_out = args.keep_float in ("output-add", "both")
    if args.quantize_input_conv:
        keep_in = False
    if args.quantize_output_add:
        keep_out = False
    opts = QuantizeOptions(method=args.method, samples=args.samples, tile=parse_tile(args.tile), seed=args.seed,
                           percentile=args.percentile, target=target, keep_output_add_fp=keep_out,
                           keep_input_conv_fp=keep_in)
    scenes = [s.strip() for s in args.scenes.split(",") if s.strip()] if args.scenes else None
    recipe = quantize_model(src, out, calib=args.calib, options=opts, table=args.table, calib_dir=args.calib_dir,
                            name=args.name, pairs=args.pairs, pair_scenes=scenes, stride=args.stride, threads=args.threads)
    if args.json:
        print(json.dumps(recipe, indent=2))
        return 0
    g, q = recipe["graph"], recipe["quantization"]
    print(f"wrote {out} for {target} ({g['quantize_linear']} QuantizeLinear, {g['dequantize_linear']} DequantizeLinear; "
          f"{q['layout']}; I/O float32)")
    for r in q.get("graph_rewrites") or []:
        print(f"rewrote (exact in float): {r}")
    if q["float_nodes"]:
        print(f"kept float: {', '.join(q['float_nodes'])}")
    print(f"calibration: {recipe['method']}, {recipe['samples']} tiles of {recipe['tile'][0]}x{recipe['tile'][1]} "
          f"from {recipe['source']}; table and recipe in {Path(recipe['table']).parent}")
    acc = recipe["accuracy"]
    for key, what in (("held_out_tiles", "held-out"), ("calibration_tiles", "calibration")):
        if key in acc:
            h = acc[key]
            print(f"INT8 vs FP32 output PSNR on {h['inputs']} {what} tiles: {h['psnr_int8_vs_fp32']:.2f} dB")
    for p in acc.get("pair_sets") or []:
        where = p["root"] + (f" ({','.join(p['scenes'])})" if p["scenes"] else "")
        print(f"{where}: {p['count']} pairs, PSNR vs ground truth FP32 {p['fp32']['psnr']:.3f} dB, INT8 {p['int8']['psnr']:.3f} dB "
              f"({p['delta_psnr']:+.3f}); INT8 vs FP32 output PSNR {p['psnr_int8_vs_fp32']:.2f} dB; "
              f"blurry input {p['fp32']['input_psnr']:.3f} dB")
    return 0
