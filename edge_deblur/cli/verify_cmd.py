"""edge-deblur verify MODEL [MODEL...] [--backends onnxruntime,tensorrt,torch,torch-cuda] [--frames N] [--size WxH]

Runs the same frames through each available backend and compares them by PSNR with the FP32
reference (FP32 >= 50 dB, FP16 >= 40 dB, INT8 >= 35 dB). Ends with PASSED (exit 0) or FAILED
(exit 1). Several models (``model{,.fp16,.int8}.onnx``) are checked one after the other against
the same reference; the command passes only when every one does."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="one or more .onnx (any precision), .safetensors or .engine files, or exported model folders")
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
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the report as JSON (a list of reports for several models)")


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
    from ..runtime.manifest import atomic_write_json
    from ..runtime.verify import format_report, verify

    reports = []
    for i, model in enumerate(args.models):
        report = verify(model, backends=args.backends, frames=args.frames, size=parse_size(args.size),
                        checkpoint=args.checkpoint, onnx=args.onnx, engine=args.engine, seed=args.seed,
                        thresholds=_floors(args.min_psnr))
        if len(args.models) > 1:
            print(("\n" if i else "") + f"== {model}")
        print(format_report(report), flush=True)
        reports.append(report)
    if len(reports) > 1:
        failed = [m for m, r in zip(args.models, reports) if not r.passed]
        print(f"\n{len(reports) - len(failed)}/{len(reports)} models PASSED"
              + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if args.json:
        data = reports[0].to_dict() if len(reports) == 1 else [dict(r.to_dict(), model=m) for m, r in zip(args.models, reports)]
        atomic_write_json(args.json, data)
    return 0 if all(r.passed for r in reports) else 1
