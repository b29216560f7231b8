"""ONNX -> TensorRT engine: a strongly typed network, one optimization profile, a reusable timing
cache and a sidecar manifest.

Precision comes from the ONNX file (FP32, FP16 weights/compute with FP32 I/O, or INT8 Q/DQ),
never from builder flags: a strongly typed network takes its types from the graph. (In
TensorRT 10.3, JetPack 6's version, the FP16/INT8 builder flags are not deprecated yet: 10.12
deprecated weak typing and 11.0 removed it; the implicit INT8 calibrators are deprecated since
10.1 and gone in 11.) TF32, on by default, is turned off so that an FP32 ONNX builds an FP32
engine; the manifest records it (``build.tf32``). The same code builds with TensorRT 10
(JetPack 6) and 11: attributes that differ between them are feature-detected.

Everything above :func:`build_engine` (shape profiles, precision detection, manifests, parser
error formatting) is plain Python and tested on the CPU. :func:`build_engine` itself needs
TensorRT and a GPU and is untested on this project's CI machine; docs/JETSON.md has the
one-line commands that check it on a GPU.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import BackendError, DependencyError, InputError, ModelError
from ..runtime.manifest import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "edge_deblur.engine.v1"
DEFAULT_STRIDE = 16
# 256x256 up to 1080p (1088 after padding to the stride), tuned for 720p (736: a multiple of
# every stride up to 32, edgenet M5's; 720 is not).
DEFAULT_SHAPES = "1x3x256x256:1x3x736x1280:1x3x1088x1920"
TRT_EXTRA_HINT = ("pip install 'edge-deblur[tensorrt]' (CUDA 12 build; 'edge-deblur[tensorrt-cu13]' for CUDA 13; "
                  "on Jetson, TensorRT comes with JetPack)")

# --------------------------------------------------------------------------------------------
# Shape profiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeProfile:
    """One TensorRT optimization profile for the image input: NCHW min <= opt <= max."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def covers(self, shape: Sequence[int]) -> bool:
        shape = tuple(int(s) for s in shape)
        return len(shape) == len(self.min) and all(a <= s <= b for a, s, b in zip(self.min, shape, self.max))

    def contains(self, other: "ShapeProfile") -> bool:
        """True when every shape allowed by ``other`` is allowed by this profile."""
        return self.covers(other.min) and self.covers(other.max)

    @property
    def static(self) -> bool:
        return self.min == self.opt == self.max

    def __str__(self) -> str:
        return ":".join("x".join(str(d) for d in s) for s in (self.min, self.opt, self.max))

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: dict) -> "ShapeProfile":
        try:
            return cls(tuple(int(v) for v in d["min"]), tuple(int(v) for v in d["opt"]), tuple(int(v) for v in d["max"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"bad profile in manifest: {d!r} ({e})") from e


def _parse_dims(text: str, what: str) -> tuple[int, ...]:
    parts = text.strip().lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(
            f"{what} shape {text!r} is not NxCxHxW (integers joined by 'x', e.g. 1x3x736x1280)"
        ) from None
    if len(dims) != 4:
        raise InputError(f"{what} shape {text!r} has {len(dims)} dimensions; give 4 as NxCxHxW, e.g. 1x3x736x1280")
    if any(d <= 0 for d in dims):
        raise InputError(f"{what} shape {text!r} has a dimension <= 0; every dimension must be positive")
    return dims


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def parse_shapes(text: str | None, stride: int = DEFAULT_STRIDE, channels: int = 3) -> ShapeProfile:
    """Parse ``--shapes``: ``min:opt:max`` (each NxCxHxW) or a single NxCxHxW for a static engine.

    H and W must be multiples of ``stride`` (the runtime pads frames to it), C must equal
    ``channels``, and min <= opt <= max in every dimension."""
    if text is None or not str(text).strip():
        text = DEFAULT_SHAPES
    text = str(text).strip()
    pieces = text.split(":")
    if len(pieces) == 1:
        pieces = pieces * 3
    if len(pieces) != 3:
        raise InputError(
            f"--shapes {text!r} must be MIN:OPT:MAX (e.g. {DEFAULT_SHAPES}) or one NxCxHxW for a fixed size"
        )
    names = ("min", "opt", "max")
    shapes = [_parse_dims(p, n) for p, n in zip(pieces, names)]
    for name, s in zip(names, shapes):
        if s[1] != channels:
            raise InputError(f"--shapes {name} {'x'.join(map(str, s))}: C is {s[1]}, the model takes {channels} channels")
        bad = [(axis, v) for axis, v in (("H", s[2]), ("W", s[3])) if v % stride]
        if bad:
            fixed = "x".join(map(str, (s[0], s[1], _round_up(s[2], stride), _round_up(s[3], stride))))
            raise InputError(
                f"--shapes {name} {'x'.join(map(str, s))}: "
                + ", ".join(f"{a}={v}" for a, v in bad)
                + f" is not a multiple of the model stride {stride} (frames are padded to it); use {fixed}"
            )
    lo, mid, hi = shapes
    for axis, label in enumerate("NCHW"):
        if not lo[axis] <= mid[axis] <= hi[axis]:
            raise InputError(
                f"--shapes {text!r}: {label} must satisfy min <= opt <= max, got {lo[axis]}, {mid[axis]}, {hi[axis]}"
            )
    return ShapeProfile(*shapes)


def check_profile_fits(profile: ShapeProfile, name: str, input_shape: Sequence[int]) -> None:
    """The ONNX input's static dimensions (not -1) must match the profile in min, opt and max."""
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != len(profile.min):
        raise ModelError(
            f"ONNX input {name!r} has shape {list(input_shape)} ({len(input_shape)}-D) but the profile is "
            f"{len(profile.min)}-D NCHW; this model is not an image-to-image model exported by edge-deblur"
        )
    for axis, d in enumerate(input_shape):
        if d >= 0 and not (profile.min[axis] == profile.opt[axis] == profile.max[axis] == d):
            raise ModelError(
                f"ONNX input {name!r} is fixed to {d} in dimension {'NCHW'[axis]} (shape {list(input_shape)}) but "
                f"--shapes asks for {profile.min[axis]}..{profile.max[axis]}; re-export with dynamic axes "
                f"(edge-deblur export ...) or pass --shapes with {d} in that dimension"
            )


def shapes_given(shapes) -> bool:
    """Whether the caller chose a profile (a ShapeProfile or a non-empty --shapes)."""
    return isinstance(shapes, ShapeProfile) or bool(shapes is not None and str(shapes).strip())


def dla_profile(profile: ShapeProfile, explicit: bool, dla_core: int | None) -> ShapeProfile:
    """The profile to build with on DLA core ``dla_core`` (None: the GPU, ``profile`` as it is).

    DLA has no dynamic dimensions: min, opt and max must be equal, or every layer falls back to
    the GPU (or the build fails without GPU fallback). An explicit dynamic ``--shapes`` is
    refused; the default profile becomes its opt shape, fixed, with a note in the log."""
    if dla_core is None or profile.static:
        return profile
    opt = "x".join(map(str, profile.opt))
    if explicit:
        raise InputError(
            f"--dla {dla_core} with the dynamic profile --shapes {profile}: DLA runs fixed shapes only "
            f"(min, opt and max equal); pass one shape, e.g. --shapes {opt}, or build for the GPU without --dla"
        )
    fixed = ShapeProfile(profile.opt, profile.opt, profile.opt)
    log.warning("--dla %s: DLA runs fixed shapes only, so the engine is built for %s (the default profile's opt "
                "shape); pass --shapes NxCxHxW for another frame size", dla_core, opt)
    return fixed


def derive_profile(shape: Sequence[int], image: ShapeProfile, downscale: int = 1) -> ShapeProfile:
    """Profile for a secondary input (a recurrent ``state_*`` tensor): N follows the image
    batch, dynamic dimensions 2 and 3 follow H/downscale and W/downscale, static ones stay."""
    shape = tuple(int(d) for d in shape)

    def one(img):
        out = []
        for axis, d in enumerate(shape):
            if d >= 0:
                out.append(d)
            elif axis == 0:
                out.append(img[0])
            elif axis in (2, 3) and len(shape) == 4:
                out.append(max(1, img[axis] // downscale))
            else:
                raise ModelError(
                    f"cannot infer a profile for dynamic dimension {axis} of a state input with shape "
                    f"{list(shape)}; export the state with static channels"
                )
        return tuple(out)

    return ShapeProfile(one(image.min), one(image.opt), one(image.max))


# --------------------------------------------------------------------------------------------
# Precision: read from the ONNX (or the parsed network), never chosen by flags
# --------------------------------------------------------------------------------------------

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def classify_precision(ops: Iterable[str], dtypes: Iterable[str], qdq_dtypes: Iterable[str] = ()) -> str:
    """Precision of a graph from its op types, the element types of its tensors/weights and the
    element types of its quantized tensors. Names are ONNX/TensorRT style in lower case."""
    ops = set(ops)
    dtypes = {d.lower() for d in dtypes}
    qdq = {d.lower() for d in qdq_dtypes}
    if ops & QDQ_OPS or {"quantize", "dequantize"} & {o.lower() for o in ops}:
        for name in ("fp4", "int4", "fp8", "int8"):
            if any(name in d or (name == "fp8" and "float8" in d) or (name == "fp4" and "float4" in d) for d in qdq):
                return name
        return "int8"
    if dtypes & {"float16", "half", "fp16"}:
        return "fp16"
    if dtypes & {"bfloat16", "bf16"}:
        return "bf16"
    return "fp32"


def onnx_precision(path) -> str | None:
    """fp32 / fp16 / bf16 / int8 (Q/DQ) of an ONNX file, or None when the ``onnx`` package is
    not installed (the builder then reads it from the parsed network)."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelError(f"cannot read ONNX file {str(path)!r}: {e}; re-export it with edge-deblur export") from e
    tp = onnx.TensorProto
    name_of = {v: k.lower() for k, v in tp.DataType.items()}
    graphs = [model.graph]
    ops, dtypes, qdq = [], set(), set()
    elem = {}
    while graphs:
        g = graphs.pop()
        for init in g.initializer:
            dtypes.add(name_of.get(init.data_type, "?"))
            elem[init.name] = name_of.get(init.data_type, "?")
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            t = vi.type.tensor_type
            if t.elem_type:
                dtypes.add(name_of.get(t.elem_type, "?"))
        for node in g.node:
            ops.append(node.op_type)
            for attr in node.attribute:
                if attr.name == "to" and node.op_type == "Cast":
                    dtypes.add(name_of.get(attr.i, "?"))
                if attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value" and attr.t is not None:
                        dtypes.add(name_of.get(attr.t.data_type, "?"))
                        for out in node.output:
                            elem[out] = name_of.get(attr.t.data_type, "?")
        for node in g.node:
            if node.op_type == "QuantizeLinear" and len(node.input) >= 3:
                qdq.add(elem.get(node.input[2], "int8"))
            elif node.op_type == "QuantizeLinear":
                qdq.add("uint8")  # ONNX default zero point type
            elif node.op_type == "DequantizeLinear" and node.input:
                qdq.add(elem.get(node.input[0], "int8"))
    dtypes.discard("?")
    return classify_precision(ops, dtypes, qdq)


def network_precision(network, trt) -> str:
    """Precision of a parsed TensorRT network (used when ``onnx`` is not installed)."""
    ops, dtypes, qdq = [], set(), set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        lt = str(layer.type).split(".")[-1].lower()
        ops.append(lt)
        for j in range(layer.num_outputs):
            dt = str(layer.get_output(j).dtype).split(".")[-1].lower()
            dtypes.add(dt)
            if lt == "quantize":
                qdq.add(dt)
    return classify_precision(ops, dtypes, qdq)


# --------------------------------------------------------------------------------------------
# Manifests, GPU naming, hashing
# --------------------------------------------------------------------------------------------


def gpu_slug(name: str, compute_capability: str) -> str:
    """File-name-safe GPU id: 'NVIDIA H100 80GB HBM3', '9.0' -> 'h100-80gb-hbm3-sm90'."""
    s = name.lower()
    s = re.sub(r"^nvidia\s+", "", s)
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-") or "gpu"
    return f"{s}-sm{compute_capability.replace('.', '')}"


def device_properties(gpu) -> dict:
    """What, beyond its name and compute capability, tells a GPU model apart in engine keys and
    manifests: SM count, memory in GiB (rounded) and, on Jetson, the board model. Every Jetson Orin
    module (Nano, NX, AGX) reports 'Orin', sm 8.7; an engine built on one is tuned for its SM count
    and memory. Only known values are included."""
    props = {"multiprocessors": int(getattr(gpu, "multiprocessors", 0) or 0),
             "memory_gib": round(int(getattr(gpu, "total_memory", 0) or 0) / 2**30),
             "board": str(getattr(gpu, "board", "") or "")}
    return {k: v for k, v in props.items() if v}


def manifest_path(engine_path) -> Path:
    """``model.h100-sm90.trt10.8.0.engine`` -> ``model.h100-sm90.trt10.8.0.manifest.json``."""
    p = Path(engine_path)
    return p.with_name((p.stem if p.suffix == ".engine" else p.name) + ".manifest.json")


def read_manifest(engine_path) -> dict | None:
    p = manifest_path(engine_path)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"engine manifest {str(p)!r} is unreadable ({e}); delete it and rebuild the engine") from e
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ModelError(f"{str(p)!r} is not an edge-deblur engine manifest; delete it and rebuild the engine")
    return data


def write_manifest(engine_path, manifest: dict) -> Path:
    p = manifest_path(engine_path)
    atomic_write_bytes(p, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return p


def onnx_metadata(path) -> dict:
    """The ONNX ``metadata_props`` (``edge_deblur.stride``, ``edge_deblur.precision``,
    ``edge_deblur.state_scale.<input>`` ...), or {} when ``onnx`` is not installed."""
    try:
        import onnx
    except ImportError:
        return {}
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelError(f"cannot read ONNX file {str(path)!r}: {e}; re-export it with edge-deblur export") from e
    return {p.key: p.value for p in model.metadata_props}


def export_info(path) -> tuple[dict, dict]:
    """(folder manifest written by edge-deblur export, this file's artifact entry or {})."""
    from ..runtime.manifest import artifact_entry, read_manifest as read_folder_manifest

    try:
        manifest = read_folder_manifest(Path(path).parent)
    except ModelError:
        return {}, {}
    return manifest, artifact_entry(manifest, Path(path).name) or {}


def onnx_stride(path, default: int = DEFAULT_STRIDE, metadata: dict | None = None) -> int:
    """The model stride from the export manifest beside the ONNX or the ONNX metadata, else
    ``default``."""
    manifest, _ = export_info(path)
    v = manifest.get("stride")
    if isinstance(v, int) and v > 0:
        return v
    md = onnx_metadata(path) if metadata is None else metadata
    v = md.get("edge_deblur.stride", "")
    return int(v) if str(v).isdigit() and int(v) > 0 else default


def state_scale(name: str, metadata: dict, manifest: dict, default: int) -> int:
    """Downscale of a recurrent state input relative to the image (state is N x C x H/s x W/s)."""
    v = metadata.get(f"edge_deblur.state_scale.{name}")
    if str(v).isdigit() and int(v) > 0:
        return int(v)
    for st in manifest.get("state") or []:
        if isinstance(st, dict) and st.get("input") == name and isinstance(st.get("scale"), int):
            return st["scale"]
    return default


def format_parser_errors(errors: Sequence, onnx_path, trt_version: str = "?") -> str:
    """One line per ONNX parser error (TensorRT IParserError objects, duck-typed)."""

    def call(obj, name, default=None):
        f = getattr(obj, name, None)
        try:
            return f() if callable(f) else (f if f is not None else default)
        except Exception:
            return default

    lines = []
    unsupported = False
    for i, e in enumerate(errors, 1):
        desc = str(call(e, "desc", e))
        code = str(call(e, "code", "")).split(".")[-1]
        node, name, op = call(e, "node", -1), call(e, "node_name", ""), call(e, "node_operator", "")
        if "UNSUPPORTED" in code.upper() or "unsupported" in desc.lower() or "no importer" in desc.lower():
            unsupported = True
        where = []
        if node is not None and node != -1:
            where.append(f"node {node}")
        if name:
            where.append(repr(name))
        if op:
            where.append(f"({op})")
        lines.append(f"  {i}. {' '.join(where) + ': ' if where else ''}{desc}{f' [{code}]' if code else ''}")
    head = f"TensorRT {trt_version} could not parse {str(onnx_path)!r} ({len(errors)} error{'s' * (len(errors) != 1)}):"
    if unsupported:
        tail = ("The graph uses ops this TensorRT cannot build: re-export with edge-deblur export (plain ops, "
                "a supported opset), or run the ONNX with --backend onnxruntime.")
    else:
        tail = "Re-export the ONNX with edge-deblur export, or run it with --backend onnxruntime."
    return "\n".join([head, *lines, tail])


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("edge-deblur")
    except Exception:
        return "unknown"


def default_timing_cache(gpu: str, trt_version: str) -> Path:
    from .engine_cache import default_cache_dir

    return default_cache_dir() / "timing" / f"{gpu}.trt{trt_version}.timing.cache"


# --------------------------------------------------------------------------------------------
# TensorRT: import, feature detection, build
# --------------------------------------------------------------------------------------------


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise DependencyError(
            f"TensorRT is not installed ({e}); install it with: {TRT_EXTRA_HINT}, "
            "or run the ONNX with --backend onnxruntime"
        ) from e
    return trt


def trt_version(trt) -> str:
    return str(getattr(trt, "__version__", "unknown"))


def strongly_typed_flags(trt) -> int:
    """Network creation flags: STRONGLY_TYPED where the enum has it (TensorRT 10 needs it; 11
    keeps it as an ignored, deprecated flag and is always strongly typed). EXPLICIT_BATCH is
    deprecated in 10 and gone in 11, so it is never set."""
    flags = 0
    st = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if st is not None:
        flags |= 1 << int(st)
    return flags


def trt_major(trt) -> int:
    """TensorRT's major version (10 for "10.3.0"); 0 where it cannot be read."""
    try:
        return int(str(getattr(trt, "__version__", "0")).split(".")[0])
    except ValueError:
        return 0


def weakly_typed_for_dla(trt, dla_core) -> bool:
    """A DLA build on TensorRT 10 makes a weakly typed network with the builder's FP16/INT8 flags:
    DLA runs FP16 and INT8 layers only, and on 10.x it takes them from those flags (NVIDIA's DLA
    examples: ``trtexec --useDLACore=0 --fp16 --allowGPUFallback``); strongly typed networks for
    DLA are new in TensorRT 11.4.1 (its release notes), so a strongly typed 10.x build could leave
    every layer on the GPU through the fallback. 11 is always strongly typed (no such flags)."""
    return dla_core is not None and 0 < trt_major(trt) < 11


def set_weak_precision_flags(config, trt, precision) -> list:
    """FP16 for an FP16 ONNX; INT8 and FP16 for a Q/DQ INT8 one (explicit quantization, FP16 for the
    layers between); the flag names set."""
    names = {"fp16": ["FP16"], "int8": ["INT8", "FP16"]}.get(precision, [])
    for n in names:
        config.set_flag(getattr(trt.BuilderFlag, n))
    return names


def set_dla_parser_flag(parser, trt) -> bool:
    """Let the ONNX parser reshape layers for DLA (``OnnxParserFlag.ADJUST_FOR_DLA``, in the headers
    from 10.16, used for DLA from 11.4.1); False where this TensorRT has no such flag."""
    flag = getattr(getattr(trt, "OnnxParserFlag", None), "ADJUST_FOR_DLA", None)
    if flag is None:
        return False
    parser.set_flag(flag)
    return True


def disable_tf32(config, trt) -> bool | None:
    """Clear ``BuilderFlag.TF32`` (on by default) so FP32 layers compute in FP32, as the ONNX
    says; return the flag as the builder will use it (None where TensorRT has no such flag)."""
    flag = getattr(getattr(trt, "BuilderFlag", None), "TF32", None)
    if flag is None:
        return None
    config.clear_flag(flag)
    return bool(config.get_flag(flag))


def set_profile_shape(opt_profile, name: str, p: ShapeProfile) -> None:
    """``IOptimizationProfile.set_shape`` raises a bare RuntimeError (or returns False) on shapes
    it rejects; say which input and which shapes instead."""
    try:
        ok = opt_profile.set_shape(name, p.min, p.opt, p.max)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ModelError(
            f"TensorRT rejected the profile {p} for input {name!r} ({e}); the shapes must have the input's rank "
            "and satisfy min <= opt <= max: fix --shapes, or re-export the model with edge-deblur export"
        ) from e
    if ok is False:
        raise ModelError(f"TensorRT rejected the profile {p} for input {name!r}; fix --shapes, or re-export the model")


class _Logger:
    """The process's one TensorRT logger, routed to Python logging (subclassing trt.ILogger lazily).

    TensorRT keeps a single global logger, the first one given to a Builder, Runtime or Refitter,
    and ignores later ones: every build and runtime shares this instance (as TensorRT's samples
    share ``TRT_LOGGER``), which lives as long as the process, so no runtime leaves TensorRT with a
    logger that was freed."""

    instance = None
    _lock = threading.Lock()

    @classmethod
    def make(cls, trt, verbose: bool = False):
        """The shared logger, created on first use; ``verbose`` sets whether it passes TensorRT's
        INFO/VERBOSE messages on (as DEBUG); the level is the process's, the last caller's."""
        with cls._lock:
            if not isinstance(cls.instance, trt.ILogger):  # first use (or another tensorrt module, in tests)
                class TrtLogger(trt.ILogger):
                    def __init__(self):
                        trt.ILogger.__init__(self)
                        self.verbose = False

                    def log(self, severity, msg):
                        S = trt.ILogger.Severity
                        if severity in (S.INTERNAL_ERROR, S.ERROR):
                            log.error("TensorRT: %s", msg)
                        elif severity == S.WARNING:
                            log.warning("TensorRT: %s", msg)
                        elif self.verbose:
                            log.debug("TensorRT: %s", msg)

                cls.instance = TrtLogger()
            cls.instance.verbose = bool(verbose)
            return cls.instance


def check_symmetric_int8(path) -> None:
    """Refuse a Q/DQ graph TensorRT cannot build: TensorRT's explicit quantization takes signed
    INT8 with zero points of 0 only. ``quantize --target cpu`` files (uint8, asymmetric
    activations for ONNX Runtime on x86) are refused with that reason. No-op without onnx."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelError(f"cannot read ONNX file {str(path)!r}: {e}; re-export it with edge-deblur export") from e
    md = {e.key: e.value for e in model.metadata_props}
    inits = {i.name: i for i in model.graph.initializer}
    bad = []
    for n in model.graph.node:
        if n.op_type not in QDQ_OPS:
            continue
        zp = inits.get(n.input[2]) if len(n.input) > 2 else None
        if zp is None:
            if n.op_type == "QuantizeLinear":
                bad.append((n.name, "uint8 (no zero point given)"))
            continue
        arr = numpy_helper.to_array(zp)
        if arr.dtype.name == "uint8" or arr.any():
            bad.append((n.name, f"{arr.dtype.name} zero point {arr.reshape(-1)[:1].tolist()[0]}"))
    if md.get("edge_deblur.int8_target") in ("cpu", "cpu-avx2") or bad:
        example = f" (e.g. {bad[0][0]}: {bad[0][1]})" if bad else ""
        raise ModelError(
            f"{str(path)!r} is an INT8 graph for the CPU: asymmetric activations{example}; TensorRT's explicit "
            "quantization takes signed symmetric INT8 only (zero points of 0). Build the TensorRT file instead: "
            "model.int8.onnx, made by 'edge-deblur quantize model.onnx --target tensorrt'"
        )


def check_build_args(onnx_path, engine_path, dla_core=None, opt_level=None, device: int = 0) -> None:
    """InputError for a bad DLA core, optimization level, device index or output path; needs no
    TensorRT (``edge-deblur build`` calls it before the engine cache, which does)."""
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path is not None else None
    if dla_core is not None and int(dla_core) < 0:
        raise InputError(f"--dla {dla_core}: a DLA core is numbered from 0 (Orin has cores 0 and 1); pass --dla 0 "
                         "or build for the GPU without --dla")
    if opt_level is not None and not 0 <= int(opt_level) <= 5:
        raise InputError(f"--opt-level {opt_level} is outside TensorRT's builder optimization levels 0-5; pass 0-5 "
                         "or leave it out for TensorRT's default (3)")
    if int(device) < 0:
        raise InputError(f"--device {device}: CUDA devices are numbered from 0; pass --device 0 (the first GPU) or another index")
    if engine_path is None:
        return
    if engine_path.is_dir():
        raise InputError(f"output {str(engine_path)!r} is a folder; pass an engine file path, "
                         f"e.g. -o {str(engine_path / (onnx_path.stem + '.engine'))!r}")
    if engine_path.resolve() == onnx_path.resolve():
        raise InputError(f"output {str(engine_path)!r} would overwrite the ONNX model; pass another -o "
                         f"(e.g. {onnx_path.stem}.engine) or leave -o out for the engine cache's path")


def build_engine(
    onnx_path,
    engine_path,
    shapes: str | ShapeProfile | None = None,
    *,
    workspace_mb: int | None = None,
    dla_core: int | None = None,
    gpu_fallback: bool = True,
    timing_cache=None,
    stride: int | None = None,
    state_downscale: int | None = None,
    opt_level: int | None = None,
    device: int = 0,
    verbose: bool = False,
) -> dict:
    """Build ``onnx_path`` into ``engine_path`` and write its manifest; return the manifest.

    Needs TensorRT and a GPU (untested on the CPU-only CI machine)."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    check_build_args(onnx_path, engine_path, dla_core, opt_level, device)
    if not onnx_path.is_file():
        raise ModelError(f"ONNX file not found: {str(onnx_path)!r}; export one with: edge-deblur export CHECKPOINT")
    check_symmetric_int8(onnx_path)  # before TensorRT: a CPU INT8 file is refused with the reason
    metadata = onnx_metadata(onnx_path)
    folder_manifest, _ = export_info(onnx_path)
    stride = stride or onnx_stride(onnx_path, metadata=metadata)
    profile = shapes if isinstance(shapes, ShapeProfile) else parse_shapes(shapes, stride)
    profile = dla_profile(profile, explicit=shapes_given(shapes), dla_core=dla_core)
    if workspace_mb is not None and workspace_mb <= 0:
        raise InputError(f"--workspace must be a positive number of MiB, got {workspace_mb}")
    trt = import_tensorrt()
    from ..runtime import cudart

    gpu = cudart.gpu_info(device)  # raises a clear BackendError without a GPU
    version = trt_version(trt)
    slug = gpu_slug(gpu.name, gpu.compute_capability)
    onnx_sha = sha256_file(onnx_path)
    precision = onnx_precision(onnx_path) or export_info(onnx_path)[1].get("precision") \
        or metadata.get("edge_deblur.precision")

    logger = _Logger.make(trt, verbose)
    t0 = time.perf_counter()
    builder = trt.Builder(logger)
    weak = weakly_typed_for_dla(trt, dla_core)
    network = builder.create_network(0 if weak else strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    adjust_for_dla = dla_core is not None and set_dla_parser_flag(parser, trt)
    ok = parser.parse_from_file(str(onnx_path))  # resolves external data next to the file
    if not ok:
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        raise ModelError(format_parser_errors(errors, onnx_path, version))
    if precision is None:
        precision = network_precision(network, trt)

    config = builder.create_builder_config()
    tf32 = disable_tf32(config, trt)
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if opt_level is not None and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = int(opt_level)
    detailed = getattr(getattr(trt, "ProfilingVerbosity", None), "DETAILED", None)
    if detailed is not None and hasattr(config, "profiling_verbosity"):
        config.profiling_verbosity = detailed  # layer parameters, not only names, for trtexec --dumpLayerInfo

    # one profile: the image input from --shapes, state_* inputs derived from it
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    image_inputs = [t.name for t in inputs if not t.name.startswith("state")]
    if len(image_inputs) != 1:
        raise ModelError(
            f"expected one image input (plus optional state_* inputs), the ONNX has {[t.name for t in inputs]}; "
            "export it with edge-deblur export"
        )
    opt_profile = builder.create_optimization_profile()
    io_profiles = {}
    for t in inputs:
        shape = tuple(t.shape)
        if t.name in image_inputs:
            check_profile_fits(profile, t.name, shape)
            p = profile
        else:
            p = derive_profile(shape, profile,
                               state_downscale or state_scale(t.name, metadata, folder_manifest, stride))
        set_profile_shape(opt_profile, t.name, p)
        io_profiles[t.name] = p.to_dict()
    if config.add_optimization_profile(opt_profile) < 0:
        raise ModelError(
            f"TensorRT {version} rejected the optimization profile {io_profiles} for {str(onnx_path)!r} (see the "
            "TensorRT error above); check --shapes against the model's inputs, or re-export it with edge-deblur export"
        )

    # timing cache, shared across builds on this GPU + TensorRT version
    cache_path = Path(timing_cache) if timing_cache else default_timing_cache(slug, version)
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    tcache = config.create_timing_cache(cache_bytes)
    if tcache is None or not config.set_timing_cache(tcache, False):  # (None: a blob it cannot read)
        log.warning("timing cache %s does not match this GPU/TensorRT; starting a new one", cache_path)
        tcache = config.create_timing_cache(b"")
        config.set_timing_cache(tcache, True)

    if dla_core is not None:
        n_dla = int(getattr(builder, "num_DLA_cores", 0) or 0)
        if n_dla == 0:
            raise BackendError(
                f"--dla {dla_core}: this machine has no DLA core visible to TensorRT {version} (Jetson AGX Orin and "
                "Orin NX have DLA, Orin Nano and data-center GPUs do not; TensorRT 10.8 to 11.4.0 have no DLA support "
                "on Jetson: 10.7 was the last 10.x with it, 11.4.1 has it on AGX Orin with JetPack 7.2.2); build without --dla"
            )
        if not 0 <= dla_core < n_dla:
            raise InputError(f"--dla {dla_core}: this machine has {n_dla} DLA core(s); use 0..{n_dla - 1}")
        if precision not in ("fp16", "int8"):
            log.warning("DLA runs FP16 and INT8 only; this %s model will run on the GPU wherever DLA cannot "
                        "(export with --fp16 or quantize to INT8 to use the DLA)", precision)
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        if weak:
            precision_flags = set_weak_precision_flags(config, trt, precision)
        if gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(
            f"TensorRT {version} failed to build {str(onnx_path)!r} for {gpu.name} (see the TensorRT errors above); "
            "try a larger --workspace, a narrower --shapes profile, or run the ONNX with --backend onnxruntime"
        )
    data = bytes(memoryview(serialized))
    atomic_write_bytes(engine_path, data)
    try:
        atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    except OSError as e:  # a read-only cache location must not fail the build
        log.warning("could not save the timing cache to %s: %s", cache_path, e)
    seconds = time.perf_counter() - t0

    io = {"inputs": [], "outputs": []}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        io["inputs"].append({"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype).split(".")[-1].lower()})
    for i in range(network.num_outputs):
        t = network.get_output(i)
        io["outputs"].append({"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype).split(".")[-1].lower()})

    manifest = make_manifest(
        engine_path=engine_path, engine_sha256=hashlib.sha256(data).hexdigest(), onnx_path=onnx_path,
        onnx_sha256=onnx_sha, precision=precision, trt_version=version, gpu_name=gpu.name,
        compute_capability=gpu.compute_capability, profile=profile, stride=stride, device=device_properties(gpu),
        build={
            "strongly_typed": not weak,
            "precision_flags": precision_flags if weak else None,   # DLA on TensorRT 10: weakly typed
            "tf32": tf32,
            "workspace_mb": workspace_mb,
            "dla_core": dla_core,
            "gpu_fallback": bool(gpu_fallback) if dla_core is not None else None,
            "dla_parser_adjust": adjust_for_dla if dla_core is not None else None,
            "timing_cache": str(cache_path),
            "builder_optimization_level": opt_level,
            "seconds": round(seconds, 2),
        },
        io=io, io_profiles=io_profiles,
    )
    write_manifest(engine_path, manifest)
    log.info("built %s (%s, %s, %s) in %.1f s", engine_path, precision, gpu.name, version, seconds)
    return manifest


def make_manifest(*, engine_path, engine_sha256, onnx_path, onnx_sha256, precision, trt_version, gpu_name,
                  compute_capability, profile: ShapeProfile, stride, build: dict, io: dict | None = None,
                  io_profiles: dict | None = None, device: dict | None = None) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        "engine": Path(engine_path).name,
        "engine_sha256": engine_sha256,
        "onnx": {"path": str(onnx_path), "sha256": onnx_sha256},
        "precision": precision,
        "tensorrt": trt_version,
        "gpu": {"name": gpu_name, "compute_capability": compute_capability,
                "slug": gpu_slug(gpu_name, compute_capability), **(device or {})},
        "profile": profile.to_dict(),
        "io_profiles": io_profiles or {},
        "stride": stride,
        "io": io or {},
        "build": build,
        "edge_deblur": package_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
