"""Peak memory and throughput of windowed raster deblurring.

    python benchmarks/raster_memory.py --size 20000 --tile 512 [--overlap 32] [--rows 0:768] [--keep DIR]
        [--rounds 3 [--round-rows 0:960] [--skip-child]]

1. Writes a SIZE x SIZE uint16 3-band tiled GeoTIFF window by window (a textured pattern, 12-bit
   values, a CRS, a transform and a nodata border) into a temporary folder.
2. Runs ``edge-deblur deblur big.tif -o out.tif --tile TILE --overlap OVERLAP`` in a child process
   and reads its peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``) and its megapixels per second.
3. In the same run, measures the same backend on whole frames of the tile size (TILE x TILE,
   uint16 3-channel frames through ``Deblurrer``, one at a time: the ``bench`` definition) and on
   the model alone (TILE x TILE tensors), before and after, and prints the ratios.
4. Checks that the output has the input's size, dtype, CRS, transform and nodata.
5. With ``--rounds N``: N rounds in this process on one Deblurrer, each whole frames then the
   tiled rows ``--round-rows``, back to back, so that other load on the machine hits both halves
   of a round alike; the median of the rounds' ratios.

``--rows A:B`` deblurs only rows A..B-1 (the full width) in the child, through the same code
(``deblur_raster(rows=...)``, what ``edge-deblur batch`` uses for window tasks): the windowed
processor holds one row of tiles at a time, so its peak memory does not grow with the number of
rows. The JSON names the rows it covered.

Prints one JSON object. The CPU is recorded (``lscpu`` model name and flags of interest).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
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


def _rates(d, tile: int, seconds: float) -> tuple[float, float]:
    """(whole TILE x TILE uint16 frames through the Deblurrer ``d``, one at a time: pre-processing
    + model + post-processing, the ``bench`` definition; the model alone on (1, 3, TILE, TILE)
    float32 tensors), both in megapixels per second, ``seconds / 2`` each."""
    rng = np.random.default_rng(1)
    frame = (rng.random((tile, tile, 3)) * 4095).astype(np.uint16)
    x = rng.random((1, 3, tile, tile)).astype(np.float32)
    rates = []
    for fn in (lambda: d(frame), lambda: d.backend.infer(x)):
        fn()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2 or n < 3:
            fn()
            n += 1
        rates.append(n * tile * tile / 1e6 / (time.perf_counter() - t0))
    return rates[0], rates[1]


def whole_frame_mps(tile: int, model, threads, seconds: float = 20.0) -> tuple[float, float]:
    sys.path.insert(0, str(ROOT))
    from edge_deblur.runtime.deblurrer import Deblurrer

    with Deblurrer.open(model, threads=threads) as d:
        return _rates(d, tile, seconds)


def interleaved_rounds(src: Path, dst: Path, a, rows) -> dict:
    """``a.rounds`` rounds in this process, on one Deblurrer (one ONNX Runtime session): whole
    frames for ``a.round_seconds``, then ``deblur_raster`` over ``rows``; the ratio of each round
    and their median (other load on the machine hits both halves of a round alike)."""
    sys.path.insert(0, str(ROOT))
    from edge_deblur.runtime.deblurrer import Deblurrer
    from edge_deblur.runtime.raster_deblur import deblur_raster

    out = []
    with Deblurrer.open(a.model, threads=a.threads, tile=a.tile, overlap=a.overlap) as d:
        deblur_raster(d, src, dst, rows=(rows[0], rows[0] + 1))                 # warm-up
        for _ in range(a.rounds):
            whole, model = _rates(d, a.tile, a.round_seconds)
            s = deblur_raster(d, src, dst, rows=rows)
            out.append({"whole_frame_mps": round(whole, 3), "model_only_mps": round(model, 3),
                        "tiled_mps": s["megapixels_per_s"], "ratio": round(s["megapixels_per_s"] / whole, 3),
                        "ratio_vs_model_only": round(s["megapixels_per_s"] / model, 3),
                        "infer_share": round(s["infer_seconds"] / s["seconds"], 3), "load_avg": round(os.getloadavg()[0], 2)})
            print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    return {"rows": list(rows), "rounds": out, "median_ratio": statistics.median(r["ratio"] for r in out),
            "median_ratio_vs_model_only": statistics.median(r["ratio_vs_model_only"] for r in out)}


def child_run(a, cmd, env, src: Path, dst: Path, rows) -> dict:
    """The deblur in a child process: its peak RSS and megapixels per second, next to whole
    frames timed before and after it in this process."""
    from edge_deblur.runtime.tiling import tile_starts

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
    # output pixels per pixel the model computed (overlaps are computed twice); stride 32
    ov = -(-a.overlap // 32) * 32
    xs = tile_starts(a.size, a.tile, ov, 32)
    ys = [y for y in xs if rows is None or (y < rows[1] and y + a.tile > rows[0])]
    n_rows = rows[1] - rows[0] if rows else a.size
    mps = summary.get("megapixels_per_s")
    return {
        "command": " ".join(["edge-deblur"] + cmd[3:]) if rows is None else "deblur_raster(rows=...)",
        "rows": list(rows) if rows else None, "peak_rss_mib": round(peak_mib, 1), "seconds": round(run_s, 1),
        "tiled_mps": mps,
        "whole_frame_mps": round(base, 3), "whole_frame_mps_before_after": [round(base_mps_before, 3), round(base_mps_after, 3)],
        "ratio": round(mps / base, 3) if mps else None,
        # a stricter baseline: the model alone on TILE x TILE tensors (no pre/post-processing)
        "model_only_mps": round(model_only, 3), "model_only_mps_before_after": [round(model_mps_before, 3), round(model_mps_after, 3)],
        "ratio_vs_model_only": round(mps / model_only, 3) if mps else None,
        "metadata_kept": same,
        "infer_share": round(summary["infer_seconds"] / summary["seconds"], 3) if summary.get("infer_seconds") else None,
        "tiles": len(xs) * len(ys), "pixel_efficiency": round(a.size * n_rows / (len(xs) * len(ys) * a.tile ** 2), 3),
    }


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
    ap.add_argument("--rounds", type=int, default=0,
                    help="then this many in-process rounds of whole frames and tiled --round-rows, alternating")
    ap.add_argument("--round-rows", default="0:960", help="A:B rows of each in-process round")
    ap.add_argument("--round-seconds", type=float, default=4.0, help="seconds of whole-frame timing per round")
    ap.add_argument("--skip-child", action="store_true", help="only the in-process rounds (no peak-RSS run)")
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
    out = {"size": f"{a.size}x{a.size}x3 uint16", "tile": a.tile, "overlap": a.overlap}
    load_before = os.getloadavg()
    if not a.skip_child:
        out.update(child_run(a, cmd, env, src, dst, rows))
    if a.rounds:
        r0, r1 = (int(v) for v in a.round_rows.split(":"))
        out["interleaved"] = interleaved_rounds(src, tmp / "rounds.tif", a, (r0, r1))
    out.update(make_raster_s=round(make_s, 1), **cpu_info(),
               load_avg_before_after=[round(v, 2) for v in load_before + os.getloadavg()])
    print(json.dumps(out))
    if not a.keep:
        for p in (src, dst, tmp / "rounds.tif"):
            p.unlink(missing_ok=True)
        tmp.rmdir()


if __name__ == "__main__":
    main()
