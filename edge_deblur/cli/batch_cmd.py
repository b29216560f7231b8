"""edge-deblur batch INPUT... -o OUT [--ray ADDRESS]: a whole archive (folders, lists of images,
videos and rasters) on Ray: an actor pool where each actor opens the model once, large rasters
split into row-window tasks, a per-item result table (ok / failed with the reason / skipped), and
re-runs that skip items already done (output present and its manifest matching).

Without ``--ray`` (or with ``--ray local``) a local Ray instance is started on this machine's CPUs.
The table is written to ``OUT/.edge-deblur/results.csv`` (and printed with ``--json``). Exit
status 0 when every item is ok or skipped, 1 when some failed."""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path


def add_arguments(p):
    from .deblur_cmd import add_arguments as deblur_args

    g = p.add_argument_group("Ray")
    g.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="Ray cluster address (host:6379, ray://host:10001, auto); default: a local Ray instance")
    g.add_argument("--actors", type=int, default=None, help="actors (model copies) in the pool (default: CPUs / --cpus-per-actor)")
    g.add_argument("--cpus-per-actor", type=float, default=1, help="CPUs per actor; also its ONNX Runtime threads (default 1)")
    g.add_argument("--gpus-per-actor", type=float, default=0, help="GPUs per actor where the cluster has them (default 0)")
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    g.add_argument("--rows-per-task", type=int, default=2048, help="rasters taller than this are split into row windows")
    g.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to reach --ray ADDRESS (default 5)")
    deblur_args(p)


def settings_from_args(args) -> dict:
    from ..runtime.archive import sha256_file
    from ..runtime.backends import resolve_model_path
    from .deblur_cmd import engine_options, model_settings, raster_settings

    raster = raster_settings(args)
    prof = raster["profile"]
    model, backend, device, tile, overlap = model_settings(args, prof)
    if model is None:
        from ..runtime.bundled import default_model_path

        model = default_model_path()
    model_file = resolve_model_path(model, backend)   # chosen once here, the same file on every node
    cfg = raster["config"]
    # checked here, before Ray starts (each actor would otherwise fail on its own)
    from ..runtime.output_guard import OutputGuard
    from ..runtime.stream_state import check_threshold

    scene_cut = args.scene_cut
    if scene_cut is None and prof is not None:  # a profile's null turns it off: 0 (None is the default)
        scene_cut = prof.pipeline.scene_cut or 0.0
    check_threshold(scene_cut)
    OutputGuard(args.max_bad_frames)
    return {
        "model_file": str(model_file), "model_sha256": sha256_file(model_file), "backend": backend, "device": device,
        "tile": tile, "overlap": 128 if overlap is None else overlap, "threads": args.threads,
        "scene_cut": scene_cut, "max_bad_frames": args.max_bad_frames,
        "engine": engine_options(prof, backend),  # tensorrt: the profile's engine build options, as deblur passes them
        "raster": {"normalize": cfg.normalize, "bit_depth": cfg.bit_depth, "percentiles": list(cfg.percentiles),
                   "rgb_bands": cfg.rgb_bands, "others": cfg.others, "compress": raster["compress"],
                   "block": raster["block"]},
    }


def write_table(out_root, table: list[dict]) -> Path:
    d = Path(out_root) / ".edge-deblur"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "results.csv"
    tmp = path.with_name(f".results.csv.tmp{os.getpid()}")
    cols = ["item", "input", "output", "kind", "status", "error", "tasks", "frames", "seconds"]
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(table)
    os.replace(tmp, path)
    return path


def run(args) -> int:
    from ..runtime.ray_batch import check_model, check_pool_options, check_reachable, run_archive
    from .deblur_cmd import check_tile_overlap, check_writable, plan_jobs

    # everything that can be checked here is, before Ray starts: a bad value would otherwise hang
    # (actors that can never be scheduled) or fail every item, or every actor, separately
    check_pool_options(actors=args.actors, cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor,
                       rows_per_task=args.rows_per_task, num_cpus=args.num_cpus, connect_timeout=args.connect_timeout)
    address = None if args.ray in (None, "local") else args.ray
    if address:
        check_reachable(args.ray, args.connect_timeout)       # fail in seconds, before planning
    jobs = plan_jobs(args.inputs, args.output)                 # bad inputs fail before Ray starts
    check_writable([Path(args.output)])
    settings = settings_from_args(args)
    check_tile_overlap(settings["tile"], settings["overlap"])  # as deblur does, before the model loads
    if any(kind == "raster" for _, _, kind in jobs):
        from ..runtime.raster_deblur import check_tiling

        check_tiling(settings["tile"] or 1024, settings["overlap"], 1)
    stride = check_model(settings, remote=address is not None)  # one error for a bad model, not one per actor
    check_tile_overlap(settings["tile"], settings["overlap"], stride)
    res = run_archive(args.inputs, args.output, settings, address=address,
                      actors=args.actors, cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor,
                      rows_per_task=args.rows_per_task, num_cpus=args.num_cpus, progress=sys.stderr.isatty(),
                      connect_timeout=args.connect_timeout, verify_model=False)
    table_path = write_table(args.output, res["items"])
    res["table"] = str(table_path)
    if args.json:
        print(json.dumps(res), flush=True)
    else:
        for r in res["items"]:
            if r["status"] == "failed":
                print(f"FAILED {r['input']}: {r['error']}", file=sys.stderr)
        fps = f", {res['frames_per_s']:.1f} frames/s" if res["frames_per_s"] else ""
        print(f"{res['ok']} ok, {res['failed']} failed, {res['skipped']} skipped ({res['tasks']} tasks on Ray "
              f"{res['address']}, {res['seconds']:.1f} s{fps}); table: {table_path}", flush=True)
    return 1 if res["failed"] else 0
