"""Multi-camera total FPS next to single-camera bench FPS at the same frame size (issue target:
2 and 4 cameras >= 0.9x one camera's bench FPS on the CPU; on a GPU, batched cameras >= 1.5x
one camera at a time).

    python benchmarks/multicam_throughput.py --size 640x360 --frames 30 --cameras 1,2,4 --rounds 3 [--json]

Each round times ``edge_deblur.runtime.bench.bench`` (pre + model + post, one frame at a time),
then ``MultiCamera`` with N cameras, each a generated video file of FRAMES frames (decoded in its
own capture thread) written to ``null://``, all on one model and thread count, back to back so
that other load hits them alike. Reported: total FPS of every camera count, its ratio to the
round's bench FPS, and the median ratio over the rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile

from edge_deblur.io import StreamOptions
from edge_deblur.runtime.bench import bench, machine_info, parse_size
from edge_deblur.runtime.deblurrer import Deblurrer
from edge_deblur.runtime.multicam import MultiCamera

from stream_throughput import make_clip


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--frames", type=int, default=30, help="frames per camera")
    ap.add_argument("--cameras", default="1,2,4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    w, h = parse_size(a.size)
    counts = [int(c) for c in a.cameras.split(",")]
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        clips = []
        for i in range(max(counts)):
            clips.append(os.path.join(tmp, f"cam{i}.mp4"))
            make_clip(clips[-1], w, h, a.frames)
        with Deblurrer.open(a.model, threads=a.threads, device=a.device) as d:
            for _ in range(a.rounds):
                b = bench(a.model, (w, h), runs=a.frames, warmup=3, threads=a.threads, peak=False, device=a.device)
                row = {"bench_fps": round(b["fps"], 3)}
                for n in counts:
                    s = MultiCamera(d, clips[:n], None, StreamOptions(queue_size=4)).run()
                    row[f"cams{n}_fps"] = s["fps"]
                    row[f"cams{n}_ratio"] = round(s["fps"] / b["fps"], 3)
                    row[f"cams{n}_mean_batch"] = s["mean_batch"]
                rounds.append(row)
                print(json.dumps(row), flush=True)
            info = d.info
    out = {"size": a.size, "frames_per_camera": a.frames, "model": info.get("model"), "backend": info.get("backend"),
           "threads": info.get("threads"), "rounds": rounds,
           "median_ratio": {f"{n}": statistics.median(r[f"cams{n}_ratio"] for r in rounds) for n in counts},
           "machine": machine_info()}
    print(json.dumps(out) if a.json else json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
