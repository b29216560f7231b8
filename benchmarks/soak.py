"""Soak test: N frames (default 20,000) through ``edge-deblur stream`` from a looping video to
``null://``, watching the process from outside for leaks.

    python benchmarks/soak.py --frames 20000 --size 160x96 [--model M] [--threads 1] [--json out.json]

The stream runs as its own process (the real CLI, bundled model unless --model); this script reads
``/proc/<pid>`` when the stream reports ``--stats-every`` lines and records, at the start (after
``--start`` frames, once buffers and the model's arenas exist), the middle and the end: resident
memory (VmRSS), native threads (/proc/<pid>/task), open file descriptors (/proc/<pid>/fd), and
frames in/out/dropped. Pass: RSS growth from middle to end under 5 %, no growth in threads or open
files. Linux only (it reads /proc). Not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

import cv2
import numpy as np


def make_clip(path: str, w: int, h: int, n: int = 90):
    wr = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    for i in range(n):
        wr.write(np.roll(base, i * 3, axis=1))
    wr.release()


def proc_sample(pid: int) -> dict:
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return {
        "rss_mb": round(rss_kb / 1024, 2),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "open_files": len(os.listdir(f"/proc/{pid}/fd")),
    }


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor()
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    feats = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model} ({', '.join(feats)})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--size", default="160x96", help="WxH of the looping clip")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--start", type=int, default=500, help="frames before the 'start' sample")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    every = max(10, args.frames // 200)
    # 'end' is taken two reports before the last frame, while every stage still runs (after the
    # last frame the stream joins its threads, which would read as a drop in threads)
    marks = {"start": min(args.start, args.frames // 4), "middle": args.frames // 2, "end": args.frames - 2 * every}

    with tempfile.TemporaryDirectory() as tmp:
        clip = os.path.join(tmp, "loop.avi")
        make_clip(clip, w, h)
        cmd = [sys.executable, "-m", "edge_deblur", "stream", "--source", clip, "--loop", "-1", "-o", "null://",
               "--max-frames", str(args.frames), "--stats-every", str(every), "--json", "--threads", str(args.threads)]
        if args.model:
            cmd += ["--model", args.model]
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        samples: dict = {}
        out_lines: list[str] = []
        reader = threading.Thread(target=lambda: out_lines.extend(proc.stdout), daemon=True)
        reader.start()
        last = None
        for line in proc.stderr:
            if not line.startswith("[stream]"):
                continue
            n = int(line.split(" out ", 1)[1].split()[0])
            last = n
            for name, at in marks.items():
                if name not in samples and n >= at:
                    try:
                        samples[name] = {"frames_out": n, "t_s": round(time.time() - t0, 1), **proc_sample(proc.pid)}
                    except FileNotFoundError:
                        pass
        proc.wait()
        reader.join(5)
    stats = json.loads(out_lines[-1]) if out_lines else {}
    result = {
        "command": " ".join(cmd[1:]).replace(clip, f"<{w}x{h} MJPG clip, looped>"),
        "cpu": cpu_flags(),
        "exit_code": proc.returncode,
        "frames_out": stats.get("frames_out", last),
        "dropped": stats.get("dropped"),
        "fps": stats.get("fps"),
        "samples": samples,
    }
    if "middle" in samples and "end" in samples:
        m, e = samples["middle"], samples["end"]
        result["rss_growth_middle_to_end_pct"] = round(100 * (e["rss_mb"] - m["rss_mb"]) / m["rss_mb"], 2)
        result["threads_growth"] = e["threads"] - m["threads"]
        result["open_files_growth"] = e["open_files"] - m["open_files"]
        result["pass"] = (result["rss_growth_middle_to_end_pct"] < 5 and result["threads_growth"] <= 0
                          and result["open_files_growth"] <= 0 and proc.returncode == 0)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0 if result.get("pass") else 1


if __name__ == "__main__":
    sys.exit(main())
