"""edge-deblur verify MODEL [--backends onnxruntime,tensorrt,torch,torch-cuda] [--frames N] [--size WxH]

Runs the same frames through each available backend and compares them by PSNR with the FP32
reference (FP32 >= 50 dB, FP16 >= 40 dB, INT8 >= 35 dB). Ends with PASSED (exit 0) or FAILED
(exit 1)."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("model", help="an .onnx (any precision), .safetensors or .engine file, or an exported model folder")
    p.add_argument("--backends", default=None,
                   help="comma-separated: onnxruntime,tensorrt,torch,torch-cuda (default: all, unavailable ones skipped)")
    p.add_argument("--checkpoint", default=None, help="the FP32 .safetensors checkpoint (reference, torch backends)")
    p.add_argument("--onnx", default=None, help="the ONNX to run with onnxruntime/tensorrt (when MODEL is a checkpoint)")
    p.add_argument("--engine", default=None, help="a prebuilt TensorRT engine (default: built from the ONNX via the engine cache)")
    p.add_argument("--frames", type=int, default=4, help="number of synthetic frames (default 4)")
    p.add_argument("--size", default="320x240", help="frame size WIDTHxHEIGHT, any size (default 320x240)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-psnr", default=None, metavar="PREC=DB[,...]",
                   help="override PSNR floors, e.g. fp16=38,int8=33")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON")


def _floors(text):
    from ..errors import InputError

    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        k, _, v = item.partition("=")
        try:
            out[k.strip().lower()] = float(v)
        except ValueError:
            raise InputError(f"--min-psnr item {item!r} must look like fp16=38") from None
    return out


def run(args) -> int:
    from .info_cmd import parse_size
    from ..runtime.verify import format_report, verify, write_json

    report = verify(args.model, backends=args.backends, frames=args.frames, size=parse_size(args.size),
                    checkpoint=args.checkpoint, onnx=args.onnx, engine=args.engine, seed=args.seed,
                    thresholds=_floors(args.min_psnr))
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    return 0 if report.passed else 1
