"""The quantize stage: FP32 ONNX -> INT8 ONNX with explicit Q/DQ, for one target.

``target="tensorrt"`` writes ``model.int8.onnx`` (signed, symmetric: what TensorRT's explicit
quantization takes); ``target="cpu"`` writes ``model.int8-cpu.onnx`` (uint8 activations, int8
weights, laid out for ONNX Runtime's x86 kernels with VNNI/AMX) and ``target="cpu-avx2"``
``model.int8-avx2.onnx`` (the same with 7-bit weights, for x86 without VNNI). The layouts are described in
:mod:`.qdq_graph`. Both are calibrated the same way: frames from a folder, a video or synthetic
blur (:mod:`.calib_frames`), through the runtime's own preprocessing, ranges by ONNX Runtime's
calibrators (:mod:`.calib_table`). The ranges go to ``calibration/<model>/table.json`` (TensorRT)
or ``calibration/<model>/int8-cpu/table.json`` (CPU) and the recipe that made them (method,
samples, source, tile, seed, target, the calibrating machine's CPU features, tool versions, ONNX
sha256, accuracy) to ``recipe.json`` beside it; a table re-quantizes the same model to the same
graph without calibrating (``table=``). That folder is the record of one INT8 file (its metadata
``edge_deblur.calibration`` points at the recipe): when it already holds the record of another
file (e.g. ``model.int8.onnx`` and now ``-o elsewhere.onnx``), the new record goes to a subfolder
named after the output, ``calibration/<model>/[int8-cpu/]<output stem>/`` (:func:`record_folder`).
Nothing is written until the INT8 graph is made, checked and measured: the model goes through a
temporary file + rename, the table and recipe with it, so a failed run leaves no partial file. Accuracy: INT8 vs FP32 on held-out tiles, and with
``pairs`` against ground truth on real blur/sharp pairs (:mod:`.quant_eval`).

numpy, OpenCV, onnx and onnxruntime only: no torch.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError, ModelError
from ..runtime.manifest import tool_versions
from .calib_frames import calibration_frames, frames_to_tensors, parse_tile
from .calib_table import METHODS, TABLE_FORMAT, collect_ranges, load_table, save_table
from .qdq_graph import (TARGETS, Target, finish_graph, get_target, input_path_nodes, name_nodes, output_residual_adds,
                        quantize_with_ranges, tie_ranges)
from .qdq_report import QDQ_OPS, qdq_report
from .quant_eval import accuracy_on_pairs, compare_outputs

log = logging.getLogger("edge_deblur.compress.quantize")

MIN_SAMPLES = 8
MAX_SAMPLES = 4096  # ranges settle within a few hundred tiles; more only costs minutes of calibration


def sha256_file(path) -> str:
    from ..runtime.manifest import sha256_file as _sha

    return _sha(path)


# --------------------------------------------------------------------------------------------
# the FP32 model


@dataclass
class ModelInfo:
    path: Path
    sha256: str
    input_name: str
    output_name: str
    stride: int
    height: int | None  # fixed input dims, None when dynamic
    width: int | None
    metadata: dict
    # recurrent models: [{"name": "state_in", "output": "state_out", "channels": C, "scale": s}]
    state_inputs: tuple = ()


def inspect_float_model(path, stride: int | None = None) -> ModelInfo:
    """Check that ``path`` is an FP32 image model we can quantize (not already quantized, one
    NCHW 3-channel input) and read its stride (argument, ONNX metadata or manifest)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"ONNX model not found: {str(p)!r}; export one with 'edge-deblur export CKPT -o FOLDER'")
    try:
        m = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises several types
        raise ModelError(f"{str(p)!r} is not a readable ONNX file ({e})") from e
    qnodes = [n.name or n.op_type for n in m.graph.node if n.op_type in QDQ_OPS + ("QLinearConv", "ConvInteger", "MatMulInteger")]
    if qnodes:
        raise ModelError(
            f"{str(p)!r} is already quantized ({len(qnodes)} quantization nodes, e.g. {qnodes[0]!r}); "
            "quantize the FP32 model (model.onnx) instead"
        )
    half = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    low = [i.name for i in m.graph.initializer if i.data_type in half]
    low += [n.output[0] for n in m.graph.node if n.op_type == "Constant" and n.output
            and any(a.t.data_type in half for a in n.attribute if a.name == "value")]
    if low:
        fp32 = p.with_name("model.onnx")
        hint = (f"quantize the FP32 model {str(fp32)!r} instead" if fp32.is_file() and fp32.resolve() != p.resolve()
                else "quantize the FP32 model (model.onnx, written by edge-deblur export) instead")
        raise ModelError(
            f"{str(p)!r} is an FP16 graph ({len(low)} float16 weights, e.g. {low[0]!r}); INT8 calibration needs "
            f"float32 weights: {hint}"
        )
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    md = {e.key: e.value for e in m.metadata_props}
    outputs = [o.name for o in m.graph.output]
    states = []
    for i in inputs:
        if not i.name.startswith("state_in"):
            continue
        out_name = "state_out" + i.name[len("state_in"):]
        dims = [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
        if out_name not in outputs or len(dims) != 4 or not dims[1]:
            raise ModelError(
                f"{str(p)!r}: state input {i.name!r} (shape {dims}) needs a matching output {out_name!r} and a fixed "
                "channel count; re-export the recurrent model with edge-deblur export"
            )
        states.append({"name": i.name, "output": out_name, "channels": int(dims[1]),
                       "scale": int(md.get(f"edge_deblur.state_scale.{i.name}", 1))})
    images = [i for i in inputs if not i.name.startswith("state_in")]
    if len(images) != 1:
        raise ModelError(
            f"{str(p)!r} has inputs {[i.name for i in inputs]}; INT8 calibration needs one image input "
            "(plus state_in* inputs for a recurrent model)"
        )
    inp = images[0]
    tt = inp.type.tensor_type
    if tt.elem_type != onnx.TensorProto.FLOAT:
        raise ModelError(f"{str(p)!r}: input {inp.name!r} is {onnx.TensorProto.DataType.Name(tt.elem_type)}, expected float32")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if len(dims) != 4 or dims[1] not in (3, None):
        raise ModelError(f"{str(p)!r}: input {inp.name!r} has shape {dims}, expected N x 3 x H x W")
    if stride is None:
        if "edge_deblur.stride" in md:
            stride = int(md["edge_deblur.stride"])
        else:
            from ..runtime.manifest import read_manifest

            stride = int(read_manifest(p.parent).get("stride", 0)) or None
    if stride is None:
        raise ModelError(
            f"{str(p)!r} does not record its stride (no edge_deblur.stride metadata, no manifest.json beside it); "
            "pass --stride (16 for edgenet)"
        )
    image_out = next((o for o in outputs if not o.startswith("state_out")), outputs[0])
    return ModelInfo(p, sha256_file(p), inp.name, image_out, int(stride), dims[2], dims[3], md, tuple(states))


def model_feeds(info: ModelInfo, tensors: Sequence[np.ndarray], threads: int = 0) -> list:
    """ONNX Runtime feeds for calibration and comparison: ``{input: x}`` per tensor for an image
    model. A recurrent model's state is an input too, and its range in a stream is the range of
    states the model itself makes: each tensor is fed twice, with the zero state (a stream's first
    frame) and with the state the FP32 model left after that frame (a frame in the middle of a
    stream of similar frames)."""
    if not info.state_inputs:
        return [{info.input_name: t} for t in tensors]
    from .quant_eval import ort_session

    sess = ort_session(info.path, threads)
    names = [info.output_name] + [s["output"] for s in info.state_inputs]
    feeds = []
    for t in tensors:
        n, _, h, w = t.shape
        zero = {s["name"]: np.zeros((n, s["channels"], h // s["scale"], w // s["scale"]), np.float32)
                for s in info.state_inputs}
        first = {info.input_name: t, **zero}
        outs = sess.run(names, first)
        feeds.append(first)
        feeds.append({info.input_name: t, **{s["name"]: o for s, o in zip(info.state_inputs, outs[1:])}})
    return feeds



# --------------------------------------------------------------------------------------------
# the whole stage


@dataclass
class QuantizeOptions:
    method: str = "minmax"
    samples: int = 64
    tile: tuple[int, int] = (256, 256)  # (width, height)
    seed: int = 0
    percentile: float = 99.999
    target: str | Target = "tensorrt"    # tensorrt | cpu | cpu-avx2 (see qdq_graph.TARGETS), or a Target variant
    keep_output_add_fp: bool | None = None  # leave the global residual Add (output = f(x) + x) in float
    keep_input_conv_fp: bool | None = None  # leave the first conv (and the layout ops before it) in float
    eval_samples: int = 8                # held-out tiles (same source, another seed) for INT8 vs FP32
    min_samples: int = MIN_SAMPLES

    def validate(self):
        if self.method not in METHODS:
            raise InputError(f"--method {self.method!r} is not one of {', '.join(METHODS)}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < self.min_samples:
            raise InputError(
                f"{self.samples} calibration samples are too few; use at least {self.min_samples} "
                "(64 or more is typical: --samples 64)"
            )
        if self.samples > MAX_SAMPLES:
            raise InputError(
                f"--samples {self.samples} is more than {MAX_SAMPLES} calibration tiles (it would calibrate for "
                f"minutes; the ranges settle within a few hundred tiles); use --samples {MAX_SAMPLES} or fewer "
                "(64-1024 is typical)"
            )
        self.tile = parse_tile(self.tile)
        if not 90.0 < self.percentile <= 100.0:
            raise InputError(f"percentile {self.percentile} must be in (90, 100]")
        t = get_target(self.target)
        self.target = t.name if t is TARGETS.get(t.name) else t
        # defaults per target: TensorRT keeps the image-facing ends float (accuracy, cheap there);
        # on a VNNI CPU a float island costs a dequantize/requantize and an NCHW<->NHWC transpose,
        # and measured within the accuracy budget quantized (docs/BENCHMARKS.md); with 7-bit
        # weights (cpu-avx2) quantized ends cost accuracy and float ones no speed (qdq_graph)
        if self.keep_input_conv_fp is None:
            self.keep_input_conv_fp = t.keep_ends_float
        if self.keep_output_add_fp is None:
            self.keep_output_add_fp = t.keep_ends_float


def default_model_name(onnx_path) -> str:
    p = Path(onnx_path).resolve()
    return p.parent.name if p.name == "model.onnx" else p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.stem


def default_output(onnx_path, target: str | Target = "tensorrt") -> Path:
    """model.onnx -> model.int8.onnx (TensorRT) / model.int8-cpu.onnx (CPU), beside it."""
    src = Path(onnx_path)
    stem = src.name[: -len(".onnx")] if src.name.endswith(".onnx") else src.name
    return src.with_name(stem + get_target(target).suffix + ".onnx")


def needs_emulation(target: Target) -> str | None:
    """Why the accuracy of an 8-bit-weight CPU file is measured on an exact float emulation of its
    Q/DQ graph here (None: measured on this CPU's own kernels): on x86 without INT8 dot products
    ONNX Runtime's u8s8 kernels saturate 8-bit weights, so this CPU's figures would not be those
    of the VNNI/AMX CPUs the file is for (edgenet M5: -0.16 dB on REDS test_001 saturated)."""
    from ..runtime.cpu_features import INT8_PAIR_FLAGS, cpu_features

    cpu = cpu_features()
    if target.activation != "uint8" or target.weight_bits != 8 or cpu.int8_dot or not set(INT8_PAIR_FLAGS) & cpu.flags:
        return None
    return (f"this CPU ({cpu.isa}) has no INT8 dot products, where ONNX Runtime's kernels saturate a file with 8-bit "
            f"weights: its accuracy is measured on an exact float emulation of its Q/DQ graph (what VNNI/AMX CPUs "
            f"compute); on this CPU the runtime runs the 7-bit-weight file of --target cpu-avx2")


def same_ranges(table_target: str, target: Target) -> bool:
    """Whether a table calibrated for ``table_target`` serves ``target``: the same target, or the
    two CPU targets (the same graph and uint8 activation ranges; only the weights differ)."""
    try:
        t = get_target(table_target)
    except InputError:
        return False
    return t.name == target.name or (t.activation == target.activation == "uint8" and t.rewrites == target.rewrites)


def calibration_folder(calib_dir, name: str, target: str | Target = "tensorrt") -> Path:
    """Where a target's table and recipe go: calibration/<name>/, calibration/<name>/int8-cpu/ or
    calibration/<name>/int8-cpu-avx2/."""
    base = Path(calib_dir) / name
    t = get_target(target).name
    return base if t == "tensorrt" else base / ("int8-cpu" if t == "cpu" else f"int8-{t}")


def _record_owner(folder: Path, out: Path) -> bool | None:
    """Whose record ``folder`` holds: None when it holds none, True when it is the record of
    ``out`` (re-quantizing the same file replaces it), False when another INT8 file's."""
    recipe, table = folder / "recipe.json", folder / "table.json"
    if not recipe.is_file() and not table.is_file():
        return None
    if out.is_file():  # the existing output's metadata points at this recipe
        try:
            import onnx

            md = {e.key: e.value for e in onnx.load(str(out), load_external_data=False).metadata_props}
            if md.get("edge_deblur.calibration") and Path(md["edge_deblur.calibration"]).resolve() == recipe.resolve():
                return True
        except Exception:  # noqa: BLE001 - an unreadable output is checked (and refused) elsewhere
            pass
    try:
        rec = json.loads(recipe.read_text())
    except (OSError, ValueError):
        return False  # a table without a readable recipe: someone's, keep it
    rec_out = rec.get("output") if isinstance(rec, dict) else None
    if not rec_out:
        return False
    if Path(rec_out).resolve() == out.resolve():
        return True
    # a relative path recorded from another working folder: the same file name and content
    if (not Path(rec_out).is_absolute() and Path(rec_out).name == out.name and out.is_file()
            and rec.get("output_sha256") == sha256_file(out)):
        return True
    return False


def record_folder(calib_dir, name: str, target: str | Target, out) -> Path:
    """Where the table and recipe of the INT8 file ``out`` go: :func:`calibration_folder` when it
    is free or already the record of ``out``; when it holds another file's record (which that
    file's metadata points at), the subfolder ``<output stem>/`` of it (``-2``, ``-3``, ... when
    that is taken too). A record another artifact points at is never overwritten."""
    base = calibration_folder(calib_dir, name, target)
    out = Path(out)
    if _record_owner(base, out) is not False:
        return base
    stem = out.name[: -len(".onnx")] if out.name.endswith(".onnx") else out.name
    for i in range(1, 1000):
        cand = base / (stem if i == 1 else f"{stem}-{i}")
        if _record_owner(cand, out) is not False:
            return cand
    raise InputError(f"{str(base)!r} holds the calibration records of 1000 other files named {stem!r}; "
                     "pass another --calib-dir or --name")


def check_output(out: Path, info: "ModelInfo", target: Target) -> None:
    """Refuse an output path that cannot be written or would clobber something other than an INT8
    model (the input, a folder, another file), before anything is calibrated."""
    if out.resolve() == info.path.resolve():
        raise InputError(f"output {str(out)!r} would overwrite the FP32 model; pass another -o "
                         f"(e.g. {default_output(info.path, target).name})")
    suggestion = default_output(info.path, target).name
    if out.is_dir():
        raise InputError(f"output {str(out)!r} is a folder; pass the INT8 file to write, e.g. -o {str(out / suggestion)}")
    for parent in (out.parent, *out.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"output {str(out)!r}: {str(parent)!r} is a file, not a folder; pass another -o")
            break
    if out.exists():
        import onnx

        try:
            md = {e.key: e.value for e in onnx.load(str(out), load_external_data=False).metadata_props}
        except Exception:  # noqa: BLE001 - protobuf raises several types
            md = {}
        if md.get("edge_deblur.precision") != "int8":
            raise InputError(f"output {str(out)!r} exists and is not an INT8 model made by edge-deblur quantize; "
                             f"it is left as it is: pass another -o (e.g. {suggestion}) or remove it first")


def check_calib_spec(calib) -> None:
    """An empty calibration source (``''``, ``synthetic:``) would calibrate on whatever lies in '.'."""
    if calib is None:
        return
    text = str(calib)
    if not text.strip() or (text.startswith("synthetic:") and not text[len("synthetic:"):].strip()):
        raise InputError(f"--calib {text!r} names no folder; pass a folder of images, a video file, or "
                         "synthetic:FOLDER (synthetic blur over the sharp images in FOLDER)")
    from .calib_frames import describe_source

    describe_source(calib)  # DatasetError naming a missing source, before the model is touched


def machine_features() -> dict:
    """The calibrating machine's CPU (recorded in the recipe)."""
    from ..runtime.cpu_features import cpu_features

    f = cpu_features()
    return {"cpu": f.model, "arch": f.arch, "cores": f.cores, "features": sorted(f.relevant)}


def pin_io_ranges(ranges: dict, info) -> None:
    """The image input and output are [0, 1] by contract (frames are x / 255 in, the runtime clips
    the output to [0, 1]): a range calibrated beyond that spends quantization levels on values
    thrown away (the shipped CPU file's output spanned [-0.07, 1.06]: 226 of 256 grey levels)."""
    for name in (info.input_name, info.output_name):
        if name in ranges:
            ranges[name] = (0.0, 1.0)


def _parse_pair_sets(pairs, pair_scenes) -> list[tuple[str, list[str]]]:
    """``pairs``: one folder, or a list of folders, each optionally 'FOLDER:scene1,scene2'."""
    if pairs is None:
        return []
    items = [pairs] if isinstance(pairs, (str, Path)) else list(pairs)
    out = []
    for it in items:
        text = str(it)
        root, scenes = text, list(pair_scenes or [])
        if ":" in text and not Path(text).exists():
            root, _, sc = text.rpartition(":")
            scenes = [s.strip() for s in sc.split(",") if s.strip()]
        out.append((root, scenes))
    return out


def quantize_model(
    onnx_path,
    output=None,
    calib=None,
    options: QuantizeOptions | None = None,
    table=None,
    calib_dir="calibration",
    name: str | None = None,
    pairs=None,
    pair_scenes: Sequence[str] | None = None,
    stride: int | None = None,
    frames: Sequence[np.ndarray] | None = None,
    frames_rgb: bool = False,
    update_manifest: bool = True,
    threads: int = 0,
) -> dict:
    """FP32 ONNX -> INT8 Q/DQ ONNX for ``options.target``. Calibrates on ``calib`` (a source:
    folder, video, synthetic:FOLDER) or on ``frames`` (already tile-sized numpy frames), or re-uses
    ``table`` (a saved calibration table) without calibrating. ``pairs``: a pairs folder or a list
    of them (``'FOLDER:scene,scene'`` picks scenes) to measure accuracy against ground truth.
    Writes the table and recipe to :func:`record_folder` and returns the recipe; the output, table
    and recipe are written only once the INT8 graph is made and checked (temporary file + rename)."""
    opts = options or QuantizeOptions()
    opts.validate()
    target = get_target(opts.target)
    if frames is None:
        check_calib_spec(calib)
    info = inspect_float_model(onnx_path, stride)
    out = Path(output) if output is not None else default_output(info.path, target)
    check_output(out, info, target)
    tw, th = opts.tile
    if tw % info.stride or th % info.stride:
        raise InputError(f"tile {tw}x{th} is not a multiple of the model's stride {info.stride}; use e.g. "
                         f"{(tw // info.stride or 1) * info.stride}x{(th // info.stride or 1) * info.stride}")
    if (info.height and info.height != th) or (info.width and info.width != tw):
        raise InputError(f"the model's input is fixed at {info.width}x{info.height}; pass --tile {info.width}x{info.height}")
    pair_sets = _parse_pair_sets(pairs, pair_scenes)
    from .quant_eval import find_pairs

    for root, scenes in pair_sets:  # a bad --pairs fails here, not after minutes of calibration
        find_pairs(root, scenes)
    name = name or default_model_name(info.path)
    cdir = record_folder(calib_dir, name, target, out)
    if cdir != calibration_folder(calib_dir, name, target):
        log.info("%s holds the calibration record of another file; this one's goes to %s",
                 calibration_folder(calib_dir, name, target), cdir)
    t0 = time.time()
    new_table: dict | None = None
    source_info: dict = {}
    recipe_src: dict = {}
    eval_tensors: list[np.ndarray] = []
    rewrites: list[str] = []

    # the INT8 graph is made, checked and measured in a temporary folder; the table, the recipe
    # and the model are put in place only at the end (a failure leaves nothing behind)
    with tempfile.TemporaryDirectory(prefix="edge_deblur_q.") as tmp:
        staged = Path(tmp) / "quantized.onnx"
        graph = name_nodes(info.path, Path(tmp) / "named.onnx")
        if target.rewrites:
            from .cpu_layout import rewrite_for_cpu

            rewrites = rewrite_for_cpu(graph, Path(tmp) / "rewritten.onnx", target.rewrites)
            graph = Path(tmp) / "rewritten.onnx"
        exclude = output_residual_adds(graph) if opts.keep_output_add_fp else []
        if opts.keep_input_conv_fp:
            exclude += input_path_nodes(graph)
        if table is not None:
            t = load_table(table)
            if t.get("onnx_sha256") != info.sha256:
                raise InputError(
                    f"calibration table {str(table)!r} was computed for an ONNX model with sha256 "
                    f"{str(t.get('onnx_sha256'))[:12]}..., not {str(info.path)!r} ({info.sha256[:12]}...); "
                    "recalibrate with --calib"
                )
            if not same_ranges(t.get("target", "tensorrt"), target):
                raise InputError(
                    f"calibration table {str(table)!r} was made for --target {t.get('target', 'tensorrt')}, not "
                    f"{target.name} (other scales, other graph); pass {str(calibration_folder(calib_dir, name, t.get('target', 'tensorrt')))}"
                    f"/table.json with --target {t.get('target', 'tensorrt')}, or recalibrate with --calib"
                )
            if t["method"] != opts.method:
                log.info("using the table's calibration method %s", t["method"])
                opts.method = t["method"]
            ranges = {k: (v["min"], v["max"]) for k, v in t["tensors"].items()}
            tie_ranges(graph, ranges)  # a table from before the ties were made
            pin_io_ranges(ranges, info)
            old = Path(table).parent / "recipe.json"  # the recipe saved beside the table
            try:
                recipe_src = json.loads(old.read_text()) if old.is_file() else {}
            except (OSError, json.JSONDecodeError):
                recipe_src = {}
            if recipe_src.get("onnx_sha256") != info.sha256:
                recipe_src = {}
            source_info = recipe_src.get("source", {"from_table": str(table)})
            if calib is not None or frames is not None:
                eval_tensors = _eval_frames(calib, frames, frames_rgb, opts, info)
        else:
            if frames is not None:
                frame_list = list(frames)
                if len(frame_list) < opts.min_samples:
                    raise InputError(f"{len(frame_list)} calibration frames are too few; pass at least {opts.min_samples}")
                tensors = frames_to_tensors(frame_list, info.stride, opts.tile, frames_rgb)
                source_info = {"kind": "frames", "count": len(frame_list)}
                eval_tensors = tensors[: opts.eval_samples]
            elif calib is not None:
                cal, rgb, source_info = calibration_frames(calib, opts.samples, opts.tile, opts.seed)
                tensors = frames_to_tensors(cal, info.stride, opts.tile, rgb)
                eval_tensors = _eval_frames(calib, None, False, opts, info)
            else:
                raise InputError("pass a calibration source (--calib FOLDER|VIDEO|synthetic:FOLDER) or a saved --table")
            log.info("calibrating %s on %d tiles of %dx%d (%s, target %s)", info.path.name, len(tensors), tw, th,
                     opts.method, target.name)
            ranges = collect_ranges(graph, model_feeds(info, tensors, threads), info.input_name, opts.method,
                                    opts.percentile, symmetric=target.symmetric_activations)
            tied = tie_ranges(graph, ranges)
            if tied:
                log.info("ranges tied across value-moving ops: %s", ", ".join(tied))
            pin_io_ranges(ranges, info)
            new_table = dict(ranges=ranges, method=opts.method, onnx_sha256=info.sha256, target=target.name,
                             graph="cpu_layout: " + ", ".join(target.rewrites) if target.rewrites else None)
        missing = _missing_ranges(graph, ranges, exclude)
        if missing:
            raise InputError(f"calibration table {str(table)!r} has no range for {len(missing)} tensors of this graph "
                             f"(e.g. {missing[0]!r}); it was made by another version of the quantizer: recalibrate with --calib")
        quantize_with_ranges(graph, staged, ranges, opts.method, exclude, target)
        if target.rewrites:
            _point_shapes_at_quantized(staged)
        recipe_rel = str(cdir / "recipe.json")
        finish_graph(staged, info.metadata, recipe_rel, target)
        rep = qdq_report(staged)
        if target.name == "tensorrt" and rep["nonzero_zero_points"]:
            raise ModelError(f"quantized graph has non-zero zero points: {rep['nonzero_zero_points'][:3]}; this is a bug")

        recipe = {
            "format": TABLE_FORMAT,
            "model": name,
            "target": target.name,
            "onnx": str(info.path),
            "onnx_sha256": info.sha256,
            "output": str(out),
            "output_sha256": sha256_file(staged),
            "method": opts.method,
            "percentile": opts.percentile if opts.method == "percentile" else None,
            "samples": opts.samples if frames is None else source_info.get("count"),
            "tile": [tw, th],
            "seed": opts.seed,
            "from_table": str(table) if table is not None else None,
            "stride": info.stride,
            "source": source_info,
            "preprocess": "edge_deblur.runtime.preprocess.frame_to_tensor",
            "table": str(cdir / "table.json"),
            "quantization": {
                "format": "QDQ",
                "target": target.name,
                "layout": target.description,
                "activations": ("uint8 asymmetric per-tensor" if target.activation == "uint8"
                                else "int8 symmetric per-tensor (zero point 0)"),
                "weights": ("int8 symmetric per-channel (Conv axis 0)"
                            + (", 7-bit range [-64, 64] (reduce_range)" if target.weight_bits == 7 else "")),
                "weight_bits": target.weight_bits,
                "bias": "int32" if target.quantize_bias else "float",
                "float_nodes": exclude,
                "graph_rewrites": rewrites,
                "extra_options": _extra(target),
            },
            "machine": machine_features(),
            "tools": tool_versions(opencv="cv2"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.time() - t0, 2),
            "graph": {k: rep[k] for k in ("quantize_linear", "dequantize_linear", "zero_point_dtypes", "activation_dtypes", "io_dtypes")},
            "accuracy": {},
        }
        if info.state_inputs:
            recipe["state_inputs"] = [s["name"] for s in info.state_inputs]
            recipe["state_calibration"] = "each tile with the zero state and with the state the FP32 model left after it"
        emulate = needs_emulation(target)
        if emulate:
            recipe["accuracy"]["int8_kernels"] = emulate
            log.warning("%s", emulate)
        if eval_tensors:
            # frames given by the caller are both calibration and check: not held out, and named so
            key = "calibration_tiles" if frames is not None else "held_out_tiles"
            recipe["accuracy"][key] = compare_outputs(info.path, staged, model_feeds(info, eval_tensors, threads), threads,
                                                      bool(emulate))
        sets = [accuracy_on_pairs(info.path, staged, root, scenes, info.stride, threads,
                                  feeds=lambda ts: model_feeds(info, ts, threads), emulate=bool(emulate))
                for root, scenes in pair_sets]
        if sets:
            recipe["accuracy"]["pairs"] = sets[0]
            recipe["accuracy"]["pair_sets"] = sets
        if table is not None and recipe_src:
            # re-built from a saved table: the calibration facts are those of the run that made it
            for k in ("percentile", "samples", "tile", "seed", "machine"):
                recipe[k] = recipe_src.get(k, recipe[k])
        from ..runtime.manifest import atomic_write_bytes, atomic_write_json

        # everything made and measured: put the table, the recipe and the model in place
        if new_table is not None:
            save_table(cdir / "table.json", new_table["ranges"], new_table["method"], new_table["onnx_sha256"],
                       new_table["target"], graph=new_table["graph"])
        elif Path(table).resolve() != (cdir / "table.json").resolve():
            # re-quantized from another record's table (the cpu file's for cpu-avx2, or -o elsewhere):
            # the recipe's "table" (and the manifest's) names this record's own copy
            atomic_write_bytes(cdir / "table.json", Path(table).read_bytes())
        atomic_write_json(cdir / "recipe.json", recipe)
        atomic_write_bytes(out, staged.read_bytes())
        if update_manifest:
            _add_to_manifest(out, info, recipe, target)
        return recipe


def _extra(target: Target) -> dict:
    from .qdq_graph import extra_options

    return extra_options(target)


def _missing_ranges(graph: Path, ranges: dict, exclude) -> list[str]:
    """Float tensors that quantize_static would need a range for but the table lacks."""
    import onnx

    m = onnx.load(str(graph), load_external_data=False)
    skip = set(exclude)
    need = set()
    for n in m.graph.node:
        if n.op_type == "Conv" and n.name not in skip:
            need.update([n.input[0], n.output[0]])
    return sorted(need - set(ranges))


def _point_shapes_at_quantized(path: Path):
    import onnx

    from ..runtime.manifest import atomic_write_bytes
    from .cpu_layout import shapes_from_quantized

    m = onnx.load(str(path))
    if shapes_from_quantized(m):
        atomic_write_bytes(path, m.SerializeToString())


def _eval_frames(calib, frames, frames_rgb, opts, info) -> list[np.ndarray]:
    if frames is not None:
        fl = list(frames)[: opts.eval_samples]
        return frames_to_tensors(fl, info.stride, opts.tile, frames_rgb)
    ev, rgb, _ = calibration_frames(calib, opts.eval_samples, opts.tile, opts.seed + 7919)
    return frames_to_tensors(ev, info.stride, opts.tile, rgb)


def _add_to_manifest(out: Path, info: ModelInfo, recipe: dict, target: Target):
    from ..runtime.manifest import add_artifact, read_manifest

    folder = out.parent
    man = read_manifest(folder)
    if not man or folder.resolve() != info.path.parent.resolve():
        log.info("no manifest.json beside both models in %s; not listing %s", folder, out.name)
        return
    entry = {
        "precision": "int8",
        "io_dtype": "float32",
        "quantization": "qdq",
        "target": recipe["target"],
        "source": info.path.name,
        "source_sha256": info.sha256,
        "calibration": {k: recipe[k] for k in ("method", "samples", "tile", "seed", "table")}
        | {"recipe": str(Path(recipe["table"]).with_name("recipe.json"))},
        "accuracy": recipe["accuracy"],
    }
    if target.activation == "uint8":  # cpu, cpu-avx2 (and variants of them: not looked up by name)
        from ..runtime.cpu_features import INT8_DOT_FLAGS, INT8_PAIR_FLAGS

        # what the file runs well on: u8s8 dot products, and with 7-bit weights also the 16-bit pair
        # sums of AVX2 / AVX-512 without VNNI, which 8-bit weights saturate (the runtime runs FP32 there)
        bits = target.weight_bits
        entry["weight_bits"] = bits
        entry["tuned_for"] = {"any_of": list(INT8_DOT_FLAGS) + (list(INT8_PAIR_FLAGS) if bits == 7 else []),
                              "calibrated_on": recipe["machine"]}
    add_artifact(folder, out.name, entry)
