"""edge-deblur: real-time video deblurring for edge devices. ``from edge_deblur import
Deblurrer`` is loaded on first use, so importing the package stays light."""


def __getattr__(name):
    if name == "Deblurrer":
        from .runtime.deblurrer import Deblurrer

        return Deblurrer
    raise AttributeError(f"module 'edge_deblur' has no attribute {name!r}")
