"""``edge-deblur`` command line: a thin layer over the library. Each command lives in
``edge_deblur/cli/<name>.py`` with ``add_parser(subparsers)`` and ``run(args) -> int``; modules
are imported only when needed, so runtime commands never import torch."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import EdgeDeblurError

COMMANDS = [
    ("train", "train a model from a YAML config"),
    ("eval", "PSNR/SSIM of a model on blur/sharp pairs against the blurry-input baseline"),
    ("info", "parameters and GMACs of a model spec, checkpoint or ONNX file"),
    ("prune", "structured channel pruning (+ fine-tune)"),
    ("average", "uniform weight average of checkpoints of one training run"),
    ("export", "checkpoint -> ONNX with a parity check and manifest"),
    ("quantize", "ONNX -> INT8 Q/DQ ONNX with calibration"),
    ("build", "ONNX -> TensorRT engine"),
    ("verify", "compare backends on the same frames"),
    ("bench", "latency, FPS and GMAC/s against the measured conv peak"),
    ("deblur", "deblur images, folders and videos"),
    ("stream", "deblur a live source (camera, RTSP, file) in real time"),
    ("demo", "self-contained demo on synthetic camera shake"),
]


def _module(name: str):
    try:
        return importlib.import_module(f"edge_deblur.cli.{name}_cmd")
    except ModuleNotFoundError as e:
        if e.name == f"edge_deblur.cli.{name}_cmd":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-deblur", description="Real-time deblurring for edge devices.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS:
        mod = _module(name)
        if mod is None:
            continue
        sp = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except EdgeDeblurError as e:
        print(f"edge-deblur {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"edge-deblur {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
