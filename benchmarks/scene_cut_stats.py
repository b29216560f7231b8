#!/usr/bin/env python3
"""Where the scene-cut threshold should sit: the detector's score (histogram distance, see
edge_deblur/runtime/stream_state.py) between frames of one scene and between frames of different
scenes, on real footage.

    python benchmarks/scene_cut_stats.py [--size 640x360] [--frames 200] [--json] [--time]

Within a scene: every consecutive pair, and every pair two frames apart (a live stream that
dropped a frame), of the REDS_320x180 blurred sequences and the two Udacity driving clips. Across
scenes: 20 random frame pairs for every ordered pair of those five sequences (frames resized to one
size). A threshold between the largest within-scene score and the smallest cross-scene score
separates them; the printed margin says how much room there is. ``--time`` also prints what the
detector costs per frame (CPU time) on the runtime's input tensor at 640x360 and 1280x720, next to
the bundled image model's own time on one thread.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import cv2
import numpy as np

from edge_deblur.data.pairs import find_pairs
from edge_deblur.runtime.stream_state import DEFAULT_SCENE_CUT, SceneCutDetector

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VIDEOS = {
    "dash-cam": "driving/udacity_vehicle_detection/test_video.mp4",
    "highway": "driving/udacity_lanelines/solidWhiteRight.mp4",
}


def video_frames(path: Path, n: int, size) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        out.append(cv2.resize(f, size, interpolation=cv2.INTER_AREA))
    cap.release()
    if not out:
        raise SystemExit(f"cannot decode {path}")
    return out


def score(a: np.ndarray, b: np.ndarray) -> float:
    det = SceneCutDetector(DEFAULT_SCENE_CUT)
    det.score(a)
    return det.score(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--size", default="640x360", help="driving clips are resized to this (WxH)")
    ap.add_argument("--frames", type=int, default=200, help="frames read from each driving clip")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--time", action="store_true", help="also time the detector per frame")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    data = Path(args.data)

    scenes: dict[str, list[np.ndarray]] = {}
    for scene, bp, _ in find_pairs(data / "pairs" / "REDS_320x180"):
        scenes.setdefault(f"REDS {scene}", []).append(cv2.imread(str(bp)))
    for name, rel in VIDEOS.items():
        scenes[name] = video_frames(data / rel, args.frames, size)

    within, cross = {}, []
    for name, fs in scenes.items():
        within[name] = [score(a, b) for a, b in zip(fs, fs[1:])] + [score(a, b) for a, b in zip(fs, fs[2:])]
    rng = np.random.default_rng(0)
    keys = list(scenes)
    for i, j in itertools.permutations(range(len(keys)), 2):
        for _ in range(20):
            a = scenes[keys[i]][rng.integers(len(scenes[keys[i]]))]
            b = scenes[keys[j]][rng.integers(len(scenes[keys[j]]))]
            cross.append(score(a, cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)))
    w_all = np.concatenate([np.asarray(v) for v in within.values()])
    result = {
        "within": {k: {"pairs": len(v), "max": float(np.max(v)), "p50": float(np.median(v))} for k, v in within.items()},
        "within_max": float(w_all.max()),
        "within_p99": float(np.percentile(w_all, 99)),
        "cross_pairs": len(cross),
        "cross_min": float(np.min(cross)),
        "cross_p1": float(np.percentile(cross, 1)),
        "threshold": DEFAULT_SCENE_CUT,
        "false_cuts": int((w_all > DEFAULT_SCENE_CUT).sum()),
        "missed_cuts": int((np.asarray(cross) <= DEFAULT_SCENE_CUT).sum()),
    }
    if args.time:
        import timeit

        from edge_deblur.runtime.preprocess import frame_to_tensor

        import time

        from edge_deblur import Deblurrer

        det = SceneCutDetector(DEFAULT_SCENE_CUT)
        with Deblurrer.open(threads=1) as d:  # the bundled image model, one thread, for scale
            for w, h in ((640, 360), (1280, 720)):
                x = frame_to_tensor(cv2.resize(scenes["dash-cam"][0], (w, h)), 16)[0]
                # CPU time of this process (the machine may be shared): best of 3
                cpu = []
                for fn, n in ((lambda: det(x), 200), (lambda: d.backend.infer(x), 3)):
                    best = min(timeit.repeat(fn, number=n, repeat=3, timer=time.process_time)) / n * 1e3
                    cpu.append(best)
                result[f"ms_per_frame_{w}x{h}"] = cpu[0]
                result[f"model_ms_per_frame_{w}x{h}"] = cpu[1]
    if args.json:
        print(json.dumps(result))
        return
    for k, v in result["within"].items():
        print(f"within {k:<16} {v['pairs']:>4} pairs  median {v['p50']:.3f}  max {v['max']:.3f}")
    print(f"within all: max {result['within_max']:.3f}, p99 {result['within_p99']:.3f}")
    print(f"across scenes: {result['cross_pairs']} pairs, min {result['cross_min']:.3f}, p1 {result['cross_p1']:.3f}")
    print(f"threshold {DEFAULT_SCENE_CUT}: {result['false_cuts']} false cuts, {result['missed_cuts']} missed cuts")
    for k, v in result.items():
        if k.startswith("ms_per_frame"):
            size = k.rsplit("_", 1)[1]
            model = result[f"model_ms_per_frame_{size}"]
            print(f"detector at {size}: {v:.3f} ms CPU per frame, {100 * v / model:.2f}% of the bundled model's "
                  f"{model:.1f} ms (1 thread)")


if __name__ == "__main__":
    main()
