"""Archive tasks without Ray: planning (raster row windows), running a task, merging parts,
manifests that make a re-run skip finished items (and not skip changed ones), failures reported
per item. The bundled model on small inputs, one thread."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_deblur.runtime import archive as A
from edge_deblur.runtime.deblurrer import Deblurrer

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "checkpoints" / "edgenet_s" / "model.onnx"


def settings(**kw):
    s = {"model_file": str(MODEL), "model_sha256": A.sha256_file(MODEL), "backend": None, "device": None,
         "tile": 64, "overlap": 32, "threads": 1,
         "raster": {"normalize": "auto", "bit_depth": None, "percentiles": [0.5, 99.5], "rgb_bands": None,
                    "others": "single", "compress": "same", "block": 256}}
    s.update(kw)
    return s


def run_all(d, items, out, st):
    rows = []
    for it in items:
        if it.skipped:
            continue
        rows.append(A.finish_item(it, [A.run_task(d, t, st) for t in it.tasks], out, st))
    return rows


@pytest.fixture(scope="module")
def deblur():
    with Deblurrer.open(MODEL, threads=1, tile=64, overlap=32) as d:
        yield d


def make_images(folder: Path, n=3, broken=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"f{i}.png"), (rng.random((48, 64, 3)) * 255).astype(np.uint8))
    if broken:
        (folder / "broken.png").write_bytes(b"not a png")


def test_images_run_report_failures_and_rerun_skips(tmp_path, deblur):
    make_images(tmp_path / "in", broken=True)
    out, st = tmp_path / "out", settings()
    items = A.plan_archive([str(tmp_path / "in")], out, st)
    rows = run_all(deblur, items, out, st)
    by = {Path(r["input"]).name: r for r in rows}
    assert by["broken.png"]["status"] == "failed" and "cannot read image" in by["broken.png"]["error"]
    assert all(by[f"f{i}.png"]["status"] == "ok" for i in range(3))
    ref = deblur(cv2.imread(str(tmp_path / "in" / "f0.png")))
    assert np.array_equal(cv2.imread(str(out / "f0.png")), ref)
    assert A.manifest_path(out, out / "f0.png").exists()
    # a re-run skips the finished items, retries the failed one
    again = A.plan_archive([str(tmp_path / "in")], out, st)
    assert {Path(i.src).name for i in again if not i.skipped} == {"broken.png"}
    # a changed input, a changed setting or a missing output are redone
    os.utime(tmp_path / "in" / "f1.png", ns=(1, 1))
    (out / "f2.png").unlink()
    again = A.plan_archive([str(tmp_path / "in")], out, st)
    assert {Path(i.src).name for i in again if not i.skipped} == {"broken.png", "f1.png", "f2.png"}
    again = A.plan_archive([str(tmp_path / "in")], out, settings(tile=128))
    assert not any(i.skipped for i in again)


def test_raster_row_windows_merge_into_the_whole_output(tmp_path, deblur):
    rasterio = pytest.importorskip("rasterio")
    from test_io_raster import smooth_image, write_raster

    src = write_raster(tmp_path / "scene.tif", smooth_image(4, 150, 80, 4095).astype(np.uint16), nodata=0)
    st = settings()
    items = A.plan_archive([str(src)], tmp_path / "split", st, rows_per_task=64)
    assert len(items[0].tasks) == 3 and all(t["part"] for t in items[0].tasks)
    assert run_all(deblur, items, tmp_path / "split", st)[0]["status"] == "ok"
    whole = A.plan_archive([str(src)], tmp_path / "whole", st, rows_per_task=4096)
    assert len(whole[0].tasks) == 1
    run_all(deblur, whole, tmp_path / "whole", st)
    with rasterio.open(tmp_path / "split" / "scene.tif") as a, rasterio.open(tmp_path / "whole" / "scene.tif") as b:
        assert np.array_equal(a.read(), b.read())
        assert (a.crs, a.transform, a.nodata, a.tags()) == (b.crs, b.transform, b.nodata, b.tags())
    assert not (tmp_path / "split" / ".edge-deblur" / "parts").exists()  # parts removed after the merge


def test_an_unreadable_raster_fails_alone_and_raster_settings_do_not_redo_images(tmp_path, deblur):
    pytest.importorskip("rasterio")
    make_images(tmp_path / "in", n=2)
    (tmp_path / "in" / "zz_bad.tif").write_bytes(b"II*\x00 not a tiff")
    out, st = tmp_path / "out", settings()
    items = A.plan_archive([str(tmp_path / "in")], out, st)  # planning used to raise for the whole archive
    by = {Path(r["input"]).name: r for r in run_all(deblur, items, out, st)}
    assert by["zz_bad.tif"]["status"] == "failed" and by["zz_bad.tif"]["error"]
    assert by["f0.png"]["status"] == "ok" and by["f1.png"]["status"] == "ok"
    # another band mapping changes rasters only: the finished images are still done
    other = settings(raster=dict(st["raster"], others="copy"))
    again = A.plan_archive([str(tmp_path / "in")], out, other)
    assert {Path(i.src).name for i in again if not i.skipped} == {"zz_bad.tif"}
