#!/usr/bin/env python3
"""Does this CPU run a model folder's INT8 CPU files exactly, and how fast against FP32?

For each INT8 file for ONNX Runtime's CPU kernels in the folder (``model.int8-cpu.onnx``: 8-bit
weights; ``model.int8-avx2.onnx``: 7-bit weights), on frames of the demo's street scene with
motion blur (the content that drives activations to the ends of their ranges):

* **vs emulation**: PSNR of the file's output through ONNX Runtime's optimized CPU kernels
  against the same file run with every graph optimization off (each DequantizeLinear -> float op
  -> QuantizeLinear computed in float: an exact emulation of the Q/DQ graph). Dot-product kernels
  (VNNI, AMX) are exact, so this is high (>= 40 dB) there; on x86 without VNNI ONNX Runtime sums
  pairs of u8 x s8 products in 16 bits (``vpmaddubsw``), which saturates with 8-bit weights.
* **vs FP32**: PSNR of the optimized output against ``model.onnx``'s.
* **speed**: the median of per-round ratios of FP32's time to the file's, both timed in each of
  ``--rounds`` rounds in a random order, at ``--size``, ``--threads`` threads (worker threads stop
  spinning after each run, as ``benchmarks/cpu_int8_layouts.py`` explains).

  python benchmarks/cpu_int8_exact.py export/edgenet_m5 --size 640x360 --threads 2 --rounds 20 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def session(path, threads: int, optimize: bool = True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1).astype(np.float64) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def street_frames(w: int, h: int, n: int = 3) -> list[np.ndarray]:
    """(1, 3, H, W) float32 RGB inputs, padded to a multiple of 32: the verify street scene."""
    from edge_deblur.runtime.preprocess import frame_to_tensor
    from edge_deblur.runtime.verify import synthetic_frames

    frames = synthetic_frames(2 * n, w, h)[1::2]  # the odd ones: street scenes
    return [np.ascontiguousarray(frame_to_tensor(f, 32)[0]) for f in frames]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="model folder (export/<name>) with model.onnx and INT8 CPU files")
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    from edge_deblur.runtime.cpu_features import cpu_features

    folder = Path(args.folder)
    w, h = (int(v) for v in args.size.lower().split("x"))
    files = [f for f in ("model.int8-cpu.onnx", "model.int8-avx2.onnx") if (folder / f).is_file()]
    if not (folder / "model.onnx").is_file() or not files:
        raise SystemExit(f"{folder} needs model.onnx and at least one of model.int8-cpu.onnx / model.int8-avx2.onnx")
    cpu = cpu_features()
    xs = street_frames(w, h)
    fp32 = session(folder / "model.onnx", args.threads)
    ref = [run(fp32, x) for x in xs]
    out = {"cpu": cpu.to_dict(), "size": args.size, "threads": args.threads, "rounds": args.rounds, "files": {}}
    sessions = {"model.onnx": fp32}
    for f in files:
        opt, emu = session(folder / f, args.threads), session(folder / f, args.threads, optimize=False)
        ys = [run(opt, x) for x in xs]
        out["files"][f] = {"psnr_vs_emulation_db": round(min(psnr(y, run(emu, x)) for y, x in zip(ys, xs)), 2),
                           "psnr_vs_fp32_db": round(min(psnr(y, r) for y, r in zip(ys, ref)), 2)}
        sessions[f] = opt
    x = np.random.default_rng(0).random((1, 3, -(-h // 32) * 32, -(-w // 32) * 32), dtype=np.float32)
    for s in sessions.values():
        for _ in range(2):
            run(s, x)
    times = {n: [] for n in sessions}
    for _ in range(args.rounds):
        order = list(sessions)
        random.shuffle(order)
        for n in order:
            t0 = time.perf_counter()
            run(sessions[n], x)
            times[n].append((time.perf_counter() - t0) * 1e3)
    out["fp32_ms_median"] = round(statistics.median(times["model.onnx"]), 1)
    for f in files:
        out["files"][f]["ms_median"] = round(statistics.median(times[f]), 1)
        out["files"][f]["x_fp32"] = round(statistics.median(a / b for a, b in zip(times["model.onnx"], times[f])), 2)
    print(f"CPU: {cpu.model} ({cpu.isa}; {', '.join(sorted(cpu.relevant))}), {args.threads} threads, {args.size}, "
          f"{args.rounds} rounds; FP32 {out['fp32_ms_median']} ms")
    print(f"{'file':24s} {'vs emulation':>13s} {'vs FP32':>9s} {'ms':>7s} {'x FP32':>7s}")
    for f, r in out["files"].items():
        print(f"{f:24s} {r['psnr_vs_emulation_db']:10.1f} dB {r['psnr_vs_fp32_db']:6.1f} dB {r['ms_median']:7.1f} "
              f"{r['x_fp32']:7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
