#!/usr/bin/env python3
"""Accuracy/cost frontier of the shipped model: dense vs pruned x FP32 vs INT8.

For each artifact: parameters, GMACs at 1280x720, file size, PSNR/SSIM on a held-out REDS scene
(ONNX Runtime CPU, the runtime's own preprocessing), INT8-vs-FP32 output PSNR, and CPU latency
at 640x360 (median of --runs timed runs after --warmup, model compute only). Writes a table
between the frontier markers of docs/BENCHMARKS.md (the rest of the file is left alone), a
PSNR-vs-GMACs plot beside it, and records each latency in the model folder's manifest.json for
the runtime's artifact choice (edge_deblur.runtime.select).

Model folders are what `edge-deblur export` writes (model.onnx + manifest.json). A folder
without model.int8.onnx is quantized first when --calib is given.

Example (shipped model + its pruned, fine-tuned variant):

  edge-deblur prune runs/edgenet_s/last.safetensors --ratio 0.5 -o runs/edgenet_s_p50.safetensors --finetune-iters 4000
  edge-deblur export runs/edgenet_s_p50.safetensors -o export/edgenet_s_p50
  python benchmarks/frontier.py --dense export/edgenet_s --pruned export/edgenet_s_p50 \\
      --scene test_001 --calib synthetic:../shared/data/natural/BSDS500
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BEGIN, END = "<!-- frontier:begin -->", "<!-- frontier:end -->"


def parse_size(text):
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def latencies(paths_strides, size, runs, warmup, threads):
    """Median wall time of session.run on one frame of ``size`` padded to the stride as the
    runtime does. The artifacts are timed interleaved (one run of each per round), so a change
    of load on a shared machine hits them alike."""
    from edge_deblur.compress.quantize import _ort_session
    from edge_deblur.runtime.preprocess import frame_to_tensor

    w, h = size
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    sessions = []
    for path, stride in paths_strides:
        sess = _ort_session(path, threads)
        x, _ = frame_to_tensor(frame, stride)
        feed = {sess.get_inputs()[0].name: x}
        for _ in range(warmup):
            sess.run(None, feed)
        sessions.append((sess, feed, list(x.shape)))
    times = [[] for _ in sessions]
    for _ in range(runs):
        for i, (sess, feed, _) in enumerate(sessions):
            t = time.perf_counter()
            sess.run(None, feed)
            times[i].append((time.perf_counter() - t) * 1000)
    return [(statistics.median(t), t, s[2]) for t, s in zip(times, sessions)]


def measure(folder: Path, label: str, args, pairs, scene_tensors) -> list[dict]:
    from edge_deblur.compress.quantize import (
        QuantizeOptions, compare_outputs, evaluate_onnx_on_pairs, parse_tile, quantize_model,
    )
    from edge_deblur.runtime.manifest import read_manifest
    from edge_deblur.runtime.onnx_info import graph_macs

    man = read_manifest(folder)
    if not man or not (folder / "model.onnx").is_file():
        raise SystemExit(f"{folder}: no model.onnx + manifest.json; run 'edge-deblur export CKPT -o {folder}' first")
    fp32 = folder / "model.onnx"
    int8 = folder / "model.int8.onnx"
    if args.calib and (args.requantize or not int8.is_file()):
        print(f"[{label}] quantizing {fp32} on {args.calib} ({args.method}, {args.samples} tiles of {args.tile})", flush=True)
        quantize_model(fp32, int8, calib=args.calib,
                       options=QuantizeOptions(method=args.method, samples=args.samples, tile=parse_tile(args.tile)),
                       calib_dir=args.calib_dir, name=folder.name, threads=args.threads)
        man = read_manifest(folder)
    stride = int(man["stride"])
    rows = []
    for path, prec in ((fp32, "fp32"), (int8, "int8")):
        if not path.is_file():
            print(f"[{label}] {path.name} missing (pass --calib to make it); skipped", flush=True)
            continue
        print(f"[{label}] {path.name}: evaluating on {len(pairs)} frames of {args.scene}", flush=True)
        ev = evaluate_onnx_on_pairs(path, pairs, threads=args.threads, stride=stride)
        row = {
            "model": label, "folder": str(folder), "file": path.name, "precision": prec,
            "params": man.get("params"),
            "gmacs_1280x720": graph_macs(fp32, 720, 1280) / 1e9,
            "gmacs_manifest": man.get("gmacs_1280x720"),
            "file_mb": path.stat().st_size / 1e6,
            "psnr": ev["psnr"], "ssim": ev["ssim"], "input_psnr": ev["input_psnr"], "input_ssim": ev["input_ssim"],
            "arch": man.get("arch"), "stride": stride,
        }
        if prec == "int8":
            row["psnr_int8_vs_fp32"] = compare_outputs(fp32, path, scene_tensors(stride), args.threads)["psnr_int8_vs_fp32"]
        rows.append(row)
    return rows


def time_rows(rows, args):
    print(f"timing {len(rows)} artifacts at {args.size}: {args.runs} interleaved rounds", flush=True)
    res = latencies([(Path(r["folder"]) / r["file"], r["stride"]) for r in rows], args.size_wh, args.runs,
                    args.warmup, args.threads)
    for r, (ms, times, shape) in zip(rows, res):
        r.update(latency_ms_p50=ms, latency_ms_all=[round(t, 2) for t in times], latency_input=shape)
        if args.record_latency:
            from edge_deblur.runtime.select import record_latency

            record_latency(r["folder"], r["file"], ms, args.size_wh, args.threads or None,
                           extra={"runs": args.runs, "onnxruntime": _ort_version(), "source": "benchmarks/frontier.py"})


def _ort_version():
    import onnxruntime

    return onnxruntime.__version__


def machine() -> dict:
    from edge_deblur.runtime.select import cpu_info, int8_dot_product

    info = cpu_info()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu": info["model"], "cores": os.cpu_count(), "int8_dot_product": int8_dot_product(info["flags"]),
            "onnxruntime": _ort_version(), "python": platform.python_version(), "loadavg": load}


def markdown(rows, mach, args, command) -> str:
    base = next((r for r in rows if r["model"] == "dense" and r["precision"] == "fp32"), rows[0])
    lines = [
        BEGIN,
        "## Compression frontier: dense vs pruned x FP32 vs INT8",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}.",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, ONNX Runtime {mach['onnxruntime']} (CPU EP, "
        f"{'default' if not args.threads else args.threads} threads); load average at start "
        f"{', '.join(f'{v:.1f}' for v in mach['loadavg']) if mach['loadavg'] else 'n/a'} (shared machine: latencies are indicative).",
        f"Quality: REDS scene `{args.scene}` from `{args.pairs}` ({rows[0].get('pairs', '')} frames, held out of training), "
        f"whole frames through the runtime's preprocessing; blurry input {base['input_psnr']:.2f} dB / SSIM {base['input_ssim']:.4f}.",
        f"Latency: median of {args.runs} runs of one {args.size} frame (padded to the stride) after {args.warmup} warm-up runs, "
        "model compute only; the artifacts are timed interleaved, one run of each per round.",
        "",
        "| model | file | precision | params (M) | GMACs @1280x720 | file (MB) | PSNR (dB) | SSIM | ΔPSNR vs dense FP32 | INT8 vs FP32 (dB) | CPU ms @" + args.size + " |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        i8 = f"{r['psnr_int8_vs_fp32']:.1f}" if "psnr_int8_vs_fp32" in r else "-"
        lines.append(
            f"| {r['model']} | `{Path(r['folder']).name}/{r['file']}` | {r['precision'].upper()} | {r['params'] / 1e6:.3f} | "
            f"{r['gmacs_1280x720']:.2f} | {r['file_mb']:.2f} | {r['psnr']:.3f} | {r['ssim']:.4f} | "
            f"{r['psnr'] - base['psnr']:+.3f} | {i8} | {r['latency_ms_p50']:.1f} |"
        )
    lines += ["", "![PSNR vs GMACs](" + Path(args.plot).name + ")", ""]
    if not mach["int8_dot_product"]:
        lines += [
            "This CPU has no INT8 dot-product instructions (no AVX-VNNI / AVX512-VNNI / AMX), so ONNX Runtime's INT8",
            "convolutions gain nothing here: the INT8 files are for size and for TensorRT INT8 engines (Jetson, GPUs),",
            "and the runtime keeps FP32 on CPUs like this one (`edge_deblur.runtime.select`, from the latencies this",
            "script records in each model folder's manifest.json).",
            "",
        ]
    lines.append(END)
    return "\n".join(lines)


def write_docs(path: Path, section: str):
    text = path.read_text() if path.is_file() else "# Benchmarks\n\nEvery number here names the command that produced it.\n"
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def plot(rows, path: Path, scene: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        marker = "o" if r["precision"] == "fp32" else "s"
        color = "tab:blue" if r["model"] == "dense" else "tab:orange"
        ax.scatter(r["gmacs_1280x720"], r["psnr"], marker=marker, color=color, s=60,
                   facecolors=color if r["precision"] == "fp32" else "none")
        ax.annotate(f"{r['model']} {r['precision'].upper()}\n{r['latency_ms_p50']:.0f} ms", (r["gmacs_1280x720"], r["psnr"]),
                    textcoords="offset points", xytext=(6, -4 if r["precision"] == "int8" else 6), fontsize=8)
    ax.axhline(rows[0]["input_psnr"], color="gray", ls="--", lw=1, label="blurry input")
    ax.set_xlabel("GMACs per 1280x720 frame")
    ax.set_ylabel(f"PSNR on REDS {scene} (dB)")
    ax.set_title("edge-deblur compression frontier (circles FP32, squares INT8)", fontsize=9)
    ax.margins(x=0.25, y=0.2)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dense", required=True, help="export folder of the dense (shipped) model")
    p.add_argument("--pruned", default=None, help="export folder of the pruned, fine-tuned model")
    p.add_argument("--pairs", default=str(ROOT.parent / "shared" / "data" / "pairs" / "REDS_320x180"),
                   help="REDS-layout pairs root (default: ../shared/data/pairs/REDS_320x180 beside the repo)")
    p.add_argument("--scene", required=True, help="held-out scene of --pairs (e.g. test_001)")
    p.add_argument("--calib", default=None, help="calibration source for missing INT8 files (e.g. synthetic:FOLDER)")
    p.add_argument("--requantize", action="store_true", help="re-make model.int8.onnx even when present")
    p.add_argument("--method", default="minmax")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--tile", default="256x256")
    p.add_argument("--calib-dir", default=str(ROOT / "calibration"))
    p.add_argument("--size", default="640x360", help="latency frame size WxH")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--docs", default=str(ROOT / "docs" / "BENCHMARKS.md"), help="markdown file to update ('' to skip)")
    p.add_argument("--plot", default=str(ROOT / "docs" / "frontier.png"))
    p.add_argument("--json", default=None, help="also write all measurements here")
    p.add_argument("--no-record-latency", dest="record_latency", action="store_false",
                   help="do not write latencies into the model folders' manifests")
    p.add_argument("--force", action="store_true", help="write docs even if the dense model does not beat the blurry input")
    args = p.parse_args(argv)
    args.size_wh = parse_size(args.size)

    from edge_deblur.compress.quantize import find_pairs
    from edge_deblur.metrics.evaluate import read_image
    from edge_deblur.runtime.preprocess import frame_to_tensor

    pairs = find_pairs(args.pairs, [args.scene])
    cache = {}

    def scene_tensors(stride):
        if stride not in cache:
            cache[stride] = [frame_to_tensor(read_image(b), stride)[0] for _, b, _ in pairs]
        return cache[stride]

    mach = machine()
    if mach["loadavg"] and mach["loadavg"][0] > 0.5 * (mach["cores"] or 1):
        print(f"warning: load average {mach['loadavg'][0]:.1f} on {mach['cores']} cores: other work will inflate the "
              "latencies (they are recorded in the manifests the runtime chooses by); rerun on a quiet machine "
              "without nice for numbers to publish", flush=True)
    command = "python benchmarks/frontier.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    rows = measure(Path(args.dense), "dense", args, pairs, scene_tensors)
    if args.pruned:
        rows += measure(Path(args.pruned), "pruned", args, pairs, scene_tensors)
    for r in rows:
        r["pairs"] = len(pairs)
    time_rows(rows, args)
    base = rows[0]
    for r in rows:
        print(f"{r['model']:6s} {r['precision']:4s} params {r['params'] / 1e6:.3f} M  GMACs {r['gmacs_1280x720']:.2f}  "
              f"PSNR {r['psnr']:.3f} ({r['psnr'] - base['psnr']:+.3f})  SSIM {r['ssim']:.4f}  "
              f"{'INT8/FP32 %.1f dB  ' % r['psnr_int8_vs_fp32'] if 'psnr_int8_vs_fp32' in r else ''}"
              f"latency {r['latency_ms_p50']:.1f} ms", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": mach, "command": command, "rows": rows}, indent=2))
    if args.docs:
        if base["psnr"] <= base["input_psnr"] and not args.force:
            raise SystemExit(
                f"the dense model ({base['psnr']:.2f} dB) does not beat the blurry input ({base['input_psnr']:.2f} dB) "
                f"on {args.scene}: not writing {args.docs} (untrained weights?); pass --force to write anyway"
            )
        plot(rows, Path(args.plot), args.scene)
        write_docs(Path(args.docs), markdown(rows, mach, args, command))
        print(f"wrote {args.docs} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
