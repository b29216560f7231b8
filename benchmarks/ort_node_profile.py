#!/usr/bin/env python3
"""Where ONNX Runtime's CPU time goes in one or more ONNX files: per op type of the graph ONNX
Runtime actually runs (after its optimizations: QLinearConv, QLinearAdd, NCHWc convs, the
Transposes/Reorders it inserts), from its own profiler (``SessionOptions.enable_profiling``).

Each file is run ``--runs`` times on one ``--size`` frame (after ``--warmup`` runs, whose events
are dropped); the table gives, per op type, the median per-run time in ms, its share of the
summed kernel time, and the node count. ``--save-optimized DIR`` also writes the optimized graph
ONNX Runtime built for each file (``optimized_model_filepath``), to read which fusions it made.

  python benchmarks/ort_node_profile.py export/edgenet_m5/model.onnx export/edgenet_m5/model.int8-cpu.onnx \
      --size 640x360 --threads 2 --runs 20 [--json out.json]
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def profile(path: Path, x: np.ndarray, threads: int, runs: int, warmup: int, save_optimized: Path | None = None,
            config: dict | None = None) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, str(v))
    with tempfile.TemporaryDirectory(prefix="ort_prof.") as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "p")
        if save_optimized is not None:
            save_optimized.mkdir(parents=True, exist_ok=True)
            so.optimized_model_filepath = str(save_optimized / (path.stem + ".optimized.onnx"))
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feeds = {sess.get_inputs()[0].name: x}
        meta = sess.get_modelmeta().custom_metadata_map
        for i in sess.get_inputs()[1:]:  # a recurrent model's state, at its scale (metadata) and channels
            s = int(meta.get(f"edge_deblur.state_scale.{i.name}", 1))
            feeds[i.name] = np.full((x.shape[0], int(i.shape[1]), x.shape[2] // s, x.shape[3] // s), 0.5, np.float32)
        for _ in range(warmup + runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    runs_ev = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    runs_ev.sort(key=lambda e: e["ts"])
    keep = runs_ev[warmup:]
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in keep]
    per_run: list[collections.Counter] = [collections.Counter() for _ in keep]
    count: collections.Counter = collections.Counter()
    per_node: list[collections.Counter] = [collections.Counter() for _ in keep]
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        for i, (a, b) in enumerate(windows):
            if a <= e["ts"] <= b:
                per_run[i][op] += e["dur"] / 1e3
                per_node[i][(op, e["name"][: -len("_kernel_time")])] += e["dur"] / 1e3
                if i == 0:
                    count[op] += 1
                break
    ops = sorted({op for c in per_run for op in c})
    med = {op: statistics.median([c.get(op, 0.0) for c in per_run]) for op in ops}
    total = sum(med.values())
    run_ms = statistics.median([e["dur"] / 1e3 for e in keep])
    nodes = {k for c in per_node for k in c}
    node_med = {k: statistics.median([c.get(k, 0.0) for c in per_node]) for k in nodes}
    return {"file": str(path), "run_ms_p50": run_ms, "kernel_ms_sum": total,
            "nodes": [{"op": op, "node": n, "ms": node_med[(op, n)]} for op, n in sorted(nodes, key=lambda k: -node_med[k])],
            "ops": {op: {"ms": med[op], "share": med[op] / total if total else 0.0, "nodes": count[op]}
                    for op in sorted(ops, key=lambda o: -med[o])}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--size", default="640x360")
    p.add_argument("--stride", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--save-optimized", type=Path, default=None)
    p.add_argument("--nodes", type=int, default=0, help="also list the N slowest nodes of each file")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from edge_deblur.runtime.bench import machine_info, parse_size
    from edge_deblur.runtime.preprocess import frame_to_tensor

    w, h = parse_size(args.size)
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    x, _ = frame_to_tensor(frame, args.stride)
    mach = machine_info()
    print(f"{mach['cpu']}, {mach['cores']} cores, {mach['isa']}; load {mach['load_avg_1_5_15min']}; "
          f"input {list(x.shape)}, {args.threads} threads, {args.runs} runs")
    res = []
    for f in args.files:
        r = profile(f, x, args.threads, args.runs, args.warmup, args.save_optimized)
        res.append(r)
        print(f"\n{f}: run {r['run_ms_p50']:.1f} ms (median), kernels {r['kernel_ms_sum']:.1f} ms")
        print("| op (as run) | nodes | ms | share |")
        print("|---|---|---|---|")
        for op, d in r["ops"].items():
            print(f"| {op} | {d['nodes']} | {d['ms']:.2f} | {100 * d['share']:.1f} % |")
        for d in r["nodes"][: args.nodes]:
            print(f"  {d['ms']:7.2f} ms  {d['op']:<14} {d['node']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": mach, "args": {k: str(v) for k, v in vars(args).items()},
                                               "results": res}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
