"""GeoTIFF and other GDAL rasters through rasterio (``pip install 'edge-deblur[raster]'``),
read and written window by window so that a raster never sits whole in memory.

* ``open_raster(path)``: a rasterio dataset, or a typed error for a missing file, a format GDAL
  cannot read, or a missing rasterio.
* ``RasterWriter``: a tiled GeoTIFF (BigTIFF when needed) with the source's size, dtype, band
  count, CRS, transform, nodata, tags, band descriptions and colour interpretation; rows are
  written in order and grouped into whole block rows; the file appears atomically on ``close()``.
  GeoTIFFs are band-interleaved (fast to write); a plain TIFF source (not georeferenced) gives a
  pixel-interleaved TIFF without geotags, so OpenCV reads the output like the input.
* ``sample_values(ds)``: values from a grid of small windows (for percentile normalization).

GDAL's block cache is capped (``GDAL_CACHEMAX``, default 128 MiB here) so memory stays bounded
however large the raster is.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError, SourceError, require

# files that only GDAL reads (OpenCV handles .png/.jpg/...); TIFFs go through rasterio when installed
RASTER_ONLY_EXTS = (".jp2", ".img", ".vrt", ".ntf", ".nitf", ".hdr", ".dem", ".grd", ".nc", ".h5", ".hdf")
TIFF_EXTS = (".tif", ".tiff")
RASTER_EXTS = TIFF_EXTS + RASTER_ONLY_EXTS
OUTPUT_EXTS = TIFF_EXTS
CACHE_MB = 128


def rasterio_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("rasterio") is not None


def rasterio():
    return require("rasterio", "raster")


@contextlib.contextmanager
def quiet_georeferencing():
    """Silence rasterio's ``NotGeoreferencedWarning`` (and only it): a plain TIFF (a photo, a
    scan, a frame OpenCV wrote) has no transform by design, and the output keeps none."""
    rio = rasterio()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rio.errors.NotGeoreferencedWarning)
        yield


@contextlib.contextmanager
def gdal_env(cache_mb: int = CACHE_MB):
    """A rasterio environment with a capped block cache and quiet TIFF warnings (GDAL's log and
    rasterio's NotGeoreferencedWarning for plain TIFFs)."""
    rio = rasterio()
    with rio.Env(GDAL_CACHEMAX=int(cache_mb), CPL_LOG_ERRORS="OFF", GTIFF_REPORT_COMPD_CS="NO") as env, \
            quiet_georeferencing():
        yield env


def is_georeferenced(ds) -> bool:
    """Whether ``ds`` places its pixels on the ground: a CRS, a geotransform other than the
    identity GDAL reports for plain images, GCPs or RPCs."""
    rio = rasterio()
    if ds.crs is not None:
        return True
    if ds.transform is not None and not ds.transform.almost_equals(rio.transform.Affine.identity()):
        return True
    with contextlib.suppress(Exception):  # a driver or version without GCPs/RPCs
        if ds.gcps and ds.gcps[0]:
            return True
    with contextlib.suppress(Exception):
        if ds.rpcs:
            return True
    return False


def open_raster(path):
    """Open ``path`` for reading; InputError/SourceError that name the file and the way out."""
    rio = rasterio()
    p = Path(path)
    if not p.exists():
        raise SourceError(f"raster not found: {str(p)!r}")
    import logging

    quiet = logging.getLogger("rasterio")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the error below says it once, without GDAL's log line
    try:
        with quiet_georeferencing():  # a plain TIFF has no transform: not worth a warning
            return rio.open(p)
    except rio.errors.RasterioIOError as e:
        raise InputError(
            f"{str(p)!r} is not a raster format GDAL can read ({str(e).strip()[:200]}); "
            "pass a GeoTIFF or another GDAL raster (https://gdal.org/drivers/raster/), or an image OpenCV reads"
        ) from e
    finally:
        quiet.setLevel(level)


def describe(ds) -> dict:
    return {"width": ds.width, "height": ds.height, "count": ds.count, "dtype": ds.dtypes[0],
            "crs": ds.crs.to_string() if ds.crs else None, "nodata": ds.nodata, "driver": ds.driver}


def sample_values(ds, grid: int = 16, size: int = 32) -> np.ndarray:
    """(count, n) float64 values from ``grid`` x ``grid`` windows of ``size`` pixels spread over
    the raster; nodata (and masked) samples are NaN."""
    rio = rasterio()
    ys = np.linspace(0, max(0, ds.height - size), min(grid, max(1, ds.height // size or 1))).astype(int)
    xs = np.linspace(0, max(0, ds.width - size), min(grid, max(1, ds.width // size or 1))).astype(int)
    parts = []
    for y in sorted(set(ys)):
        for x in sorted(set(xs)):
            win = rio.windows.Window(int(x), int(y), min(size, ds.width - x), min(size, ds.height - y))
            a = ds.read(window=win).astype(np.float64)
            m = ds.read_masks(window=win) == 0
            a[m] = np.nan
            parts.append(a.reshape(ds.count, -1))
    return np.concatenate(parts, axis=1)


def nbits_tag(ds) -> Optional[str]:
    try:
        return ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
    except Exception:  # noqa: BLE001 - a driver without the namespace
        return None


def check_output_path(dst) -> Path:
    p = Path(dst)
    if p.suffix.lower() not in OUTPUT_EXTS:
        raise InputError(f"rasters are written as tiled GeoTIFF: name the output {p.with_suffix('.tif').name!r} "
                         f"(got {p.name!r})")
    return p


class RasterWriter:
    """Write a raster like ``src`` (or a row range of it) as a tiled GeoTIFF, rows in order.
    GeoTIFFs are band-interleaved; a source that is not georeferenced (a plain TIFF) gives a
    pixel-interleaved TIFF without geotags, which OpenCV reads.

    ``rows=(a, b)`` writes only rows a..b-1 of the source's grid (its transform shifted), as a
    part to be merged later. ``write(rows_array, row)`` takes (count, n, width) arrays for
    consecutive rows; full block rows go to disk as soon as they are complete. The file is
    written under a temporary name in the same folder and renamed on ``close()``; ``abort()``
    removes it."""

    def __init__(self, src, dst, *, rows: Optional[tuple] = None, tags: Optional[dict] = None,
                 block: int = 256, compress: Optional[str] = "same"):
        rio = rasterio()
        self.dst = check_output_path(dst)
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        a, b = rows if rows is not None else (0, src.height)
        self.row0, self.row1 = int(a), int(b)
        self.width, self.count = src.width, src.count
        self.dtype = np.dtype(src.dtypes[0])
        self.georeferenced = is_georeferenced(src)
        if compress == "same":
            c = src.compression
            compress = getattr(c, "value", c) if c else None
        self.block = int(block)
        # GeoTIFFs: band interleave (GDAL's pixel interleave cost about twice the write on big
        # rasters, docs/BENCHMARKS.md). A plain TIFF (no CRS, transform, GCPs or RPCs: a photo or
        # a frame OpenCV wrote) gets pixel interleave and no geotags, so that OpenCV and
        # edge_deblur.io.sources.imread read the output as they read the input (OpenCV reads a
        # tiled band-interleaved TIFF wrongly: most pixels come back as 0).
        profile = dict(driver="GTiff", width=src.width, height=self.row1 - self.row0, count=src.count,
                       dtype=self.dtype.name, nodata=src.nodata,
                       tiled=True, blockxsize=self.block, blockysize=self.block, BIGTIFF="IF_SAFER",
                       interleave="band" if self.georeferenced else "pixel")
        if self.georeferenced:
            transform = src.transform
            if self.row0:
                transform = rio.windows.transform(rio.windows.Window(0, self.row0, src.width, self.row1 - self.row0),
                                                  transform)
            profile.update(crs=src.crs, transform=transform)
        if compress:
            profile["compress"] = str(compress).lower()
            if str(compress).lower() in ("deflate", "lzw", "zstd") and self.dtype.kind in "ui":
                profile["predictor"] = 2
        nb = nbits_tag(src)
        if nb:
            profile["nbits"] = int(nb)
        self.tmp = self.dst.with_name(f".{self.dst.stem}.tmp{os.getpid()}{self.dst.suffix}")
        with quiet_georeferencing():
            self.ds = rio.open(self.tmp, "w", **profile)
        try:
            self.ds.update_tags(**src.tags())
            if tags:
                self.ds.update_tags(**{k: str(v) for k, v in tags.items()})
            for i in range(1, src.count + 1):
                bt = src.tags(i)
                if bt:
                    self.ds.update_tags(i, **bt)
                if src.descriptions[i - 1]:
                    self.ds.set_band_description(i, src.descriptions[i - 1])
            with contextlib.suppress(Exception):  # not every colour interpretation is valid in a GTiff
                self.ds.colorinterp = src.colorinterp
            if src.scales and any(s != 1 for s in src.scales):
                self.ds.scales = src.scales
            if src.offsets and any(o != 0 for o in src.offsets):
                self.ds.offsets = src.offsets
            if any(src.units):
                self.ds.units = src.units
        except BaseException:
            self.abort()
            raise
        self._buf: list = []
        self._buf_row = self.row0       # source row of the first buffered row
        self._next = self.row0

    def write(self, arr: np.ndarray, row: int, mask: Optional[np.ndarray] = None):
        """``arr``: (count, n, width) for source rows ``row`` .. ``row + n - 1``; ``mask`` (n, width)
        uint8, 0 where invalid, where the output carries a GDAL mask (given for every row or none)."""
        if row != self._next:
            raise RuntimeError(f"rows must be written in order: expected row {self._next}, got {row}")
        self._buf.append((arr.astype(self.dtype, copy=False), mask))
        self._next += arr.shape[1]
        done = self._next - self.row0
        aligned = done - done % self.block if self._next < self.row1 else done
        self._flush_to(self.row0 + aligned)

    def _flush_to(self, end_row: int):
        """Write the buffered rows up to ``end_row``, piece by piece (no concatenated copy: the
        pieces of one block row are written back to back, within GDAL's block cache)."""
        if end_row <= self._buf_row or not self._buf:
            return
        rio = rasterio()
        rest = []
        for piece, mask in self._buf:
            n = min(piece.shape[1], end_row - self._buf_row)
            if n <= 0:
                rest.append((piece, mask))
                continue
            win = rio.windows.Window(0, self._buf_row - self.row0, self.width, n)
            self.ds.write(piece[:, :n] if n < piece.shape[1] else piece, window=win)
            if mask is not None:
                self.ds.write_mask(mask[:n], window=win)
            self._buf_row += n
            if n < piece.shape[1]:
                rest.append((piece[:, n:], mask[n:] if mask is not None else None))
        self._buf = rest

    def close(self):
        if self._next != self.row1:
            self.abort()
            raise RuntimeError(f"{self.dst}: wrote rows up to {self._next}, expected {self.row1}")
        self._flush_to(self._next)
        self.ds.close()
        os.replace(self.tmp, self.dst)

    def abort(self):
        with contextlib.suppress(Exception):
            self.ds.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


def mask_flag(name: str):
    """``rasterio.enums.MaskFlags.<name>`` (rasterio imported on first use)."""
    rasterio()
    from rasterio.enums import MaskFlags

    return getattr(MaskFlags, name)
