"""edge-deblur eval --model MODEL (--data DIR [--scenes ...])... | --suite NAME_OR_YAML [--json] [--save DIR]

Several validation sets at once: per set PSNR/SSIM of output and input, gain, tone-aligned gain
and worst scene; overall the mean of the per-set gains, the mean tone-aligned gain and a flag when
a real scene ends below its blurry input. ONNX Runtime / numpy only (no torch) unless a synthetic
set has to be made first."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

MAX_SYNTHETIC_SIDE = 4096  # px per side of a synthetic set made by --make-synthetic


def _count(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _threshold(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 (0: off), got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (0: off), got {text!r}")
    return v


class _DataAction(argparse.Action):
    """``--data PATH``: a new validation set; the ``--scenes`` after it filter that set."""

    def __call__(self, parser, namespace, values, option_string=None):
        sets = list(getattr(namespace, "sets", None) or [])
        sets.append({"path": values, "scenes": []})
        namespace.sets = sets


class _ScenesAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        sets = getattr(namespace, "sets", None)
        if not sets:
            parser.error("--scenes filters the --data set it follows: give --data DIR before --scenes")
        if sets[-1]["scenes"]:
            parser.error(f"--scenes given twice for --data {sets[-1]['path']}; list the scenes once")
        sets[-1]["scenes"] = list(values)


def add_arguments(p):
    p.add_argument("--model", "-m", default=None, help="checkpoint (.safetensors), ONNX or engine; default: the bundled model")
    p.add_argument("--data", "-d", action=_DataAction, dest="data", metavar="DIR",
                   help="blur/sharp pairs (GoPro or REDS layout, or a synthetic set made by the trainer); "
                        "repeat for several sets")
    p.add_argument("--scenes", nargs="+", action=_ScenesAction, default=None, metavar="SCENE",
                   help="only these scenes of the --data set just before (e.g. a held-out REDS scene)")
    p.add_argument("--suite", default=None, metavar="NAME_OR_YAML",
                   help="the validation sets of a config: a name under configs/val/ (e.g. multi_camera), a YAML "
                        "with data.val_sets, or a training config")
    p.add_argument("--crop", default=None, metavar="WxH", help="evaluate the centre WxH of every frame (cheaper)")
    p.add_argument("--max-pairs", type=int, default=None, metavar="N",
                   help="at most N pairs per set, taken in turn from every scene (cheaper)")
    p.add_argument("--backend", default=None, help="onnxruntime | torch | tensorrt | torch-cuda (default: from the file)")
    p.add_argument("--device", default=None, help="cpu | cuda | tensorrt (default: from the backend)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores this process may use)")
    p.add_argument("--tile", type=int, default=None, help="tile size for large frames (default: whole frame)")
    p.add_argument("--save", default=None, metavar="DIR", help="write side-by-side PNGs (blurry | deblurred | sharp) here")
    p.add_argument("--save-count", type=_count, default=3, help="PNGs per set (>= 0)")
    p.add_argument("--no-ssim", action="store_true", help="skip SSIM (faster)")
    p.add_argument("--no-temporal", action="store_true",
                   help="skip the temporal-consistency error of real sets (for scenes whose frames are not consecutive)")
    p.add_argument("--per-frame", action="store_true", help="also print every frame's PSNR/SSIM (always in --json)")
    p.add_argument("--scene-cut", type=_threshold, default=None, metavar="T",
                   help="recurrent models: scene-cut threshold inside a scene (default 0.16; 0: off); "
                        "the state is always reset at the start of every scene")
    p.add_argument("--no-state", action="store_true",
                   help="recurrent models: zero the state before every frame (what the recurrence adds, as an ablation)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--make-synthetic", metavar="SHARP_DIR", default=None,
                   help="first write the fixed full-resolution synthetic set (default blur model) from the sharp "
                        "images in SHARP_DIR into the last --data: a new or empty folder, or one made this way "
                        "before (kept if made with the same settings)")
    p.add_argument("--synthetic-count", type=int, default=4)
    p.add_argument("--synthetic-size", default="1280x720", metavar="WxH",
                   help=f"size of the synthetic frames, at most {MAX_SYNTHETIC_SIDE} px per side")
    p.add_argument("--synthetic-align", choices=("centroid", "mid_time"), default="centroid",
                   help="where a warped frame's sharp target sits: the blur's centre of mass (default; what the "
                        "blurred frame shows, as in real pairs) or the camera at mid-exposure (sets made before "
                        "session 13)")
    p.add_argument("--seed", type=int, default=1234)


def set_configs(args) -> list:
    """The ValSetConfigs named on the command line (--suite first, then each --data)."""
    from ..config.validation import ValSetConfig, check_unique, default_set_name, load_suite
    from ..data.valsets import is_synthetic_folder
    from ..errors import ConfigError, InputError
    from .info_cmd import parse_size

    cfgs = load_suite(args.suite) if args.suite else []
    cli = getattr(args, "sets", None) or []
    if not cfgs and not cli:
        raise InputError("no validation set given; pass --data DIR (repeatable, each with its own --scenes) "
                         "or --suite NAME_OR_YAML (e.g. --suite multi_camera)")
    if args.make_synthetic and not cli:
        raise InputError("--make-synthetic writes into the last --data folder; give --data DIR")
    names = {c.name for c in cfgs}
    for i, s in enumerate(cli):
        synthetic = (args.make_synthetic and i == len(cli) - 1) or is_synthetic_folder(s["path"])
        name = default_set_name(s["path"])
        if name in names and s["scenes"]:
            name = f"{name}_{'_'.join(s['scenes'])}"
        base, k = name, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        cfg = ValSetConfig(path=s["path"], name=name, kind="synthetic" if synthetic else "real", scenes=s["scenes"])
        if args.make_synthetic and i == len(cli) - 1:
            w, h = parse_size(args.synthetic_size)
            if max(w, h) > MAX_SYNTHETIC_SIDE:
                raise InputError(f"--synthetic-size {args.synthetic_size} is too large: at most {MAX_SYNTHETIC_SIDE} "
                                 "px per side (e.g. --synthetic-size 1280x720)")
            _check_synthetic_target(s["path"])
            cfg.source, cfg.count, cfg.size, cfg.seed = args.make_synthetic, args.synthetic_count, [w, h], args.seed
            cfg.align = args.synthetic_align
        try:
            cfg.validate(f"--data {s['path']}")
        except ConfigError as e:
            raise InputError(str(e)) from e
        cfgs.append(cfg)
    for c in cfgs:
        if args.crop:
            c.crop = list(parse_size(args.crop))
        if args.max_pairs is not None:
            if args.max_pairs < 1:
                raise InputError(f"--max-pairs must be >= 1, got {args.max_pairs}")
            c.max_pairs = args.max_pairs
    check_unique(cfgs, "validation sets")
    return cfgs


def _check_synthetic_target(path) -> None:
    """--make-synthetic writes only into a missing or empty folder, or a synthetic set made before:
    never into a model folder or a real pair set (it would add val/ and replace manifest.json)."""
    from ..data.valsets import is_synthetic_folder
    from ..errors import InputError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"--data {path} is a file; --make-synthetic writes a folder there: pass a new folder")
    if p.is_dir() and any(p.iterdir()) and not is_synthetic_folder(p):
        raise InputError(f"--make-synthetic will not write into --data {path}: it already holds files and is not a "
                         "synthetic set made by edge-deblur; pass a new (or empty) folder as the last --data")


def run(args) -> int:
    from ..data.valsets import load_val_sets
    from ..metrics.evaluate import check_save_dir
    from ..metrics.suite import evaluate_sets, format_report
    from ..runtime.deblurrer import Deblurrer

    if args.save is not None:
        check_save_dir(args.save, "--save")
    sets = load_val_sets(set_configs(args))
    extra = {"scene_cut": args.scene_cut} if args.scene_cut is not None else {}
    with Deblurrer.open(args.model, backend=args.backend, device=args.device, threads=args.threads, tile=args.tile,
                        **extra) as d:
        fn = d
        if args.no_state:
            def fn(frame):
                d.reset()
                return d(frame)
        result = evaluate_sets(fn, sets, reset=d.reset, with_ssim=not args.no_ssim, save_dir=args.save,
                               save_count=args.save_count, temporal=not args.no_temporal, frames=True)
        result["model"] = str(d.info.get("model", args.model))
        result["backend"] = d.info.get("backend")
        result["state"] = d.state_stats()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model {result['model']} ({result['backend']})")
    print(format_report(result))
    print_sequences(result, args.per_frame)
    return 0


def print_sequences(result: dict, per_frame: bool = False):
    """The temporal error of each set and scene of consecutive frames, every frame's figures with
    ``per_frame``, and a recurrent model's state resets."""
    for name, s in result["sets"].items():
        if per_frame:
            for scene, m in s["scenes"].items():
                for f in m.get("frames", []):
                    ss = f" SSIM {f['ssim']:.4f} (input {f['input_ssim']:.4f})" if "ssim" in f else ""
                    print(f"  {name}/{scene}/{f['name']}: PSNR {f['psnr']:.2f} (input {f['input_psnr']:.2f}, "
                          f"{f['psnr'] - f['input_psnr']:+.2f}){ss}")
        if "temporal_error" in s:
            scenes = ", ".join(f"{sc} {m['temporal_error']:.3f} (input {m['input_temporal_error']:.3f})"
                               for sc, m in s["scenes"].items() if "temporal_error" in m)
            print(f"temporal error {name}: {s['temporal_error']:.3f} (input {s['input_temporal_error']:.3f}) "
                  f"over {s['temporal_pairs']} consecutive pairs; {scenes}")
    if any("temporal_error" in s for s in result["sets"].values()):
        print("temporal error: mean |output change - ground-truth change| between consecutive frames, 8-bit levels "
              "(lower is better)")
    st = result.get("state") or {}
    if st.get("kind") == "recurrent":
        print(f"recurrent state resets: {st['resets']} (scene-cut threshold {st['scene_cut_threshold']})")
