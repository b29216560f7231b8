"""Ray batch throughput next to plain ``deblur`` on the same archive, and identical outputs
(issue target: >= 0.8x the throughput of plain deblur on a local 2-CPU Ray instance, >= 200
frames across images, a video and a raster).

    python benchmarks/ray_archive.py --images 150 --video-frames 49 --size 320x180 --raster 1024 [--keep DIR]

Makes the archive (textured PNGs, an MJPG .avi, a 3-band uint16 GeoTIFF), runs
``edge-deblur deblur ARCHIVE -o ref`` and ``edge-deblur batch ARCHIVE -o ray --num-cpus 2`` as child
processes back to back on the same model and tiling, compares every output byte for byte
(images and rasters by pixels, video by decoded frames), and reports frames per second of both
on the whole command (Ray's start included) and, for Ray, on its run alone (``run_seconds``:
from the first task submitted to the last result).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edge_deblur.io import open_source

ROOT = Path(__file__).resolve().parents[1]


def make_archive(d: Path, n_images: int, n_video: int, w: int, h: int, raster: int):
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (h // 4, w // 4, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    (d / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        cv2.imwrite(str(d / "images" / f"img_{i:04d}.png"), np.roll(base, 3 * i, axis=1))
    wr = cv2.VideoWriter(str(d / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    for i in range(n_video):
        wr.write(np.roll(base, 2 * i, axis=0))
    wr.release()
    if raster:
        import rasterio
        from rasterio.transform import from_origin

        tex = cv2.resize(rng.random((raster // 8, raster // 8, 3)).astype(np.float32), (raster, raster))
        with rasterio.open(d / "scene.tif", "w", driver="GTiff", width=raster, height=raster, count=3, dtype="uint16",
                           crs="EPSG:32633", transform=from_origin(500000, 4000000, 1, 1), nodata=0, tiled=True) as ds:
            ds.write((100 + tex * 3900).astype(np.uint16).transpose(2, 0, 1))


def same_outputs(a: Path, b: Path) -> dict:
    bad, n = [], 0
    for f in sorted(a.rglob("*")):
        if f.is_dir() or ".edge-deblur" in f.parts:
            continue
        g = b / f.relative_to(a)
        n += 1
        if f.suffix == ".png":
            ok = g.exists() and np.array_equal(cv2.imread(str(f)), cv2.imread(str(g)))
        elif f.suffix == ".tif":
            import rasterio

            with rasterio.open(f) as x, rasterio.open(g) as y:
                ok = np.array_equal(x.read(), y.read()) and x.crs == y.crs and x.transform == y.transform
        elif not g.exists():
            ok = False
        else:
            with open_source(str(f)) as sa, open_source(str(g)) as sb:  # the runtime's own video source
                fa, fb = [x for x, _ in sa], [x for x, _ in sb]
            ok = len(fa) == len(fb) and all(np.array_equal(p, q) for p, q in zip(fa, fb))
        if not ok:
            bad.append(str(f.relative_to(a)))
    return {"files": n, "different": bad}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--video-frames", type=int, default=49)
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--raster", type=int, default=1024, help="side of the GeoTIFF (0: none)")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--rows-per-task", type=int, default=512)
    ap.add_argument("--model", default=None)
    ap.add_argument("--keep", default=None)
    ap.add_argument("--ray", default=None, metavar="ADDRESS",
                    help="run batch on this running Ray instance (e.g. one from `ray start --head`) instead of a new local one")
    ap.add_argument("--rounds", type=int, default=1, help="deblur and batch back to back this many times")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    tmp = Path(a.keep or tempfile.mkdtemp(prefix="ray_archive_"))
    arc = tmp / "archive"
    if not arc.exists():
        make_archive(arc, a.images, a.video_frames, w, h, a.raster)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    common = ["--tile", str(a.tile)] + (["--model", a.model] if a.model else [])
    frames = a.images + a.video_frames + (1 if a.raster else 0)
    res = {"frames": frames, "size": a.size, "raster": a.raster, "ray_address": a.ray or "new local instance", "rounds": []}
    for _ in range(a.rounds):
        rnd = {}
        for name, cmd in (("deblur", ["deblur", str(arc), "-o", str(tmp / "ref"), "--json"]),
                          ("ray", ["batch", str(arc), "-o", str(tmp / "ray"), "--num-cpus", "2", "--rows-per-task",
                                   str(a.rows_per_task), "--json"] + (["--ray", a.ray] if a.ray else []))):
            shutil.rmtree(tmp / ("ref" if name == "deblur" else "ray"), ignore_errors=True)  # nothing to skip
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "edge_deblur"] + cmd + common, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            if r.returncode != 0:
                sys.exit(f"{name} failed: {r.stderr[-3000:]}")
            out = json.loads(r.stdout.strip().splitlines()[-1])
            rnd[name] = {"wall_s": round(wall, 2), "fps_wall": round(frames / wall, 3)}
            if name == "ray":
                rnd[name].update(run_s=out["run_seconds"], start_s=round(wall - out["run_seconds"], 2),
                                 fps_run=round(frames / out["run_seconds"], 3), ok=out["ok"], failed=out["failed"],
                                 tasks=out["tasks"])
        rnd["ratio_wall"] = round(rnd["ray"]["fps_wall"] / rnd["deblur"]["fps_wall"], 3)
        rnd["ratio_run"] = round(rnd["ray"]["fps_run"] / rnd["deblur"]["fps_wall"], 3)
        rnd["load_avg"] = [round(v, 2) for v in os.getloadavg()]
        res["rounds"].append(rnd)
        print(json.dumps(rnd), file=sys.stderr, flush=True)
    res["median_ratio_wall"] = statistics.median(r["ratio_wall"] for r in res["rounds"])
    res["median_ratio_run"] = statistics.median(r["ratio_run"] for r in res["rounds"])
    res["identical"] = same_outputs(tmp / "ref", tmp / "ray")
    sys.path.insert(0, str(ROOT))
    from edge_deblur.runtime.bench import machine_info

    res["machine"] = machine_info()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
