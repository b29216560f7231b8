"""Rasters through rasterio, window by window: georeferencing, dtypes and bands kept, nodata
untouched, tiles blended like in-memory tiling, bounded memory, bad input. Small synthetic
rasters made here; the bundled model on one ONNX Runtime thread."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio", reason="rasterio is an optional extra: pip install 'edge-deblur[raster]'")
from rasterio.transform import from_origin  # noqa: E402

from edge_deblur.errors import InputError  # noqa: E402
from edge_deblur.runtime.bands import BandConfig  # noqa: E402
from edge_deblur.runtime.deblurrer import Deblurrer  # noqa: E402
from edge_deblur.runtime.raster_deblur import deblur_raster  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "checkpoints" / "edgenet_s" / "model.onnx"


def smooth_image(bands: int, h: int, w: int, maxval: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(bands):
        b = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
        b = (b - b.min()) / (b.max() - b.min() + 1e-6)
        out.append(np.round(b * maxval))
    return np.stack(out)


def write_raster(path, data, nodata=None, crs="EPSG:32633", tags=None, **extra):
    prof = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                dtype=data.dtype.name, crs=crs, transform=from_origin(500000, 4000000, 10, 10), nodata=nodata, **extra)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(data)
        ds.update_tags(**(tags or {}))
        ds.update_tags(1, WAVELENGTH="665")
        ds.set_band_description(1, "red")
    return path


@pytest.fixture(scope="module")
def deblur():
    with Deblurrer.open(MODEL, threads=1, tile=128, overlap=32, rgb=True) as d:
        yield d


def test_georeferencing_nodata_and_tags_round_trip(tmp_path, deblur):
    data = np.maximum(smooth_image(3, 150, 200, 4095), 1).astype(np.uint16)  # 0 only where nodata
    data[:, :10, :20] = 0                             # a nodata corner
    src = write_raster(tmp_path / "in.tif", data, nodata=0, tags={"SENSOR": "test-sat", "DATE": "2026-01-01"})
    s = deblur_raster(deblur, src, tmp_path / "out.tif", config=BandConfig(bit_depth=12))
    with rasterio.open(src) as a, rasterio.open(tmp_path / "out.tif") as b:
        assert (b.width, b.height, b.count, b.dtypes) == (a.width, a.height, a.count, a.dtypes)
        assert b.crs == a.crs and b.transform == a.transform and b.nodata == 0
        assert b.tags()["SENSOR"] == "test-sat" and b.tags()["DATE"] == "2026-01-01"
        assert b.tags(1)["WAVELENGTH"] == "665" and b.descriptions[0] == "red"
        assert b.tags()["EDGE_DEBLUR_NORMALIZE"] == "bitdepth:12"
        assert b.tags()["EDGE_DEBLUR_BAND_RANGES"] == "0,4095;0,4095;0,4095"
        assert b.profile["tiled"] and b.block_shapes[0] == (256, 256)
        out = b.read()
    assert (out[:, :10, :20] == 0).all()             # nodata untouched
    assert (out[:, 10:, :] != 0).all() and (out[:, :, 20:] != 0).all()  # no processed pixel reads as nodata
    assert out.max() <= 4095                         # 12-bit range kept
    assert not np.array_equal(out, data)             # the model did change the image
    assert s["tiles"] == 4 and s["bands"] == 3  # 2 x 2 tiles of 128 over 160 x 208 (padded)


def _cpu_satellite_tiling() -> tuple:
    """(tile, overlap) of the CPU satellite profiles (the same in both)."""
    from edge_deblur.config.runtime import load_runtime_profile

    got = {(p.pipeline.tile, p.pipeline.overlap) for p in map(load_runtime_profile, ("satellite_multispectral_cpu",
                                                                                      "satellite_hyperspectral_cpu"))}
    assert len(got) == 1
    return got.pop()


@pytest.mark.parametrize("size,tile,overlap", [((200, 272), 160, 64), ((560, 600),) + _cpu_satellite_tiling()])
def test_matches_in_memory_tiling_and_whole_frame_in_the_interior(tmp_path, size, tile, overlap):
    data = smooth_image(3, size[0], size[1], 65535, seed=1).astype(np.uint16)
    src = write_raster(tmp_path / "in.tif", data)
    with Deblurrer.open(MODEL, threads=1, tile=tile, overlap=overlap, rgb=True) as deblur:
        deblur_raster(deblur, src, tmp_path / "out.tif")
        frame = np.ascontiguousarray(data.transpose(1, 2, 0))  # RGB uint16 (the Deblurrer was opened with rgb=True)
        tiled = deblur(frame).transpose(2, 0, 1).astype(np.float64)
    with rasterio.open(tmp_path / "out.tif") as b:
        out = b.read().astype(np.float64)
    assert np.abs(out - tiled).max() <= 1            # the same tiles and weights as in-memory tiling
    with Deblurrer.open(MODEL, threads=1, rgb=True) as whole_d:
        whole = whole_d(frame).transpose(2, 0, 1).astype(np.float64)
    inner = (slice(None), slice(32, -32), slice(32, -32))
    err = out[inner] - whole[inner]
    psnr = 10 * np.log10(65535.0 ** 2 / np.mean(err ** 2))
    assert psnr > 50, psnr                           # no seams: tiles agree with the whole frame


def test_uint16_four_bands_single_triples_and_copy(tmp_path, deblur):
    data = smooth_image(4, 96, 128, 4095, seed=2).astype(np.uint16)
    data[3] = data[3] // 2 + 100
    src = write_raster(tmp_path / "in.tif", data)
    outs = {}
    for mode in ("single", "triples", "copy"):
        cfg = BandConfig(normalize="bitdepth", bit_depth=12, rgb_bands=[3, 2, 1], others=mode)
        s = deblur_raster(deblur, src, tmp_path / f"{mode}.tif", config=cfg)
        with rasterio.open(tmp_path / f"{mode}.tif") as b:
            outs[mode] = b.read()
            assert b.count == 4 and b.dtypes[0] == "uint16"
            assert b.tags()["EDGE_DEBLUR_RGB_BANDS"] == "3,2,1" and b.tags()["EDGE_DEBLUR_OTHER_BANDS"] == mode
        assert s["dtype"] == "uint16"
    assert np.array_equal(outs["copy"][3], data[3])          # copied untouched
    assert not np.array_equal(outs["single"][3], data[3])    # run on its own
    # a lone band in "triples" is run alone, exactly as "single"
    assert np.array_equal(outs["triples"][3], outs["single"][3])
    for mode in outs:  # the RGB triple is the same in every mode
        assert np.array_equal(outs[mode][:3], outs["copy"][:3])
    # with an RGB triple 3, 2, 1 the model sees band 3 as red: swapping the mapping changes the result
    cfg = BandConfig(bit_depth=12, rgb_bands=[1, 2, 3], others="copy")
    deblur_raster(deblur, src, tmp_path / "swap.tif", config=cfg)
    with rasterio.open(tmp_path / "swap.tif") as b:
        assert not np.array_equal(b.read()[:3], outs["copy"][:3])


def test_percentile_normalization_recorded_and_float_rasters(tmp_path, deblur):
    data = (smooth_image(3, 64, 96, 1000, seed=3) * 0.001 - 0.2).astype(np.float32)  # reflectance-like floats
    src = write_raster(tmp_path / "f.tif", data)
    deblur_raster(deblur, src, tmp_path / "f_out.tif", config=BandConfig(percentiles=(1, 99)))
    with rasterio.open(tmp_path / "f_out.tif") as b:
        out, tags = b.read(), b.tags()
    assert out.dtype == np.float32 and tags["EDGE_DEBLUR_NORMALIZE"] == "percentile:1-99"
    lo, hi = (float(v) for v in tags["EDGE_DEBLUR_BAND_RANGES"].split(";")[0].split(","))
    assert -0.2 < lo < hi < 0.8 and np.isfinite(out).all()
    assert np.percentile(data[0], 1) == pytest.approx(lo, abs=0.02 * (hi - lo))  # from the sample grid
    # the model's change, mapped back through the stretch, stays a modest share of the range
    assert abs(float(out.mean()) - float(data.mean())) < 0.1 * (hi - lo)
    assert not np.array_equal(out, data)


def test_nan_nodata_in_a_float_raster_stays_where_it_is(tmp_path, deblur):
    data = smooth_image(3, 150, 200, 1).astype(np.float32)
    data[:, 50:60, 70:80] = np.nan                  # a hole of nodata inside a tile
    src = write_raster(tmp_path / "in.tif", data, nodata=float("nan"))
    deblur_raster(deblur, src, tmp_path / "out.tif")
    with rasterio.open(tmp_path / "out.tif") as b:
        out = b.read()
    assert np.array_equal(np.isnan(out), np.isnan(data))   # the hole is kept, and spreads nowhere


def test_row_ranges_reproduce_the_full_output(tmp_path, deblur):
    data = smooth_image(3, 300, 160, 255, seed=4).astype(np.uint8)
    src = write_raster(tmp_path / "in.tif", data)
    deblur_raster(deblur, src, tmp_path / "full.tif")
    with rasterio.open(tmp_path / "full.tif") as b:
        full = b.read()
    parts = []
    for a, c in ((0, 77), (77, 200), (200, 300)):
        deblur_raster(deblur, src, tmp_path / f"p{a}.tif", rows=(a, c))
        with rasterio.open(tmp_path / f"p{a}.tif") as b:
            assert b.height == c - a
            assert b.transform.f == 4000000 - 10 * a    # the part is georeferenced at its rows
            parts.append(b.read())
    assert np.array_equal(np.concatenate(parts, axis=1), full)


def test_bad_input(tmp_path, deblur):
    data = smooth_image(4, 64, 64, 255).astype(np.uint8)
    src = write_raster(tmp_path / "in.tif", data)
    with pytest.raises(InputError, match=r"rgb_bands=\[1, 2, 5\] does not match the raster's 4 band"):
        deblur_raster(deblur, src, tmp_path / "o.tif", config=BandConfig(rgb_bands=[1, 2, 5]))
    with pytest.raises(InputError, match="smaller than twice the overlap"):
        deblur_raster(deblur, src, tmp_path / "o.tif", tile=96, overlap=64)
    with pytest.raises(InputError, match="tiled GeoTIFF"):
        deblur_raster(deblur, src, tmp_path / "o.png")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a raster at all")
    with pytest.raises(InputError, match="not a raster format GDAL can read"):
        deblur_raster(deblur, bad, tmp_path / "o.tif")
    with pytest.raises(InputError, match="three different"):
        BandConfig(rgb_bands=[1, 1, 2]).validate()
    assert not list(tmp_path.glob(".*tmp*"))          # no temporary output left behind


def test_cli_a_raster_to_a_gdal_only_name_asks_for_tif(tmp_path, capsys):
    # 'x.img' (or .vrt) as the output of a raster was "unknown file type '.img'; name an image (.png, ...)"
    from edge_deblur.cli import main

    src = write_raster(tmp_path / "in.tif", smooth_image(3, 32, 32, 255).astype(np.uint8))
    for name in ("out.img", "out.vrt"):
        assert main(["deblur", str(src), "-o", str(tmp_path / name), "--model", str(MODEL)]) == 2
        err = capsys.readouterr().err
        assert f"rasters are written as tiled GeoTIFF: name the output 'out.tif' (got '{name}')" in err, err


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    from edge_deblur.runtime.deblurrer import Deblurrer
    from edge_deblur.runtime.raster_deblur import deblur_raster

    class Halve:  # a cheap stand-in model: the test is about windowed I/O, not the network
        stride = 16
        def infer(self, x):
            return x * 0.5 + 0.25
        def close(self):
            pass

    H = W = int(sys.argv[2]); src, dst = sys.argv[1] + "/big.tif", sys.argv[1] + "/out.tif"
    prof = dict(driver="GTiff", width=W, height=H, count=3, dtype="uint16", crs="EPSG:4326",
                transform=from_origin(0, 0, 1, 1), tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(src, "w", **prof) as ds:          # written window by window too
        for y in range(0, H, 256):
            h = min(256, H - y)
            ds.write(np.full((3, h, W), 1000 + y % 7, np.uint16), window=Window(0, y, W, h))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    d = Deblurrer(Halve(), tile=256, overlap=32)
    deblur_raster(d, src, dst, cache_mb=16)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with rasterio.open(dst) as o:
        v = o.read(1, window=Window(100, 100, 1, 1))[0, 0]
    print(json.dumps({"grew_mib": (after - before) / 1024, "value": int(v)}))
""")


def test_windowed_io_stays_under_a_memory_budget(tmp_path):
    """A 4096x4096 3-band uint16 raster (96 MiB of samples, 192 MiB as float32) is deblurred with
    the process growing by less than 64 MiB, less than its samples alone: it never sits whole in
    memory (about 45 MiB measured: one row of tiles of float32 accumulator and GDAL's capped cache)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path), "4096"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["grew_mib"] < 64, res
    assert abs(res["value"] - (1002 * 0.5 + 0.25 * 65535)) <= 1   # the stand-in model ran on it


def test_cli_deblur_geotiff(tmp_path):
    data = smooth_image(4, 80, 100, 4095, seed=5).astype(np.uint16)
    src = write_raster(tmp_path / "scene.tif", data, nodata=0)
    out = tmp_path / "out" / "scene.tif"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "edge_deblur", "deblur", str(src), "-o", str(out), "--model", str(MODEL),
           "--threads", "1", "--tile", "64", "--overlap", "32", "--bands", "3,2,1", "--bit-depth", "12", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["rasters"] == 1
    assert "TIFF" not in r.stderr                     # no libtiff warnings
    with rasterio.open(out) as b:
        assert b.count == 4 and b.crs.to_epsg() == 32633 and b.tags()["EDGE_DEBLUR_RGB_BANDS"] == "3,2,1"
    bad = subprocess.run(cmd[:-1] + ["--bands", "1,2,9"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and "does not match the raster's 4 band" in bad.stderr  # that file failed, reported


def test_the_nodata_value_does_not_reach_valid_pixels(tmp_path, deblur):
    """The same image with a nodata hole marked 0 in one file and 65535 in the other: the valid
    pixels come out the same (the sentinel used to go into the model, so pixels beside the hole
    differed by hundreds of levels)."""
    data = smooth_image(3, 160, 192, 4095, seed=5).astype(np.uint16) + 1000
    outs = []
    for nd in (0, 65535):
        d = data.copy()
        d[:, 60:100, 80:120] = nd
        src = write_raster(tmp_path / f"in{nd}.tif", d, nodata=nd)
        deblur_raster(deblur, src, tmp_path / f"out{nd}.tif", config=BandConfig(normalize="bitdepth", bit_depth=16))
        with rasterio.open(tmp_path / f"out{nd}.tif") as b:
            out = b.read()
        assert (out[:, 60:100, 80:120] == nd).all()          # the hole kept
        outs.append(out.astype(np.int64))
    valid = np.ones(data.shape[1:], bool)
    valid[60:100, 80:120] = False
    assert np.abs(outs[0] - outs[1])[:, valid].max() <= 1
    assert not np.array_equal(outs[0][:, valid], data[:, valid])  # and the model did run


def test_an_alpha_band_is_copied_and_copy_with_nothing_left_is_refused(tmp_path, deblur):
    from rasterio.enums import ColorInterp

    data = smooth_image(4, 64, 96, 255, seed=6).astype(np.uint8)
    data[3] = 0
    data[3, 10:50, 20:70] = 255
    src = write_raster(tmp_path / "rgba.tif", data)
    with rasterio.open(src, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    deblur_raster(deblur, src, tmp_path / "out.tif", config=BandConfig(others="single"))
    with rasterio.open(tmp_path / "out.tif") as b:
        out, tags = b.read(), b.tags()
    assert np.array_equal(out[3], data[3]) and tags["EDGE_DEBLUR_COPIED_BANDS"] == "4"
    assert not np.array_equal(out[:3], data[:3])
    pan = write_raster(tmp_path / "pan.tif", data[:1])
    with pytest.raises(InputError, match="no band of this 1-band raster is left for the model.*--other-bands single"):
        deblur_raster(deblur, pan, tmp_path / "pan_out.tif", config=BandConfig(others="copy"))
    assert not (tmp_path / "pan_out.tif").exists()


def test_a_stop_request_ends_a_raster_without_writing_it(tmp_path, deblur, monkeypatch, capsys):
    """Ctrl-C used to be noticed only after the whole raster (minutes for a large one)."""
    import signal

    from edge_deblur.cli import deblur_cmd, main
    from edge_deblur.runtime.raster_deblur import RasterStopped

    src = write_raster(tmp_path / "in.tif", smooth_image(3, 200, 256, 255).astype(np.uint8))
    asked = []

    def stop_at_the_third_tile():
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(RasterStopped, match="stopped after 2 of"):
        deblur_raster(deblur, src, tmp_path / "out.tif", stop=stop_at_the_third_tile)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]  # no output, no temporary file left
    # the CLI: SIGINT while a raster runs stops it at the next tile, exit status 130
    real = deblur_cmd.deblur_raster_job

    def signalled(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(deblur_cmd, "deblur_raster_job", signalled)
    rc = main(["deblur", str(src), "-o", str(tmp_path / "cli.tif"), "--tile", "64", "--overlap", "32",
               "-m", str(MODEL), "--threads", "1"])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_a_gdal_mask_is_kept_and_its_pixels_untouched(tmp_path, deblur):
    """An internal GDAL mask (no nodata value): it used to be dropped, and the masked pixels
    deblurred like the rest. Whole raster and row windows merged (the Ray batch's parts) alike."""
    from edge_deblur.runtime import archive as A

    data = smooth_image(3, 150, 200, 255, seed=7).astype(np.uint8)
    data[:, 40:90, 50:120] = 0  # what is under the mask: dark, as outside a satellite swath
    mask = np.full(data.shape[1:], 255, np.uint8)
    mask[40:90, 50:120] = 0
    src = write_raster(tmp_path / "in.tif", data)
    with rasterio.open(src, "r+") as ds:
        ds.write_mask(mask)
    deblur_raster(deblur, src, tmp_path / "out.tif")
    parts = [str(tmp_path / f"p{a}.tif") for a in (0, 70)]
    for p, rows in zip(parts, ((0, 70), (70, 150))):
        deblur_raster(deblur, src, p, rows=rows)
    A.merge_parts(str(src), parts, str(tmp_path / "merged.tif"), {"raster": {}})
    for name in ("out.tif", "merged.tif"):
        with rasterio.open(tmp_path / name) as b:
            out, got = b.read(), b.dataset_mask()
        assert np.array_equal(got, mask)                                   # the mask kept
        assert np.array_equal(out[:, mask == 0], data[:, mask == 0])       # masked pixels untouched
        assert not np.array_equal(out[:, mask > 0], data[:, mask > 0])     # the rest deblurred
    with rasterio.open(tmp_path / "out.tif") as a, rasterio.open(tmp_path / "merged.tif") as b:
        assert np.array_equal(a.read(), b.read())


def test_a_backend_that_hands_back_its_input_array_is_not_overwritten(tmp_path):
    """The raster pipeline reuses model-input buffers; a backend whose output is a view of its input
    (a torch model returning its input, zero-copy) must not have its output overwritten by the next
    tile's input (59953 levels off before)."""
    class Invert:
        stride = 1

        def __init__(self, view):
            self.view = view

        def infer(self, x):
            np.subtract(1.0, x, out=x)
            return x if self.view else x.copy()

        def close(self):
            pass

    data = smooth_image(3, 256, 320, 65535, seed=4).astype(np.uint16)
    src = write_raster(tmp_path / "in.tif", data)
    outs = []
    for view in (False, True):
        deblur_raster(Deblurrer(Invert(view), tile=64, overlap=16), src, tmp_path / f"o{view}.tif")
        with rasterio.open(tmp_path / f"o{view}.tif") as b:
            outs.append(b.read().astype(np.int64))
    assert np.abs(outs[0] - (65535 - data.astype(np.int64))).max() <= 2
    assert np.array_equal(outs[0], outs[1])
