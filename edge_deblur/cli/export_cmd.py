"""edge-deblur export CKPT -o DIR|FILE.onnx [--fp16] [--opset N] [--default] [--force]"""
from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by edge-deblur train/prune")
    p.add_argument("-o", "--output", required=True, help="a folder (writes <folder>/model.onnx) or a path ending in .onnx")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default 17)")
    p.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (FP16 weights and compute, FP32 I/O)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference allowed against PyTorch (default 1e-4)")
    p.add_argument("--fp16-tolerance", type=float, default=2e-2, help="max abs difference of the FP16 model against FP32")
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript", help="torch.onnx exporter")
    p.add_argument("--default", action="store_true", help="make this folder the runtime's default model (writes <parent>/DEFAULT)")
    p.add_argument("--force", action="store_true",
                   help="export into a folder whose manifest describes another model (another architecture, "
                        "checkpoint or main ONNX file), replacing that manifest")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")


def run(args) -> int:
    import time

    from ..export.onnx_export import export_onnx, fp16_path, resolve_output

    t0 = time.perf_counter()
    m = export_onnx(
        args.checkpoint,
        args.output,
        opset=args.opset,
        fp16=args.fp16,
        tolerance=args.tolerance,
        fp16_tolerance=args.fp16_tolerance,
        exporter=args.exporter,
        default=args.default,
        force=args.force,
    )
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    out = resolve_output(args.output)
    print(f"wrote {out} (opset {m['opset']}, stride {m['stride']}, {m['params'] / 1e6:.3f} M params deployed, "
          f"{m['gmacs_1280x720']:.2f} GMACs at 1280x720)")
    print(f"parity vs PyTorch: max abs diff {m['parity']['max_abs_diff']:.2e} (tolerance {m['parity']['tolerance']:g})")
    if args.fp16:
        e = m["artifacts"][fp16_path(out).name]
        print(f"wrote {fp16_path(out)} (FP16, FP32 I/O; max abs diff vs FP32 {e['parity']['max_abs_diff']:.2e})")
    print(f"wrote {out.parent / 'manifest.json'} in {time.perf_counter() - t0:.1f} s")
    return 0
