"""Where the shipped YAML configs live: runtime profiles (``configs/runtime/``) and validation
suites (``configs/val/``), found from the package's own location, never from the current directory.

The checkout's ``configs/`` is the source of truth. Folders are searched in order:

1. ``configs/<kind>/`` of the source checkout (editable installs, running from the repo),
2. ``edge_deblur/_configs/<kind>/`` inside the installed package (``setup.py`` copies
   ``configs/runtime`` and ``configs/val`` there when it builds a wheel).
"""
from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parents[1]  # .../edge_deblur
BUNDLED = "_configs"                          # edge_deblur/_configs/ in a wheel (setup.py)
SHIPPED_KINDS = ("runtime", "val")            # the configs/ folders a wheel carries


def checkout_root() -> Path | None:
    """The source checkout this package runs from (editable install or the repo itself), else None."""
    root = _PKG.parent
    if (root / "pyproject.toml").is_file() and (root / "configs").is_dir():
        return root
    return None


def config_dir(kind: str) -> Path:
    """The folder of shipped configs of one kind (``runtime`` or ``val``): the checkout's
    ``configs/<kind>`` when there is one, else the copy inside the installed package. When
    neither exists, the package path is returned (errors name it; globbing it finds nothing)."""
    if kind not in SHIPPED_KINDS:
        raise ValueError(f"unknown config kind {kind!r}; one of {', '.join(SHIPPED_KINDS)}")
    root = checkout_root()
    if root is not None and (root / "configs" / kind).is_dir():
        return root / "configs" / kind
    return _PKG / BUNDLED / kind
