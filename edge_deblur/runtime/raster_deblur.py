"""Deblur a raster window by window: the tiling of ``edge_deblur.runtime.tiling`` (same tile
grid, same raised-cosine weights) run one row of tiles at a time, so that only one band of
``tile`` rows of the raster is held in memory however large it is.

Each row of tiles is read from the source once, whole (one large read aligned to GDAL's blocks
in x; the tiles are views of it); each tile is mapped to model inputs by a ``BandPlan`` (every
band group of a tile in one backend call) and its weighted output added to a float32 accumulator
of ``tile`` rows x the raster's width. Rows that no later row of tiles reaches are final: column
range by column range, as soon as no later tile of the row reaches it, they are divided by the
(separable) weight sum, turned back into sample values, nodata pixels restored, and at the end of
the row handed to a ``RasterWriter``. Reading, mapping to model inputs, inference and blending
run in four threads, so that the CPU work overlaps with the backend. With the same tile and
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
from typing import Callable, Optional

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
                  extra_tags: Optional[dict] = None, stop: Optional[Callable[[], bool]] = None) -> dict:
    """Deblur the raster ``src`` into the tiled GeoTIFF ``dst`` with ``deblurrer`` (a Deblurrer:
    its backend, stride and tile settings are used). Returns a summary dict (size, bands, tiles,
    seconds, megapixels per second, the band plan's tags). ``stop()`` is asked before each tile:
    True ends the run with :class:`RasterStopped`, ``dst`` not written (Ctrl-C in ``deblur``)."""
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
            # a GDAL mask of its own (an internal .msk band, common with JPEG compression; not one
            # derived from nodata or an alpha band): masked pixels are kept and not fed to the model
            has_mask = nodata is None and all(R.mask_flag("per_dataset") in f for f in ds.mask_flag_enums)
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
            infer_s = [0.0]
            # Four threads: a reader loads each row of tiles whole (one large read, aligned to
            # GDAL's blocks in x; the tiles are views of it, and the rows it finalizes take their
            # original samples from it), a prep thread maps tiles to model inputs, an inference
            # thread runs the backend on them (both release the GIL for most of their work), and
            # this thread blends the outputs and finalizes the columns no later tile of the row
            # reaches, tile by tile, so that the work overlaps with inference instead of waiting
            # for the end of the row. The dataset handle is shared, so every read holds the lock.
            lock, strip_lock = threading.Lock(), threading.Lock()
            g = len(plan.groups)
            units = [(i, ys[i], xs[s:s + batch], s) for i in rows_needed for s in range(0, len(xs), batch)] if bands else []
            strips: dict = {}
            reader = ThreadPoolExecutor(1, thread_name_prefix="edge-deblur-raster-read")
            prepper = ThreadPoolExecutor(1, thread_name_prefix="edge-deblur-raster-prep")
            pool = ThreadPoolExecutor(1, thread_name_prefix="edge-deblur-raster-infer")

            def load_strip(i):
                y0 = ys[i]
                win = R.rasterio().windows.Window(0, y0, W, min(th, H - y0))
                with lock:
                    raw = ds.read(window=win)
                    bad = ds.dataset_mask(window=win) == 0 if has_mask else None   # (rows, W): True where masked
                if raw.shape[1] < th or W < Wp:  # the stride padding of the last rows/columns
                    pad = ((0, th - raw.shape[1]), (0, Wp - W))
                    raw = np.pad(raw, ((0, 0), *pad), mode="reflect" if reflect else "edge")
                    bad = np.pad(bad, pad, mode="reflect" if reflect else "edge") if bad is not None else None
                return raw, bad

            def strip(i):
                with strip_lock:
                    if i not in strips:
                        strips[i] = reader.submit(load_strip, i)
                    return strips[i]

            nxt_row = {i: rows_needed[k + 1] for k, i in enumerate(rows_needed[:-1])}
            free: deque = deque()              # model-input buffers the backend is done with
            made = threading.Semaphore(2)      # inputs made and not yet run: this one and the next
            abort = threading.Event()

            def make_input(i, y0, part, s):
                """A unit's model input, in the prep thread, at most one ahead of the one the backend
                runs: mapping samples to [0, 1] and filling nodata holes (~3 core-ms a 512 tile)
                overlaps the previous tile's inference instead of leaving the backend idle."""
                while not made.acquire(timeout=0.1):
                    if abort.is_set():
                        raise RasterStopped("stopped")
                row, bad = strip(i).result()
                if s == 0 and i in nxt_row:
                    strip(nxt_row[i])                 # read the next row of tiles meanwhile
                shape = (len(part) * g, 3, th, tw)
                try:
                    xin = free.popleft()
                except IndexError:
                    xin = None
                if xin is None or xin.shape != shape:
                    xin = np.empty(shape, np.float32)
                for j, x0 in enumerate(part):
                    plan.to_model(row[:, :, x0:x0 + tw], out=xin[j * g:(j + 1) * g], nodata=nodata,
                                  invalid=bad[:, x0:x0 + tw] if bad is not None else None)
                return xin

            def run(making):
                xin = making.result()
                try:
                    ti = time.perf_counter()
                    y = infer(xin)
                    infer_s[0] += time.perf_counter() - ti
                finally:
                    made.release()
                if not np.may_share_memory(y, xin):    # (a backend may hand back a view of its input)
                    free.append(xin)
                return y

            weights: dict = {}

            def weight(y0, x0):
                key = (y0 > 0, y0 + th < Hp, x0 > 0, x0 + tw < Wp)  # a tile's ramps depend only on its shared edges
                if key not in weights:
                    weights[key] = np.outer(wy[y0], wx[x0]).astype(np.float32)
                return weights[key]

            pending: deque = deque()
            ahead = 4                          # tiles in flight: the inference thread runs on while rows are written

            def submit(n):
                if n < len(units):
                    pending.append(pool.submit(run, prepper.submit(make_input, *units[n])))

            iwx = (1.0 / wxs[:W]).astype(np.float32)
            try:
                for n in range(ahead):
                    submit(n)
                u = 0
                done = a                       # first row not yet written
                acc = None
                acc_y = None
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
                    # rows above the next row of tiles are final once this row's tiles are blended
                    r0, r1 = done, min(ys[i + 1] if i + 1 < len(ys) else Hp, b, H)
                    fin = None
                    if r1 > r0:
                        fin = _Rows(r0, r1, W, count, dtype, (1.0 / wys[r0:r1]).astype(np.float32)[:, None], has_mask)
                    while u < len(units) and units[u][0] == i:
                        if stop is not None and stop():
                            raise RasterStopped(f"stopped after {n_tiles} of {sum(len(un[2]) for un in units)} tiles; {dst} not written")
                        _, _, part, s = units[u]
                        y = pending.popleft().result()
                        submit(u + ahead)
                        for j, x0 in enumerate(part):
                            plan.accumulate(y[j * g:(j + 1) * g], weight(y0, x0), acc[:, :, x0:x0 + tw])
                        del y
                        n_tiles += len(part)
                        u += 1
                        if bar is not None:
                            bar.update(len(part))
                        if fin is not None:      # columns that no later tile of this row reaches
                            c1 = min(xs[s + len(part)] if s + len(part) < len(xs) else W, W)
                            fin.finalize(plan, acc, acc_y, strip(i).result(), y0, fin.col, c1, iwx, nodata, bands)
                    if fin is not None:
                        if fin.col < W:          # no model bands: copied bands only
                            fin.finalize(plan, acc, acc_y, strip(i).result(), y0, fin.col, W, iwx, nodata, bands)
                        writer.write(fin.out, r0, mask=fin.mask)
                        done = r1
                    with strip_lock:
                        strips.pop(i, None)
                if done != b:  # a bug in the layout, never expected
                    raise RuntimeError(f"rows {done}..{b} were not written")
                writer.close()
            except BaseException:
                for f in pending:
                    f.cancel()
                writer.abort()
                raise
            finally:
                abort.set()                            # a prep waiting for a slot gives up
                pool.shutdown(wait=True)
                prepper.shutdown(wait=True, cancel_futures=True)
                reader.shutdown(wait=True)
                if bar is not None:
                    bar.close()
    secs = time.perf_counter() - t0
    mp = W * (b - a) / 1e6
    return {"input": str(src), "output": str(dst), "width": W, "height": H, "rows": [a, b], "bands": count,
            "dtype": dtype.name, "tile": th_req, "overlap": ov, "tiles": n_tiles, "seconds": round(secs, 3),
            "infer_seconds": round(infer_s[0], 3),  # the backend alone: the rest is I/O, mapping and blending
            "megapixels_per_s": round(mp / secs, 3) if secs > 0 else None, "tags": tags}


class RasterStopped(Exception):
    """``deblur_raster``'s ``stop()`` said stop: the output was not written (its temporary file removed)."""


class _Rows:
    """Output rows r0..r1-1 (all inside the accumulator) being finalized column range by column
    range: divided by the blend's weight sum, turned back into sample values (the accumulator is
    overwritten: these rows are not used again), nodata restored; written whole."""

    def __init__(self, r0, r1, W, count, dtype, iwy, masked: bool = False):
        self.r0, self.r1, self.col, self.iwy = r0, r1, 0, iwy
        self.out = np.empty((count, r1 - r0, W), dtype)
        self.mask = np.empty((r1 - r0, W), np.uint8) if masked else None   # the GDAL mask to write (255: valid)

    def finalize(self, plan, acc, acc_y, strip, y0, c0, c1, iwx, nodata, bands):
        if c1 <= c0:
            return
        strip, bad = strip
        r0, r1 = self.r0, self.r1
        o = strip[:, r0 - y0:r1 - y0, c0:c1]             # the original samples
        res = self.out[:, :, c0:c1]
        dtype = res.dtype
        if plan.copied:
            res[plan.copied] = o[plan.copied]
        if bands:
            plan.to_values(acc[:, r0 - acc_y:r1 - acc_y, c0:c1], o, res, inv_weight=self.iwy * iwx[c0:c1])
        if nodata is not None:
            nd = np.array(nodata).astype(dtype) if dtype.kind in "ui" else np.array(nodata, dtype)
            # (min/max reductions first: most ranges hold no nodata, and no output lands on it)
            integer = dtype.kind in "ui"
            if integer:
                was = None if (nd < o.min() or nd > o.max()) else o == nd
            else:
                was = np.isnan(o) if np.isnan(nodata) else o == nd
            if not integer or not (nd < res.min() or nd > res.max()):
                # a processed pixel that lands on the nodata value would read as nodata: nudge it off
                hit = res == nd
                if was is not None:
                    hit &= ~was
                if hit.any():
                    if integer:
                        res[hit] = nd + (1 if nd < np.iinfo(dtype).max else -1)
                    else:
                        res[hit] = np.nextafter(nd, np.inf).astype(dtype)
            if was is not None:
                np.copyto(res, o, where=was)
        if self.mask is not None:
            w = bad[r0 - y0:r1 - y0, c0:c1]
            np.copyto(res, o, where=w[None])             # masked pixels keep their samples
            self.mask[:, c0:c1] = np.where(w, 0, 255)
        self.col = c1
