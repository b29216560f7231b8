"""edge-deblur: real-time video deblurring for edge devices.

The public API is loaded on first use, so ``import edge_deblur`` stays light and never imports
torch::

    from edge_deblur import Deblurrer, StreamOptions, run_stream
"""

__version__ = "0.1.0"

_LAZY = {
    "Deblurrer": ("edge_deblur.runtime.deblurrer", "Deblurrer"),
    "StreamOptions": ("edge_deblur.io.options", "StreamOptions"),
    "run_stream": ("edge_deblur.runtime.pipeline", "run_stream"),
    "open_source": ("edge_deblur.io.sources", "open_source"),
    "open_sink": ("edge_deblur.io.sinks", "open_sink"),
    "MultiCamera": ("edge_deblur.runtime.multicam", "MultiCamera"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'edge_deblur' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))   # the lazy names too (tab completion, dir())
