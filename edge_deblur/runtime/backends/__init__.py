"""Backends behind one protocol (:class:`~.base.Backend`), chosen by the artifact's suffix or
named: ``onnxruntime`` (.onnx), ``torch`` (.safetensors), ``torch-cuda`` (.safetensors on a
GPU), ``tensorrt`` (.engine). Backend modules are imported only when used, so choosing ONNX
Runtime never imports torch or TensorRT."""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

from ...errors import BackendError, InputError, ModelError
from ..manifest import MANIFEST_NAME, read_manifest
from .base import Backend

BACKENDS = ("onnxruntime", "torch", "torch-cuda", "tensorrt")
ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "pytorch": "torch", "trt": "tensorrt"}
SUFFIXES = {".onnx": "onnxruntime", ".safetensors": "torch", ".engine": "tensorrt", ".plan": "tensorrt"}
# which suffixes each backend can open
ACCEPTS = {
    "onnxruntime": (".onnx",),
    "torch": (".safetensors",),
    "torch-cuda": (".safetensors",),
    "tensorrt": (".engine", ".plan", ".onnx"),  # an .onnx goes through the TensorRT engine cache
}

log = logging.getLogger(__name__)

__all__ = ["Backend", "BACKENDS", "open_backend", "resolve_model", "resolve_model_path", "backend_name"]


def backend_name(name: str | None) -> str | None:
    if name is None:
        return None
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in BACKENDS:
        from ...config.core import suggest

        raise BackendError(f"unknown backend {name!r}{suggest(key, BACKENDS, list_valid=False)}; "
                           f"backends: {', '.join(BACKENDS)}")
    return key


def resolve_model_path(model, backend: str | None = None) -> Path:
    """A model file as given, or for a model folder: the ONNX file to run on this CPU
    (``runtime.select``), or for ``tensorrt`` the folder's single engine or else its ONNX."""
    return resolve_model(model, backend)[0]


def resolve_model(model, backend: str | None = None, select: str | None = None, threads: int | None = None,
                  device: str | None = None):
    """-> (file, selection dict or None). ``select``: ``features`` (default) or ``measure``
    (time the candidates once, cached per machine), for model folders on the CPU; on another
    ``device`` (ONNX Runtime's CUDA or TensorRT providers) a folder runs its FP32 ONNX."""
    p = Path(model)
    if not p.exists():
        raise ModelError(f"model not found: {str(p)!r}; pass an .onnx, .safetensors or .engine file or a model folder")
    backend = backend_name(backend)
    if not p.is_dir():
        if p.suffix.lower() == ".onnx" and backend in (None, "onnxruntime"):
            from ..select import note_for_file

            note = note_for_file(p)
            if note:
                log.warning("note: %s", note)
            return p, {"file": p.name, "method": "file", "reason": "the file given" + (f"; note: {note}" if note else "")}
        return p, None
    if backend == "tensorrt":
        # one engine: that one; otherwise the folder's ONNX, which the TensorRT backend turns into
        # (or finds in its cache as) the engine for this GPU and TensorRT version
        engines = sorted(p.glob("*.engine")) + sorted(p.glob("*.plan"))
        if len(engines) == 1:
            return engines[0], None
        name = read_manifest(p).get("onnx") or "model.onnx"
        if not (p / name).is_file():
            raise ModelError(f"{str(p)!r} holds {len(engines)} engines and no {name}; pass the engine or ONNX file")
        return p / name, None
    if backend in ("torch", "torch-cuda"):
        ck = (read_manifest(p).get("checkpoint") or {}).get("file") or "model.safetensors"
        if (p / ck).is_file():  # the checkpoint the folder was exported from
            return p / ck, {"file": ck, "method": "backend", "reason": f"the {backend} backend runs the checkpoint"}
        raise ModelError(f"the {backend} backend needs a .safetensors checkpoint, and the folder {str(p)!r} holds "
                         f"none ({ck}); pass one, or use --backend onnxruntime")
    if device is not None and str(device).lower() != "cpu":
        name = read_manifest(p).get("onnx") or "model.onnx"  # the CPU choice (INT8 for x86 cores) is not the GPU's
        if not (p / name).is_file():
            raise ModelError(f"{str(p)!r} holds no {name} for device {device!r}; pass an ONNX file")
        return p / name, {"file": name, "method": "device", "reason": f"device {device}: the FP32 ONNX"}
    if select not in (None, "features", "measure"):
        raise InputError(f"select={select!r} is not 'features' or 'measure'")
    from ..select import select_artifact

    sel = select_artifact(p, measure=None if select is None else select == "measure", threads=threads)
    log.info("model folder %s: %s", p, sel.line())
    return sel.path, sel.to_dict()


def _import(module: str, cls: str, backend: str):
    try:
        mod = importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{module}":
            raise BackendError(f"the {backend} backend is not part of this installation of edge-deblur") from e
        raise
    return getattr(mod, cls)


def open_backend(model_path, backend: str | None = None, **opts) -> Backend:
    """Open ``model_path`` (a file, or a model folder) with ``backend`` or the one its suffix
    implies. ``opts`` go to the backend (``device``, ``threads``, ``providers``, ...); None
    values are dropped."""
    backend = backend_name(backend)
    path, selection = resolve_model(model_path, backend, select=opts.pop("select", None), threads=opts.get("threads"),
                                    device=opts.get("device"))
    b = _open(path, backend, opts)
    b.selection = selection
    return b


def _open(path: Path, backend: str | None, opts: dict) -> Backend:
    suffix = path.suffix.lower()
    if backend is None:
        backend = SUFFIXES.get(suffix)
        if backend is None:
            raise ModelError(
                f"cannot tell the model type of {str(path)!r} from its suffix {suffix or '(none)'!r}; "
                f"use one of {', '.join(SUFFIXES)} or name --backend"
            )
    if suffix not in ACCEPTS[backend]:
        hint = {
            "onnxruntime": "export the checkpoint first: edge-deblur export CKPT -o DIR",
            "tensorrt": "export the checkpoint first (edge-deblur export CKPT -o DIR), then pass the .onnx or build an engine",
        }.get(backend, "use the .safetensors checkpoint")
        raise BackendError(
            f"the {backend} backend cannot open {str(path)!r} (it opens {', '.join(ACCEPTS[backend])} files); {hint}"
        )
    if not path.is_file():
        raise ModelError(f"model file not found: {str(path)!r}")
    opts = {k: v for k, v in opts.items() if v is not None}
    if backend == "onnxruntime":
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, **opts)
    if backend == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(path, **opts)
    if backend == "torch-cuda":
        try:
            cls = _import("torch_cuda", "TorchCudaBackend", backend)
        except BackendError:
            from .torch_backend import TorchBackend

            opts.setdefault("device", "cuda")
            return TorchBackend(path, **opts)
        return cls(path, **opts)
    cls = _import("tensorrt", "TensorRTBackend", backend)
    return cls(path, **opts)
