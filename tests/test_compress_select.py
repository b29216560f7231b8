"""Which file of a model folder the runtime runs on a CPU: chosen by instruction-set features
(mocked here for CPUs we do not have), or measured once and cached per machine (no torch)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_deblur.errors import ModelError
from edge_deblur.runtime import select as S
from edge_deblur.runtime.cpu_features import cpu_features, features_from

AVX2 = features_from({"sse4_1", "avx", "avx2", "fma"}, "AMD EPYC 7B13 (Zen 3)")
AVX512 = features_from({"avx2", "fma", "avx512f", "avx512bw"}, "Intel Xeon Skylake-SP")  # AVX-512 without VNNI
VNNI = features_from({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "Intel Xeon Cooper Lake")
AVXVNNI = features_from({"avx2", "avx_vnni"}, "Intel Core i7-1260P (Alder Lake)")
AMX = features_from({"avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"}, "Intel Xeon 8480+", cores=8)
ARM = features_from({"asimd", "asimddp"}, "Cortex-A78AE", arch="aarch64")


def _folder(tmp_path, cpu_int8_drop=None, trt_int8=True, cpu_int8=True, name="m", avx2_int8=False):
    d = tmp_path / name
    d.mkdir()
    arts = {"model.onnx": {"sha256": "a", "precision": "fp32"},
            "model.fp16.onnx": {"sha256": "c", "precision": "fp16"}}
    if trt_int8:
        arts["model.int8.onnx"] = {"sha256": "b", "precision": "int8", "quantization": "qdq"}  # no target: older manifests
    if cpu_int8:
        arts["model.int8-cpu.onnx"] = {"sha256": "d", "precision": "int8", "target": "cpu",
                                       "tuned_for": {"any_of": ["avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"]}}
        if cpu_int8_drop is not None:
            arts["model.int8-cpu.onnx"]["accuracy"] = {"pair_sets": [{"delta_psnr": -0.05}, {"delta_psnr": -cpu_int8_drop}]}
    if avx2_int8:  # what quantize --target cpu-avx2 writes (session 17)
        arts["model.int8-avx2.onnx"] = {"sha256": "e", "precision": "int8", "target": "cpu-avx2", "weight_bits": 7,
                                        "tuned_for": {"any_of": ["avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm",
                                                                 "avx2"]}}
    for n in arts:
        (d / n).write_bytes(n.encode())
    (d / "manifest.json").write_text(json.dumps({"format": "x", "onnx": "model.onnx", "onnx_sha256": "a", "artifacts": arts}))
    return d


def test_cpu_features_are_read_from_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGE_DEBLUR_CPU_FLAGS", raising=False)
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx2 avx512_vnni amx_int8 xyz\n\n"
                 "processor\t: 1\n")
    info = cpu_features(str(f), cores=3)
    assert info.model == "Test CPU 9000" and info.cores == 3
    assert info.int8_dot and info.isa == "AMX-INT8"
    assert info.relevant == {"avx2", "avx512_vnni", "amx_int8"}  # only what decides the choice
    d = info.to_dict()
    assert d["features"] == ["amx_int8", "avx2", "avx512_vnni"] and d["int8_dot_product"] is True
    assert not AVX2.int8_dot and AVX2.isa == "AVX2" and AVX512.isa == "AVX-512 without VNNI"
    assert ARM.int8_dot and ARM.isa == "Arm dot product"
    monkeypatch.setenv("EDGE_DEBLUR_CPU_FLAGS", "avx2,fma")  # forcing / mocking another CPU
    forced = cpu_features(str(f))
    assert forced.flags == {"avx2", "fma"} and not forced.int8_dot and "EDGE_DEBLUR_CPU_FLAGS" in forced.source


@pytest.mark.parametrize("cpu, expect", [
    (VNNI, "model.int8-cpu.onnx"), (AVXVNNI, "model.int8-cpu.onnx"), (AMX, "model.int8-cpu.onnx"),
    (ARM, "model.int8-cpu.onnx"), (AVX2, "model.onnx"), (AVX512, "model.onnx"),
])
def test_choice_by_features(tmp_path, cpu, expect):
    sel = S.select_artifact(_folder(tmp_path), cpu=cpu)
    assert sel.path.name == expect and sel.method == "features"
    # never an artifact that is slower than FP32 on ONNX Runtime's CPU kernels
    assert sel.path.name not in ("model.int8.onnx", "model.fp16.onnx")
    assert "TensorRT" in sel.candidates["model.int8.onnx"] and "emulated" in sel.candidates["model.fp16.onnx"]
    assert sel.to_dict()["cpu"]["cpu"] == cpu.model and str(cpu.cores) in sel.reason
    if expect == "model.onnx":  # the fall back says why, naming what the CPU lacks
        assert "not chosen" in sel.reason and cpu.isa in sel.reason and "lacks" in sel.reason
    else:
        assert any(f in sel.reason for f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp"))


@pytest.mark.parametrize("cpu, both, alone", [
    (AVX2, "model.int8-avx2.onnx", "model.int8-avx2.onnx"), (AVX512, "model.int8-avx2.onnx", "model.int8-avx2.onnx"),
    (VNNI, "model.int8-cpu.onnx", "model.int8-avx2.onnx"), (AMX, "model.int8-cpu.onnx", "model.int8-avx2.onnx"),
    (ARM, "model.int8-cpu.onnx", "model.int8-avx2.onnx"),
])
def test_7bit_weights_run_int8_on_avx2_too(tmp_path, cpu, both, alone):
    """A CPU file with 7-bit weights is exact on the 16-bit pair sums ONNX Runtime uses without
    VNNI, so AVX2 and AVX-512-without-VNNI CPUs run it; CPUs with dot products prefer the 8-bit
    file where the folder has both, and name their dot-product flags."""
    sel = S.select_artifact(_folder(tmp_path, avx2_int8=True), cpu=cpu)
    assert sel.path.name == both, sel.reason
    assert S.int8_cpu_file(tmp_path / "m", cpu=cpu).name == both  # a profile's precision: int8 on ONNX Runtime
    if cpu.int8_dot:
        assert "7-bit" not in sel.reason and "avx2" not in sel.reason
        assert "preferred" in sel.candidates["model.int8-avx2.onnx"]
    else:
        assert "7-bit weights" in sel.reason and "avx2" in sel.reason
        assert "saturate" in sel.candidates["model.int8-cpu.onnx"]
    sel = S.select_artifact(_folder(tmp_path, avx2_int8=True, cpu_int8=False, name="only7"), cpu=cpu)
    assert sel.path.name == alone


def test_8bit_weights_on_avx2_say_why_and_how_to_fix(tmp_path):
    sel = S.select_artifact(_folder(tmp_path), cpu=AVX2)
    assert sel.path.name == "model.onnx"
    assert "saturate" in sel.reason and "--target cpu-avx2" in sel.reason and "7-bit" in sel.reason
    assert S.int8_cpu_file(tmp_path / "m", cpu=AVX2).name == "model.int8-cpu.onnx"  # asked for: runs, with a note
    sel = S.select_artifact(_folder(tmp_path, cpu_int8=False, name="none"), cpu=AVX2)
    assert sel.path.name == "model.onnx" and "--target cpu-avx2" in sel.reason
    assert S.int8_cpu_file(tmp_path / "none", cpu=AVX2) is None


def test_no_cpu_int8_file_or_inaccurate_one_means_fp32(tmp_path):
    sel = S.select_artifact(_folder(tmp_path, cpu_int8=False), cpu=VNNI)
    assert sel.path.name == "model.onnx" and "--target cpu" in sel.reason  # says how to make one
    sel = S.select_artifact(_folder(tmp_path, cpu_int8_drop=0.8, name="bad"), cpu=VNNI)
    assert sel.path.name == "model.onnx" and "0.80 dB" in sel.candidates["model.int8-cpu.onnx"]  # worst set counts
    assert S.select_artifact(tmp_path / "bad", cpu=VNNI, max_psnr_drop=1.0).path.name == "model.int8-cpu.onnx"


def test_missing_manifest(tmp_path):
    d = tmp_path / "bare"
    d.mkdir()
    with pytest.raises(ModelError, match="no manifest"):
        S.select_artifact(d, cpu=AVX2)
    (d / "model.onnx").write_bytes(b"x")
    sel = S.select_artifact(d, cpu=AVX2)
    assert sel.path.name == "model.onnx" and sel.method == "no-manifest"


def _tiny_onnx(path, slow: bool):
    """A conv model; ``slow`` adds many extra convs (a stand-in for a slower artifact)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "input"
    for i in range(12 if slow else 1):
        inits.append(numpy_helper.from_array((rng.standard_normal((3, 3, 3, 3)) * 0.1).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        prev = f"c{i}"
    nodes.append(helper.make_node("Identity", [prev], ["output"]))
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "h", "w"])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_measured_once_and_cached_per_machine(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    d = _folder(tmp_path)
    _tiny_onnx(d / "model.onnx", slow=True)
    assert S._time_file(d / "model.onnx", 1, size=(32, 32), runs=1) > 0  # the real timer runs the file
    calls = []
    fake_ms = {"model.onnx": 30.0, "model.int8-cpu.onnx": 12.0}  # no wall-clock in tests: timings stubbed
    monkeypatch.setattr(S, "_time_file", lambda p, t, **kw: calls.append(p.name) or fake_ms[p.name])
    sel = S.select_artifact(d, cpu=VNNI, measure=True, cache_dir=tmp_path / "cache")
    assert sel.method == "measured" and sel.path.name == "model.int8-cpu.onnx"
    assert sorted(calls) == ["model.int8-cpu.onnx", "model.onnx"]  # only files usable on this CPU
    assert set(sel.timings_ms) == {"model.onnx", "model.int8-cpu.onnx"} and "measured now" in sel.reason
    again = S.select_artifact(d, cpu=VNNI, measure=True, cache_dir=tmp_path / "cache")
    assert again.method == "cached" and again.path == sel.path and len(calls) == 2  # not timed again
    assert "cached in" in again.reason
    # another machine (other features) is another cache entry: AVX2 has one usable file, nothing to time
    other = S.select_artifact(d, cpu=AVX2, measure=True, cache_dir=tmp_path / "cache")
    assert other.path.name == "model.onnx" and len(calls) == 2
    assert len(json.loads((tmp_path / "cache" / "artifact_choice.json").read_text())) == 1


def test_explicit_cpu_file_on_a_cpu_without_vnni_runs_with_a_note(tmp_path, monkeypatch):
    d = _folder(tmp_path)
    monkeypatch.setenv("EDGE_DEBLUR_CPU_FLAGS", "avx2 fma")
    note = S.note_for_file(d / "model.int8-cpu.onnx")
    assert note and "lacks" in note and "model.onnx" in note
    assert S.note_for_file(d / "model.onnx") is None
    monkeypatch.setenv("EDGE_DEBLUR_CPU_FLAGS", "avx2 avx512_vnni")
    assert S.note_for_file(d / "model.int8-cpu.onnx") is None
    # the note names the file the folder would run instead: the 7-bit one where there is one
    monkeypatch.setenv("EDGE_DEBLUR_CPU_FLAGS", "avx2 fma")
    both = _folder(tmp_path, avx2_int8=True, name="both")
    assert "would run model.int8-avx2.onnx" in S.note_for_file(both / "model.int8-cpu.onnx")


@pytest.mark.parametrize("cpu, expect", [(AVX2, "model.int8-avx2.onnx"), (AVX512, "model.int8-avx2.onnx"),
                                         (VNNI, "model.int8-cpu.onnx"), (AMX, "model.int8-cpu.onnx")])
def test_the_bundled_folder_runs_the_int8_file_of_each_cpu(cpu, expect):
    """The shipped default: the 8-bit CPU file where there are dot products, the 7-bit one on
    AVX2 (where the 8-bit one saturates), both listed with their weight bits and accuracy."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "export" / "edgenet_m5"
    sel = S.select_artifact(folder, cpu=cpu, measure=False)
    assert sel.path.name == expect, sel.reason
    arts = json.loads((folder / "manifest.json").read_text())["artifacts"]
    assert arts["model.int8-avx2.onnx"]["weight_bits"] == 7 and arts["model.int8-cpu.onnx"].get("weight_bits", 8) == 8
    assert S.accuracy_drop(arts["model.int8-avx2.onnx"]) < 0.05
