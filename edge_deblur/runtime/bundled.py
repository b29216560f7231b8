"""Where the runtime's default model lives.

A model root is a folder of model folders (``<root>/<name>/manifest.json`` + ONNX files). The
default model of a root is the folder named in ``<root>/DEFAULT`` (one line), or else the one
whose manifest has ``"default": true``. Roots are searched in order:

1. ``$EDGE_DEBLUR_MODEL`` (a model file or folder; overrides everything),
2. ``export/`` of the source checkout (editable installs, running from the repo),
3. ``edge_deblur/_bundled/`` inside the installed package (the wheel maps ``export/`` there).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelError
from .manifest import MANIFEST_NAME, read_manifest

ENV = "EDGE_DEBLUR_MODEL"
_PKG = Path(__file__).resolve().parents[1]  # .../edge_deblur


def model_roots() -> list[Path]:
    roots = []
    checkout = _PKG.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "export").is_dir():
        roots.append(checkout / "export")
    if (_PKG / "_bundled").is_dir():
        roots.append(_PKG / "_bundled")
    return roots


def default_in_root(root: Path) -> Path | None:
    """The default model folder of one root, or None."""
    marker = root / "DEFAULT"
    if marker.is_file():
        name = marker.read_text().strip()
        folder = root / name
        if not name or "/" in name or "\\" in name or name.startswith(".") or not folder.is_dir():
            raise ModelError(f"{str(marker)!r} names {name!r}, which is not a model folder in {str(root)!r}")
        return folder
    for m in sorted(root.glob(f"*/{MANIFEST_NAME}")):
        if read_manifest(m).get("default") is True:
            return m.parent
    return None


def default_model_path() -> Path:
    """The default model folder (or the file or folder ``$EDGE_DEBLUR_MODEL`` names). Which file
    of the folder runs is chosen by :func:`edge_deblur.runtime.backends.resolve_model_path`."""
    env = os.environ.get(ENV)
    if env:
        p = Path(env)
        if not p.exists():
            raise ModelError(f"${ENV} is {env!r}, which does not exist; unset it or point it at a model")
        return p
    roots = model_roots()
    for root in roots:
        folder = default_in_root(root)
        if folder is None:
            continue
        if not (folder / MANIFEST_NAME).is_file() and not (folder / "model.onnx").is_file():
            raise ModelError(f"the default model folder {str(folder)!r} has no {MANIFEST_NAME} or model.onnx; "
                             "re-export it or reinstall edge-deblur")
        return folder
    where = ", ".join(str(r) for r in roots) or "no export/ folder in the checkout and none bundled in the package"
    raise ModelError(
        f"no default model found (searched: {where}); pass a model path, set ${ENV}, or export one with "
        "'edge-deblur export CKPT -o export/<name> --default'"
    )
