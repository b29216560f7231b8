"""Choose which ONNX file of a model folder the runtime loads on this machine's CPU.

A model folder (``export/<name>/``) can hold several ONNX files of one model: ``model.onnx``
(FP32), ``model.fp16.onnx``, ``model.int8.onnx`` (INT8 laid out for TensorRT),
``model.int8-cpu.onnx`` (INT8 laid out for ONNX Runtime on x86, ``quantize --target cpu``) and
``model.int8-avx2.onnx`` (the same with 7-bit weights, ``quantize --target cpu-avx2``).
:func:`select_artifact` decides by what decides speed on ONNX Runtime's CPU kernels
(:mod:`.cpu_features`), or, with ``measure=True`` (``EDGE_DEBLUR_SELECT=measure``), by timing
the candidates once on this machine and caching the result per machine:

* ``model.int8-cpu.onnx`` when the CPU has INT8 dot-product instructions (AVX512-VNNI, AVX-VNNI,
  AMX-INT8; Arm SDOT/I8MM): measured 2.2-2.5x the FP32 speed with AVX512-VNNI and AMX
  (docs/BENCHMARKS.md); there it is preferred to ``model.int8-avx2.onnx`` (more weight bits).
* ``model.int8-avx2.onnx`` on AVX2 (AVX-512 without VNNI too): its weights are on 7 bits (the
  manifest's ``weight_bits``; its ``tuned_for`` lists ``avx2``, which is what is checked). There
  ONNX Runtime sums pairs of u8 x s8 products in 16 bits, exact with 7-bit weights (about 2x FP32
  on an AVX2 EPYC) and saturating with 8-bit ones (-0.11 dB mean gain): ``model.int8-cpu.onnx``
  is not chosen there (FP32 when the folder has no 7-bit file), with a note.
* ``model.int8.onnx`` (TensorRT layout: signed symmetric activations, Q/DQ around residual Adds,
  float first conv) is never chosen for the CPU: it measured slower than FP32 there even with
  VNNI. It is the file for ``edge-deblur build``.
* ``model.fp16.onnx``: ONNX Runtime's x86 kernels have no FP16 convolutions (emulated, several
  times slower), so never on a CPU.
* a file whose recorded accuracy (the quantization recipe copied into the manifest) is more than
  ``max_psnr_drop`` dB below FP32 on any real validation set is never chosen.

The choice, its reason and the CPU it was made for are returned as a :class:`Selection`
(``Deblurrer.info["selection"]``, ``bench --json``, the CLI's startup line). No torch, no numpy.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelError
from .cpu_features import INT8_PAIR_FLAGS, CpuFeatures, cpu_features
from .manifest import read_manifest

log = logging.getLogger(__name__)

ENV_SELECT = "EDGE_DEBLUR_SELECT"
ENV_CACHE = "EDGE_DEBLUR_CACHE"
KINDS = ("fp32", "int8-cpu", "int8-tensorrt", "fp16")


@dataclass
class Selection:
    path: Path
    reason: str
    method: str                      # features | measured | cached | file | no-manifest
    cpu: dict = field(default_factory=dict)
    candidates: dict = field(default_factory=dict)  # file -> why chosen / not chosen
    timings_ms: dict | None = None

    def to_dict(self) -> dict:
        d = {"file": self.path.name, "reason": self.reason, "method": self.method, "cpu": self.cpu,
             "candidates": self.candidates}
        if self.timings_ms:
            d["timings_ms"] = self.timings_ms
        return d

    def line(self) -> str:
        """One line for a startup message."""
        return f"running {self.path.name}: {self.reason}"


def artifact_kind(name: str, entry: dict) -> str:
    """fp32 / fp16 / int8-cpu / int8-tensorrt of a manifest entry (older entries have no target)."""
    prec = str(entry.get("precision", "fp32")).lower()
    if prec == "int8":
        target = entry.get("target") or ("cpu" if name.endswith((".int8-cpu.onnx", ".int8-avx2.onnx")) else "tensorrt")
        return "int8-cpu" if target in ("cpu", "cpu-avx2") else "int8-tensorrt"
    return prec if prec in KINDS else "fp32"


def _candidates(folder: Path, man: dict) -> dict[str, dict]:
    arts = dict(man.get("artifacts") or {})
    if man.get("onnx") and man["onnx"] not in arts:
        arts[man["onnx"]] = {"sha256": man.get("onnx_sha256"), "precision": man.get("precision", "fp32")}
    return {n: e for n, e in arts.items() if n.endswith(".onnx") and (folder / n).is_file()}


def accuracy_drop(entry: dict) -> float | None:
    """The worst PSNR loss against FP32 over the real validation sets recorded for ``entry``."""
    acc = entry.get("accuracy") or {}
    sets = list(acc.get("pair_sets") or []) or ([acc["pairs"]] if acc.get("pairs") else [])
    drops = [-float(s["delta_psnr"]) for s in sets if "delta_psnr" in s]
    return max(drops) if drops else None


def _tuned_for(entry: dict) -> list[str]:
    from .cpu_features import INT8_DOT_FLAGS

    return list((entry.get("tuned_for") or {}).get("any_of") or INT8_DOT_FLAGS)


INT8_MIN_PSNR = 35.0  # verify's floor for INT8 against FP32 (runtime/verify.py THRESHOLDS["int8"])


def _judge(name: str, entry: dict, cpu: CpuFeatures, max_psnr_drop: float) -> tuple[bool, str]:
    """(usable on this CPU, why)."""
    kind = artifact_kind(name, entry)
    drop = accuracy_drop(entry)
    if kind != "fp32" and drop is not None and drop > max_psnr_drop:
        return False, f"loses {drop:.2f} dB PSNR against FP32 (more than {max_psnr_drop:g})"
    acc = entry.get("accuracy") or {}
    held = (acc.get("held_out_tiles") or acc.get("calibration_tiles") or {}).get("psnr_int8_vs_fp32")
    if kind.startswith("int8") and drop is None and held is not None and held < INT8_MIN_PSNR:
        # no ground truth to judge by, and its own check against FP32 is below verify's INT8 floor
        return False, (f"its output is {held:.1f} dB from FP32's on its check tiles (under {INT8_MIN_PSNR:g}) and "
                       "no accuracy against ground truth is recorded; re-quantize it (quantize --pairs DIR)")
    if kind == "fp16":
        return False, "FP16 runs emulated on ONNX Runtime's CPU kernels (no FP16 convolutions)"
    if kind == "int8-tensorrt":
        return False, ("INT8 laid out for TensorRT (signed symmetric activations): slower than FP32 on ONNX "
                       "Runtime's CPU kernels; it is the file for 'edge-deblur build'")
    if kind == "int8-cpu":
        need = _tuned_for(entry)
        have = sorted(set(need) & cpu.flags)
        if not have:
            if set(INT8_PAIR_FLAGS) & cpu.flags:
                return False, (f"tuned for INT8 dot products ({', '.join(need[:3])}, ...), which this CPU ({cpu.isa}) "
                               "lacks: its 8-bit weights would saturate the 16-bit pair sums ONNX Runtime uses here "
                               "(about -0.1 dB); 'edge-deblur quantize --target cpu-avx2' writes model.int8-avx2.onnx, "
                               "7-bit weights that run exact and about 2x FP32 on this CPU")
            return False, (f"tuned for INT8 dot products ({', '.join(need[:3])}, ...), which this CPU ({cpu.isa}) "
                           "lacks: it would not beat FP32")
        if not set(have) - set(INT8_PAIR_FLAGS):
            return True, (f"INT8 for the CPU; 7-bit weights, exact on this CPU's 16-bit pair sums "
                          f"({', '.join(have)}; no INT8 dot products)")
        return True, f"INT8 for the CPU; this CPU has {', '.join(h for h in have if h not in INT8_PAIR_FLAGS)}"
    return True, "FP32"


def _best_int8_cpu(cands: dict, usable, cpu: CpuFeatures) -> str | None:
    """The INT8 CPU file to run among the usable ones: the one with the most weight bits
    (model.int8-cpu.onnx's 8 before model.int8-avx2.onnx's 7 where dot products make both exact;
    without them only 7-bit files are usable, :func:`_judge`)."""
    files = [n for n in sorted(usable) if artifact_kind(n, cands[n]) == "int8-cpu"]
    return max(files, key=lambda n: int(cands[n].get("weight_bits", 8)), default=None)


def int8_cpu_file(folder, cpu: CpuFeatures | None = None) -> Path | None:
    """The folder's INT8 file for ONNX Runtime on this CPU (a runtime profile's ``precision:
    int8``): the usable one :func:`select_artifact` would prefer, else ``model.int8-cpu.onnx``
    when it exists (it runs, with :func:`note_for_file`'s note), else None."""
    folder = Path(folder)
    cpu = cpu or cpu_features()
    man = read_manifest(folder)
    cands = _candidates(folder, man) if man else {}
    usable = [n for n, e in cands.items() if _judge(n, e, cpu, float("inf"))[0]]
    best = _best_int8_cpu(cands, usable, cpu)
    if best:
        return folder / best
    p = folder / "model.int8-cpu.onnx"
    return p if p.is_file() else None


def select_artifact(folder, cpu: CpuFeatures | None = None, max_psnr_drop: float = 0.3, measure: bool | None = None,
                    threads: int | None = None, cache_dir=None) -> Selection:
    """The ONNX file of ``folder`` to run on this CPU, and why. ``cpu``: :func:`cpu_features`
    (or a mocked one). ``measure``: time the usable candidates once and cache the result (default:
    ``$EDGE_DEBLUR_SELECT == 'measure'``)."""
    folder = Path(folder)
    cpu = cpu or cpu_features()
    man = read_manifest(folder)
    if not man:
        p = folder / "model.onnx"
        if p.is_file():
            return Selection(p, "no manifest.json: the FP32 model.onnx", "no-manifest", cpu.to_dict())
        raise ModelError(f"no manifest.json and no model.onnx in {str(folder)!r}; export a model there first")
    cands = _candidates(folder, man)
    if not cands:
        raise ModelError(f"{str(folder / 'manifest.json')!r} lists no ONNX file that exists in {str(folder)!r}; re-export")
    verdicts = {n: _judge(n, e, cpu, max_psnr_drop) for n, e in cands.items()}
    usable = [n for n, (ok, _) in verdicts.items() if ok]
    notes = {n: why for n, (ok, why) in verdicts.items()}
    if not usable:  # nothing passes (e.g. only a TensorRT INT8 file): run what there is, FP32 first
        name = next((n for n in cands if artifact_kind(n, cands[n]) == "fp32"), sorted(cands)[0])
        return Selection(folder / name, f"the only kind of file here ({notes[name]})", "features", cpu.to_dict(), notes)
    if measure is None:
        measure = os.environ.get(ENV_SELECT, "").strip().lower() == "measure"
    if measure and len(usable) > 1:
        return _measured(folder, cands, usable, notes, cpu, threads, cache_dir)
    fp32 = next((n for n in cands if artifact_kind(n, cands[n]) == "fp32"), None)
    int8 = _best_int8_cpu(cands, usable, cpu)
    if int8:
        others = [n for n in usable if n != int8 and artifact_kind(n, cands[n]) == "int8-cpu"]
        for n in others:
            notes[n] = f"{notes[n]}; {int8} preferred: {cands[int8].get('weight_bits', 8)}-bit weights"
        return Selection(folder / int8, f"{notes[int8]} ({cpu.cores} cores)", "features", cpu.to_dict(), notes)
    name = fp32 or sorted(usable)[0]  # an FP32 file is always usable
    skipped = [f"{n} not chosen: {notes[n]}" for n in cands if n not in usable and artifact_kind(n, cands[n]) == "int8-cpu"]
    if skipped:
        reason = f"FP32; {skipped[0]}"
    elif cpu.int8_dot:
        reason = "FP32: no INT8 file for the CPU in this folder ('edge-deblur quantize --target cpu' makes one)"
    elif set(INT8_PAIR_FLAGS) & cpu.flags:
        reason = (f"FP32: no INT8 file for this CPU ({cpu.isa}, no INT8 dot products) in this folder "
                  "('edge-deblur quantize --target cpu-avx2' makes one with 7-bit weights)")
    else:
        reason = f"FP32: this CPU ({cpu.isa}) has no INT8 dot-product instructions"
    return Selection(folder / name, f"{reason} ({cpu.cores} cores)", "features", cpu.to_dict(), notes)


# -- measuring once per machine ---------------------------------------------------------------------


def cache_path(cache_dir=None) -> Path:
    base = cache_dir or os.environ.get(ENV_CACHE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edge_deblur")
    return Path(base) / "artifact_choice.json"


def _cache_key(folder: Path, cands: dict, usable: list, cpu: CpuFeatures, threads: int) -> str:
    import onnxruntime

    ident = {"cpu": cpu.model, "features": sorted(cpu.relevant), "cores": cpu.cores, "threads": threads,
             "onnxruntime": onnxruntime.__version__,
             "files": {n: cands[n].get("sha256") or (folder / n).stat().st_size for n in sorted(usable)}}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def _time_file(path: Path, threads: int, size=(320, 192), runs: int = 5) -> float:
    import numpy as np
    import onnxruntime as ort

    from .backends.onnxruntime import session_options

    sess = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).random((1, 3, size[1], size[0]), dtype=np.float32)
    sess.run(None, {name: x})
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        ms.append((time.perf_counter() - t0) * 1e3)
    return float(sorted(ms)[len(ms) // 2])


def _measured(folder, cands, usable, notes, cpu, threads, cache_dir) -> Selection:
    threads = int(threads or cpu.cores)
    key = _cache_key(folder, cands, usable, cpu, threads)
    cp = cache_path(cache_dir)
    try:
        cache = json.loads(cp.read_text()) if cp.is_file() else {}
    except (OSError, json.JSONDecodeError):
        cache = {}
    rec = cache.get(key)
    method = "cached"
    if not rec or rec.get("file") not in usable:
        timings = {n: round(_time_file(folder / n, threads), 2) for n in usable}
        best = min(timings, key=timings.get)
        rec = {"file": best, "timings_ms": timings, "size": "320x192", "threads": threads, "folder": str(folder),
               "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        cache[key] = rec
        method = "measured"
        try:
            from .manifest import atomic_write_json

            cp.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(cp, cache)
        except OSError as e:  # a read-only home: still run, just measure again next time
            log.info("could not cache the artifact choice in %s (%s)", cp, e)
    t = rec["timings_ms"]
    others = ", ".join(f"{n} {v:.1f} ms" for n, v in sorted(t.items(), key=lambda kv: kv[1]))
    when = "measured now" if method == "measured" else f"measured {rec.get('measured', '?')}, cached in {cp}"
    reason = f"fastest on this machine at {rec['size']} with {rec['threads']} threads ({others}; {when})"
    return Selection(folder / rec["file"], reason, method, cpu.to_dict(), notes, t)


def note_for_file(path, cpu: CpuFeatures | None = None) -> str | None:
    """A note when an explicitly given file was tuned for features this CPU lacks (None otherwise)."""
    p = Path(path)
    man = read_manifest(p.parent)
    entry = ((man or {}).get("artifacts") or {}).get(p.name)
    if not entry or artifact_kind(p.name, entry) != "int8-cpu":
        return None
    cpu = cpu or cpu_features()
    ok, why = _judge(p.name, entry, cpu, float("inf"))
    if ok:
        return None
    try:
        choice = select_artifact(p.parent, cpu=cpu, measure=False).path.name
    except ModelError:
        choice = (man or {}).get("onnx") or "model.onnx"
    return f"{p.name} is {why}; running it anyway as asked (the folder would run {choice})"
