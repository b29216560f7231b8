"""Plain (not georeferenced) TIFFs through the raster path: the output must read in OpenCV (and
edge_deblur.io.sources.imread) as it reads in rasterio, and rasterio's NotGeoreferencedWarning
must not reach the user. GeoTIFFs keep band interleave (faster writes, docs/BENCHMARKS.md)."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio", reason="rasterio is an optional extra: pip install 'edge-deblur[raster]'")
cv2 = pytest.importorskip("cv2")
from rasterio.transform import from_origin  # noqa: E402

from edge_deblur.io import raster as R  # noqa: E402
from edge_deblur.io.sources import imread  # noqa: E402
from edge_deblur.runtime.deblurrer import Deblurrer  # noqa: E402
from edge_deblur.runtime.raster_deblur import deblur_raster  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "checkpoints" / "edgenet_s" / "model.onnx"


class Halve:
    """A cheap stand-in model: these tests are about the file layout, not the network."""

    stride = 16

    def infer(self, x):
        return x * 0.5 + 0.25

    def close(self):
        pass


def plain_uint16(path: Path, h: int = 200, w: int = 300) -> np.ndarray:
    """A 3-band uint16 TIFF written by OpenCV (BGR in memory, RGB on disk); returns the BGR array."""
    y, x = np.mgrid[0:h, 0:w]
    bgr = np.stack([(x * 211) % 65536, (y * 257) % 65536, ((x + y) * 97 + 5) % 65536], -1).astype(np.uint16)
    assert cv2.imwrite(str(path), bgr)
    return bgr


def _no_georef_warnings(record) -> list:
    return [w for w in record if issubclass(w.category, rasterio.errors.NotGeoreferencedWarning)]


def test_plain_uint16_tiff_output_reads_the_same_in_opencv(tmp_path):
    src = tmp_path / "plain16.tif"
    plain_uint16(src)
    dst = tmp_path / "out" / "plain16.tif"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        # tile 128 over 300x200: several tiles and a block of 64, so the file has many tiles
        deblur_raster(Deblurrer(Halve(), tile=128, overlap=32), src, dst, block=64)
    assert not _no_georef_warnings(record), [str(w.message) for w in record]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(dst) as ds:
            ref = ds.read()                                   # (3, h, w), RGB band order
            layout = (ds.profile["interleave"], ds.profile["tiled"], ds.crs)
    ref_bgr = np.ascontiguousarray(np.moveaxis(ref, 0, -1)[..., ::-1])   # the band order cv2 returns
    assert ref.dtype == np.uint16 and ref.min() >= 16383  # the stand-in model ran: x * 0.5 + 0.25, no 0 anywhere

    got = cv2.imread(str(dst), cv2.IMREAD_UNCHANGED)
    assert got is not None and got.dtype == np.uint16 and got.shape == ref_bgr.shape
    np.testing.assert_array_equal(got, ref_bgr)
    np.testing.assert_array_equal(imread(str(dst)), ref_bgr)  # the project's own reader too
    assert layout == ("pixel", True, None)                   # tiled, pixel-interleaved, no geotags


def test_geotiff_output_stays_band_interleaved_and_georeferenced(tmp_path):
    data = np.full((3, 64, 96), 1000, np.uint16)
    src = tmp_path / "geo.tif"
    with rasterio.open(src, "w", driver="GTiff", width=96, height=64, count=3, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, 10, 10)) as ds:
        ds.write(data)
    dst = tmp_path / "geo_out.tif"
    deblur_raster(Deblurrer(Halve(), tile=64, overlap=16), src, dst, block=32)
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.profile["interleave"] == "band"
        assert b.crs == a.crs and b.transform == a.transform


def test_row_range_parts_of_a_plain_tiff_stay_plain(tmp_path):
    """Row-window parts (edge-deblur batch) of a plain TIFF carry no invented geotransform."""
    src = tmp_path / "plain16.tif"
    plain_uint16(src, 96, 64)
    with R.gdal_env(), R.open_raster(src) as ds:
        assert not R.is_georeferenced(ds)
        w = R.RasterWriter(ds, tmp_path / "part.tif", rows=(32, 96), block=32)
        w.write(ds.read(window=rasterio.windows.Window(0, 32, 64, 64)), 32)
        w.close()
        with rasterio.open(tmp_path / "part.tif") as p:
            assert p.crs is None and p.transform.is_identity and p.profile["interleave"] == "pixel"
            np.testing.assert_array_equal(p.read(), ds.read(window=rasterio.windows.Window(0, 32, 64, 64)))


@pytest.mark.skipif(not MODEL.is_file(), reason=f"needs {MODEL}")
def test_cli_plain_tiff_no_warning_and_opencv_readable(tmp_path):
    src = tmp_path / "plain16.tif"
    plain_uint16(src, 96, 128)
    out = tmp_path / "out" / "plain16.tif"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "edge_deblur", "deblur", str(src), "-o", str(out), "--model", str(MODEL),
                        "--threads", "1", "--tile", "64", "--overlap", "32"],
                       capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "NotGeoreferencedWarning" not in r.stderr and "dataset = " not in r.stderr, r.stderr
    got = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(out) as ds:
            ref = ds.read()
    np.testing.assert_array_equal(got, np.moveaxis(ref, 0, -1)[..., ::-1])
