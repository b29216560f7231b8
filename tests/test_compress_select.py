"""Runtime artifact choice from measured CPU latencies in the manifest (no torch)."""
from __future__ import annotations

import json

import pytest

from edge_deblur.errors import ModelError
from edge_deblur.runtime import select as S

EPYC = {"model": "AMD EPYC 7B13", "flags": {"avx2", "fma", "avx512f"}}
SPR = {"model": "Intel Xeon Platinum 8480+", "flags": {"avx2", "avx512f", "avx512_vnni", "amx_int8"}}
ICL = {"model": "Intel Core i7-1165G7", "flags": {"avx2", "avx512_vnni"}}


def _folder(tmp_path, int8_accuracy=None):
    d = tmp_path / "m"
    d.mkdir()
    for name in ("model.onnx", "model.int8.onnx", "model.fp16.onnx"):
        (d / name).write_bytes(name.encode())
    arts = {
        "model.onnx": {"sha256": "a", "precision": "fp32"},
        "model.int8.onnx": {"sha256": "b", "precision": "int8"},
        "model.fp16.onnx": {"sha256": "c", "precision": "fp16"},
    }
    if int8_accuracy is not None:
        arts["model.int8.onnx"]["accuracy"] = {"pairs": {"delta_psnr": int8_accuracy}}
    (d / "manifest.json").write_text(json.dumps({"format": "x", "onnx": "model.onnx", "onnx_sha256": "a", "artifacts": arts}))
    return d


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx2 avx512_vnni\n\nprocessor\t: 1\n")
    info = S.cpu_info(str(f))
    assert info["model"] == "Test CPU 9000" and "avx512_vnni" in info["flags"]
    assert S.int8_dot_product(info["flags"])
    assert not S.int8_dot_product({"avx2", "fma"})
    assert S.int8_dot_product({"asimd", "asimddp"})  # Arm dot product


def test_fastest_measured_on_this_cpu_wins(tmp_path):
    d = _folder(tmp_path)
    S.record_latency(d, "model.onnx", 40.0, (640, 360), 2, info=EPYC)
    S.record_latency(d, "model.int8.onnx", 55.0, (640, 360), 2, info=EPYC)  # no VNNI: INT8 is slower
    S.record_latency(d, "model.fp16.onnx", 300.0, (640, 360), 2, info=EPYC)
    S.record_latency(d, "model.int8.onnx", 12.0, (640, 360), 2, info=SPR)
    S.record_latency(d, "model.onnx", 20.0, (640, 360), 2, info=SPR)
    path, why = S.select_artifact(d, info=EPYC)
    assert path.name == "model.onnx" and "this CPU" in why
    path, _ = S.select_artifact(d, info=SPR)
    assert path.name == "model.int8.onnx"
    # another VNNI CPU, never measured: the measurements of the CPU like it (SPR) decide
    path, why = S.select_artifact(d, info=ICL)
    assert path.name == "model.int8.onnx" and "like this one" in why
    man = json.loads((d / "manifest.json").read_text())
    rec = man["artifacts"]["model.int8.onnx"]["latency"]["cpu"]
    assert len(rec) == 2 and all(r["size"] == "640x360" for r in rec.values())
    assert man["artifacts"]["model.int8.onnx"]["sha256"] == "b"  # recording keeps the entry


def test_unmeasured_cpu_uses_int8_only_with_dot_product(tmp_path):
    d = _folder(tmp_path)
    assert S.select_artifact(d, info=EPYC)[0].name == "model.onnx"
    path, why = S.select_artifact(d, info=SPR)
    assert path.name == "model.int8.onnx" and "dot-product" in why


def test_inaccurate_int8_is_never_chosen(tmp_path):
    d = _folder(tmp_path, int8_accuracy=-0.8)
    S.record_latency(d, "model.onnx", 20.0, (640, 360), info=SPR)
    S.record_latency(d, "model.int8.onnx", 5.0, (640, 360), info=SPR)
    assert S.select_artifact(d, info=SPR)[0].name == "model.onnx"
    assert S.select_artifact(d, info=SPR, max_psnr_drop=1.0)[0].name == "model.int8.onnx"


def test_missing_manifest_and_unknown_file(tmp_path):
    d = tmp_path / "bare"
    d.mkdir()
    with pytest.raises(ModelError, match="no manifest"):
        S.select_artifact(d)
    (d / "model.onnx").write_bytes(b"x")
    assert S.select_artifact(d)[0].name == "model.onnx"
    d2 = _folder(tmp_path)
    with pytest.raises(ModelError, match="does not list"):
        S.record_latency(d2, "model.other.onnx", 1.0, (640, 360), info=EPYC)
