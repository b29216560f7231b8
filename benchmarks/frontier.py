#!/usr/bin/env python3
"""Quality against speed for every ONNX artifact of every shipped model: the frontier a user
chooses from.

For each model folder (default: every folder under export/ with a manifest.json) and each ONNX
file its manifest lists (FP32 ``model.onnx``, ``model.int8-cpu.onnx`` for ONNX Runtime on x86,
``model.int8.onnx`` laid out for TensorRT; ``model.fp16.onnx`` with --fp16, it runs emulated on a
CPU): PSNR/SSIM on each real validation set (whole frames through the runtime's preprocessing),
INT8-vs-FP32 output PSNR, parameters, GMACs, file size, and CPU speed at --size (640x360) on
--threads threads. Speed: all artifacts are timed interleaved, one run of each per round, and
each artifact's speed-up over the FP32 file of the same model is the median of the per-round
ratios, so a change of load on a shared machine hits both sides of a ratio alike. The file the
runtime picks on this CPU (``edge_deblur.runtime.select``) is marked.

Writes a table between the frontier markers of docs/BENCHMARKS.md (the rest of the file is left
alone) and a quality-vs-FPS plot beside it.

  python benchmarks/frontier.py --threads 2 --rounds 30 \\
      --pairs ../shared/data/pairs/REDS_320x180:test_001 --pairs ../shared/data/pairs/GoPro_1280x720
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
LABEL = {"fp32": "FP32", "int8-cpu": "INT8 CPU", "int8-tensorrt": "INT8 TensorRT", "fp16": "FP16"}


def parse_size(text):
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def set_name(root: str, scenes: list[str]) -> str:
    return Path(root).name + (f":{','.join(scenes)}" if scenes else "")


def timed_rounds(items, size, rounds, warmup, threads):
    """items: [(path, stride)]. -> per item: list of ms, one per round (all items run once per round)."""
    from edge_deblur.compress.quant_eval import ort_session
    from edge_deblur.runtime.preprocess import frame_to_tensor

    w, h = size
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    sessions = []
    for path, stride in items:
        sess = ort_session(path, threads)
        x, _ = frame_to_tensor(frame, stride)
        feed = {sess.get_inputs()[0].name: x}
        for _ in range(warmup):
            sess.run(None, feed)
        sessions.append((sess, feed, list(x.shape)))
    times = [[] for _ in sessions]
    for _ in range(rounds):
        for i, (sess, feed, _) in enumerate(sessions):
            t = time.perf_counter()
            sess.run(None, feed)
            times[i].append((time.perf_counter() - t) * 1000)
    return times, [s[2] for s in sessions]


def model_rows(folder: Path, args, pair_sets, cpu) -> list[dict]:
    from edge_deblur.compress.quant_eval import compare_outputs, evaluate_onnx_on_pairs, find_pairs
    from edge_deblur.metrics.evaluate import read_image
    from edge_deblur.runtime.manifest import read_manifest
    from edge_deblur.runtime.onnx_info import graph_macs
    from edge_deblur.runtime.preprocess import frame_to_tensor
    from edge_deblur.runtime.select import artifact_kind, select_artifact

    man = read_manifest(folder)
    fp32 = folder / (man.get("onnx") or "model.onnx")
    if not man or not fp32.is_file():
        raise SystemExit(f"{folder}: no model.onnx + manifest.json; run 'edge-deblur export CKPT -o {folder}' first")
    stride = int(man["stride"])
    chosen = select_artifact(folder, cpu=cpu).path.name
    arts = dict(man.get("artifacts") or {})
    arts.setdefault(fp32.name, {"precision": "fp32"})
    names = sorted((n for n in arts if n.endswith(".onnx") and (folder / n).is_file()),
                   key=lambda n: list(LABEL).index(artifact_kind(n, arts[n])))
    rows = []
    for name in names:
        kind = artifact_kind(name, arts[name])
        if kind == "fp16" and not args.fp16:
            continue
        path = folder / name
        row = {"model": folder.name, "folder": str(folder), "file": name, "kind": kind, "stride": stride,
               "params": man.get("params"), "gmacs_1280x720": graph_macs(fp32, -(-720 // stride) * stride, -(-1280 // stride) * stride) / 1e9,
               "file_mb": path.stat().st_size / 1e6, "chosen_here": name == chosen, "sets": {}}
        for root, scenes in pair_sets:
            s = None if args.evaluate else recorded(arts, name, kind, root, scenes)
            if s is None:
                pairs = find_pairs(root, scenes)
                print(f"[{folder.name}] {name}: evaluating {len(pairs)} pairs of {set_name(root, scenes)}", flush=True)
                ev = evaluate_onnx_on_pairs(path, pairs, threads=args.threads, stride=stride)
                s = {k: ev[k] for k in ("psnr", "ssim", "input_psnr")} | {"pairs": len(pairs), "source": "evaluated here"}
                if kind != "fp32":
                    tensors = [frame_to_tensor(read_image(b), stride)[0] for _, b, _ in pairs]
                    s["psnr_vs_fp32"] = compare_outputs(fp32, path, tensors, args.threads)["psnr_int8_vs_fp32"]
            row["sets"][set_name(root, scenes)] = s
        rows.append(row)
    return rows


def _same_set(rec: dict, root: str, scenes: list[str]) -> bool:
    try:
        same_root = Path(rec.get("root", "")).resolve() == Path(root).resolve()
    except OSError:
        return False
    return same_root and sorted(rec.get("scenes") or []) == sorted(scenes or [])


def recorded(arts: dict, name: str, kind: str, root: str, scenes: list[str]) -> dict | None:
    """Quality on a set as the quantize stage recorded it in the manifest (its recipe's
    accuracy: FP32 and INT8 on the same pairs), or None. FP32 rows take the FP32 side of any
    INT8 file's record of that set."""
    sources = [(name, arts.get(name) or {})] if kind != "fp32" else list(arts.items())
    for n, entry in sources:
        acc = entry.get("accuracy") or {}
        for rec in acc.get("pair_sets") or ([acc["pairs"]] if acc.get("pairs") else []):
            if not _same_set(rec, root, scenes):
                continue
            side = rec["fp32"] if kind == "fp32" else rec["int8"]
            out = {k: side[k] for k in ("psnr", "ssim", "input_psnr")} | {
                "pairs": rec.get("count"), "source": f"recorded by quantize ({n})"}
            if kind != "fp32":
                out["psnr_vs_fp32"] = rec["psnr_int8_vs_fp32"]
            return out
    return None


def time_rows(rows, args):
    print(f"timing {len(rows)} artifacts at {args.size}, {args.threads} threads: {args.rounds} interleaved rounds", flush=True)
    times, shapes = timed_rounds([(Path(r["folder"]) / r["file"], r["stride"]) for r in rows], args.size_wh,
                                 args.rounds, args.warmup, args.threads)
    base = {r["model"]: i for i, r in enumerate(rows) if r["kind"] == "fp32"}
    for i, r in enumerate(rows):
        t = times[i]
        r.update(ms_p50=statistics.median(t), ms_p10=float(np.percentile(t, 10)), fps=1000.0 / statistics.median(t),
                 input_shape=shapes[i], ms_all=[round(v, 2) for v in t])
        b = times[base[r["model"]]] if r["model"] in base else None
        if b is not None:
            ratios = [bb / tt for bb, tt in zip(b, t)]
            r["speedup_vs_fp32"] = statistics.median(ratios)
            r["speedup_vs_fp32_iqr"] = [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))]


def machine(cpu) -> dict:
    import onnxruntime

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return cpu.to_dict() | {"onnxruntime": onnxruntime.__version__, "python": platform.python_version(), "loadavg": load}


def markdown(rows, mach, args, command, set_names) -> str:
    lines = [
        BEGIN,
        "## Frontier: every artifact of every shipped model, quality against CPU speed",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}.",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['isa']} ({', '.join(mach['features'])}); ONNX Runtime "
        f"{mach['onnxruntime']} (CPU EP, {args.threads or 'default'} threads); load average at start "
        f"{', '.join(f'{v:.1f}' for v in mach['loadavg']) if mach['loadavg'] else 'n/a'}: the machine was shared, so "
        "absolute times are inflated; the speed-ups are medians of per-round ratios (both files timed in the same round).",
        f"Quality: whole frames through the runtime's preprocessing; sets {', '.join(f'`{s}`' for s in set_names)}; "
        + ("evaluated by this command" if all(v.get("source") == "evaluated here" for r in rows for v in r["sets"].values())
           else "figures recorded by the `edge-deblur quantize ... --pairs` runs in the manifests are reused "
                "(calibration/<model>/**/recipe.json; `--evaluate` re-measures them)") + ". "
        f"Speed: {args.size} frames (padded to the stride), model compute only, {args.rounds} rounds after "
        f"{args.warmup} warm-up runs. ◀ marks the file the runtime picks on this CPU.",
        "",
    ]
    head = "| model | file | params (M) | GMACs @1280x720 | MB | " + " | ".join(
        f"PSNR {s} (Δ vs FP32)" for s in set_names) + " | INT8 vs FP32 out (dB) | ms @" + args.size + " | FPS | × FP32 |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    fp = {r["model"]: r for r in rows if r["kind"] == "fp32"}
    for r in rows:
        cells = []
        for s in set_names:
            v = r["sets"][s]
            d = v["psnr"] - fp[r["model"]]["sets"][s]["psnr"] if r["model"] in fp else 0.0
            cells.append(f"{v['psnr']:.3f} ({d:+.3f})" if r["kind"] != "fp32" else f"{v['psnr']:.3f} (in {v['input_psnr']:.2f})")
        i8 = " / ".join(f"{r['sets'][s]['psnr_vs_fp32']:.1f}" for s in set_names) if r["kind"] != "fp32" else "-"
        sp = f"{r['speedup_vs_fp32']:.2f}" if "speedup_vs_fp32" in r else "-"
        lines.append(f"| {r['model']} | `{r['file']}`{' ◀' if r['chosen_here'] else ''} | {r['params'] / 1e6:.3f} | "
                     f"{r['gmacs_1280x720']:.2f} | {r['file_mb']:.2f} | " + " | ".join(cells) +
                     f" | {i8} | {r['ms_p50']:.1f} | {r['fps']:.1f} | **{sp}** |")
    lines += ["", "![quality vs FPS](" + Path(args.plot).name + ")", "", END]
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


def pareto(points):
    """Indices of the points no other point beats on both axes (x: FPS, y: PSNR), by FPS."""
    keep = [i for i, (x, y) in enumerate(points)
            if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)]
    return sorted(keep, key=lambda i: points[i][0])


def plot(rows, path: Path, set_names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(set_names), figsize=(5.6 * len(set_names), 4.2), squeeze=False)
    markers = {"fp32": "o", "int8-cpu": "s", "int8-tensorrt": "^", "fp16": "D"}
    models = sorted({r["model"] for r in rows})
    colors = {m: c for m, c in zip(models, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"])}
    for ax, s in zip(axes[0], set_names):
        pts = [(r["fps"], r["sets"][s]["psnr"]) for r in rows]
        for r, (x, y) in zip(rows, pts):
            ax.scatter(x, y, marker=markers.get(r["kind"], "x"), color=colors[r["model"]], s=70,
                       edgecolors="black" if r["chosen_here"] else "none", linewidths=1.5)
            ax.annotate(f"{r['model']}\n{LABEL[r['kind']]}", (x, y), textcoords="offset points", xytext=(6, 2), fontsize=7)
        front = pareto(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color="gray", lw=1, ls="-", zorder=0, label="frontier")
        ax.axhline(rows[0]["sets"][s]["input_psnr"], color="gray", ls="--", lw=1, label="blurry input")
        ax.set_xlabel("FPS (model compute, CPU, this machine)")
        ax.set_ylabel(f"PSNR on {s} (dB)")
        ax.margins(x=0.3, y=0.25)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=7)
    fig.suptitle("edge-deblur: quality vs speed (circle FP32, square INT8 CPU, triangle INT8 TensorRT; outlined: the runtime's pick)",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=None, help="model folders (default: every export/*/ with a manifest.json)")
    p.add_argument("--pairs", action="append", default=None,
                   help="validation pairs DIR or DIR:scene1,scene2 (repeatable; default: "
                        "../shared/data/pairs/REDS_320x180:test_001 and ../shared/data/pairs/GoPro_1280x720)")
    p.add_argument("--evaluate", action="store_true",
                   help="evaluate every file on every set here, even where the quantize stage recorded it in the manifest")
    p.add_argument("--fp16", action="store_true", help="also time model.fp16.onnx (emulated on CPUs: slow)")
    p.add_argument("--size", default="640x360", help="frame size WxH for the speed (default 640x360)")
    p.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds (default 20)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    p.add_argument("--docs", default=str(ROOT / "docs" / "BENCHMARKS.md"), help="markdown file to update ('' to skip)")
    p.add_argument("--plot", default=str(ROOT / "docs" / "frontier.png"))
    p.add_argument("--json", default=None, help="also write all measurements here")
    args = p.parse_args(argv)
    args.size_wh = parse_size(args.size)

    from edge_deblur.runtime.cpu_features import cpu_features

    data = ROOT.parent / "shared" / "data" / "pairs"
    pair_args = args.pairs or [f"{data / 'REDS_320x180'}:test_001", str(data / "GoPro_1280x720")]
    pair_sets = []
    for text in pair_args:
        root, scenes = text, []
        if ":" in text and not Path(text).exists():
            root, _, sc = text.rpartition(":")
            scenes = [s for s in sc.split(",") if s]
        pair_sets.append((root, scenes))
    set_names = [set_name(r, s) for r, s in pair_sets]
    folders = [Path(m) for m in args.models] if args.models else sorted(
        f.parent for f in (ROOT / "export").glob("*/manifest.json"))
    cpu = cpu_features()
    mach = machine(cpu)
    if mach["loadavg"] and mach["loadavg"][0] > 0.5 * (mach["cores"] or 1):
        print(f"warning: load average {mach['loadavg'][0]:.1f} on {mach['cores']} cores: absolute times will be "
              "inflated; compare the per-round ratios", flush=True)
    command = "python benchmarks/frontier.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    rows = [r for f in folders for r in model_rows(f, args, pair_sets, cpu)]
    time_rows(rows, args)
    for r in rows:
        q = "  ".join(f"{s} {r['sets'][s]['psnr']:.3f}" for s in set_names)
        print(f"{r['model']:16s} {r['file']:22s} {q}  {r['ms_p50']:.1f} ms  {r['fps']:.1f} FPS  "
              f"x{r.get('speedup_vs_fp32', float('nan')):.2f} vs FP32{'  <- chosen here' if r['chosen_here'] else ''}",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": mach, "command": command, "rows": rows}, indent=2))
    if args.docs:
        plot(rows, Path(args.plot), set_names)
        write_docs(Path(args.docs), markdown(rows, mach, args, command, set_names))
        print(f"wrote {args.docs} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
