"""A model judged on several validation sets at once (numpy only; ``edge-deblur eval`` and the
trainer's validation both use it).

Per set: PSNR and SSIM of the output and of the blurry input, their gains, the tone-aligned gain
(metrics/tone.py: what is left after a per-channel gain and offset fitted to the sharp frame is
applied to input and output alike) and the worst scene's gain. Overall: the **mean of the per-set
gains** (the number recipes and checkpoints are chosen by, so that one set cannot dominate by its
size), the mean tone-aligned gain, and the real scenes whose output is worse than their blurry
input (a model with any is not to be shipped).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from .evaluate import evaluate_pairs

_SET_KEYS = ("kind", "path", "pairs", "psnr", "input_psnr", "psnr_gain", "ssim", "input_ssim", "ssim_gain",
             "tone_psnr", "input_tone_psnr", "tone_gain", "worst_scene", "worst_scene_gain", "crop", "seconds",
             "temporal_error", "input_temporal_error", "temporal_pairs")


def evaluate_sets(fn: Callable[[np.ndarray], np.ndarray], sets, reset: Callable[[], None] | None = None,
                  with_ssim: bool = True, save_dir: str | None = None, save_count: int = 3,
                  temporal: bool = True, frames: bool = False) -> dict:
    """Run ``fn`` (BGR uint8 frame -> BGR uint8 frame) over every ``data.valsets.ValSet`` and
    return the report (see ``summarize``). ``temporal``: real sets also get the temporal error over
    consecutive frames (``metrics.evaluate.temporal_error``; synthetic sets' frames are unrelated, so a
    recurrent model's state is also ``reset`` before each of them).
    ``frames`` keeps every frame's figures under ``scenes[name]["frames"]`` (not kept by default: the
    report goes into checkpoints and manifests)."""
    out = {}
    for vs in sets:
        t0 = time.perf_counter()
        r = evaluate_pairs(fn, vs.pairs, save_dir=save_dir, save_count=save_count, with_ssim=with_ssim,
                           reset=reset, crop=vs.crop, save_prefix=f"{vs.name}_",
                           temporal=temporal and vs.kind == "real", consecutive=vs.kind == "real")
        worst, wm = min(r["scenes"].items(), key=lambda kv: kv[1]["psnr_gain"])
        r.update(kind=vs.kind, path=vs.path, worst_scene=worst, worst_scene_gain=wm["psnr_gain"],
                 crop=list(vs.crop) if vs.crop else None, seconds=time.perf_counter() - t0)
        scenes = r["scenes"] if frames else {k: {a: b for a, b in v.items() if a != "frames"}
                                             for k, v in r["scenes"].items()}
        out[vs.name] = {k: r[k] for k in _SET_KEYS if k in r} | {"scenes": scenes}
    return summarize(out)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(sets: dict) -> dict:
    """``{"sets": {name: per-set metrics}, "mean_gain", "mean_tone_gain", "mean_ssim_gain",
    "real_below_input": ["set/scene", ...], "seconds"}``."""
    below = [f"{name}/{scene}" for name, s in sets.items() if s["kind"] == "real"
             for scene, m in s["scenes"].items() if m["psnr_gain"] < 0]
    return {
        "sets": sets,
        "mean_gain": _mean(s["psnr_gain"] for s in sets.values()),
        "mean_tone_gain": _mean(s.get("tone_gain") for s in sets.values()),
        "mean_ssim_gain": _mean(s.get("ssim_gain") for s in sets.values()),
        "real_below_input": below,
        "seconds": float(sum(s.get("seconds", 0.0) for s in sets.values())),
    }


def _f(v, fmt: str, width: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"{'-':>{width}}"
    return f"{v:{fmt}}".rjust(width)


def format_report(report: dict, scenes: bool = True) -> str:
    """The report as a table: one row per set (and per scene under it), then the overall line."""
    def label(name, s):
        return name + (f" (crop {s['crop'][0]}x{s['crop'][1]})" if s.get("crop") else "")

    W = max([34] + [len(label(n, s)) + 1 for n, s in report["sets"].items()])   # long names keep the columns
    head = (f"{'set / scene':<{W}}{'kind':>11}{'pairs':>6}{'PSNR':>8}{'input':>8}{'gain':>7}{'tone':>7}"
            f"{'SSIM':>8}{'input':>8}{'gain':>8}   worst scene")
    lines = [head, "-" * len(head)]
    for name, s in report["sets"].items():
        lines.append(f"{label(name, s):<{W}}{s['kind']:>11}{s['pairs']:>6}{_f(s['psnr'], '.2f', 8)}"
                     f"{_f(s['input_psnr'], '.2f', 8)}{_f(s['psnr_gain'], '+.2f', 7)}{_f(s.get('tone_gain'), '+.2f', 7)}"
                     f"{_f(s.get('ssim'), '.4f', 8)}{_f(s.get('input_ssim'), '.4f', 8)}{_f(s.get('ssim_gain'), '+.4f', 8)}"
                     f"   {s['worst_scene']} {s['worst_scene_gain']:+.2f}")
        if scenes and len(s["scenes"]) > 1:
            for sc, m in s["scenes"].items():
                lines.append(f"{'  ' + sc:<{W}}{'':>11}{m['pairs']:>6}{_f(m['psnr'], '.2f', 8)}{_f(m['input_psnr'], '.2f', 8)}"
                             f"{_f(m['psnr_gain'], '+.2f', 7)}{_f(m.get('tone_gain'), '+.2f', 7)}{_f(m.get('ssim'), '.4f', 8)}"
                             f"{_f(m.get('input_ssim'), '.4f', 8)}{_f(m.get('ssim_gain'), '+.4f', 8)}")
    lines.append("-" * len(head))
    lines.append(f"{'mean of the per-set gains':<{W}}{'':>11}{'':>6}{'':>8}{'':>8}{_f(report['mean_gain'], '+.2f', 7)}"
                 f"{_f(report['mean_tone_gain'], '+.2f', 7)}{'':>8}{'':>8}{_f(report['mean_ssim_gain'], '+.4f', 8)}")
    lines.append(flag_line(report))
    return "\n".join(lines)


def flag_line(report: dict) -> str:
    below = report["real_below_input"]
    if not below:
        return "every real scene is above its blurry input"
    gains = {f"{n}/{sc}": m["psnr_gain"] for n, s in report["sets"].items() for sc, m in s["scenes"].items()}
    return "REAL SCENES BELOW THEIR BLURRY INPUT (do not ship): " + ", ".join(f"{b} {gains[b]:+.2f} dB" for b in below)


def one_line(report: dict) -> str:
    """A short summary for a training log line."""
    parts = [f"{n} {s['psnr_gain']:+.2f} dB (tone {_f(s.get('tone_gain'), '+.2f', 0)}, worst {s['worst_scene']} "
             f"{s['worst_scene_gain']:+.2f})" for n, s in report["sets"].items()]
    tail = f"mean gain {report['mean_gain']:+.3f} dB, tone-aligned {_f(report['mean_tone_gain'], '+.3f', 0)}"
    if report["real_below_input"]:
        tail += f"; {len(report['real_below_input'])} real scene(s) below input: " + ", ".join(report["real_below_input"])
    return "; ".join(parts) + "; " + tail
