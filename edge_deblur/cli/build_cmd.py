"""edge-deblur build MODEL.onnx [--shapes MIN:OPT:MAX] [--workspace MB] [--dla N] [--timing-cache PATH] -o ENGINE

ONNX -> TensorRT engine (strongly typed: the precision is the ONNX file's) with a manifest
beside it. Without -o the engine goes where the engine cache looks for it
(``<onnx dir>/<stem>.<gpu>.trt<version>.engine``), so ``stream``/``Deblurrer.open`` reuse it."""
from __future__ import annotations

import json


def add_arguments(p):
    from ..export.trt_build import DEFAULT_SHAPES

    p.add_argument("onnx", help="the ONNX file (model.onnx, model.fp16.onnx or model.int8.onnx)")
    p.add_argument("-o", "--output", default=None,
                   help="engine path (default: the engine cache's path beside the ONNX, named after the GPU and TensorRT)")
    p.add_argument("--shapes", default=None,
                   help=f"optimization profile MIN:OPT:MAX, each NxCxHxW with H, W multiples of the stride, or one "
                        f"NxCxHxW for a fixed size (default {DEFAULT_SHAPES})")
    p.add_argument("--workspace", type=int, default=None, metavar="MB",
                   help="builder workspace limit in MiB (default: TensorRT's, the GPU memory)")
    p.add_argument("--dla", type=int, default=None, metavar="N",
                   help="build for DLA core N (Jetson AGX Orin / Orin NX; FP16/INT8 layers, the rest on the GPU); "
                        "DLA needs one fixed shape: give --shapes NxCxHxW (default: the default profile's opt shape)")
    p.add_argument("--no-gpu-fallback", action="store_true", help="with --dla: fail instead of running unsupported layers on the GPU")
    p.add_argument("--timing-cache", default=None, metavar="PATH",
                   help="timing cache file, read and updated (default: one per GPU and TensorRT version in the user cache)")
    p.add_argument("--stride", type=int, default=None, help="model stride (default: from the export manifest / ONNX metadata)")
    p.add_argument("--opt-level", type=int, default=None, help="builder optimization level 0-5 (default: TensorRT's, 3)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")


def run(args) -> int:
    from pathlib import Path

    from ..export.engine_cache import BuildOptions, current_env, engine_path_for
    from ..export.trt_build import (build_engine, check_build_args, dla_profile, manifest_path, onnx_stride, parse_shapes,
                                    shapes_given)

    onnx = Path(args.onnx)
    check_build_args(onnx, args.output, args.dla, args.opt_level, args.device)  # before TensorRT is looked for
    stride = args.stride or onnx_stride(onnx)
    profile = parse_shapes(args.shapes, stride)  # validate before touching TensorRT
    profile = dla_profile(profile, explicit=shapes_given(args.shapes), dla_core=args.dla)  # DLA: fixed shapes
    options = BuildOptions.make(args.workspace, args.opt_level, not args.no_gpu_fallback, args.dla)
    out = Path(args.output) if args.output else engine_path_for(onnx, current_env(args.device), profile,
                                                                dla_core=args.dla, options=options)
    manifest = build_engine(onnx, out, profile, workspace_mb=args.workspace, dla_core=args.dla,
                            gpu_fallback=not args.no_gpu_fallback, timing_cache=args.timing_cache, stride=stride,
                            opt_level=args.opt_level, device=args.device, verbose=args.verbose)
    if args.json:
        print(json.dumps(manifest, indent=2))
    else:
        print(f"engine:    {out}\nmanifest:  {manifest_path(out)}\nprecision: {manifest['precision']}\n"
              f"profile:   {profile}\nGPU:       {manifest['gpu']['name']} (sm {manifest['gpu']['compute_capability']})\n"
              f"TensorRT:  {manifest['tensorrt']}   built in {manifest['build']['seconds']} s")
    return 0
