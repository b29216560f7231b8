"""Choose which artifact of a model folder the runtime loads on this machine's CPU.

A model folder (``export/<name>/``) can hold several ONNX files of the same model: ``model.onnx``
(FP32), ``model.fp16.onnx``, ``model.int8.onnx`` (explicit Q/DQ). ``benchmarks/frontier.py``
measures each on the CPU it runs on and records the result in the folder's ``manifest.json``
(``artifacts[<file>].latency.cpu[<cpu key>]``, see :func:`record_latency`).

:func:`select_artifact` picks, by default, the fastest file *measured on a CPU like this one*:

1. measurements taken on this very CPU model (same ``model name`` in /proc/cpuinfo) win;
2. else measurements from a CPU with the same INT8 dot-product support (VNNI / AMX / Arm dotprod);
3. with no usable measurement: FP32, or INT8 only when the CPU has INT8 dot-product instructions.

Why INT8 is not the default everywhere: ONNX Runtime's INT8 convolutions are fast only with
dot-product instructions (x86 AVX-VNNI / AVX512-VNNI / AMX, Arm SDOT/I8MM). Without them (e.g. the
AMD EPYC this project is developed on: ``grep -o 'avx512_vnni\\|avx_vnni\\|amx' /proc/cpuinfo`` prints
nothing) the INT8 graph runs through widening 16-bit multiplies plus the Q/DQ element-wise work
and is usually *slower* than FP32: there INT8 is about model size and about the same file
building into a TensorRT INT8 engine on Jetson/GPU, not about CPU speed. FP16 ONNX on a CPU is
emulated and never chosen unless measured fastest.

Files whose recorded accuracy drops more than ``max_psnr_drop`` dB below the FP32 model (from
the quantization recipe copied into the manifest) are never chosen. No torch, no numpy.
"""
from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

from ..errors import ModelError
from .manifest import MANIFEST_NAME, atomic_write_json, read_manifest

log = logging.getLogger(__name__)

INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8")
ARM_DOT_FLAGS = ("asimddp", "i8mm")


def cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> dict:
    """{'model': str, 'flags': set[str]} of this machine's CPU (empty flags where unknown)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path(cpuinfo_path).read_text()
    except OSError:
        return {"model": model, "flags": flags}
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and val.strip():
            model = val.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(val.split())
    return {"model": model, "flags": flags}


def int8_dot_product(flags) -> bool:
    """True when the CPU has INT8 dot-product instructions (where INT8 inference can pay)."""
    f = set(flags or ())
    return any(x in f for x in INT8_DOT_FLAGS + ARM_DOT_FLAGS)


def cpu_key(info: dict | None = None) -> str:
    info = info or cpu_info()
    return f"{info['model']} ({platform.machine()})"


def record_latency(folder, filename: str, ms_p50: float, size: tuple[int, int], threads: int | None = None,
                   info: dict | None = None, extra: dict | None = None) -> dict:
    """Write a CPU latency measurement for ``filename`` into ``folder/manifest.json``."""
    folder = Path(folder)
    man = read_manifest(folder)
    if not man:
        raise ModelError(f"{str(folder / MANIFEST_NAME)!r} not found; export the model into {str(folder)!r} first")
    arts = man.setdefault("artifacts", {})
    if filename not in arts:
        if man.get("onnx") == filename:
            arts[filename] = {"sha256": man.get("onnx_sha256"), "precision": man.get("precision", "fp32")}
        else:
            raise ModelError(f"{str(folder / MANIFEST_NAME)!r} does not list {filename!r}; add it (quantize/export) first")
    info = info or cpu_info()
    rec = {
        "ms_p50": float(ms_p50),
        "size": f"{size[0]}x{size[1]}",
        "threads": threads,
        "int8_dot_product": int8_dot_product(info["flags"]),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if extra:
        rec.update(extra)
    arts[filename].setdefault("latency", {}).setdefault("cpu", {})[cpu_key(info)] = rec
    atomic_write_json(folder / MANIFEST_NAME, man)
    return man


def _candidates(folder: Path, man: dict) -> dict[str, dict]:
    arts = dict(man.get("artifacts") or {})
    if man.get("onnx") and man["onnx"] not in arts:
        arts[man["onnx"]] = {"sha256": man.get("onnx_sha256"), "precision": man.get("precision", "fp32")}
    return {n: e for n, e in arts.items() if n.endswith(".onnx") and (folder / n).is_file()}


def _accuracy_drop(entry: dict) -> float | None:
    acc = entry.get("accuracy") or {}
    pairs = acc.get("pairs") or {}
    if "delta_psnr" in pairs:
        return -float(pairs["delta_psnr"])
    return None


def select_artifact(folder, info: dict | None = None, max_psnr_drop: float = 0.3, size: str | None = None) -> tuple[Path, str]:
    """The ONNX file of ``folder`` to run on this CPU, and why. ``info``: cpu_info() (for tests)."""
    folder = Path(folder)
    man = read_manifest(folder)
    if not man:
        p = folder / "model.onnx"
        if p.is_file():
            return p, "no manifest: the FP32 model.onnx"
        raise ModelError(f"no manifest.json and no model.onnx in {str(folder)!r}; export a model there first")
    info = info or cpu_info()
    here, dot = cpu_key(info), int8_dot_product(info["flags"])
    cands = _candidates(folder, man)
    if not cands:
        raise ModelError(f"{str(folder / MANIFEST_NAME)!r} lists no ONNX file that exists in {str(folder)!r}; re-export")
    usable = {}
    for name, e in cands.items():
        drop = _accuracy_drop(e)
        if drop is not None and drop > max_psnr_drop:
            log.info("not choosing %s: it loses %.2f dB PSNR (> %.2f)", name, drop, max_psnr_drop)
            continue
        usable[name] = e
    if not usable:
        usable = {n: e for n, e in cands.items() if e.get("precision", "fp32") == "fp32"} or cands

    def pick(match) -> tuple[str, dict] | None:
        best = None
        for name, e in usable.items():
            for key, rec in ((e.get("latency") or {}).get("cpu") or {}).items():
                if size and rec.get("size") != size:
                    continue
                if match(key, rec) and (best is None or rec["ms_p50"] < best[1]["ms_p50"]):
                    best = (name, rec | {"cpu": key})
        return best

    best = pick(lambda k, r: k == here)
    if best:
        return folder / best[0], f"fastest measured on this CPU ({best[1]['ms_p50']:.1f} ms at {best[1]['size']})"
    best = pick(lambda k, r: bool(r.get("int8_dot_product")) == dot)
    if best:
        return folder / best[0], (f"fastest measured on a CPU like this one ({best[1]['cpu']}: "
                                  f"{best[1]['ms_p50']:.1f} ms at {best[1]['size']})")
    by_prec = {}
    for name, e in usable.items():
        by_prec.setdefault(e.get("precision", "fp32"), name)
    if dot and "int8" in by_prec:
        return folder / by_prec["int8"], "not measured here; INT8 because this CPU has INT8 dot-product instructions"
    if "fp32" in by_prec:
        return folder / by_prec["fp32"], ("not measured here; FP32 because this CPU has no INT8 dot-product "
                                          "instructions (VNNI/AMX/dotprod)" if not dot else "not measured here; FP32")
    name = sorted(usable)[0]
    return folder / name, "only artifact listed"
