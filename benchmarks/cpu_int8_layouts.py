#!/usr/bin/env python3
"""Which INT8 layout ONNX Runtime's CPU kernels run fastest: the measurement behind
``quantize --target cpu`` (edge_deblur/compress/qdq_graph.py).

Builds INT8 variants of one FP32 model and times them against it, interleaved (one run of
each per round) on --size frames with --threads threads; each variant's speed-up is the median
of its per-round ratios to the FP32 run of the same round, so load on a shared machine hits both
sides of a ratio alike. Variants:

  tensorrt          the TensorRT layout (signed symmetric activations, Q/DQ on residual Adds,
                    float first conv and output Add): the shipped model.int8.onnx
  cpu-plain         uint8 asymmetric activations, int8 per-channel weights, int32 bias,
                    everything quantized, no graph rewrites (ONNX Runtime's quantize_static as is)
  cpu               cpu-plain + the channels-last rewrites of compress/cpu_layout.py (the default)
  cpu+float-in      cpu, first conv kept float
  cpu+float-out     cpu, final residual Add kept float
  cpu-s8            cpu with signed (int8) asymmetric activations instead of uint8

Speed does not depend on the calibration's quality, so the variants are calibrated on a few
tiles (--samples); accuracy is measured by ``edge-deblur quantize --pairs`` on the shipped files.

  python benchmarks/cpu_int8_layouts.py checkpoints/edgenet_s --threads 2 --rounds 30 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def variants():
    from edge_deblur.compress.qdq_graph import TARGETS

    cpu = TARGETS["cpu"]
    return {
        "cpu-plain": (replace(cpu, name="cpu-plain", rewrites=()), {}),
        "cpu": (cpu, {}),
        "cpu+float-in": (cpu, {"keep_input_conv_fp": True}),
        "cpu+float-out": (cpu, {"keep_output_add_fp": True}),
        "cpu-s8": (replace(cpu, name="cpu-s8", activation="int8"), {}),
    }


def build(folder: Path, tmp: Path, calib: str, samples: int, tile: str) -> dict:
    from edge_deblur.compress.quantize import QuantizeOptions, quantize_model

    files = {"fp32": folder / "model.onnx"}
    if (folder / "model.int8.onnx").is_file():
        files["tensorrt"] = folder / "model.int8.onnx"
    for name, (target, kw) in variants().items():
        print(f"building {name}", flush=True)
        out = tmp / f"{name}.onnx"
        quantize_model(files["fp32"], out, calib=calib, options=QuantizeOptions(
            method="minmax", samples=samples, tile=tile, target=target, min_samples=1, eval_samples=1, **kw),
            calib_dir=tmp / "cal" / name, update_manifest=False)
        files[name] = out
    return files


def measure(files: dict, size, threads: int, rounds: int, warmup: int, stride: int = 16) -> dict:
    from edge_deblur.compress.quant_eval import ort_session
    from edge_deblur.runtime.preprocess import frame_to_tensor

    w, h = size
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    x, _ = frame_to_tensor(frame, stride)
    sess = {k: ort_session(p, threads) for k, p in files.items()}
    for s in sess.values():
        for _ in range(warmup):
            s.run(None, {s.get_inputs()[0].name: x})
    wall = {k: [] for k in sess}
    cpu = {k: [] for k in sess}
    for _ in range(rounds):
        for k, s in sess.items():
            t, c = time.perf_counter(), time.process_time()
            s.run(None, {s.get_inputs()[0].name: x})
            wall[k].append((time.perf_counter() - t) * 1e3)
            cpu[k].append((time.process_time() - c) * 1e3)
    out = {}
    for k in sess:
        ratios = [a / b for a, b in zip(wall["fp32"], wall[k])]
        out[k] = {"ms_p50": statistics.median(wall[k]), "ms_p10": float(np.percentile(wall[k], 10)),
                  "cpu_ms_p50": statistics.median(cpu[k]), "speedup_vs_fp32": statistics.median(ratios),
                  "speedup_iqr": [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))],
                  "input": list(x.shape)}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="model folder with model.onnx (and model.int8.onnx)")
    p.add_argument("--calib", default=str(ROOT.parent / "shared" / "data" / "natural" / "BSDS500"),
                   help="calibration source (default: BSDS500 images beside the repo, synthetic blur)")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--tile", default="256x256")
    p.add_argument("--size", default="640x360")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from edge_deblur.runtime.bench import machine_info, parse_size

    calib = args.calib if ":" in args.calib else f"synthetic:{args.calib}"
    with tempfile.TemporaryDirectory(prefix="cpu_int8_layouts.") as tmp:
        files = build(Path(args.folder), Path(tmp), calib, args.samples, args.tile)
        mach = machine_info()
        import json as _json

        stride = int(_json.loads((Path(args.folder) / "manifest.json").read_text()).get("stride", 16))
        res = measure(files, parse_size(args.size), args.threads, args.rounds, args.warmup, stride)
    print(f"{mach['cpu']}, {mach['cores']} cores, {mach['isa']}; load {mach['load_avg_1_5_15min']}; "
          f"{args.size}, {args.threads} threads, {args.rounds} interleaved rounds")
    print("| variant | ms p50 | ms p10 | CPU ms p50 | x FP32 (median of per-round ratios) | IQR |")
    print("|---|---|---|---|---|---|")
    for k, r in res.items():
        print(f"| {k} | {r['ms_p50']:.1f} | {r['ms_p10']:.1f} | {r['cpu_ms_p50']:.1f} | **{r['speedup_vs_fp32']:.2f}** | "
              f"{r['speedup_iqr'][0]:.2f}-{r['speedup_iqr'][1]:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": mach, "args": vars(args), "results": res}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
