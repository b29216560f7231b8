"""Peak memory and throughput of windowed raster deblurring.

    python benchmarks/raster_memory.py --size 20000 --tile 512 [--overlap 128] [--rows 0:768] [--keep DIR]

1. Writes a SIZE x SIZE uint16 3-band tiled GeoTIFF window by window (a textured pattern, 12-bit
   values, a CRS, a transform and a nodata border) into a temporary folder.
2. Runs ``edge-deblur deblur big.tif -o out.tif --tile TILE`` in a child process and reads its
   peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``) and its megapixels per second.
3. In the same run, measures the same backend on whole frames of the tile size (TILE x TILE,
   uint16 3-channel frames through ``Deblurrer``), and prints the ratio of the two throughputs.
4. Checks that the output has the input's size, dtype, CRS, transform and nodata.

``--rows A:B`` deblurs only rows A..B-1 (the full width) in the child, through the same code
(``deblur_raster(rows=...)``, what ``edge-deblur batch`` uses for window tasks): the windowed
processor holds one row of tiles at a time, so its peak memory does not grow with the number of
rows, and a few rows of tiles of a 20000-pixel-wide raster show the whole raster's peak in
minutes on a small CPU. The JSON names the rows it covered.

Prints one JSON object. The CPU is recorded (``lscpu`` model name and flags of interest).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cpu_info() -> dict:
    name, flags = platform.processor(), []
    try:
        txt = Path("/proc/cpuinfo").read_text()
        for line in txt.splitlines():
            if line.startswith("model name") and not name.strip():
                name = line.split(":", 1)[1].strip()
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                fl = line.split(":", 1)[1].split()
                flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in fl]
                break
    except OSError:
        pass
    return {"cpu": name, "features": flags, "cores": os.cpu_count()}


def make_raster(path: Path, size: int, block: int = 512):
    import cv2
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.random((block, block, 3)).astype(np.float32), (0, 0), 3)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    prof = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint16", crs="EPSG:32633",
                transform=from_origin(500000, 4000000, 0.5, 0.5), nodata=0, tiled=True,
                blockxsize=512, blockysize=512, BIGTIFF="YES")
    with rasterio.open(path, "w", **prof) as ds:
        for y in range(0, size, block):
            h = min(block, size - y)
            row = np.empty((3, h, size), np.uint16)
            for x in range(0, size, block):
                w = min(block, size - x)
                shade = 0.5 + 0.5 * np.sin((x + 2 * y) / size * 6.0)
                row[:, :, x:x + w] = (100 + 3900 * tex[:h, :w] * (0.4 + 0.6 * shade)).transpose(2, 0, 1)
            if y == 0:
                row[:, :16] = 0                         # a nodata border
            ds.write(row, window=Window(0, y, size, h))


def whole_frame_mps(tile: int, model, threads, seconds: float = 20.0) -> tuple[float, float]:
    """(whole TILE x TILE uint16 frames through ``Deblurrer``, one at a time: pre-processing +
    model + post-processing, the ``bench`` definition; the model alone on (1, 3, TILE, TILE)
    float32 tensors), both in megapixels per second, ``seconds / 2`` each."""
    sys.path.insert(0, str(ROOT))
    from edge_deblur.runtime.deblurrer import Deblurrer

    rng = np.random.default_rng(1)
    frame = (rng.random((tile, tile, 3)) * 4095).astype(np.uint16)
    x = rng.random((1, 3, tile, tile)).astype(np.float32)
    rates = []
    with Deblurrer.open(model, threads=threads) as d:
        for fn in (lambda: d(frame), lambda: d.backend.infer(x)):
            fn()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 2 or n < 3:
                fn()
                n += 1
            rates.append(n * tile * tile / 1e6 / (time.perf_counter() - t0))
    return rates[0], rates[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=128)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rows", default=None, help="A:B: deblur only these rows (full width)")
    ap.add_argument("--keep", default=None, help="folder for the rasters (default: a temporary one, removed)")
    ap.add_argument("--baseline-seconds", type=float, default=20.0,
                    help="seconds of whole-frame timing before and after the tiled run (each)")
    a = ap.parse_args()
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="raster_bench_"))
    tmp.mkdir(parents=True, exist_ok=True)
    src, dst = tmp / "big.tif", tmp / "out.tif"
    t0 = time.perf_counter()
    if not src.exists():
        make_raster(src, a.size)
    make_s = time.perf_counter() - t0
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "edge_deblur", "deblur", str(src), "-o", str(dst), "--tile", str(a.tile),
           "--overlap", str(a.overlap), "--json"]
    if a.model:
        cmd += ["--model", a.model]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    rows = None
    if a.rows:
        r0, r1 = (int(v) for v in a.rows.split(":"))
        rows = (r0, r1)
        code = ("import json, sys; from edge_deblur.runtime.deblurrer import Deblurrer; "
                "from edge_deblur.runtime.raster_deblur import deblur_raster; "
                f"d = Deblurrer.open({a.model!r}, threads={a.threads!r}, tile={a.tile}, overlap={a.overlap}); "
                f"s = deblur_raster(d, {str(src)!r}, {str(dst)!r}, rows=({r0}, {r1})); print(json.dumps(s))")
        cmd = [sys.executable, "-c", code]
    load_before = os.getloadavg()
    base_mps_before, model_mps_before = whole_frame_mps(a.tile, a.model, a.threads, a.baseline_seconds)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    run_s = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"deblur failed: {r.stderr[-2000:]}")
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    base_mps_after, model_mps_after = whole_frame_mps(a.tile, a.model, a.threads, a.baseline_seconds)
    base = (base_mps_before + base_mps_after) / 2
    model_only = (model_mps_before + model_mps_after) / 2
    import rasterio

    with rasterio.open(src) as i, rasterio.open(dst) as o:
        same = (o.width, o.count, o.dtypes, o.crs, o.nodata) == (i.width, i.count, i.dtypes, i.crs, i.nodata) and (
            (o.height, o.transform) == (i.height, i.transform) if rows is None else
            (o.height == rows[1] - rows[0] and o.transform.f == i.transform.f + rows[0] * i.transform.e))
    out = {
        "command": " ".join(["edge-deblur"] + cmd[3:]) if rows is None else "deblur_raster(rows=...)",
        "size": f"{a.size}x{a.size}x3 uint16", "rows": list(rows) if rows else None, "tile": a.tile, "overlap": a.overlap,
        "peak_rss_mib": round(peak_mib, 1), "seconds": round(run_s, 1),
        "tiled_mps": summary.get("megapixels_per_s"),
        "whole_frame_mps": round(base, 3), "whole_frame_mps_before_after": [round(base_mps_before, 3), round(base_mps_after, 3)],
        "ratio": round(summary["megapixels_per_s"] / base, 3) if summary.get("megapixels_per_s") else None,
        # a stricter baseline: the model alone on TILE x TILE tensors (no pre/post-processing)
        "model_only_mps": round(model_only, 3), "model_only_mps_before_after": [round(model_mps_before, 3), round(model_mps_after, 3)],
        "ratio_vs_model_only": round(summary["megapixels_per_s"] / model_only, 3) if summary.get("megapixels_per_s") else None,
        "metadata_kept": same,
        # load-independent decomposition (from the child alone): share of its time in the backend,
        # and output pixels per pixel the model computed (overlaps are computed twice)
        "infer_share": round(summary["infer_seconds"] / summary["seconds"], 3) if summary.get("infer_seconds") else None,
        "pixel_efficiency": round(a.size * (rows[1] - rows[0] if rows else a.size) / (summary["tiles"] * a.tile ** 2), 3)
        if summary.get("tiles") else None, "make_raster_s": round(make_s, 1), **cpu_info(),
        "load_avg_before_after": [round(v, 2) for v in load_before + os.getloadavg()],
    }
    print(json.dumps(out))
    if not a.keep:
        for p in (src, dst):
            p.unlink(missing_ok=True)
        tmp.rmdir()


if __name__ == "__main__":
    main()
