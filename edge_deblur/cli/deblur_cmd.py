"""edge-deblur deblur INPUT... -o OUT: images, folders (mirrored), globs and videos.

Output names mirror input names: ``deblur frames/ -o out/`` writes ``out/<same relative
path>`` for every image (and video) under ``frames/``; several folder inputs each get a
subfolder named after them; files and globs land in ``OUT/<file name>``. A single image or
video input with ``-o`` naming a file of that kind writes that file. Images keep their format
and bit depth; every file is written atomically (temp file + rename).

A bad input (unreadable image, undecodable video) or a failed output does not stop the batch:
the other files are processed, every failure is listed at the end and the exit status is 1.
Ctrl-C/SIGTERM stop after the current file (a video in progress keeps its frames in its hidden
partial file, never under the final name); the exit status is then 130/143.

Videos are written as by ``edge-deblur stream`` (the same ``--codec``/``--quality``/``--fragment-s``
flags and checks); audio tracks are not carried (a warning says so). The output folder is never
read as input, so ``deblur frames/ -o frames/out`` run twice does not deblur its own outputs."""
from __future__ import annotations

import glob
import itertools
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(p):
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders, or globs ('frames/*.png')")
    p.add_argument("-o", "--output", required=True, help="output folder, or an output file for a single input")
    p.add_argument("--model", "-m", default=None, help=".onnx, .safetensors, .engine or model folder (default: the bundled model)")
    p.add_argument("--backend", default=None, help="onnxruntime | torch | tensorrt | torch-cuda (default: from the file)")
    p.add_argument("--device", default=None, help="cpu | cuda | tensorrt (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--tile", type=int, default=None,
                   help="split frames larger than this into overlapping tiles (default: whole frames; rasters: 1024)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default 128: about the receptive field of edgenet)")
    p.add_argument("--scene-cut", type=float, default=None, metavar="T",
                   help="recurrent models: reset the state when consecutive frames' colour histograms differ by "
                        "more than T (0..1, default 0.16; 0 turns it off); each video starts from a fresh state")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--max-bad-frames", type=int, default=30, metavar="N",
                   help="model outputs with NaN/Inf are replaced by the input; fail after N in a row (default 30)")
    if not any(a.dest == "ray" for a in p._actions):  # `batch` adds its own Ray options
        p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help="run on Ray as `edge-deblur batch` does (no ADDRESS: a local Ray instance)")
        add_video_arguments(p)  # (`batch` writes videos with the defaults: it does not take them)
    r = p.add_argument_group("rasters (GeoTIFF and other GDAL formats; pip install 'edge-deblur[raster]')")
    r.add_argument("--profile", default=None, metavar="NAME",
                   help="runtime profile (configs/runtime/NAME.yaml, or a YAML path): its raster section, tile, overlap, "
                        "model, backend, device, scene_cut, slots, gpu_preprocess and cuda_graphs (videos) and, for "
                        "tensorrt, its engine build options; flags given here win")
    r.add_argument("--normalize", choices=("auto", "bitdepth", "percentile"), default=None,
                   help="sample values -> [0, 1]: by the sensor's bit depth or per-band percentiles (default auto)")
    r.add_argument("--bit-depth", type=int, default=None, help="sensor bits for --normalize bitdepth (e.g. 12)")
    r.add_argument("--percentiles", default=None, metavar="LO,HI", help="percentiles for --normalize percentile (0.5,99.5)")
    r.add_argument("--bands", default=None, metavar="R,G,B", help="1-based band numbers of the RGB triple (e.g. 3,2,1)")
    r.add_argument("--other-bands", choices=("single", "triples", "copy"), default=None,
                   help="bands outside the triple: one by one, as pseudo-RGB triples, or copied (default single)")


VIDEO_FLAGS = ("codec", "quality", "fragment_s")


def add_video_arguments(p):
    """``--codec``, ``--quality``, ``--fragment-s``: the very definitions of ``edge-deblur stream``
    (``StreamOptions.add_arguments``), so both commands take and document the same flags."""
    import argparse

    from ..io.options import StreamOptions

    ref = argparse.ArgumentParser(add_help=False)
    StreamOptions.add_arguments(ref, source=False, output=True)
    g = p.add_argument_group("video outputs (as for `edge-deblur stream`)")
    for a in ref._actions:
        if a.dest in VIDEO_FLAGS:
            g.add_argument(*a.option_strings, dest=a.dest, type=a.type, default=a.default, metavar=a.metavar,
                           help=a.help)


def video_options(args):
    """The StreamOptions a video job is written with (validated like ``stream``'s)."""
    from ..io.options import StreamOptions

    kw = {k: getattr(args, k) for k in VIDEO_FLAGS if getattr(args, k, None) is not None}
    return StreamOptions(**kw).validate()


def check_video_outputs(jobs, opts) -> None:
    """Every video output's container, codec and quality, once, before the model loads."""
    from ..io.video_writer import check_video_settings, resolve_codec

    for ext in sorted({dst.suffix.lower() for _, dst, k in jobs if k == "video"}):
        check_video_settings(ext, resolve_codec(opts.codec, ext), opts.quality)


def check_tile_overlap(tile, overlap, stride: int = 1) -> None:
    """``--tile`` against ``--overlap`` (rounded up to the model's stride as tiling does), once
    for the whole run: a bad pair would fail every frame larger than the tile."""
    from ..errors import InputError

    if tile is None:
        return
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < max(1, stride):
        raise InputError(f"--tile must be a whole number of pixels >= {max(1, stride)}, got {tile!r}")
    if overlap < 0:
        raise InputError(f"--overlap must be >= 0, got {overlap!r}")
    from ..runtime.tiling import check_tile_overlap as check

    check(tile, overlap, stride, names=("--tile", "--overlap"))


def warn_audio(src, dst) -> bool:
    """Log one warning when ``src`` has an audio track: ``deblur`` writes the video only."""
    try:
        import av

        with av.open(str(src)) as c:
            n = len(c.streams.audio)
    except Exception:  # noqa: BLE001 - unreadable files fail (and are reported) when deblurred
        return False
    if n:
        log.warning("%s has %s; %s gets the video only (audio is not carried). To add it back: "
                    "ffmpeg -i %s -i %s -map 0:v -map 1:a -c copy WITH_AUDIO%s", src,
                    "an audio track" if n == 1 else f"{n} audio tracks", dst, dst, src, Path(dst).suffix)
    return bool(n)


def _exts():
    from ..io.uri import IMAGE_EXTS, VIDEO_EXTS, VIDEO_SINK_EXTS

    return IMAGE_EXTS, VIDEO_EXTS, VIDEO_SINK_EXTS


def _walk(folder: Path, exts, exclude=()) -> list[Path]:
    """Media files under ``folder`` (hidden files and folders skipped); the folders ``exclude``
    (resolved paths: where outputs go) and everything inside them are left out."""
    from ..io.uri import natural_key

    skip = set(exclude)

    def keep(root, d):
        if d.startswith("."):
            return False
        if any(d == e.name for e in skip) and (Path(root) / d).resolve() in skip:
            log.info("not reading %s: outputs are written there", Path(root) / d)
            return False
        return True

    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if keep(root, d))
        for f in files:
            if not f.startswith(".") and Path(f).suffix.lower() in exts:
                found.append(Path(root) / f)
    return sorted(found, key=lambda q: natural_key(str(q.relative_to(folder))))


def plan_jobs(inputs: list[str], output: str) -> list[tuple[Path, Path, str]]:
    """``[(src, dst, 'image'|'video')]`` for the inputs; raises InputError for missing inputs,
    inputs without media, two inputs mapping to one output, or an output overwriting an input."""
    from ..errors import InputError
    from ..io.uri import is_glob

    from ..io.raster import RASTER_EXTS, rasterio_available

    image_exts, video_exts, video_sink_exts = _exts()
    raster_exts, raster_ok = RASTER_EXTS, rasterio_available()
    media = tuple(image_exts) + tuple(video_exts) + tuple(e for e in raster_exts if e not in image_exts)

    def kind(p: Path) -> str | None:
        s = p.suffix.lower()
        if s in raster_exts and (raster_ok or s not in image_exts):
            return "raster"
        return "image" if s in image_exts else "video" if s in video_exts else None

    out = Path(output)
    osfx = out.suffix.lower()
    if osfx and osfx not in image_exts and osfx not in video_sink_exts and not out.is_dir() \
            and not str(output).endswith(("/", os.sep)):
        # a folder is named without an extension; anything else would silently become a folder
        if len(inputs) == 1 and Path(inputs[0]).is_file() and kind(Path(inputs[0])) == "raster":
            raise InputError(f"rasters are written as tiled GeoTIFF: name the output "
                             f"{out.with_suffix('.tif').name!r} (got {out.name!r})")
        if osfx in video_exts:
            raise InputError(f"cannot write video container {osfx!r} ({str(output)!r}); write one of "
                             f"{', '.join(video_sink_exts)}, or end the name with '/' for a folder")
        raise InputError(f"output {str(output)!r}: unknown file type {osfx!r}; name an image "
                         f"({', '.join(image_exts[:5])}, ...), a video ({', '.join(video_sink_exts)}), or a folder "
                         f"(no extension, or end the name with '/')")
    out_r = out.resolve()

    def inside_out(f: Path) -> bool:  # f is in the output folder (or below it)
        return out_r in f.resolve().parents

    def below(root: Path) -> Path | None:  # the output folder when it lies strictly inside root
        r = root.resolve()
        return out_r if r in out_r.parents else None

    singles = len(inputs) == 1 and Path(inputs[0]).is_file()
    if singles:
        src = Path(inputs[0])
        k = kind(src)
        if k is None:
            raise InputError(f"{str(src)!r} is not an image or video ({', '.join(media)})")
        if k == "raster" and osfx in image_exts:
            if osfx not in (".tif", ".tiff"):
                raise InputError(f"rasters are written as tiled GeoTIFF: name the output "
                                 f"{out.with_suffix('.tif').name!r} (got {out.name!r})")
            return _check_jobs([(src, out, k)])
        if k == "image" and osfx in image_exts or k == "video" and osfx in video_sink_exts:
            jobs = [(src, out, k)]
            return _check_jobs(jobs)
        if osfx in image_exts or osfx in video_exts:
            raise InputError(f"cannot write the {k} {str(src)!r} to {str(out)!r}: use a {k} file name or a folder")
    jobs = []
    n_dirs = sum(Path(i).is_dir() for i in inputs)
    # where each input folder's outputs go
    bases = {raw: out if n_dirs == 1 else out / (Path(raw).resolve().name or "input") for raw in inputs
             if Path(raw).is_dir()}
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            base = bases[raw]
            # never the outputs of an earlier run: the output folder, or any input folder's place in
            # it, when it lies inside this input (`deblur d1 d2 -o d2` writes d2/d1 and d2/d2)
            pr = p.resolve()
            skip = {b for b in (out_r, *(x.resolve() for x in bases.values())) if pr in b.parents}
            files = _walk(p, media, exclude=skip)
            if not files:
                raise InputError(f"no images or videos in folder {raw!r} (looked for {', '.join(media)})")
            jobs += [(f, base / f.relative_to(p), kind(f)) for f in files]
        elif p.is_file():
            k = kind(p)
            if k is None:
                raise InputError(f"{raw!r} is not an image or video ({', '.join(media)})")
            jobs.append((p, out / p.name, k))
        elif is_glob(raw):
            files = sorted(Path(q) for q in glob.glob(os.path.expanduser(raw), recursive=True) if Path(q).is_file())
            files = [f for f in files if kind(f)]
            base = Path(*[q for q in itertools.takewhile(lambda q: not is_glob(q), Path(os.path.expanduser(raw)).parts)]
                        or ["."])
            if below(base) is not None:  # the pattern reaches into the output folder: not its files
                skipped = [f for f in files if inside_out(f)]
                if skipped:
                    log.info("not reading %d file(s) of the output folder %s matched by %r", len(skipped), out, raw)
                    files = [f for f in files if not inside_out(f)]
            if not files:
                raise InputError(f"the pattern {raw!r} matches no images or videos")
            jobs += [(f, out / f.name, kind(f)) for f in files]
        else:
            raise InputError(f"input not found: {raw!r}; pass image/video files, folders or a quoted glob")
    if (osfx in image_exts or osfx in video_sink_exts) and not out.is_dir() \
            and not str(output).endswith(("/", os.sep)):
        # several inputs (or a folder, or a glob) go into a folder: a file name here would become
        # a folder called 'out.mp4', which no one asked for
        what = "a folder" if len(inputs) == 1 and Path(inputs[0]).is_dir() else \
            "a pattern" if len(inputs) == 1 else f"{len(inputs)} inputs"
        raise InputError(f"{what} cannot be written to the single file {str(output)!r}; name a folder "
                         f"for -o (no extension, or end the name with '/'), or deblur one file at a time")
    # videos written into a folder: keep a writable container; rasters become GeoTIFFs
    jobs = [(s, d.with_suffix(".tif") if k == "raster" and d.suffix.lower() not in (".tif", ".tiff")
             else d if k != "video" or d.suffix.lower() in video_sink_exts else d.with_suffix(".mp4"), k)
            for s, d, k in jobs]
    return _check_jobs(jobs)


def _check_jobs(jobs):
    from ..errors import InputError

    seen = {}
    for src, dst, _ in jobs:
        key = os.path.normcase(os.path.abspath(dst))
        if key in seen:
            raise InputError(f"{str(seen[key])!r} and {str(src)!r} would both be written to {str(dst)!r}; deblur them into different folders")
        seen[key] = src
        if os.path.exists(dst) and os.path.samefile(src, dst):
            raise InputError(f"the output {str(dst)!r} is the input file; pass another -o")
    return jobs


def check_writable(folders) -> None:
    """Create each output folder and probe it with a temp file; SourceError when that fails."""
    from ..io.sinks import ensure_writable_dir

    for d in sorted(set(folders)):
        ensure_writable_dir(d, "the output (pass a writable -o)")


def deblur_image(d, src: Path, dst: Path):
    from ..errors import InputError
    from ..io.sinks import atomic_imwrite
    from ..io.sources import imread

    frame = imread(str(src))
    if frame is None:
        raise InputError(f"cannot read image {str(src)!r}: unreadable, truncated or not an image")
    out = d(frame)
    atomic_imwrite(dst, out)


def model_settings(args, prof) -> tuple:
    """(model, backend, device, tile, overlap): the command line's, with a runtime profile's
    values where the command line left them unset."""
    model, backend, device, tile, overlap = args.model, args.backend, args.device, args.tile, args.overlap
    if prof is not None:
        backend = backend or (None if prof.backend == "auto" else prof.backend)
        if model is None and prof.model:
            folder = Path(prof.model)
            ort_folder = backend_is(backend, "onnxruntime") and folder.is_dir()
            model = str(onnxruntime_precision_file(prof, folder) if ort_folder else prof.model_file())
        if model is None and (backend_is(backend, "tensorrt") or backend_is(backend, "onnxruntime")):
            model = default_precision_file(prof, backend)  # the auto backend keeps the folder's choice
        device = device or prof.device
        tile = tile or prof.pipeline.tile
        overlap = overlap if overlap is not None else prof.pipeline.overlap
    return model, backend, device, tile, overlap


def backend_is(backend, name: str) -> bool:
    from ..runtime.backends import backend_name

    return backend is not None and backend_name(backend) == name


# ONNX Runtime's file of each precision: the INT8 laid out for x86 (quantize --target cpu), not TensorRT's
ONNXRUNTIME_PRECISION_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8-cpu.onnx"}


def onnxruntime_precision_file(prof, folder: Path) -> Path:
    """The file of ``folder`` an ONNX Runtime profile of ``prof.precision`` runs: ``model.onnx``,
    ``model.fp16.onnx``, or for int8 the folder's INT8 file for this CPU (``model.int8-cpu.onnx``
    with VNNI/AMX, ``model.int8-avx2.onnx`` on other x86 CPUs: :func:`runtime.select.int8_cpu_file`),
    never TensorRT's ``model.int8.onnx``."""
    path = folder / ONNXRUNTIME_PRECISION_FILES[prof.precision]
    if prof.precision == "int8":
        from ..runtime.select import int8_cpu_file

        path = int8_cpu_file(folder) or path
    return path


def default_precision_file(prof, backend="tensorrt"):
    """The default model folder's file of the profile's ``precision``, for a TensorRT or ONNX
    Runtime profile that names no model: TensorRT ``model.fp16.onnx`` for fp16,
    ``model.int8.onnx`` for int8, ``model.onnx`` for fp32; ONNX Runtime the same but
    ``model.int8-cpu.onnx`` for int8 (``model.int8-avx2.onnx`` on an x86 CPU without VNNI:
    :func:`runtime.select.int8_cpu_file`; the folder's automatic choice would run the INT8 file
    under an fp32 profile). None (the folder's own choice) when the folder lacks that
    file, with a warning naming it."""
    import logging

    from ..runtime.bundled import default_model_path

    folder = default_model_path()
    if not folder.is_dir():
        return None
    ort = backend_is(backend, "onnxruntime")
    path = onnxruntime_precision_file(prof, folder) if ort else prof.model_file(folder)
    if path.is_file():
        return str(path)
    logging.getLogger(__name__).warning(
        "the profile asks for precision %s, but the default model folder %s has no %s; running its %s instead "
        "(export it with --fp16 / quantize it, or pass --model)", prof.precision, folder, path.name,
        "own choice of file" if ort else "FP32 ONNX")
    return None


def load_profile(args):
    """The runtime profile ``--profile NAME|PATH`` names (None without the flag); ConfigError
    naming an unknown one and listing the profiles there are."""
    from ..config.runtime import load_runtime_profile

    name = getattr(args, "profile", None)
    return load_runtime_profile(name) if name else None


def scene_cut_options(args, prof) -> dict:
    """``Deblurrer.open``'s ``scene_cut``: ``--scene-cut``, else a profile's ``pipeline.scene_cut``
    (null there: off), else nothing (the Deblurrer's default)."""
    if getattr(args, "scene_cut", None) is not None:
        return {"scene_cut": args.scene_cut}
    return {"scene_cut": prof.pipeline.scene_cut} if prof is not None else {}


def pipeline_options(prof, slots=None) -> dict:
    """A runtime profile's ``pipeline:`` section as StreamOptions fields for a video or a stream:
    ``slots`` (``slots`` given on the command line wins), ``gpu_preprocess`` and ``cuda_graphs``
    (which reach the backend's slot pipeline where its ``pipeline()`` takes them). A profile's
    ``gpu_preprocess: true`` means "on the GPU where its kernels build" (the backend's default,
    None: frames are converted on the CPU, with a warning, where NVRTC cannot build them, and the
    slots still double-buffer); ``false`` never uses them. Empty without a profile."""
    if prof is None:
        return {} if slots is None else {"slots": slots}
    return {"slots": prof.pipeline.slots if slots is None else slots,
            "gpu_preprocess": None if prof.pipeline.gpu_preprocess else False,
            "cuda_graphs": prof.pipeline.cuda_graphs}


def drop_idle_profile_slots(processor, opts):
    """A profile's ``pipeline.slots`` is no ``--slots``: where ``processor`` runs one frame at a
    time whatever the slots (a backend without a slot pipeline, such as onnxruntime; tiles), they
    are dropped from ``opts`` so the pipeline does not log "slots=N: ... no slot pipeline" as it
    does for a ``--slots`` the user gave."""
    from ..runtime.pipeline import plan_schedule

    if opts.slots is not None and opts.slots >= 2 and plan_schedule(processor, opts.slots)[0] == "sync":
        return opts.replace(slots=None).validate()
    return opts


def engine_options(prof, backend) -> dict:
    """A runtime profile's ``engine:`` section as ``Deblurrer.open`` keywords, for the tensorrt
    backend (which builds an ONNX file's engine with them); nothing for other backends."""
    if prof is None or not backend_is(backend, "tensorrt"):
        return {}
    return prof.engine.backend_options()


def raster_settings(args) -> dict:
    """``{'config': BandConfig, 'compress', 'block', 'profile'}`` from ``--profile`` and the raster
    flags (flags win)."""
    from ..errors import InputError
    from ..config.runtime import RasterSection

    prof = load_profile(args)
    sec = prof.raster if prof is not None else RasterSection()
    cfg = sec.band_config()

    def ints(text, what, n=None, cast=int):
        try:
            vals = [cast(v) for v in str(text).replace(" ", "").split(",") if v]
        except ValueError:
            raise InputError(f"{what} must be comma-separated numbers, got {text!r}") from None
        if n is not None and len(vals) != n:
            raise InputError(f"{what} needs {n} values, got {text!r}")
        return vals

    if getattr(args, "normalize", None):
        cfg.normalize = args.normalize
    if getattr(args, "bit_depth", None) is not None:
        cfg.bit_depth = args.bit_depth
        if not getattr(args, "normalize", None):
            cfg.normalize = "bitdepth"
    if getattr(args, "percentiles", None):
        cfg.percentiles = tuple(ints(args.percentiles, "--percentiles", 2, float))
    if getattr(args, "bands", None):
        cfg.rgb_bands = ints(args.bands, "--bands", 3)
    if getattr(args, "other_bands", None):
        cfg.others = args.other_bands
    cfg.validate("raster")
    return {"config": cfg, "compress": sec.compress, "block": sec.block, "profile": prof}


def deblur_raster_job(d, src: Path, dst: Path, raster: dict, progress: bool, stop=None) -> dict:
    from ..runtime.raster_deblur import deblur_raster

    return deblur_raster(d, src, dst, config=raster["config"], compress=raster["compress"], block=raster["block"],
                         progress=progress, stop=stop)


def run(args) -> int:
    import json
    import sys

    from ..errors import BackendError, EdgeDeblurError, ModelError
    from ..runtime.deblurrer import Deblurrer
    from .signals import Signals

    if getattr(args, "ray", None) and not hasattr(args, "actors"):
        from ..errors import InputError
        from . import batch_cmd

        given = [f"--{k.replace('_', '-')}" for k in VIDEO_FLAGS
                 if getattr(args, k, None) is not None and not (k == "fragment_s" and args.fragment_s == 2.0)]
        if given:
            raise InputError(f"{', '.join(given)} cannot be used with --ray: Ray batches write videos with the "
                             "default codec and quality; drop --ray to choose them")

        for k, v in {"actors": None, "cpus_per_actor": 1, "gpus_per_actor": 0, "num_cpus": None,
                     "rows_per_task": 2048, "connect_timeout": 5.0}.items():
            setattr(args, k, v)
        return batch_cmd.run(args)
    jobs = plan_jobs(args.inputs, args.output)
    vopts = video_options(args)
    check_video_outputs(jobs, vopts)
    raster = raster_settings(args) if any(k == "raster" for _, _, k in jobs) or getattr(args, "profile", None) else None
    model, backend, device, tile, overlap = model_settings(args, raster["profile"] if raster else None)
    overlap = 128 if overlap is None else overlap
    check_tile_overlap(tile, overlap)  # once, before the model loads (Deblurrer.open checks it at its stride)
    prof = raster["profile"] if raster else None
    cut_kw = scene_cut_options(args, prof)
    engine_kw = engine_options(prof, backend)  # engine: shapes, workspace, DLA ... (tensorrt builds with them)
    if prof is not None:  # videos: the profile's slots, gpu_preprocess, cuda_graphs on a backend with a slot pipeline
        vopts = vopts.replace(**pipeline_options(prof)).validate()
    if any(k == "raster" for _, _, k in jobs):
        from ..io.raster import rasterio
        from ..runtime.raster_deblur import check_tiling

        rasterio()  # DependencyError naming the extra before anything loads
        check_tiling(tile or 1024, overlap, 1)  # (an unreadable raster fails alone, like any bad file)
    check_writable(dst.parent for _, dst, _ in jobs)
    t0 = time.perf_counter()
    n_img = n_vid = n_ras = frames = 0
    megapixels = 0.0
    compute_s = 0.0
    # stdout carries the result only (the JSON with --json); progress goes to stderr: tqdm bars
    # on a terminal, plain lines otherwise
    tty = sys.stderr.isatty()
    failures: list[tuple[Path, str]] = []
    with Signals(raise_while_idle=False) as sig, \
            Deblurrer.open(model, backend=backend, device=device, threads=args.threads,
                           tile=tile, overlap=overlap, rgb=False, max_bad_frames=args.max_bad_frames,
                           **cut_kw, **engine_kw) as d:
        if prof is not None:
            vopts = drop_idle_profile_slots(d, vopts)  # deblur has no --slots: the profile's are not asked for
        bar = None
        last_line = time.perf_counter()
        if tty and sum(k == "image" for _, _, k in jobs) > 1:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), unit="file", desc="deblur", leave=False, file=sys.stderr)
        prev = None  # (kind, folder) of the previous input: a recurrent state does not cross inputs
        for src, dst, k in jobs:
            if sig.stopped:
                break
            if k == "image" and prev is not None and prev != ("image", src.parent):
                d.reset()  # images after a video, or from another folder: a fresh state
            prev = (k, src.parent)
            try:
                if k == "raster":
                    t = time.perf_counter()
                    from ..runtime.raster_deblur import RasterStopped

                    try:
                        r = deblur_raster_job(d, src, dst, raster, progress=tty, stop=lambda: sig.stopped)
                    except RasterStopped as e:  # Ctrl-C / SIGTERM: the raster is dropped, not half-written
                        log.warning("%s: interrupted: %s", src, e)
                        break
                    compute_s += time.perf_counter() - t
                    n_ras += 1
                    frames += 1
                    megapixels += r["width"] * r["height"] / 1e6
                    log.info("%s -> %s: %dx%dx%d %s, %d tiles, %.2f MP/s (%s)", src, dst, r["width"], r["height"], r["bands"],
                             r["dtype"], r["tiles"], r["megapixels_per_s"] or 0, r["tags"]["EDGE_DEBLUR_NORMALIZE"])
                elif k == "image":
                    t = time.perf_counter()
                    deblur_image(d, src, dst)
                    compute_s += time.perf_counter() - t
                    n_img += 1
                    frames += 1
                    done = n_img + n_vid + n_ras + len(failures)
                    if bar is None and len(jobs) > 1 and (time.perf_counter() - last_line > 2.0 or done == len(jobs)):
                        last_line = time.perf_counter()  # not a terminal: a plain progress line every 2 s at most
                        log.info("%d/%d files: %s -> %s", done, len(jobs), src, dst)
                    else:
                        log.debug("%s -> %s", src, dst)
                else:
                    from ..runtime.pipeline import deblur_video

                    def hook(pipe):
                        sig.pipeline = pipe

                    d.reset()
                    warn_audio(src, dst)
                    t = time.perf_counter()
                    try:
                        stats = deblur_video(d, str(src), str(dst), options=vopts, progress=tty, pipeline_hook=hook)
                    finally:
                        sig.pipeline = None
                    compute_s += time.perf_counter() - t
                    frames += int(stats.get("frames_out", 0))
                    if sig.stopped:
                        break  # interrupted: the partial video was kept under its hidden name
                    n_vid += 1
                    log.info("%s -> %s: %d frames, %.1f FPS", src, dst, stats.get("frames_out", 0), stats.get("fps", 0))
            except EdgeDeblurError as e:
                # one bad file does not stop the batch; every failure is reported at the end
                failures.append((src, str(e)))
                log.error("%s: %s", src, e)
                if isinstance(e, (ModelError, BackendError)):
                    break  # the model itself failed: every other file would fail the same way
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        info = d.info
    wall = time.perf_counter() - t0
    summary = {
        "images": n_img, "videos": n_vid, "rasters": n_ras, "frames": frames, "seconds": wall,
        "megapixels_per_s": round(megapixels / compute_s, 3) if megapixels and compute_s > 0 else None,
        "fps": frames / compute_s if compute_s > 0 else None,
        "output": str(args.output), "model": info.get("model"), "backend": info.get("backend"),
        "state": d.state_stats(),
        "failed": [{"input": str(p), "error": m} for p, m in failures],
        "interrupted": sig.stopped,
        "not_processed": max(0, len(jobs) - n_img - n_vid - n_ras - len(failures)),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        what = ", ".join(s for s in (f"{n_img} image{'s' * (n_img != 1)}" if n_img else "",
                                     f"{n_vid} video{'s' * (n_vid != 1)}" if n_vid else "",
                                     f"{n_ras} raster{'s' * (n_ras != 1)}" if n_ras else "") if s)
        done = f"deblurred {what} ({frames} frames) into {args.output}" if what else (
            f"finished nothing ({frames} frames deblurred before the stop, not published under {args.output})"
            if frames else "deblurred nothing")
        print(f"{done} in {wall:.1f} s"
              + (f", {summary['fps']:.1f} frames/s" if summary["fps"] else "")
              + f" [{info.get('backend')}, {Path(str(info.get('model'))).name}]")
    if sig.stopped:
        print(f"edge-deblur deblur: interrupted; {summary['not_processed']} of {len(jobs)} inputs not finished",
              file=sys.stderr)
    if failures:
        print(f"edge-deblur deblur: {len(failures)} of {len(jobs)} input{'s' * (len(jobs) != 1)} failed:", file=sys.stderr)
        for p, m in failures:
            print(f"  {p}: {m}", file=sys.stderr)
    if sig.stopped:
        return sig.exit_code
    return 1 if failures else 0
