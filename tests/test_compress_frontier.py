"""benchmarks/frontier.py: the docs section is replaced between its markers, the rest kept; the
Pareto frontier and the quality-vs-FPS plot."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = ["REDS_320x180:test_001", "GoPro_1280x720"]


def _frontier():
    spec = importlib.util.spec_from_file_location("frontier", ROOT / "benchmarks" / "frontier.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sets(a, b, vs=None):
    out = {SETS[0]: {"psnr": a, "ssim": 0.7, "input_psnr": 21.7, "input_ssim": 0.72, "pairs": 10},
           SETS[1]: {"psnr": b, "ssim": 0.6, "input_psnr": 22.9, "input_ssim": 0.64, "pairs": 17}}
    if vs:
        for s in out.values():
            s["psnr_vs_fp32"] = vs
    return out


def _rows():
    base = {"params": 874492, "gmacs_1280x720": 10.0, "file_mb": 3.5, "stride": 16, "chosen_here": False}
    return [
        base | {"model": "s", "folder": "export/s", "file": "model.onnx", "kind": "fp32", "sets": _sets(22.74, 23.40),
                "ms_p50": 30.0, "fps": 33.3, "speedup_vs_fp32": 1.0},
        base | {"model": "s", "folder": "export/s", "file": "model.int8-cpu.onnx", "kind": "int8-cpu", "chosen_here": True,
                "sets": _sets(22.68, 23.35, 38.1), "ms_p50": 14.0, "fps": 71.4, "speedup_vs_fp32": 2.11},
        base | {"model": "s", "folder": "export/s", "file": "model.int8.onnx", "kind": "int8-tensorrt",
                "sets": _sets(22.66, 23.30, 38.4), "ms_p50": 35.0, "fps": 28.6, "speedup_vs_fp32": 0.86},
        base | {"model": "s_p50", "folder": "export/s_p50", "file": "model.onnx", "kind": "fp32", "params": 219908,
                "gmacs_1280x720": 2.7, "sets": _sets(22.64, 23.2), "ms_p50": 18.0, "fps": 55.6, "speedup_vs_fp32": 1.0},
    ]


def test_docs_section_is_replaced_between_markers(tmp_path):
    F = _frontier()
    args = argparse.Namespace(threads=2, rounds=20, warmup=3, size="640x360", plot=str(tmp_path / "frontier.png"))
    mach = {"cpu": "Test CPU", "cores": 2, "isa": "AVX512-VNNI", "features": ["avx2", "avx512_vnni"], "onnxruntime": "1.x",
            "loadavg": (0.1, 0.1, 0.1)}
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nintro kept\n\n## Other section\n\nother numbers kept\n")
    F.write_docs(md, F.markdown(_rows(), mach, args, "python benchmarks/frontier.py --x", SETS))
    first = md.read_text()
    assert "intro kept" in first and "other numbers kept" in first
    assert first.count(F.BEGIN) == 1 and first.count(F.END) == 1
    assert "| s | `model.int8-cpu.onnx` ◀ | 0.874 | 10.00 | 3.50 | 22.680 (-0.060) | 23.350 (-0.050) | 38.1 / 38.1 | 14.0 | 71.4 | **2.11** |" in first
    assert "| s_p50 | `model.onnx` | 0.220 | 2.70 |" in first
    assert "AVX512-VNNI (avx2, avx512_vnni)" in first and "python benchmarks/frontier.py --x" in first
    md.write_text(first + "\ntrailing text kept\n")
    F.write_docs(md, F.markdown(_rows(), mach, args, "cmd2", SETS))
    second = md.read_text()
    assert second.count(F.BEGIN) == 1 and "trailing text kept" in second and "other numbers kept" in second
    assert "cmd2" in second and "python benchmarks/frontier.py --x" not in second


def test_pareto_frontier_and_plot(tmp_path):
    F = _frontier()
    rows = _rows()
    pts = [(r["fps"], r["sets"][SETS[0]]["psnr"]) for r in rows]
    # FP32 dense (best quality), INT8-CPU (fastest with the next-best quality) are on it; the TensorRT
    # layout (slower and worse than FP32 dense) and the pruned FP32 (slower than INT8-CPU, worse) are not
    assert [rows[i]["file"] for i in F.pareto(pts)] == ["model.onnx", "model.int8-cpu.onnx"]
    F.plot(rows, tmp_path / "frontier.png", SETS)
    assert (tmp_path / "frontier.png").stat().st_size > 1000
