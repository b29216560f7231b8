"""The Q/DQ graph of each INT8 target, made by ONNX Runtime's ``quantize_static`` (QDQ format)
from a calibration table.

Three targets (``TARGETS``):

``tensorrt`` (``model.int8.onnx``), the form TensorRT's explicit quantization needs:
  signed INT8 everywhere, symmetric (every zero point 0, TensorRT supports nothing else); weights
  per channel, activations per tensor; Q/DQ pairs on the inputs of the residual Adds (TensorRT
  keeps the skip connections in INT8); ReLUs kept; biases float (TensorRT fuses them and does not
  take INT32 DequantizeLinear inputs); by default the first conv (it reads the image and learns
  near-zero-sum filters whose INT8 rounding leaks the image's DC level into every feature) and the
  final global-residual Add stay float.

``cpu`` (``model.int8-cpu.onnx``), the form ONNX Runtime's x86 kernels run fastest:
  unsigned, asymmetric per-tensor activations (uint8, zero point from the range: ReLU outputs use
  all 256 levels and the ReLU folds into the convolution), signed symmetric per-channel weights
  (int8: MLAS' u8s8 kernels use VNNI/AMX dot products), INT32 biases, everything quantized; the
  float graph is first rewritten by :mod:`.cpu_layout` (exact in float) so that ONNX Runtime's
  channels-last INT8 convolutions are not interrupted by layout transposes, and so that the
  12-channel output conv gets the 16 output channels MLAS' indirect INT8 convolution needs (a
  recurrent model's state input gets its own fold where it is unshuffled too). Which nodes stay
  float and which rewrites apply were measured: ``benchmarks/cpu_int8_layouts.py`` and
  docs/BENCHMARKS.md.

``cpu-avx2`` (``model.int8-avx2.onnx``), the ``cpu`` layout with weights on 7 bits (int8 in
  [-64, 64], ONNX Runtime's ``reduce_range``), for x86 CPUs without INT8 dot products (AVX2,
  AVX-512 without VNNI): there MLAS' u8s8 kernels add pairs of u8 x s8 products into 16 bits
  (``vpmaddubsw``), which saturates with 8-bit weights (255 x 127 x 2 > 32767) and never with 7-bit
  ones. Session 17, edgenet M5 on an AVX2 EPYC: the ``cpu`` file there lost 0.11 dB of mean gain
  against FP32 (27 dB from FP32's output on the demo clip), the ``cpu-avx2`` file ran at about 2x the
  FP32 speed (1.98x, ``benchmarks/cpu_int8_exact.py``) within 0.01 dB of FP32 on the real pairs (its outputs equal an exact float emulation
  of its Q/DQ graph), at the cost of one bit of weight precision on CPUs that have dot products.
  Its first conv and output Add stay float by default: with 7-bit weights they cost 0.08 dB on the
  demo clip quantized, and nothing in speed float (2.04x FP32 either way; with only the first conv
  float, ONNX Runtime's optimized AVX2 graph drifted to 26 dB from FP32 while the same graph
  unoptimized stayed at 44 dB, so the two ends go together).

numpy, onnx and onnxruntime only: no torch.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import InputError
from .calib_table import _method_enum, _quiet, _to_tensors_data


@dataclass(frozen=True)
class Target:
    name: str
    suffix: str                      # model<suffix>.onnx
    activation: str                  # "int8" (signed) or "uint8" (unsigned)
    symmetric_activations: bool
    quantize_bias: bool
    keep_relu: bool
    description: str
    rewrites: tuple = field(default=())
    weight_bits: int = 8             # 7: ONNX Runtime's reduce_range (weights in [-64, 64])
    keep_ends_float: bool = False    # default for the first conv and the output Add (quantize --keep-float)


TARGETS = {
    "tensorrt": Target("tensorrt", ".int8", "int8", True, False, True,
                       "int8 symmetric activations per tensor, int8 symmetric weights per channel, float bias",
                       keep_ends_float=True),
    "cpu": Target("cpu", ".int8-cpu", "uint8", False, True, False,
                  "uint8 asymmetric activations per tensor, int8 symmetric weights per channel, int32 bias",
                  rewrites=("fold_input_space_to_depth", "depth_to_space_channels_last", "pad_conv_outputs")),
}
TARGETS["cpu-avx2"] = replace(TARGETS["cpu"], name="cpu-avx2", suffix=".int8-avx2", weight_bits=7, keep_ends_float=True,
                              description="uint8 asymmetric activations per tensor, int8 symmetric 7-bit weights per "
                                          "channel, int32 bias, first conv and output Add float")


def weights_desc(t: Target) -> str:
    """How a target's weights are quantized, as the graph's metadata and the recipe say it."""
    return "int8-symmetric-per-channel" + ("-7bit" if t.weight_bits == 7 else "")


def get_target(name) -> Target:
    """A target by name (``tensorrt``, ``cpu``, ``cpu-avx2`` and aliases), or a :class:`Target` as is (variants
    for measurements, e.g. ``benchmarks/cpu_int8_layouts.py``)."""
    if isinstance(name, Target):
        return name
    key = str(name).strip().lower()
    if key in ("trt", "gpu", "jetson"):
        key = "tensorrt"
    if key in ("x86", "onnxruntime", "ort"):
        key = "cpu"
    if key in ("avx2", "cpu-7bit", "x86-avx2"):
        key = "cpu-avx2"
    if key not in TARGETS:
        import difflib

        close = difflib.get_close_matches(key, list(TARGETS), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"--target {name!r} is not a quantization target{hint}; targets: "
                         "tensorrt (symmetric INT8 for TensorRT engines, model.int8.onnx), cpu (uint8 activations "
                         "for ONNX Runtime on x86 with VNNI/AMX, model.int8-cpu.onnx) or cpu-avx2 (the same with "
                         "7-bit weights, for x86 CPUs without VNNI, model.int8-avx2.onnx)")
    return TARGETS[key]


def output_residual_adds(model_path) -> list[str]:
    """Names of Add nodes that produce a graph output and take the graph input directly (the
    global residual ``network(x) + x``)."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    ins = {i.name for i in m.graph.input if i.name not in inits}
    outs = {o.name for o in m.graph.output}
    return [n.name for n in m.graph.node if n.op_type == "Add" and set(n.output) & outs and set(n.input) & ins]


LAYOUT_OPS = {"Unsqueeze", "Squeeze", "Reshape", "Transpose", "SpaceToDepth", "DepthToSpace", "Identity"}


def input_path_nodes(model_path) -> list[str]:
    """The nodes from the graph input through pure layout ops (PixelUnshuffle's Reshape/Transpose)
    up to and including the first Conv(s): the layer that reads the image itself."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    consumers: dict = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    frontier = [i.name for i in m.graph.input if i.name not in inits]
    out, seen = [], set()
    while frontier:
        nxt = []
        for t in frontier:
            for n in consumers.get(t, []):
                if n.name in seen:
                    continue
                if n.op_type in LAYOUT_OPS:
                    seen.add(n.name)
                    out.append(n.name)
                    nxt.extend(n.output)
                elif n.op_type == "Conv":
                    seen.add(n.name)
                    out.append(n.name)
        frontier = nxt
    convs = [n.name for n in m.graph.node if n.op_type == "Conv" and n.name in seen]
    return out if convs else []  # no conv behind layout ops: nothing worth keeping float


PERMUTE_OPS = {"DepthToSpace", "SpaceToDepth", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity"}


def tie_ranges(model_path, ranges: dict) -> list[str]:
    """Make the calibrated ranges agree across ops that only move values (in place on
    ``ranges``; returns the tensors changed). A pure permutation (DepthToSpace, Transpose,
    Reshape, ...) gets its input's range on its output, and a tensor read only by a Slice gets
    the range of what the Slice keeps. Then input and output share one scale and zero point, and
    ONNX Runtime runs the op on the 8-bit tensor instead of dequantizing, moving floats and
    quantizing again. A percentile range can differ across such an op (the zero channels that
    :func:`.cpu_layout.pad_conv_channels` adds shift the percentile of the padded tensor), which
    left the final PixelShuffle of the CPU artifact in float."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    consumers: dict = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    changed = []
    for n in m.graph.node:  # backward: what a Slice drops does not widen its input's range
        x = n.input[0] if n.input else None
        if n.op_type == "Slice" and x in ranges and n.output[0] in ranges and len(consumers.get(x, [])) == 1:
            if tuple(ranges[x]) != tuple(ranges[n.output[0]]):
                ranges[x] = ranges[n.output[0]]
                changed.append(x)
    for n in m.graph.node:  # forward, in graph (topological) order
        x = n.input[0] if n.input else None
        if n.op_type in PERMUTE_OPS | {"Slice"} and x in ranges and n.output[0] in ranges:
            if tuple(ranges[n.output[0]]) != tuple(ranges[x]):
                ranges[n.output[0]] = ranges[x]
                changed.append(n.output[0])
    return changed


def name_nodes(model_path, dst) -> Path:
    """Copy of the model with every node named (ORT needs names for nodes_to_exclude)."""
    import onnx

    m = onnx.load(str(model_path))
    seen = set()
    for i, n in enumerate(m.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)
    onnx.save(m, str(dst))
    return Path(dst)




def extra_options(target: Target | str = "tensorrt") -> dict:
    """ONNX Runtime quantize_static options of a target."""
    t = get_target(target) if isinstance(target, str) else target
    return {
        "ActivationSymmetric": t.symmetric_activations,
        "WeightSymmetric": True,
        "QDQKeepRemovableActivations": t.keep_relu,
        "QuantizeBias": t.quantize_bias,
        "ForceQuantizeNoInputCheck": True,
        "DedicatedQDQPair": False,
    }


def quantize_with_ranges(src: Path, dst: Path, ranges: dict, method: str, exclude: list[str], target: Target | str = "tensorrt"):
    """``src`` (float, every node named) -> ``dst`` (QDQ) with the activation ranges ``ranges``.
    ``quantize_static`` writes into a temporary folder; ``dst`` is replaced (rename) only when it
    returns, so a failure leaves no partial or invalid file at ``dst``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    t = get_target(target) if isinstance(target, str) else target
    act = QuantType.QUInt8 if t.activation == "uint8" else QuantType.QInt8
    dst = Path(dst)
    with tempfile.TemporaryDirectory(prefix="edge_deblur_q.") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(_to_tensors_data(ranges, method), cache)
        written = Path(tmp) / "quantized.onnx"
        with _quiet():
            quantize_static(
                str(src), str(written), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                per_channel=True, reduce_range=t.weight_bits == 7, activation_type=act, weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude), calibrate_method=_method_enum(method),
                extra_options=extra_options(t), calibration_cache_path=str(cache),
            )
        from ..runtime.manifest import atomic_write_bytes

        atomic_write_bytes(dst, written.read_bytes())  # temp file beside dst + rename


def finish_graph(dst: Path, metadata: dict, recipe_path: str | None, target: Target | str = "tensorrt"):
    """Set edge-deblur metadata on the quantized graph (precision, target, layout) and run onnx.checker."""
    import onnx

    t = get_target(target) if isinstance(target, str) else target
    m = onnx.load(str(dst))
    md = dict(metadata)
    md["edge_deblur.precision"] = "int8"
    md["edge_deblur.quantization"] = (
        "qdq-int8-symmetric;weights=per-channel;activations=per-tensor" if t.name == "tensorrt"
        else f"qdq-uint8-asymmetric;weights={weights_desc(t)};activations=per-tensor")
    md["edge_deblur.int8_target"] = t.name
    if recipe_path:
        md["edge_deblur.calibration"] = recipe_path
    del m.metadata_props[:]
    for k, v in sorted(md.items()):
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(m)
    from ..runtime.manifest import atomic_write_bytes

    atomic_write_bytes(dst, m.SerializeToString())
