"""``edge-deblur`` command line: a thin layer over the library. Each command lives in
``edge_deblur/cli/<name>.py`` with ``add_parser(subparsers)`` and ``run(args) -> int``; modules
are imported only when needed, so runtime commands never import torch."""
from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import re
import sys

from ..errors import EdgeDeblurError

COMMANDS = [
    ("train", "train a model from a YAML config"),
    ("pack", "pack the sharp photos and pairs a recipe names into one file for a GPU machine"),
    ("gpu", "one-call GPU training session: train, evaluate, run the GPU tests, write the results"),
    ("eval", "PSNR/SSIM of a model on blur/sharp pairs against the blurry-input baseline"),
    ("info", "what a model file is (ONNX, checkpoint, engine, model folder) or a spec: precision, I/O, parameters, GMACs"),
    ("prune", "structured channel pruning (+ fine-tune)"),
    ("average", "uniform weight average of checkpoints of one training run"),
    ("export", "checkpoint -> ONNX with a parity check and manifest"),
    ("quantize", "ONNX -> INT8 Q/DQ ONNX with calibration"),
    ("build", "ONNX -> TensorRT engine"),
    ("verify", "compare backends on the same frames"),
    ("bench", "latency, FPS and GMAC/s against the measured conv peak"),
    ("deblur", "deblur images, folders and videos"),
    ("stream", "deblur a live source (camera, RTSP, file) in real time"),
    ("batch", "deblur an archive (images, videos, rasters) on a Ray cluster or a local Ray instance"),
    ("demo", "self-contained demo on synthetic camera shake"),
]


def _module(name: str):
    try:
        return importlib.import_module(f"edge_deblur.cli.{name}_cmd")
    except ModuleNotFoundError as e:
        if e.name == f"edge_deblur.cli.{name}_cmd":
            return None
        raise


def _did_you_mean(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Parser(argparse.ArgumentParser):
    """argparse with the nearest valid name suggested for a misspelt subcommand, choice or option."""

    def error(self, message):
        m = re.match(r"argument (.+?): invalid choice: '(.*?)' \(choose from (.*)\)$", message)
        if m:
            arg, bad, choices = m.groups()
            names = re.findall(r"'([^']*)'", choices) or [c.strip() for c in choices.split(",")]
            if arg == "COMMAND":
                message = (f"unknown command {bad!r}{_did_you_mean(bad, names)}; "
                           f"the commands are: {', '.join(names)}")
            else:
                message += _did_you_mean(bad, names)
        super().error(message)

    def unrecognized(self, extras: list[str]):
        """Fail on arguments no option took, suggesting the nearest option for each."""
        options = [o for a in self._actions for o in a.option_strings]
        parts = []
        for tok in extras:
            hint = _did_you_mean(tok.split("=", 1)[0], options) if tok.startswith("-") else ""
            parts.append(tok + hint)
        self.error(f"unrecognized arguments: {' '.join(parts)}")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="edge-deblur", description="Real-time deblurring for edge devices.")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug logging, and the warnings of OpenCV, FFmpeg and ONNX Runtime (quiet by default)")
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
    from ..io.native_logs import configure_native_logs

    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        owner = sub.choices.get(args.command) if sub is not None and args.command else None
        (owner or parser).unrecognized(extras)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    configure_native_logs(args.verbose)
    from ..io.redact import install_log_filter, redact

    install_log_filter()  # no credentials in any log line
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except EdgeDeblurError as e:
        print(f"edge-deblur {args.command}: error: {redact(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:  # 130 for Ctrl-C; a SIGTERM while opening gives 143 (signals.Interrupted)
        code = getattr(e, "exit_code", 130)
        print(f"edge-deblur {args.command}: interrupted" + (f" ({e})" if code != 130 else ""), file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
