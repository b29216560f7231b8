"""The runtime: backends, frame preprocessing, tiling, the ``Deblurrer`` facade and the
pipeline. Nothing here imports torch (the torch backend imports it when opened). Attributes
are loaded lazily, so ``import edge_deblur.runtime`` is light."""
from __future__ import annotations

_LAZY = {
    "Deblurrer": ("edge_deblur.runtime.deblurrer", "Deblurrer"),
    "open_backend": ("edge_deblur.runtime.backends", "open_backend"),
    "default_model_path": ("edge_deblur.runtime.bundled", "default_model_path"),
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'edge_deblur.runtime' has no attribute {name!r}")
