"""An archive of images, videos and rasters as independent tasks, with manifests that let a re-run
skip what is done. No Ray here: ``edge_deblur.runtime.ray_batch`` runs these tasks on a cluster,
and ``run_task`` is what each of its actors calls.

* ``plan_archive(inputs, out, settings)``: one item per input file (names mirrored as in
  ``edge-deblur deblur``); an image or a video is one task, a raster taller than
  ``rows_per_task`` is split into row-window tasks that each write a part GeoTIFF, merged into the
  item's output once all parts are done. Items whose output exists and whose manifest matches
  (the input's size and modification time, the model file's SHA-256, the settings) are skipped.
* ``run_task(deblurrer, task, settings)``: run one task, return its result row (ok / failed with
  the error); never raises for a bad item.
* ``finish_item(item, results)``: merge raster parts, write the manifest
  (``OUT/.edge-deblur/manifests/<output path>.json``) for an item whose tasks all succeeded.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

MANIFEST_DIR = ".edge-deblur"
FORMAT = "edge_deblur.batch_item.v1"


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(chunk), b""):
            h.update(b)
    return h.hexdigest()


@dataclass
class Item:
    index: int
    src: str
    dst: str
    kind: str                   # image | video | raster
    tasks: list = field(default_factory=list)
    skipped: bool = False
    reason: str = ""
    error: str = ""             # could not be planned (an unreadable raster): failed, the rest go on


def manifest_path(out_root, dst) -> Path:
    rel = os.path.relpath(os.path.abspath(dst), os.path.abspath(out_root))
    return Path(out_root) / MANIFEST_DIR / "manifests" / (rel + ".json")


def parts_dir(out_root, dst) -> Path:
    rel = os.path.relpath(os.path.abspath(dst), os.path.abspath(out_root))
    return Path(out_root) / MANIFEST_DIR / "parts" / rel


def item_manifest(src, dst, settings: dict, kind: Optional[str] = None) -> dict:
    st = os.stat(src)
    return {"format": FORMAT, "input": os.path.abspath(src), "input_size": st.st_size, "input_mtime_ns": st.st_mtime_ns,
            "model_sha256": settings["model_sha256"], "settings": settings_key(settings, kind)}


def settings_key(settings: dict, kind: Optional[str] = None) -> dict:
    """The settings that change an output of this kind (not where it runs): the raster settings
    only for rasters (None: all), the scene-cut threshold (recurrent models) only for videos."""
    keys = ["model_file", "tile", "overlap"]
    if kind in (None, "raster"):
        keys.append("raster")
    if kind in (None, "video") and settings.get("scene_cut") is not None:
        keys.append("scene_cut")
    return {k: settings.get(k) for k in keys}


def is_done(out_root, src, dst, settings: dict, kind: Optional[str] = None) -> bool:
    m = manifest_path(out_root, dst)
    if not (os.path.exists(dst) and m.exists()):
        return False
    try:
        rec = json.loads(m.read_text())
    except (OSError, ValueError):
        return False
    want = item_manifest(src, dst, settings, kind)
    return all(rec.get(k) == v for k, v in want.items()) and rec.get("output_size") == os.path.getsize(dst)


def plan_archive(inputs, out_root, settings: dict, rows_per_task: int = 2048) -> list[Item]:
    """Items (with their tasks) for ``inputs``; finished items are marked ``skipped``."""
    from ..cli.deblur_cmd import plan_jobs

    jobs = plan_jobs(list(inputs), str(out_root))
    items = []
    for i, (src, dst, kind) in enumerate(jobs):
        it = Item(i, str(src), str(dst), kind)
        if is_done(out_root, src, dst, settings, kind):
            it.skipped, it.reason = True, "done: output present and its manifest matches"
        elif kind == "raster":
            try:
                it.tasks = _raster_tasks(it, out_root, rows_per_task)
            except Exception as e:  # noqa: BLE001 - this item fails in the table, the rest run
                it.error = f"{type(e).__name__}: {e}".strip()[:500]
        else:
            it.tasks = [_task(it, 0)]
        items.append(it)
    return items


def _task(item: Item, n: int, rows=(-1, -1), part: str = "") -> dict:
    return {"task": f"{item.index}:{n}", "item": item.index, "kind": item.kind, "src": item.src, "dst": item.dst,
            "row0": int(rows[0]), "row1": int(rows[1]), "part": part}


def _raster_tasks(item: Item, out_root, rows_per_task: int) -> list[dict]:
    from ..io.raster import open_raster

    with open_raster(item.src) as ds:
        h = ds.height
    if h <= rows_per_task:
        return [_task(item, 0)]
    pdir = parts_dir(out_root, item.dst)
    tasks = []
    for n, a in enumerate(range(0, h, rows_per_task)):
        b = min(h, a + rows_per_task)
        tasks.append(_task(item, n, (a, b), str(pdir / f"rows_{a:07d}_{b:07d}.tif")))
    return tasks


def run_task(deblurrer, task: dict, settings: dict) -> dict:
    """Run one task with an opened Deblurrer; the result row never raises for a bad item."""
    t0 = time.perf_counter()
    row = {"task": task["task"], "item": int(task["item"]), "status": "ok", "error": "", "frames": 0,
           "seconds": 0.0, "worker": f"{os.uname().nodename}:{os.getpid()}"}
    try:
        kind = task["kind"]
        Path(task["dst"]).parent.mkdir(parents=True, exist_ok=True)
        if kind == "image":
            from ..cli.deblur_cmd import deblur_image

            deblur_image(deblurrer, Path(task["src"]), Path(task["dst"]))
            row["frames"] = 1
        elif kind == "video":
            from .pipeline import deblur_video

            deblurrer.reset()
            stats = deblur_video(deblurrer, task["src"], task["dst"])
            row["frames"] = int(stats.get("frames_out", 0))
        elif kind == "raster":
            from .bands import BandConfig
            from .raster_deblur import deblur_raster

            r = settings.get("raster") or {}
            cfg = BandConfig(**{k: r[k] for k in ("normalize", "bit_depth", "percentiles", "rgb_bands", "others") if k in r})
            rows = None if int(task["row0"]) < 0 else (int(task["row0"]), int(task["row1"]))
            dst = task["part"] or task["dst"]
            if rows is not None:
                Path(dst).parent.mkdir(parents=True, exist_ok=True)
            deblur_raster(deblurrer, task["src"], dst, config=cfg, rows=rows, compress=r.get("compress", "same"),
                          block=int(r.get("block", 256)))
            row["frames"] = 1 if rows is None else 0
        else:
            raise ValueError(f"unknown task kind {kind!r}")
    except Exception as e:  # noqa: BLE001 - reported in the result table, the rest go on
        row["status"] = "failed"
        row["error"] = f"{type(e).__name__}: {e}".strip()[:500]
        if not getattr(e, "exit_code", None):  # not one of ours: keep where it happened
            row["error"] += " | " + traceback.format_exc(limit=2).strip().splitlines()[-1][:200]
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def finish_item(item: Item, results: list[dict], out_root, settings: dict, cache_mb: int = 128) -> dict:
    """Merge a raster's parts and write the manifest when every task of ``item`` succeeded;
    returns the item's row for the result table."""
    bad = [r for r in results if r["status"] != "ok"]
    row = {"item": item.index, "input": item.src, "output": item.dst, "kind": item.kind,
           "status": "ok", "error": "", "tasks": len(item.tasks), "frames": sum(r.get("frames", 0) for r in results),
           "seconds": round(sum(r.get("seconds", 0.0) for r in results), 3)}
    if item.error:
        row["status"], row["error"] = "failed", item.error
        return row
    if len(results) != len(item.tasks) or bad:
        row["status"] = "failed"
        row["error"] = bad[0]["error"] if bad else f"{len(item.tasks) - len(results)} task(s) never reported"
        return row
    try:
        if item.kind == "raster" and len(item.tasks) > 1:
            merge_parts(item.src, [t["part"] for t in item.tasks], item.dst, settings, cache_mb)
            pdir = parts_dir(out_root, item.dst)
            shutil.rmtree(pdir, ignore_errors=True)
            top = Path(out_root) / MANIFEST_DIR / "parts"
            for d in [*pdir.parents]:  # remove the now empty folders up to .edge-deblur/parts
                if not str(d).startswith(str(top)):
                    break
                try:
                    d.rmdir()
                except OSError:
                    break
            row["frames"] = 1
        rec = item_manifest(item.src, item.dst, settings, item.kind)
        rec.update(output=os.path.abspath(item.dst), output_size=os.path.getsize(item.dst),
                   finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), tasks=len(item.tasks))
        m = manifest_path(out_root, item.dst)
        m.parent.mkdir(parents=True, exist_ok=True)
        tmp = m.with_name(m.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(rec, indent=1))
        os.replace(tmp, m)
    except Exception as e:  # noqa: BLE001
        row["status"], row["error"] = "failed", f"{type(e).__name__}: {e}"[:500]
    return row


def merge_parts(src, parts: list, dst, settings: dict, cache_mb: int = 128):
    """Copy row-window part GeoTIFFs into one tiled GeoTIFF like ``src`` (window by window)."""
    from ..io import raster as R

    rio = R.rasterio()
    r = settings.get("raster") or {}
    with R.gdal_env(cache_mb), R.open_raster(src) as ds, rio.open(parts[0]) as first:
        tags = {k: v for k, v in first.tags().items() if k.startswith("EDGE_DEBLUR_")}
        w = R.RasterWriter(ds, dst, tags=tags, block=int(r.get("block", 256)), compress=r.get("compress", "same"))
        try:
            row = 0
            for p in parts:
                with rio.open(p) as part:
                    masked = part.nodata is None and all(R.mask_flag("per_dataset") in f for f in part.mask_flag_enums)
                    for y in range(0, part.height, w.block):
                        win = rio.windows.Window(0, y, part.width, min(w.block, part.height - y))
                        w.write(part.read(window=win), row + y, mask=part.dataset_mask(window=win) if masked else None)
                    row += part.height
            w.close()
        except BaseException:
            w.abort()
            raise
