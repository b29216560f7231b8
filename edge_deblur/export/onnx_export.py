"""Checkpoint -> ONNX: the re-parameterized deploy graph with dynamic batch/height/width,
checked against PyTorch, with ``manifest.json`` beside it.

Contract of the exported graph: input ``input`` and output ``output``, NCHW float32 RGB in
[0, 1], H and W multiples of the model's stride (recorded in the manifest and in the ONNX
``metadata_props``). ``--fp16`` adds ``model.fp16.onnx``: FP16 weights and compute behind
Casts, so its inputs and outputs stay float32.
"""
from __future__ import annotations

import inspect
import io
import json
import logging
import math
import time
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelError
from ..runtime.manifest import (
    FORMAT,
    MANIFEST_NAME,
    atomic_write_bytes,
    atomic_write_json,
    read_manifest,
    sha256_file,
    tool_versions,
)

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-4
FP16_TOLERANCE = 2e-2
INPUT_NAME, OUTPUT_NAME = "input", "output"
REFERENCE_SIZE = (1280, 720)  # (width, height)
EXPORTERS = ("torchscript", "dynamo")


def resolve_output(output) -> Path:
    """``-o`` is a ``.onnx`` file or a folder (then ``<folder>/model.onnx``)."""
    p = Path(output)
    if p.suffix.lower() == ".onnx":
        return p
    if p.exists() and not p.is_dir():
        raise ModelError(f"output {str(p)!r} exists and is not a folder; pass a folder or a path ending in .onnx")
    return p / "model.onnx"


def fp16_path(onnx_path) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.name[: -len(".onnx")] + ".fp16.onnx")


STATE_IN, STATE_OUT = "state_in", "state_out"


def _is_recurrent(model) -> bool:
    return bool(getattr(model, "recurrent", False))


def _names(model):
    if _is_recurrent(model):
        return [INPUT_NAME, STATE_IN], [OUTPUT_NAME, STATE_OUT]
    return [INPUT_NAME], [OUTPUT_NAME]


def _torch_to_onnx_bytes(model, stride: int, opset: int, exporter: str) -> bytes:
    import torch

    recurrent = _is_recurrent(model)
    example = (torch.rand(1, 3, 2 * stride, 3 * stride),)
    if recurrent:
        example += (torch.zeros(model.state_shape(2 * stride, 3 * stride, 1)),)
    in_names, out_names = _names(model)
    axes = {0: "batch", 2: "height", 3: "width"}
    state_axes = {0: "batch", 2: "state_height", 3: "state_width"}
    dyn = {n: (state_axes if n.startswith("state") else axes) for n in in_names + out_names}
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        if exporter == "torchscript":
            torch.onnx.export(
                model,
                example,
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=in_names,
                output_names=out_names,
                dynamic_axes=dyn,
                do_constant_folding=True,
            )
            return buf.getvalue()
        from torch.export import Dim

        b = Dim("batch", min=1, max=1024)
        h, w = Dim("h", min=1, max=8192 // stride), Dim("w", min=1, max=8192 // stride)
        args = list(inspect.signature(model.forward).parameters)
        shapes = {args[0]: {0: b, 2: stride * h, 3: stride * w}}
        if recurrent:  # the state is at 1/state_scale of the padded frame (edgenet_rnn: 1/stride)
            k = stride // int(getattr(model, "state_scale", stride))
            shapes[args[1]] = {0: b, 2: k * h, 3: k * w}
        prog = torch.onnx.export(
            model,
            example,
            dynamo=True,
            opset_version=opset,
            input_names=in_names,
            output_names=out_names,
            dynamic_shapes=shapes,
            verbose=False,
        )
        prog.save(buf)
    import onnx

    m = onnx.load_from_string(buf.getvalue())
    for vi in list(m.graph.input) + list(m.graph.output):  # name the free dims as the TorchScript path does
        names = dyn.get(vi.name, axes)
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if i in names and not d.HasField("dim_value"):
                d.dim_param = names[i]
    return m.SerializeToString()


def _set_metadata(model, items: dict):
    del model.metadata_props[:]
    for k, v in items.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v if isinstance(v, str) else json.dumps(v)


def parity_inputs(stride: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Random tensors at stride multiples, a batch of two, and odd-sized frames padded to the
    stride by the runtime's own preprocessing."""
    from ..runtime.preprocess import frame_to_tensor

    rng = np.random.default_rng(seed)
    s = stride
    cases = [
        (f"random 1x3x{4 * s}x{6 * s}", rng.random((1, 3, 4 * s, 6 * s), dtype=np.float32)),
        (f"random 2x3x{2 * s}x{3 * s}", rng.random((2, 3, 2 * s, 3 * s), dtype=np.float32)),
    ]
    for h, w in ((3 * s + 5, 5 * s - 3), (2 * s + 1, s + 7), (37, 53)):
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        t, _ = frame_to_tensor(frame, s)
        cases.append((f"odd frame {w}x{h} padded to {t.shape[3]}x{t.shape[2]}", t))
    return cases


def _feeds(x: np.ndarray, state_shape, rng) -> dict:
    feeds = {INPUT_NAME: x}
    if state_shape is not None:
        n, _, h, w = x.shape
        feeds[STATE_IN] = rng.standard_normal(state_shape(h, w, n), dtype=np.float32)
    return feeds


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    if not np.isfinite(b).all():
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def check_parity(torch_model, onnx_bytes: bytes, stride: int, tolerance: float = PARITY_TOLERANCE, seed: int = 0) -> dict:
    """Run ``torch_model`` and the ONNX graph (ONNX Runtime, CPU) on the same inputs; raise
    ModelError when any output (image, and recurrent state) differs by more than ``tolerance``."""
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
    state_shape = torch_model.state_shape if _is_recurrent(torch_model) else None
    _, out_names = _names(torch_model)
    rng = np.random.default_rng(seed + 1)
    worst, cases = 0.0, []
    for name, x in parity_inputs(stride, seed):
        feeds = _feeds(x, state_shape, rng)
        with torch.no_grad():
            ref = torch_model(*[torch.from_numpy(v.copy()) for v in feeds.values()])
        ref = [r.float().numpy() for r in (ref if isinstance(ref, (tuple, list)) else (ref,))]
        got = sess.run(out_names, feeds)
        d = 0.0
        for oname, a, b in zip(out_names, ref, got):
            if a.shape != b.shape:
                raise ModelError(f"ONNX parity failed on {name}: {oname} shape {b.shape} vs PyTorch {a.shape}")
            d = max(d, _max_diff(a, b))
        cases.append({"input": name, "max_abs_diff": d})
        worst = max(worst, d)
    result = {"max_abs_diff": worst, "tolerance": tolerance, "reference": "pytorch", "cases": cases}
    if not worst <= tolerance:
        bad = max(cases, key=lambda c: c["max_abs_diff"])
        raise ModelError(
            f"ONNX parity check failed: max abs difference {worst:.3g} against PyTorch exceeds {tolerance:g} "
            f"(worst on {bad['input']}); the exported graph does not reproduce the checkpoint. Try another "
            "--opset or --exporter, or raise --tolerance if the difference is expected"
        )
    return result


def check_parity_onnx(ref_bytes: bytes, onnx_bytes: bytes, stride: int, tolerance: float, seed: int = 0,
                      state_shape=None) -> dict:
    """The same check between two ONNX graphs (FP16 against FP32)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    ref = ort.InferenceSession(ref_bytes, so, providers=["CPUExecutionProvider"])
    sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in ref.get_outputs()]
    rng = np.random.default_rng(seed + 1)
    worst = 0.0
    for name, x in parity_inputs(stride, seed):
        feeds = _feeds(x, state_shape, rng)
        for a, b in zip(ref.run(out_names, feeds), sess.run(out_names, feeds)):
            if b.dtype != np.float32 or b.shape != a.shape:
                raise ModelError(f"FP16 model returns {b.dtype} {b.shape}, expected float32 {a.shape}")
            worst = max(worst, _max_diff(a, b))
    if not worst <= tolerance:
        raise ModelError(
            f"FP16 model differs from the FP32 model by {worst:.3g} (max abs) > {tolerance:g}; "
            "the model's activations do not fit FP16 here: ship the FP32 or INT8 model, or raise --fp16-tolerance"
        )
    return {"max_abs_diff": worst, "tolerance": tolerance, "reference": "fp32 onnx"}


def _check_same_model(out: Path, spec: dict, ckpt_sha: str) -> None:
    """Raise ModelError when ``out``'s folder holds a manifest for another model: another
    architecture, another source checkpoint, or another main ONNX file that is still there.
    Writing there would replace the whole manifest and drop the folder's other artifacts."""
    folder = out.parent
    if not (folder / MANIFEST_NAME).is_file():
        return
    old = read_manifest(folder)
    problems = []
    old_arch, new_arch = old.get("arch"), json.loads(json.dumps(spec))
    if isinstance(old_arch, dict) and old_arch != new_arch:
        diff = [f"{k} {old_arch.get(k)!r} -> {new_arch.get(k)!r}" for k in sorted(set(old_arch) | set(new_arch))
                if old_arch.get(k) != new_arch.get(k)]
        problems.append(f"another architecture: {', '.join(diff)}")
    old_sha = (old.get("checkpoint") or {}).get("sha256")
    if old_sha and old_sha != ckpt_sha:
        was = (old.get("checkpoint") or {}).get("file") or "another checkpoint"
        problems.append(f"made from checkpoint {was!r} (sha256 {old_sha[:12]}...), not from this one "
                        f"({ckpt_sha[:12]}...)")
    old_onnx = old.get("onnx")
    if old_onnx and old_onnx != out.name and (folder / old_onnx).is_file():
        problems.append(f"another main ONNX file: {old_onnx!r}, not {out.name!r}")
    if problems:
        others = sorted((set(old.get("artifacts") or {}) | ({old_onnx} if old_onnx else set())) - {out.name})
        dropped = f" and drop {others} from it" if others else ""
        raise ModelError(
            f"{str(folder / MANIFEST_NAME)!r} describes another export ({'; '.join(problems)}); exporting "
            f"{out.name!r} there would replace that manifest{dropped}. Export into a new folder "
            f"(e.g. -o {str(folder.parent / (folder.resolve().name + '_new'))}), or pass --force to replace "
            "the folder's model")


def export_onnx(
    checkpoint,
    output,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    tolerance: float = PARITY_TOLERANCE,
    fp16_tolerance: float = FP16_TOLERANCE,
    exporter: str = "torchscript",
    default: bool = False,
    seed: int = 0,
    force: bool = False,
) -> dict:
    """Export ``checkpoint`` (.safetensors) to ``output`` (a .onnx path or a folder); returns the
    manifest written beside it. Nothing is written unless every check passes.

    A folder's manifest describes one model: exporting into a folder whose manifest is for another
    architecture, another checkpoint or another main ONNX file is refused unless ``force`` (which
    replaces the manifest); exporting the same model again updates its entry."""
    import onnx
    import torch

    from ..models.checkpoint import load_model
    from ..models.profile import count_macs, count_params

    if opset < 17:
        raise ModelError(f"opset {opset} is too old; use 17 or newer")
    for flag, v in (("--tolerance", tolerance), ("--fp16-tolerance", fp16_tolerance)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise InputError(f"{flag} must be a finite number >= 0 (the largest allowed output difference), got {v!r}")
    if exporter not in EXPORTERS:
        raise ModelError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    ckpt = Path(checkpoint)
    out = resolve_output(output)
    folder_name = out.parent.resolve().name  # "m.onnx" alone: the current folder's name, not ""
    if default and not folder_name:
        raise ModelError(f"--default with {str(out)!r}: the model folder {str(out.parent.resolve())!r} has no name to "
                         "record in DEFAULT; export into a named folder, e.g. -o export/my_model")
    ref = load_model(ckpt, deploy=False)  # raises ModelError for missing/corrupt checkpoints
    from ..models import to_deploy

    model = to_deploy(ref).float().eval()
    stride = int(getattr(model, "stride", 1))
    spec = dict(getattr(model, "spec", {}))
    ckpt_sha = sha256_file(ckpt)
    if not force:
        _check_same_model(out, spec, ckpt_sha)  # before the (slow) export: nothing is written on refusal
    torch.manual_seed(seed)

    w, h = REFERENCE_SIZE
    hp, wp = -(-h // stride) * stride, -(-w // stride) * stride
    recurrent = _is_recurrent(model)
    params = count_params(model)

    try:
        raw = _torch_to_onnx_bytes(model, stride, opset, exporter)
    except Exception as e:  # the exporters raise many types
        raise ModelError(f"torch.onnx.export ({exporter}) failed for {str(ckpt)!r}: {e}") from e
    m = onnx.load_from_string(raw)
    _set_metadata(
        m,
        {
            "edge_deblur.format": FORMAT,
            "edge_deblur.stride": str(stride),
            "edge_deblur.precision": "fp32",
            "edge_deblur.layout": "NCHW",
            "edge_deblur.range": "[0, 1]",
            "edge_deblur.colour": "RGB",
            "edge_deblur.arch": spec,
            "edge_deblur.kind": "recurrent" if recurrent else "image",
            **({f"edge_deblur.state_scale.{STATE_IN}": str(getattr(model, "state_scale", stride))} if recurrent else {}),
        },
    )
    if recurrent:  # count_macs feeds the model one tensor; count the graph instead
        from ..runtime.onnx_info import graph_macs

        macs = graph_macs(m, hp, wp)
    else:
        macs = count_macs(model, REFERENCE_SIZE)
    macs_per_pixel = macs / (hp * wp)
    e = m.metadata_props.add()
    e.key, e.value = "edge_deblur.macs_per_pixel", repr(macs_per_pixel)
    m.producer_name = "edge-deblur"
    try:
        onnx.checker.check_model(m, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"the exported graph fails onnx.checker: {e}") from e
    data = m.SerializeToString()
    parity = check_parity(ref, data, stride, tolerance, seed)

    fp16_data = fp16_parity = None
    if fp16:
        from .fp16 import convert_to_fp16

        m16 = convert_to_fp16(m)
        md = {e.key: e.value for e in m16.metadata_props}
        md["edge_deblur.precision"] = "fp16"
        _set_metadata(m16, md)
        fp16_data = m16.SerializeToString()
        fp16_parity = check_parity_onnx(data, fp16_data, stride, fp16_tolerance, seed,
                                        model.state_shape if recurrent else None)

    # all checks passed: write files, then the manifest
    atomic_write_bytes(out, data)
    # the checkpoint travels with its ONNX (as <name>.safetensors), so that the folder alone can be
    # verified, re-quantized or fine-tuned; already there (the shipped folders' own file): left as is
    ckpt_in = out.with_suffix(".safetensors")
    if ckpt.resolve() != ckpt_in.resolve() and not (ckpt_in.is_file() and sha256_file(ckpt_in) == ckpt_sha):
        atomic_write_bytes(ckpt_in, ckpt.read_bytes())
    onnx_sha = sha256_file(out)
    meta = getattr(ref, "meta", {}) or {}
    tensor = {"layout": "NCHW", "shape": ["batch", 3, "height", "width"], "dtype": "float32", "range": [0.0, 1.0], "colour": "RGB"}
    versions = tool_versions(torch="torch")
    entry = {
        "sha256": onnx_sha,
        "precision": "fp32",
        "opset": opset,
        "exporter": exporter,
        "parity": parity,
    }
    old = read_manifest(out.parent) if (out.parent / MANIFEST_NAME).is_file() else {}
    manifest = {
        "format": FORMAT,
        "name": folder_name,
        "default": bool(default or old.get("default", False)),
        "arch": spec,
        "stride": stride,
        "input": {"name": INPUT_NAME, **tensor},
        "output": {"name": OUTPUT_NAME, **tensor},
        "layout": "NCHW",
        "range": [0.0, 1.0],
        "colour": "RGB",
        "dtype": "float32",
        "onnx": out.name,
        "onnx_sha256": onnx_sha,
        "opset": opset,
        "precision": "fp32",
        "parity": parity,
        "checkpoint": {"file": ckpt_in.name, "sha256": ckpt_sha},
        "params": params,
        "macs_per_pixel": macs_per_pixel,
        "gmacs_1280x720": macs / 1e9,
        "model_meta": {
            "iterations": meta.get("iterations", meta.get("iteration")),
            "metrics": meta.get("metrics"),
            **{k: v for k, v in meta.items() if k not in ("iterations", "iteration", "metrics")},
        },
        "kind": "recurrent" if recurrent else "image",
        "recurrent": recurrent,
        **({"state": [{"input": STATE_IN, "output": STATE_OUT, "channels": int(model.state_channels),
                       "scale": getattr(model, "state_scale", stride), "layout": "NCHW", "init": "zeros"}]}
           if recurrent else {}),
        "tools": versions,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "artifacts": {out.name: entry},
    }
    # keep entries of files derived from this very graph (same bytes re-exported); drop stale ones
    for name, e in (old.get("artifacts") or {}).items():
        if name != out.name and e.get("source_sha256") == onnx_sha and (out.parent / name).is_file():
            manifest["artifacts"][name] = e
        elif name != out.name and not (fp16_data is not None and name == fp16_path(out).name):
            log.info("dropping %s from the manifest: it was made from another model.onnx; rebuild it", name)
    if fp16_data is not None:
        p16 = fp16_path(out)
        atomic_write_bytes(p16, fp16_data)
        manifest["artifacts"][p16.name] = {
            "sha256": sha256_file(p16),
            "precision": "fp16",
            "io_dtype": "float32",
            "opset": opset,
            "source": out.name,
            "source_sha256": onnx_sha,
            "parity": fp16_parity,
        }
    atomic_write_json(out.parent / MANIFEST_NAME, manifest)
    if default:
        atomic_write_bytes(out.parent.resolve().parent / "DEFAULT", (folder_name + "\n").encode())
    return manifest
