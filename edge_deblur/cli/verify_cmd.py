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
    import math

    from ..errors import InputError
    from ..runtime.verify import THRESHOLDS

    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        k, _, v = item.partition("=")
        try:
            db = float(v)
        except ValueError:
            raise InputError(f"--min-psnr item {item!r} must look like fp16=38") from None
        key = k.strip().lower()
        if key not in THRESHOLDS:
            raise InputError(f"--min-psnr item {item!r}: unknown precision {k.strip()!r}; use one of "
                             f"{', '.join(THRESHOLDS)} (e.g. fp16=38,int8=33)")
        if not math.isfinite(db):
            raise InputError(f"--min-psnr item {item!r}: the floor must be a finite number of dB")
        out[key] = db
    return out


def _check_json_path(path) -> None:
    """--json must name a file that can be written: not a folder, not under a file."""
    from pathlib import Path

    from ..errors import InputError

    p = Path(path)
    if p.is_dir():
        raise InputError(f"--json {path} is a folder; pass a file name for the report (e.g. {p / 'verify.json'})")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"--json {path}: {str(parent)!r} is a file, not a folder; pass another path")
            break


def _spec_of_checkpoint(path):
    """The arch spec in a checkpoint's metadata, or None when it cannot be read (verify says why later)."""
    import json

    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            spec = json.loads((f.metadata() or {}).get("arch") or "null")
    except Exception:  # unreadable or not ours: the torch backend reports it
        return None
    return spec if isinstance(spec, dict) else None


def _spec_of_onnx(path):
    """The arch spec the ONNX was exported from: its metadata, else the export manifest beside it."""
    import json

    from ..errors import EdgeDeblurError
    from ..export.trt_build import export_info, onnx_metadata

    try:
        spec = onnx_metadata(path).get("edge_deblur.arch")
        spec = json.loads(spec) if spec else None
    except (EdgeDeblurError, ValueError):
        spec = None
    if not isinstance(spec, dict):
        spec = export_info(path)[0].get("arch")
    return spec if isinstance(spec, dict) else None


def check_architecture(a) -> None:
    """ModelError when the checkpoint verify uses (given or found beside the ONNX) is for another
    architecture than the one the ONNX was exported from: its PSNR would say nothing about the export.
    Compares the keys both specs name; ``rep`` is ignored (export folds RepConv branches)."""
    from ..errors import ModelError

    if a.checkpoint is None or a.onnx is None:
        return
    ck, ox = _spec_of_checkpoint(a.checkpoint), _spec_of_onnx(a.onnx)
    if not ck or not ox:
        return
    diff = [k for k in ck if k in ox and k != "rep" and ck[k] != ox[k]]
    if diff:
        shown = "; ".join(f"{k}: checkpoint {ck[k]!r}, ONNX {ox[k]!r}" for k in diff[:4])
        raise ModelError(
            f"checkpoint {str(a.checkpoint)!r} does not match the ONNX {str(a.onnx)!r}: they are different "
            f"architectures ({shown}); pass the checkpoint the ONNX was exported from with --checkpoint "
            "CKPT.safetensors, or move the other checkpoint out of the model's folder"
        )


def run(args) -> int:
    from .info_cmd import parse_size
    from ..runtime.manifest import atomic_write_json
    from ..runtime.verify import find_artifacts, format_report, verify

    if args.json:
        _check_json_path(args.json)
    floors = _floors(args.min_psnr)
    for model in args.models:  # before anything runs: a mismatched pair is one clear error
        check_architecture(find_artifacts(model, checkpoint=args.checkpoint, onnx=args.onnx, engine=args.engine))
    reports = []
    for i, model in enumerate(args.models):
        report = verify(model, backends=args.backends, frames=args.frames, size=parse_size(args.size),
                        checkpoint=args.checkpoint, onnx=args.onnx, engine=args.engine, seed=args.seed,
                        thresholds=floors)
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
