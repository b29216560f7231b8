"""Where one camera through ``MultiCamera`` loses against ``bench``: per round, ``bench`` (no
decoding, one frame at a time) and then one camera over a generated mp4, with the model's time
per call in each (``infer_ms_p50``), the camera's stage times and the process's CPU time per frame.

    python benchmarks/multicam_stages.py --size 640x360 --frames 240 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from edge_deblur.io import StreamOptions
from edge_deblur.runtime.bench import bench, machine_info, parse_size
from edge_deblur.runtime.deblurrer import Deblurrer
from edge_deblur.runtime.multicam import MultiCamera

from stream_throughput import make_clip


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    w, h = parse_size(a.size)
    with tempfile.TemporaryDirectory() as tmp, Deblurrer.open(a.model) as d:
        clip = os.path.join(tmp, "cam0.mp4")
        make_clip(clip, w, h, a.frames)
        for _ in range(a.rounds):
            c0 = cpu_s()
            b = bench(a.model, (w, h), runs=a.frames // 2, warmup=3, peak=False)
            b_cpu = (cpu_s() - c0) / (a.frames // 2 + 3)
            c0, t0 = cpu_s(), time.perf_counter()
            s = MultiCamera(d, [clip], None, StreamOptions(queue_size=4)).run()
            cam = s["cameras"][0]
            m_cpu = (cpu_s() - c0) / max(1, cam["frames_out"])
            print(json.dumps({
                "bench_fps": round(b["fps"], 2), "bench_infer_ms_p50": round(b["infer_ms_p50"], 2),
                "bench_pre_post_ms_p50": [round(b["preprocess_ms_p50"], 2), round(b["postprocess_ms_p50"], 2)],
                "bench_cpu_ms_per_frame": round(b_cpu * 1e3, 1),
                "camera_fps": s["fps"], "camera_ratio": round(s["fps"] / b["fps"], 3),
                "camera_infer_ms_p50": s.get("infer_ms_p50"), "camera_cpu_ms_per_frame": round(m_cpu * 1e3, 1),
                "camera_stage_means_ms": {k: v["mean"] for k, v in cam["stages"].items() if k != "latency"},
                "load_avg": [round(v, 2) for v in os.getloadavg()]}), flush=True)
    print(json.dumps({"machine": machine_info()}))


if __name__ == "__main__":
    main()
