"""What an artifact is, read from its file without running it and without torch: an ONNX file, a
``.safetensors`` checkpoint (its header), a TensorRT engine (its sidecar manifest), an exported
model folder or its ``manifest.json``. ``edge-deblur info`` prints these; for a checkpoint it adds
the deployed parameter count when torch is installed.

Parameter counts say which form they count: *as trained* (a checkpoint: RepConv training
branches included) or *deployed* (the branches folded into plain convs, as every ONNX file and
engine holds them). A file that cannot be read raises ModelError naming the file and the way out.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from ..errors import ModelError
from .manifest import MANIFEST_NAME, artifact_entry, read_manifest, sha256_file

KINDS = ".onnx (ONNX model), .safetensors (checkpoint), .engine (TensorRT engine), a model folder or its manifest.json"

_ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 3: "int8", 2: "uint8", 6: "int32", 7: "int64"}


def artifact_kind(path: Path) -> str | None:
    """'onnx' | 'checkpoint' | 'engine' | 'folder' | None (not an artifact by its name)."""
    if path.is_dir():
        return "folder"
    s = path.suffix.lower()
    if s == ".onnx":
        return "onnx"
    if s == ".safetensors":
        return "checkpoint"
    if s in (".engine", ".plan", ".trt"):
        return "engine"
    if path.name == MANIFEST_NAME or path.name.endswith(".manifest.json"):
        return "engine" if path.name.endswith(".manifest.json") else "folder"
    return None


def describe(path, size: tuple[int, int] = (1280, 720)) -> dict:
    """A JSON-able description of the artifact at ``path``; ``size`` = (width, height) for MACs."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{str(p)!r} does not exist; pass an {KINDS}")
    kind = artifact_kind(p)
    if kind == "onnx":
        return describe_onnx(p, size)
    if kind == "checkpoint":
        return describe_checkpoint(p)
    if kind == "engine":
        if p.name.endswith(".manifest.json"):
            p = p.with_name(p.name[: -len(".manifest.json")] + ".engine")
        return describe_engine(p)
    if kind == "folder":
        return describe_folder(p if p.is_dir() else p.parent, size)
    raise ModelError(f"{str(p)!r} is not a model artifact edge-deblur knows; pass an {KINDS}")


# ---- ONNX ---------------------------------------------------------------------------------------
def _load_onnx(p: Path):
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - a base dependency
        from ..errors import DependencyError

        raise DependencyError(f"reading ONNX files needs the 'onnx' package ({e}); pip install onnx") from e
    try:
        m = onnx.load(str(p))
    except Exception as e:  # protobuf DecodeError, OSError, external-data errors
        raise ModelError(f"cannot read {str(p)!r} as an ONNX model ({type(e).__name__}: {e}); the file is "
                         "truncated, damaged or not ONNX: re-export it (edge-deblur export) or restore it") from None
    if not m.graph.node or not m.graph.input:
        raise ModelError(f"{str(p)!r} holds no ONNX graph (empty or not ONNX); re-export it (edge-deblur export)")
    return m


def _dims(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def onnx_params(m) -> int:
    """Weights in the graph (deployed form): every initializer except the scales and zero points
    of QuantizeLinear/DequantizeLinear nodes."""
    import numpy as np

    qdq_aux = set()
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            qdq_aux.update(n.input[1:])
    return int(sum(int(np.prod(i.dims)) for i in m.graph.initializer if i.name not in qdq_aux))


def onnx_precision_of(m) -> str:
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for n in m.graph.node):
        return "int8"
    types = {i.data_type for i in m.graph.initializer}
    if 10 in types:
        return "fp16"
    if 16 in types:
        return "bf16"
    return "fp32"


def _manifest_check(p: Path) -> dict:
    """The artifact's entry in the manifest beside it, its checksum checked."""
    manifest = read_manifest(p.parent)
    if not manifest:
        return {"status": "no manifest.json beside the file"}
    entry = artifact_entry(manifest, p.name)
    if entry is None:
        return {"status": f"not listed in {MANIFEST_NAME}"}
    want = entry.get("sha256")
    if want and sha256_file(p) != want:
        raise ModelError(
            f"{str(p)!r} does not match its entry in {str(p.parent / MANIFEST_NAME)!r} (sha256 differs): the file "
            "was changed, truncated or replaced after export; re-export it or restore the original")
    return {"status": "listed, checksum matches" if want else "listed (no checksum)", "entry": entry,
            "name": manifest.get("name")}


def describe_onnx(p: Path, size=(1280, 720)) -> dict:
    from .onnx_info import graph_macs

    check = _manifest_check(p)  # first: "changed after export" says more than a parse error
    m = _load_onnx(p)
    meta = {e.key: e.value for e in m.metadata_props}
    stride = int(meta.get("edge_deblur.stride", 0) or (check.get("entry") or {}).get("stride") or 1)
    arch = meta.get("edge_deblur.arch")
    try:
        arch = json.loads(arch) if arch else None
    except json.JSONDecodeError:
        pass
    inits = {i.name for i in m.graph.initializer}
    out = {
        "kind": "onnx",
        "path": str(p),
        "bytes": p.stat().st_size,
        "precision": meta.get("edge_deblur.precision") or onnx_precision_of(m),
        "opset": max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "producer": f"{m.producer_name} {m.producer_version}".strip() or None,
        "inputs": [{"name": i.name, "shape": _dims(i), "dtype": _ONNX_DTYPES.get(i.type.tensor_type.elem_type, "?")}
                   for i in m.graph.input if i.name not in inits],
        "outputs": [{"name": o.name, "shape": _dims(o), "dtype": _ONNX_DTYPES.get(o.type.tensor_type.elem_type, "?")}
                    for o in m.graph.output],
        "nodes": len(m.graph.node),
        "params_deployed": onnx_params(m),
        "stride": stride,
        "arch": arch,
        "manifest": check["status"],
    }
    for w, h in {(1280, 720), tuple(size)}:
        hp, wp = -(-h // stride) * stride, -(-w // stride) * stride
        try:
            out[f"gmacs_{w}x{h}"] = graph_macs(m, hp, wp) / 1e9
        except ModelError as e:
            out[f"gmacs_{w}x{h}"] = None
            out.setdefault("notes", []).append(str(e))
    return out


# ---- checkpoint ---------------------------------------------------------------------------------
def read_safetensors_header(p: Path) -> dict:
    """The JSON header of a .safetensors file (tensor dtypes/shapes/offsets and ``__metadata__``),
    checked against the file's size; no torch needed."""
    size = p.stat().st_size
    bad = (f"{str(p)!r} is not a readable safetensors checkpoint ({{}}); the file is truncated, damaged or "
           "not a checkpoint: restore it, or re-train / re-export it")
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelError(bad.format(f"{size} bytes, shorter than a header"))
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 * 2**20:
            raise ModelError(bad.format(f"header length {n} does not fit a {size}-byte file"))
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelError(bad.format(f"header is not JSON: {e}")) from None
    if not isinstance(header, dict):
        raise ModelError(bad.format("header is not a JSON object"))
    data_len = size - 8 - n
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            end = int(t["data_offsets"][1])
        except (TypeError, KeyError, IndexError, ValueError):
            raise ModelError(bad.format(f"tensor {name!r} has no data offsets")) from None
        if end > data_len:
            raise ModelError(bad.format(f"tensor {name!r} ends at byte {end} of {data_len} data bytes"))
    return header


def describe_checkpoint(p: Path) -> dict:
    header = read_safetensors_header(p)
    md = header.get("__metadata__") or {}

    def js(key):
        try:
            return json.loads(md[key]) if key in md else None
        except json.JSONDecodeError:
            return md[key]

    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    params = 0
    for t in tensors.values():
        n = 1
        for d in t.get("shape", []):
            n *= int(d)
        params += n
    meta = js("meta") or {}
    return {
        "kind": "checkpoint",
        "path": str(p),
        "bytes": p.stat().st_size,
        "format": md.get("format"),
        "arch": js("arch"),
        "tensors": len(tensors),
        "params_as_trained": params,
        "iterations": (meta.get("total_iters") or meta.get("iters")) if isinstance(meta, dict) else None,
        "averaged_from": len(meta.get("averaged_from") or []) if isinstance(meta, dict) else 0,
        "meta": meta,
    }


# ---- TensorRT engine ----------------------------------------------------------------------------
def describe_engine(p: Path) -> dict:
    from ..export.trt_build import manifest_path, read_manifest as read_engine_manifest

    if not p.is_file():
        raise ModelError(f"engine {str(p)!r} does not exist (its manifest does); rebuild it with edge-deblur build")
    man = read_engine_manifest(p)
    out = {"kind": "engine", "path": str(p), "bytes": p.stat().st_size}
    if man is None:
        out["manifest"] = (f"none ({manifest_path(p).name} is missing): only TensorRT can read the engine itself, "
                           "and nothing says which GPU and TensorRT built it")
        return out
    want = man.get("engine_sha256")
    if want and sha256_file(p) != want:
        raise ModelError(
            f"TensorRT engine {str(p)!r} does not match its manifest {manifest_path(p).name!r} (sha256 differs, "
            f"{out['bytes']} bytes): it was truncated or replaced after the build; rebuild it with "
            f"edge-deblur build {(man.get('onnx') or {}).get('path') or 'MODEL.onnx'} -o {p}")
    gpu = man.get("gpu") or {}
    out.update({
        "manifest": "checksum matches" if want else "present (no checksum)",
        "precision": man.get("precision"),
        "tensorrt": man.get("tensorrt"),
        "gpu": gpu.get("name"),
        "compute_capability": gpu.get("compute_capability"),
        "profile": man.get("profile"),
        "stride": man.get("stride"),
        "onnx": (man.get("onnx") or {}).get("path"),
        "io": man.get("io"),
        "build": man.get("build"),
    })
    return out


# ---- model folder -------------------------------------------------------------------------------
def describe_folder(folder: Path, size=(1280, 720)) -> dict:
    manifest = read_manifest(folder)
    if not manifest:
        raise ModelError(f"{str(folder)!r} has no {MANIFEST_NAME}; a model folder is written by edge-deblur export "
                         f"(or pass one of its files: {KINDS})")
    files = {}
    names = list((manifest.get("artifacts") or {}).keys())
    if manifest.get("onnx") and manifest["onnx"] not in names:
        names.insert(0, manifest["onnx"])
    for name in names:
        f = folder / name
        if not f.is_file():
            files[name] = {"missing": True}
            continue
        try:
            d = describe(f, size)
        except ModelError as e:  # one bad file: say so and describe the others
            files[name] = {"error": str(e)}
            continue
        keep = ("precision", "bytes", "params_deployed", "params_as_trained", "manifest", f"gmacs_{size[0]}x{size[1]}",
                "gmacs_1280x720", "tensorrt", "gpu")
        files[name] = {k: d[k] for k in keep if k in d}
    ckpt = folder / "model.safetensors"
    if ckpt.is_file() and "model.safetensors" not in files:
        d = describe_checkpoint(ckpt)
        files["model.safetensors"] = {"bytes": d["bytes"], "params_as_trained": d["params_as_trained"]}
    return {
        "kind": "folder",
        "path": str(folder),
        "name": manifest.get("name"),
        "default": bool(manifest.get("default")),
        "arch": manifest.get("arch"),
        "stride": manifest.get("stride"),
        "files": files,
    }


def format_description(d: dict) -> str:
    """Human-readable lines of a ``describe`` result."""
    def m(n):
        return f"{n / 1e6:.3f} M"

    lines = [f"{d['kind']}: {d['path']}" + (f" ({d['bytes'] / 1e6:.2f} MB)" if "bytes" in d else "")]
    if d.get("name"):
        lines.append(f"name: {d['name']}" + ("  (the default model)" if d.get("default") else ""))
    if d.get("arch"):
        lines.append(f"arch: {json.dumps(d['arch'])}")
    for key, label in (("precision", "precision"), ("opset", "opset"), ("stride", "stride"), ("format", "format"),
                       ("tensorrt", "TensorRT"), ("gpu", "built for GPU"), ("compute_capability", "compute capability"),
                       ("onnx", "built from"), ("iterations", "iterations"), ("averaged_from", "average of checkpoints"),
                       ("manifest", "manifest")):
        if d.get(key) not in (None, "", 0):
            lines.append(f"{label}: {d[key]}")
    for io in ("inputs", "outputs"):
        for t in d.get(io) or []:
            lines.append(f"{io[:-1]}: {t['name']} {t['dtype']} {t['shape']}")
    if "params_as_trained" in d:
        lines.append(f"params: {m(d['params_as_trained'])} as trained (RepConv training branches included)")
    if d.get("params_deployed") is not None:
        lines.append(f"params: {m(d['params_deployed'])} deployed (branches folded, as in the ONNX/engine)")
    for k in sorted(k for k in d if k.startswith("gmacs_")):
        if d[k] is not None:
            lines.append(f"GMACs at {k[6:]}: {d[k]:.2f}")
    for name, f in (d.get("files") or {}).items():
        if f.get("missing"):
            lines.append(f"  {name}: listed in the manifest but missing")
            continue
        if f.get("error"):
            lines.append(f"  {name}: PROBLEM: {f['error']}")
            continue
        bits = [f.get("precision") or "", f"{f['bytes'] / 1e6:.2f} MB" if "bytes" in f else ""]
        if "params_deployed" in f:
            bits.append(f"{m(f['params_deployed'])} params deployed")
        if "params_as_trained" in f:
            bits.append(f"{m(f['params_as_trained'])} params as trained")
        if f.get("gmacs_1280x720") is not None:
            bits.append(f"{f['gmacs_1280x720']:.2f} GMACs at 1280x720")
        if f.get("manifest"):
            bits.append(f["manifest"])
        lines.append(f"  {name}: " + ", ".join(b for b in bits if b))
    for n in d.get("notes") or []:
        lines.append(f"note: {n}")
    return "\n".join(lines)
