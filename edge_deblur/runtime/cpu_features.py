"""What this machine's CPU can do, as far as choosing an artifact is concerned (no numpy, no torch).

Read from /proc/cpuinfo (Linux; elsewhere only the architecture is known). What decides speed on
ONNX Runtime's CPU kernels:

* INT8 dot products: x86 AVX512-VNNI, AVX-VNNI, AMX-INT8 (``vpdpbusd``: u8 x s8 into int32), Arm
  SDOT/UDOT (``asimddp``) and I8MM. With them an INT8 convolution does 4x the multiply-adds of an
  FP32 one per instruction. Without them (AVX2, AVX-512 without VNNI) ONNX Runtime's u8s8 kernels
  add pairs of u8 x s8 products into 16 bits (``vpmaddubsw``), which saturates with 8-bit weights
  (255 x 127 x 2 > 32767: edgenet M5 lost 0.11 dB mean gain that way on an AVX2 EPYC) and is exact
  with 7-bit ones (``INT8_PAIR_FLAGS``: ``model.int8-avx2.onnx``, which ``quantize --target
  cpu-avx2`` writes since session 17, 1.98x FP32 on that EPYC); ``model.int8-cpu.onnx`` (``--target
  cpu``, 8-bit weights) is not chosen there.
* AVX512-BF16 / AMX-BF16 and AVX512-FP16: recorded, but ONNX Runtime's x86 CPU kernels have no
  BF16/FP16 convolutions (an FP16 ONNX runs emulated there), so they never select an artifact.
* the core count: recorded with every choice and measurement (threads default to the cores).

``EDGE_DEBLUR_CPU_FLAGS`` (comma- or space-separated) replaces the flags read from the CPU, to
test the choice for another CPU or to force one.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

ENV_FLAGS = "EDGE_DEBLUR_CPU_FLAGS"
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8", "asimddp", "i8mm")
# x86 without INT8 dot products: ONNX Runtime's u8s8 kernels sum pairs of u8 x s8 products in 16 bits
# (vpmaddubsw), exact only for weights on 7 bits (quantize --target cpu-avx2 writes them so)
INT8_PAIR_FLAGS = ("avx2",)
RELEVANT = ("sse4_1", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
            "avx_vnni_int8", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
            "asimd", "asimddp", "i8mm", "bf16", "asimdhp", "sve", "sve2")


def cpu_cores() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class CpuFeatures:
    model: str
    arch: str
    flags: frozenset = field(default_factory=frozenset)
    cores: int = 1
    source: str = "/proc/cpuinfo"

    @property
    def relevant(self) -> set:
        return {f for f in self.flags if f in RELEVANT}

    @property
    def int8_dot(self) -> bool:
        return any(f in self.flags for f in INT8_DOT_FLAGS)

    @property
    def bf16(self) -> bool:
        """Native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16; Arm's BF16 extension): without it
        torch's CPU bf16 autocast is emulated, and on an AVX2 CPU ran 8x slower than FP32."""
        return any(f in self.flags for f in ("avx512_bf16", "amx_bf16", "bf16"))

    @property
    def isa(self) -> str:
        """The best instruction set for this choice, in words (e.g. 'AVX512-VNNI')."""
        f = self.flags
        for flag, label in (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
                            ("i8mm", "Arm I8MM"), ("asimddp", "Arm dot product"), ("avx512f", "AVX-512 without VNNI"),
                            ("avx2", "AVX2"), ("asimd", "Arm NEON"), ("avx", "AVX"), ("sse4_1", "SSE4.1")):
            if flag in f:
                return label
        return "unknown"

    def to_dict(self) -> dict:
        return {"cpu": self.model, "arch": self.arch, "cores": self.cores, "isa": self.isa,
                "int8_dot_product": self.int8_dot, "features": sorted(self.relevant), "source": self.source}


def _read_cpuinfo(path: str) -> tuple[str, set]:
    model, flags = "", set()
    try:
        text = Path(path).read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and val.strip() and not model:
            model = val.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(val.split())
    return model, flags


def cpu_features(cpuinfo_path: str = "/proc/cpuinfo", cores: int | None = None) -> CpuFeatures:
    """This machine's CPU (``EDGE_DEBLUR_CPU_FLAGS`` replaces its flags)."""
    model, flags = _read_cpuinfo(cpuinfo_path)
    source = cpuinfo_path if flags else "unknown (no cpuinfo)"
    env = os.environ.get(ENV_FLAGS)
    if env is not None:
        flags = {f.strip().lower() for f in env.replace(",", " ").split() if f.strip()}
        source = f"${ENV_FLAGS}"
    return CpuFeatures(model or platform.processor() or platform.machine() or "unknown CPU", platform.machine(),
                       frozenset(flags), int(cores or cpu_cores()), source)


def features_from(flags, model: str = "mocked CPU", cores: int = 2, arch: str = "x86_64") -> CpuFeatures:
    """A CpuFeatures for the given flags (tests, and choosing for another machine)."""
    return CpuFeatures(model, arch, frozenset(flags), int(cores), "given")
