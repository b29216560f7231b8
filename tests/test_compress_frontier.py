"""benchmarks/frontier.py: the docs section is replaced between its markers, the rest kept."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _frontier():
    spec = importlib.util.spec_from_file_location("frontier", ROOT / "benchmarks" / "frontier.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows():
    base = {"params": 874492, "gmacs_1280x720": 10.0, "file_mb": 3.5, "input_psnr": 21.7, "input_ssim": 0.72,
            "latency_ms_p50": 290.0, "pairs": 10}
    return [
        base | {"model": "dense", "folder": "export/s", "file": "model.onnx", "precision": "fp32", "psnr": 28.1, "ssim": 0.85},
        base | {"model": "dense", "folder": "export/s", "file": "model.int8.onnx", "precision": "int8", "psnr": 28.05,
                "ssim": 0.849, "psnr_int8_vs_fp32": 55.0, "latency_ms_p50": 310.0},
        base | {"model": "pruned", "folder": "export/s_p50", "file": "model.onnx", "precision": "fp32", "psnr": 27.9,
                "ssim": 0.84, "params": 219908, "gmacs_1280x720": 2.7, "latency_ms_p50": 97.0},
    ]


def test_docs_section_is_replaced_between_markers(tmp_path):
    F = _frontier()
    args = argparse.Namespace(threads=0, scene="test_001", pairs="pairs", runs=10, warmup=3, size="640x360",
                              plot=str(tmp_path / "frontier.png"))
    mach = {"cpu": "Test CPU", "cores": 2, "onnxruntime": "1.x", "loadavg": (0.1, 0.1, 0.1), "int8_dot_product": False}
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nintro kept\n\n## Other section\n\nother numbers kept\n")
    F.write_docs(md, F.markdown(_rows(), mach, args, "python benchmarks/frontier.py --x"))
    first = md.read_text()
    assert "intro kept" in first and "other numbers kept" in first
    assert first.count(F.BEGIN) == 1 and first.count(F.END) == 1
    assert "| pruned | `s_p50/model.onnx` | FP32 | 0.220 | 2.70 |" in first
    assert "| dense | `s/model.int8.onnx` | INT8 | 0.874 | 10.00 | 3.50 | 28.050 | 0.8490 | -0.050 | 55.0 | 310.0 |" in first
    assert "no INT8 dot-product" in first and "python benchmarks/frontier.py --x" in first
    md.write_text(first + "\ntrailing text kept\n")
    rows = _rows()
    rows[0]["psnr"] = 29.0
    F.write_docs(md, F.markdown(rows, mach, args, "cmd2"))
    second = md.read_text()
    assert second.count(F.BEGIN) == 1 and "trailing text kept" in second and "other numbers kept" in second
    assert "cmd2" in second and "python benchmarks/frontier.py --x" not in second
    F.plot(_rows(), tmp_path / "frontier.png", "test_001")
    assert (tmp_path / "frontier.png").stat().st_size > 1000
