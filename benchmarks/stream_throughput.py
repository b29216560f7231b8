"""Stream throughput next to bench throughput at the same size (issue target: stream over a video
file to null:// >= 90% of bench).

    python benchmarks/stream_throughput.py --size 640x360 --frames 60 --rounds 6 [--model M] [--json]

Each round times ``edge_deblur.runtime.bench.bench`` (pre + model + post, one frame at a time)
and then ``run_stream`` over a generated video file to ``null://`` (decode, pre, model, post and
write in their own threads), both on the same model, size and thread count, back to back, so
that other load on the machine hits both alike; the ratios of the rounds are reported with their
median. ``pure`` is the model alone (1000 / bench's median inference time).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import cv2
import numpy as np

from edge_deblur.io import StreamOptions
from edge_deblur.runtime.bench import bench, machine_info, parse_size
from edge_deblur.runtime.pipeline import run_stream


def make_clip(path: str, w: int, h: int, n: int):
    wr = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    for i in range(n):
        wr.write(np.roll(base, i * 3, axis=1))
    wr.release()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    w, h = parse_size(a.size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = os.path.join(tmp, "clip.mp4")
        make_clip(clip, w, h, a.frames)
        for r in range(a.rounds):
            b = bench(a.model, (w, h), runs=a.frames, warmup=3, threads=a.threads, peak=False)
            from edge_deblur.runtime.pipeline import open_processor

            proc = open_processor(a.model, None, False, **({"threads": a.threads} if a.threads else {}))
            s = run_stream(StreamOptions(source=clip, output="null://"), proc)
            proc.close()
            row = {
                "bench_fps": round(b["fps"], 3),
                "pure_fps": round(1000.0 / b["infer_ms_p50"], 3),
                "stream_fps": s["fps"],
                "stream_fps_steady": s["fps_steady"],
                "stream_infer_utilization": s["infer_utilization"],
                "ratio_vs_bench": round(s["fps"] / b["fps"], 3),
                "ratio_vs_pure": round(s["fps"] * b["infer_ms_p50"] / 1000.0, 3),
                "bench_ms": {"pre": round(b["preprocess_ms_p50"], 2), "infer": round(b["infer_ms_p50"], 2),
                             "post": round(b["postprocess_ms_p50"], 2)},
                "stream_ms_p50": {k: v["p50"] for k, v in s["stages"].items()},
                "load_1min": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            if not a.json:
                print(json.dumps(row), flush=True)
    summary = {
        "size": f"{w}x{h}", "frames": a.frames, "rounds": a.rounds, "model": b["model"], "threads": b["threads"],
        "median_bench_fps": float(np.median([r["bench_fps"] for r in rows])),
        "median_stream_fps": float(np.median([r["stream_fps"] for r in rows])),
        "median_ratio_vs_bench": float(np.median([r["ratio_vs_bench"] for r in rows])),
        "median_ratio_vs_pure": float(np.median([r["ratio_vs_pure"] for r in rows])),
        "machine": machine_info(),
    }
    print(json.dumps(summary | ({"rounds_detail": rows} if a.json else {})), flush=True)


if __name__ == "__main__":
    main()
