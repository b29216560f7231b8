#!/usr/bin/env python3
"""Which INT8 layout ONNX Runtime's CPU kernels run fastest: the measurement behind
``quantize --target cpu`` (edge_deblur/compress/qdq_graph.py).

Builds INT8 variants of one FP32 model and times them against it, interleaved (one run of
each per round, in a new random order each round) on --size frames with --threads threads;
each variant's speed-up is the median of its per-round ratios to the FP32 run of the same
round, so load on a shared machine hits both sides of a ratio alike. ONNX Runtime's worker
threads spin while a run is on and stop when it returns (``--spin run``, the default): with
ONNX Runtime's default (``--spin always``) an idle session's threads keep spinning after its
run and take the cores from the next session's run, the shorter INT8 runs the most (measured:
the same files 1.8x instead of 2.2-2.3x at 2 threads). Files and variants:

  fp32                  model.onnx
  tensorrt              the shipped model.int8.onnx (TensorRT layout: signed symmetric
                        activations, Q/DQ on residual Adds, float first conv and output Add)
  shipped               the shipped model.int8-cpu.onnx
  cpu-plain             uint8 asymmetric activations, int8 per-channel weights, int32 bias,
                        everything quantized, no graph rewrites (ONNX Runtime's quantize_static as is)
  cpu                   what ``quantize --target cpu`` makes now: cpu-plain + the rewrites of
                        compress/cpu_layout.py (fold the input PixelUnshuffle into the first conv,
                        PixelShuffles channels-last, the 12-channel output conv padded to 16)
  cpu-layout            cpu-plain + the first two rewrites only (the layout shipped until session 8)
  cpu-layout+pad        cpu-layout + inputs padded to 4 channels and outputs to 16
  cpu-nofold+pad-out    cpu without folding the PixelUnshuffle into the first conv
  cpu+float-in          cpu, first conv kept float
  cpu+float-out         cpu, final residual Add kept float
  cpu-s8                cpu with signed (int8) asymmetric activations instead of uint8

Speed does not depend on the calibration's quality, so the variants are calibrated on a few
tiles (--samples); accuracy is measured by ``edge-deblur quantize --pairs`` on the shipped files.
Build outside a timing window, time inside it:

  python benchmarks/cpu_int8_layouts.py export/edgenet_m5 --keep /tmp/layouts --rounds 0
  python benchmarks/cpu_int8_layouts.py export/edgenet_m5 --prebuilt /tmp/layouts --threads 2 --rounds 80 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
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


VARIANTS = ("cpu-plain", "cpu-layout", "cpu", "cpu+float-in", "cpu+float-out", "cpu-s8")


def variants(names=VARIANTS):
    from edge_deblur.compress.qdq_graph import TARGETS

    cpu = TARGETS["cpu"]
    fold, d2s, pad, pad_out = ("fold_input_space_to_depth", "depth_to_space_channels_last", "pad_conv_channels",
                               "pad_conv_outputs")
    layout = (fold, d2s)
    out = {
        "cpu-plain": (replace(cpu, name="cpu-plain", rewrites=()), {}),
        "cpu-layout": (replace(cpu, name="cpu-layout", rewrites=layout), {}),
        "cpu-layout+pad": (replace(cpu, name="cpu-layout+pad", rewrites=layout + (pad,)), {}),
        "cpu": (cpu, {}),
        "cpu+float-in": (cpu, {"keep_input_conv_fp": True}),
        "cpu+float-out": (cpu, {"keep_output_add_fp": True}),
        "cpu-s8": (replace(cpu, name="cpu-s8", activation="int8"), {}),
        "cpu-nofold+pad-out": (replace(cpu, name="cpu-nofold+pad-out", rewrites=(d2s, pad_out)), {}),
    }
    unknown = [n for n in names if n not in out]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; variants: {', '.join(out)}")
    return {n: out[n] for n in names}


def build(folder: Path, tmp: Path, calib: str, samples: int, tile: str, names=VARIANTS) -> dict:
    from edge_deblur.compress.quantize import QuantizeOptions, quantize_model

    files = {"fp32": folder / "model.onnx"}
    if (folder / "model.int8.onnx").is_file():
        files["tensorrt"] = folder / "model.int8.onnx"
    if (folder / "model.int8-cpu.onnx").is_file():
        files["shipped"] = folder / "model.int8-cpu.onnx"
    for name, (target, kw) in variants(names).items():
        print(f"building {name}", flush=True)
        out = tmp / f"{name}.onnx"
        quantize_model(files["fp32"], out, calib=calib, options=QuantizeOptions(
            method="minmax", samples=samples, tile=tile, target=target, min_samples=1, eval_samples=1, **kw),
            calib_dir=tmp / "cal" / name, update_manifest=False)
        files[name] = out
    return files


SPIN = {
    # ONNX Runtime's worker threads spin while a run is on (as in the runtime) and stop when it
    # returns, so an idle session's threads do not take the cores from the next session's run
    "run": {"session.force_spinning_stop": "1"},
    # ONNX Runtime's default: they keep spinning for a while after a run (sessions timed one
    # after another then slow each other down, the shorter runs the most)
    "always": {},
    # never spin
    "off": {"session.intra_op.allow_spinning": "0"},
}


def measure(files: dict, size, threads: int, rounds: int, warmup: int, stride: int = 16, gap_ms: float = 0.0,
            spin: str = "run", shuffle: bool = True, seed: int = 0) -> dict:
    """Time every file once per round (in a new random order each round with ``shuffle``, so no
    file always runs right after the same other one), ``gap_ms`` of idle before each run;
    ``spin``: the worker threads' spinning (:data:`SPIN`)."""
    import random

    import onnxruntime as ort

    from edge_deblur.runtime.preprocess import frame_to_tensor

    w, h = size
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    x, _ = frame_to_tensor(frame, stride)
    sess = {}
    for k, p in files.items():
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as the runtime's backend
        for key, value in SPIN[spin].items():
            so.add_session_config_entry(key, value)
        sess[k] = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    for s in sess.values():
        for _ in range(warmup):
            s.run(None, {s.get_inputs()[0].name: x})
    wall = {k: [] for k in sess}
    cpu = {k: [] for k in sess}
    order = list(sess)
    rng = random.Random(seed)
    for _ in range(rounds):
        if shuffle:
            rng.shuffle(order)
        for k in order:
            s = sess[k]
            if gap_ms:
                time.sleep(gap_ms / 1e3)
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
                  "speedup_of_medians": statistics.median(wall["fp32"]) / statistics.median(wall[k]),
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
    p.add_argument("--gap-ms", type=float, default=0.0, help="idle time before each run (default 0)")
    p.add_argument("--spin", choices=tuple(SPIN), default="run",
                   help="ONNX Runtime's worker threads spin during a run only (run, default), also after it as "
                        "ONNX Runtime does by default (always: the sessions slow each other down), or never (off)")
    p.add_argument("--fixed-order", action="store_true", help="same order every round (FP32 first), as before")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-round orders")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated INT8 variants to build and time (default {','.join(VARIANTS)})")
    p.add_argument("--keep", default=None, help="keep the built variants in this folder (and with --rounds 0, "
                   "only build them: prepare outside the timing window)")
    p.add_argument("--prebuilt", default=None, help="time the variants built earlier into this folder by --keep "
                   "instead of building them (so that a quiet window holds the timing only)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from edge_deblur.runtime.bench import machine_info, parse_size

    calib = args.calib if ":" in args.calib else f"synthetic:{args.calib}"
    with tempfile.TemporaryDirectory(prefix="cpu_int8_layouts.") as tmp:
        names = tuple(v.strip() for v in args.variants.split(",") if v.strip())
        if args.prebuilt:
            files = {"fp32": Path(args.folder) / "model.onnx"}
            if (Path(args.folder) / "model.int8.onnx").is_file():
                files["tensorrt"] = Path(args.folder) / "model.int8.onnx"
            if (Path(args.folder) / "model.int8-cpu.onnx").is_file():
                files["shipped"] = Path(args.folder) / "model.int8-cpu.onnx"
            for n in names:
                f = Path(args.prebuilt) / f"{n}.onnx"
                if not f.is_file():
                    raise SystemExit(f"{f} not found: build it first with --keep {args.prebuilt} --rounds 0")
                files[n] = f
        else:
            files = build(Path(args.folder), Path(tmp), calib, args.samples, args.tile, names)
        if args.keep and not args.prebuilt:
            import shutil

            Path(args.keep).mkdir(parents=True, exist_ok=True)
            for k, f in files.items():
                if Path(f).parent == Path(tmp):
                    shutil.copy(f, Path(args.keep) / f"{k}.onnx")
        if args.rounds == 0:
            print(f"built {', '.join(names)} into {args.keep}")
            return 0
        mach = machine_info()
        import json as _json

        stride = int(_json.loads((Path(args.folder) / "manifest.json").read_text()).get("stride", 16))
        res = measure(files, parse_size(args.size), args.threads, args.rounds, args.warmup, stride, args.gap_ms,
                      args.spin, not args.fixed_order, args.seed)
    print(f"{mach['cpu']}, {mach['cores']} cores, {mach['isa']}; load {mach['load_avg_1_5_15min']}; "
          f"{args.size}, {args.threads} threads, {args.rounds} interleaved rounds "
          f"({'fixed' if args.fixed_order else 'random'} order), gap {args.gap_ms:g} ms, spinning: {args.spin}; "
          f"load after {[round(v, 2) for v in os.getloadavg()]}")
    print("| variant | ms p50 | ms p10 | CPU ms p50 | x FP32 (median of per-round ratios) | IQR | p50 FP32 / p50 |")
    print("|---|---|---|---|---|---|---|")
    for k, r in res.items():
        print(f"| {k} | {r['ms_p50']:.1f} | {r['ms_p10']:.1f} | {r['cpu_ms_p50']:.1f} | **{r['speedup_vs_fp32']:.2f}** | "
              f"{r['speedup_iqr'][0]:.2f}-{r['speedup_iqr'][1]:.2f} | {r['speedup_of_medians']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": mach, "args": vars(args), "results": res}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
