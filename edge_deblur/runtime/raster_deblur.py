"""Deblur a raster window by window: the tiling of ``edge_deblur.runtime.tiling`` (same tile
grid, same raised-cosine weights) run one row of tiles at a time, so that only one band of
``tile`` rows of the raster is held in memory however large it is.

For a row of tiles, each tile is read from the source (``io.raster.read_padded``), mapped to
model inputs by a ``BandPlan`` (every band group of a tile in one backend call), and its weighted
output added to a float32 accumulator of ``tile`` rows x the raster's width. Rows that no later
row of tiles reaches are final: they are divided by the (separable) weight sum, turned back into
sample values, nodata pixels restored, and handed to a ``RasterWriter``. With the same tile and
overlap the result equals ``Deblurrer(tile=...)`` on the whole image held in memory.

``rows=(a, b)`` computes only rows a..b-1 (exactly: every tile that touches them is run), which is
how ``edge-deblur batch`` splits a large raster into window tasks.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError
from ..io import raster as R
from .bands import BandConfig, plan_bands
from .tiling import _ramp, _round_up, tile_starts

log = logging.getLogger(__name__)

DEFAULT_TILE = 1024


def _grid(size_p: int, tile: int, overlap: int, stride: int, margin: int, full: int):
    """Tile starts along one axis and the summed weight of every padded position."""
    t = min(tile, size_p)
    starts = tile_starts(size_p, t, overlap, stride) if size_p > t else [0]
    ramps = {s: _ramp(t, overlap, margin, s > 0, s + t < size_p) if overlap else np.ones(t) for s in starts}
    wsum = np.zeros(size_p)
    for s in starts:
        wsum[s:s + t] += ramps[s]
    return t, starts, ramps, wsum


def check_tiling(tile: int, overlap: int, stride: int):
    if tile is None or tile < stride:
        raise InputError(f"tile must be an integer >= the model's stride {stride}, got {tile!r}")
    if overlap < 0:
        raise InputError(f"overlap must be >= 0, got {overlap!r}")
    t, o = _round_up(int(tile), stride), _round_up(int(overlap), stride) if overlap else 0
    if t < 2 * o:
        raise InputError(f"tile {tile} is smaller than twice the overlap {overlap} (after rounding to the stride "
                         f"{stride}: {t} < 2 x {o}); use --tile {2 * o} or more, or a smaller --overlap")
    return t, o


def deblur_raster(deblurrer, src, dst, *, config: Optional[BandConfig] = None, tile: Optional[int] = None,
                  overlap: Optional[int] = None, rows: Optional[tuple] = None, progress: bool = False,
                  compress: Optional[str] = "same", block: int = 256, cache_mb: int = R.CACHE_MB,
                  extra_tags: Optional[dict] = None) -> dict:
    """Deblur the raster ``src`` into the tiled GeoTIFF ``dst`` with ``deblurrer`` (a Deblurrer:
    its backend, stride and tile settings are used). Returns a summary dict (size, bands, tiles,
    seconds, megapixels per second, the band plan's tags)."""
    cfg = (config or BandConfig()).validate()
    stride = int(deblurrer.stride)
    tile = tile or (deblurrer.tile if isinstance(deblurrer.tile, int) else None) or DEFAULT_TILE
    overlap = deblurrer.overlap if overlap is None else overlap
    th_req, ov = check_tiling(tile, overlap, stride)
    if getattr(deblurrer, "recurrent", False):
        raise InputError("rasters are tiled; recurrent (video) models are not supported for them: use a frame model")
    infer = deblurrer.backend.infer
    batch = max(1, int(getattr(deblurrer, "tile_batch", 1)))
    R.check_output_path(dst)
    t0 = time.perf_counter()
    with R.gdal_env(cache_mb):
        with R.open_raster(src) as ds:
            H, W, count = ds.height, ds.width, ds.count
            dtype = np.dtype(ds.dtypes[0])
            if dtype.kind not in "uif":
                raise InputError(f"{str(src)!r}: sample type {dtype} is not supported (integer or float rasters only)")
            plan = plan_bands(cfg, count, dtype, colorinterp=[c.name for c in ds.colorinterp],
                              nbits_tag=R.nbits_tag(ds), sample=lambda: R.sample_values(ds))
            a, b = rows if rows is not None else (0, H)
            if not 0 <= a < b <= H:
                raise InputError(f"rows {a}..{b} are outside the raster's {H} rows")
            Hp, Wp = _round_up(H, stride), _round_up(W, stride)
            margin = ov // 4
            th, ys, wy, wys = _grid(Hp, th_req, ov, stride, margin, H)
            tw, xs, wx, wxs = _grid(Wp, th_req, ov, stride, margin, W)
            if (th < Hp or tw < Wp) and ov == 0:
                raise InputError("tiling needs an overlap > 0 to blend tiles without seams")
            reflect = H > Hp - H and W > Wp - W
            nodata = ds.nodata
            tags = dict(plan.tags(), EDGE_DEBLUR_TILE=str(th_req), EDGE_DEBLUR_OVERLAP=str(ov),
                        EDGE_DEBLUR_MODEL=Path(str(getattr(deblurrer, "model", ""))).name, **(extra_tags or {}))
            rows_needed = [i for i, y in enumerate(ys) if y < b and y + th > a]
            bands = plan.processed
            writer = R.RasterWriter(ds, dst, rows=(a, b), tags=tags, block=block, compress=compress)
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=len(rows_needed) * len(xs), unit="tile", desc=Path(str(src)).name, leave=False)
            n_tiles = 0
            infer_s = 0.0
            # the next tiles are read and mapped in a helper thread while the backend runs;
            # the dataset handle is shared, so every read holds the lock
            lock = threading.Lock()
            units = [(i, ys[i], xs[s:s + batch]) for i in rows_needed for s in range(0, len(xs), batch)] if bands else []

            def prep(y0, part):
                with lock:
                    blocks = [R.read_padded(ds, y0, x0, th, tw, reflect) for x0 in part]
                return np.concatenate([plan.to_model(blk)[0] for blk in blocks], axis=0)

            weights: dict = {}

            def weight(y0, x0):
                key = (y0 > 0, y0 + th < Hp, x0 > 0, x0 + tw < Wp)  # a tile's ramps depend only on its shared edges
                if key not in weights:
                    weights[key] = np.outer(wy[y0], wx[x0]).astype(np.float32)
                return weights[key]

            pool = ThreadPoolExecutor(1, thread_name_prefix="edge-deblur-raster-read")
            pending: deque = deque()
            ahead = 2

            def submit(n):
                if n < len(units):
                    pending.append(pool.submit(prep, units[n][1], units[n][2]))

            try:
                for n in range(ahead):
                    submit(n)
                u = 0
                done = a                       # first row not yet written
                acc = None
                acc_y = None
                g = len(plan.groups)
                for i in rows_needed:
                    y0 = ys[i]
                    if acc is None:
                        acc = np.zeros((len(bands), th, Wp), np.float32)
                    elif acc_y != y0:          # shift the accumulator down to this row of tiles, in place
                        keep = max(0, acc_y + th - y0)
                        if keep > 0:
                            acc[:, :keep] = acc[:, th - keep:].copy()
                        acc[:, keep:] = 0.0
                    acc_y = y0
                    while u < len(units) and units[u][0] == i:
                        part = units[u][2]
                        xin = pending.popleft().result()
                        submit(u + ahead)
                        ti = time.perf_counter()
                        y = infer(xin)
                        infer_s += time.perf_counter() - ti
                        for j, x0 in enumerate(part):
                            out = plan.from_model(y[j * g:(j + 1) * g])
                            out *= weight(y0, x0)
                            acc[:, :, x0:x0 + tw] += out
                        n_tiles += len(part)
                        u += 1
                        if bar is not None:
                            bar.update(len(part))
                    # rows below the next row of tiles are final
                    nxt = ys[i + 1] if i + 1 < len(ys) else Hp
                    end = min(nxt, b, H)
                    if end > done:
                        _flush(ds, writer, plan, acc, acc_y, done, end, wys, wxs, W, dtype, nodata, bands, lock)
                        done = end
                if done < b:  # only copied bands (no model groups) and nothing accumulated
                    _flush(ds, writer, plan, acc, acc_y, done, b, wys, wxs, W, dtype, nodata, bands, lock)
                writer.close()
            except BaseException:
                for f in pending:
                    f.cancel()
                writer.abort()
                raise
            finally:
                pool.shutdown(wait=True)
                if bar is not None:
                    bar.close()
    secs = time.perf_counter() - t0
    mp = W * (b - a) / 1e6
    return {"input": str(src), "output": str(dst), "width": W, "height": H, "rows": [a, b], "bands": count,
            "dtype": dtype.name, "tile": th_req, "overlap": ov, "tiles": n_tiles, "seconds": round(secs, 3),
            "infer_seconds": round(infer_s, 3),  # the backend alone: the rest is I/O, mapping and blending
            "megapixels_per_s": round(mp / secs, 3) if secs > 0 else None, "tags": tags}


def _flush(ds, writer, plan, acc, acc_y, r0, r1, wys, wxs, W, dtype, nodata, bands, lock, chunk: int = 2048):
    """Finalize rows r0..r1-1 (all inside the accumulator) and write them. The arithmetic runs
    ``chunk`` columns at a time so that its float32 temporaries stay small on wide rasters."""
    rio = R.rasterio()
    with lock:
        orig = ds.read(window=rio.windows.Window(0, r0, W, r1 - r0))
    out = orig.copy()
    lo = plan.lo.astype(np.float32)[:, None, None]
    inv = (1.0 / np.maximum(plan.hi - plan.lo, 1e-12)).astype(np.float32)[:, None, None]
    wy = wys[r0:r1].astype(np.float32)
    nd = None
    if nodata is not None:
        nd = np.array(nodata).astype(dtype) if np.dtype(dtype).kind in "ui" else np.array(nodata, dtype)
    for c0 in range(0, W, chunk):
        c1 = min(W, c0 + chunk)
        o = orig[:, :, c0:c1]
        res = out[:, :, c0:c1]
        if bands and acc is not None:
            xn = np.clip((o.astype(np.float32) - lo) * inv, 0.0, 1.0)
            y = acc[:, r0 - acc_y:r1 - acc_y, c0:c1] / np.outer(wy, wxs[c0:c1].astype(np.float32))
            res[bands] = plan.to_values(y, o, xn, dtype)
        if nd is not None:
            was = o == nd if not np.isnan(nodata) else np.isnan(o)
            # a processed pixel that lands on the nodata value would read as nodata: nudge it off
            hit = (res == nd) & ~was
            if hit.any():
                if np.dtype(dtype).kind in "ui":
                    res[hit] = nd + (1 if nd < np.iinfo(dtype).max else -1)
                else:
                    res[hit] = np.nextafter(nd, np.inf).astype(dtype)
            res[was] = o[was]
    writer.write(out, r0)
