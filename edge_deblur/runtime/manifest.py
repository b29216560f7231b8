"""Artifact manifests: the small JSON file (``manifest.json``) that sits beside exported models.

One manifest describes one model folder (``export/<name>/``). Its top level holds what every
artifact in the folder shares (arch spec, stride, tensor layout, MACs, checkpoint checksum) and
the main FP32 ONNX (``onnx``, ``onnx_sha256``, ``opset``, ``precision``, ``parity``);
``artifacts`` maps each file name in the folder (``model.onnx``, ``model.fp16.onnx``,
``model.int8.onnx``, engines) to its own entry with at least ``sha256`` and ``precision``.

Stages that add a file to a folder call :func:`add_artifact`; the runtime calls
:func:`verify_artifact` before loading a file and refuses a file whose checksum differs from
the manifest. numpy-free and torch-free.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from ..errors import InputError, ModelError

FORMAT = "edge_deblur.manifest.v1"
MANIFEST_NAME = "manifest.json"
log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync-ed, +
    ``os.replace``, so a reader (or a crash) sees the old file or the whole new one, never a part."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {str(path)!r}: a folder has that name; pass a file path (one inside "
                         "that folder, or another name)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file (power loss on a device)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path, obj: dict):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def manifest_path(model_path) -> Path:
    return Path(model_path).parent / MANIFEST_NAME


def read_manifest(path) -> dict:
    """Read a manifest file (or the manifest of a model folder). A missing file gives ``{}``;
    an unreadable one raises ModelError."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{str(p)!r} is not a readable manifest ({e}); re-export the model folder") from e
    if not isinstance(data, dict):
        raise ModelError(f"{str(p)!r} is not a manifest (a JSON object); re-export the model folder")
    return data


def artifact_entry(manifest: dict, filename: str) -> dict | None:
    """The manifest's entry for ``filename`` or None when the manifest does not list it."""
    entry = (manifest.get("artifacts") or {}).get(filename)
    if entry is not None:
        return dict(entry)
    if manifest.get("onnx") == filename and manifest.get("onnx_sha256"):
        return {
            "sha256": manifest["onnx_sha256"],
            "precision": manifest.get("precision", "fp32"),
            "opset": manifest.get("opset"),
        }
    return None


def verify_artifact(model_path) -> tuple[dict, dict | None]:
    """Check ``model_path`` against the manifest beside it.

    Returns ``(manifest, entry)``; both empty/None when there is no manifest. Raises ModelError
    when the file is listed with another checksum (edited, truncated or replaced after export)."""
    p = Path(model_path)
    mpath = manifest_path(p)
    manifest = read_manifest(mpath)
    if not manifest:
        return {}, None
    entry = artifact_entry(manifest, p.name)
    if entry is None:
        log.warning("%s does not list %s; its stride and MACs are not used for this file", mpath, p.name)
        return {}, None
    want = entry.get("sha256")
    if want:
        got = sha256_file(p)
        if got != want:
            raise ModelError(
                f"the manifest {str(mpath)!r} does not match {str(p)!r} (sha256 {got[:12]}... but the "
                f"manifest says {want[:12]}...): the file was changed after export; re-export it "
                "(edge-deblur export CKPT -o <folder>) or restore the original file"
            )
    return manifest, entry


def add_artifact(folder, filename: str, entry: dict) -> dict:
    """Add or replace ``filename``'s entry in ``folder/manifest.json`` (atomically). The file must
    already be in the folder; its sha256 is computed here. Returns the new manifest."""
    folder = Path(folder)
    f = folder / filename
    if not f.is_file():
        raise ModelError(f"cannot list {str(f)!r} in the manifest: the file does not exist")
    manifest = read_manifest(folder)
    if not manifest:
        raise ModelError(
            f"{str(folder / MANIFEST_NAME)!r} not found; export the FP32 model into {str(folder)!r} first"
        )
    entry = dict(entry)
    entry["sha256"] = sha256_file(f)
    manifest.setdefault("artifacts", {})[filename] = entry
    atomic_write_json(folder / MANIFEST_NAME, manifest)
    return manifest


def tool_versions(**modules: str) -> dict:
    """Versions of the tools an artifact was made with, for its manifest or recipe: edge-deblur
    (None when running from a checkout), ONNX, ONNX Runtime, NumPy and Python, plus
    ``key=module`` extras (e.g. ``torch="torch"``, ``opencv="cv2"``)."""
    import importlib
    import platform

    try:
        from importlib.metadata import version

        ours = version("edge-deblur")
    except Exception:  # not installed (running from a checkout)
        ours = None
    out = {"edge_deblur": ours}
    for key, mod in {"onnx": "onnx", "onnxruntime": "onnxruntime", "numpy": "numpy", **modules}.items():
        out[key] = importlib.import_module(mod).__version__
    out["python"] = platform.python_version()
    return out
