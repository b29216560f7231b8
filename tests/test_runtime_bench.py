"""edge-deblur bench: keys, consistent arithmetic, the conv-peak graphs."""
import json

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("torch")

from runtime_helpers import exported  # noqa: E402

from edge_deblur.errors import InputError  # noqa: E402
from edge_deblur.runtime.bench import bench, conv_stack_onnx, parse_size, peak_configs  # noqa: E402

KEYS = ("fps", "latency_ms_p50", "latency_ms_p99", "gmacs", "gmacs_per_s", "peak_gmacs_per_s", "efficiency",
        "backend", "size", "threads", "model")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return exported(tmp_path_factory)


def test_bench_numbers_are_consistent(tiny):
    r = bench(tiny["onnx"], size=(50, 30), runs=4, warmup=1, peak_runs=2)
    for k in KEYS:
        assert r[k] is not None, k
    assert r["size"] == "50x30" and r["padded_size"] == "52x32" and r["backend"] == "onnxruntime"
    assert r["gmacs"] == pytest.approx(tiny["manifest"]["macs_per_pixel"] * 52 * 32 / 1e9)
    assert r["gmacs_per_s"] == pytest.approx(r["gmacs"] / (r["infer_ms_p50"] / 1e3))
    assert r["efficiency"] == pytest.approx(r["gmacs_per_s"] / r["peak_gmacs_per_s"])
    assert r["peak_gmacs_per_s"] == max(c["gmacs_per_s"] for c in r["peak"]["configs"])
    assert [c["channels"] for c in r["peak"]["configs"]] == [8, 16]  # the model's widths
    assert r["latency_ms_p99"] >= r["latency_ms_p50"] > 0 and r["fps"] > 0
    assert r["machine"]["cores"] >= 1


def test_bench_batch_beyond_a_fixed_batch_model_is_a_clear_error(tmp_path):
    # was ONNX Runtime's "Got invalid dimensions for input ... Got: 2 Expected: 1"
    from runtime_helpers import fixed_batch_onnx

    m = fixed_batch_onnx(tmp_path / "b1.onnx")
    with pytest.raises(InputError, match=r"--batch 2: b1.onnx takes at most a batch of 1 .*first dimension.*use --batch 1"):
        bench(m, size=(32, 24), runs=1, warmup=0, batch=2, peak=False)
    assert bench(m, size=(32, 24), runs=1, warmup=0, batch=1, peak=False)["batch"] == 1


def test_conv_peak_graph_macs():
    import onnxruntime as ort

    from edge_deblur.runtime.onnx_info import graph_macs

    data = conv_stack_onnx(8, depth=3)
    assert graph_macs(__import__("onnx").load_from_string(data), 10, 12) == 3 * 10 * 12 * 8 * 8 * 9
    x = np.random.default_rng(0).random((1, 8, 10, 12), dtype=np.float32)
    y = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert y.shape == x.shape and (y >= 0).all() and y.max() > 0
    assert peak_configs((1280, 720), (16, 32)) == [(16, 360, 640), (32, 180, 320)]


def test_parse_size():
    assert parse_size("1280x720") == (1280, 720)
    assert parse_size(" 64X48 ") == (64, 48)
    for bad in ("1280", "x720", "0x10", "12x-3", "axb"):
        with pytest.raises(InputError):
            parse_size(bad)


def test_bench_cli_json(tiny, capsys):
    from edge_deblur.cli import main

    assert main(["bench", "--model", str(tiny["onnx"]), "--size", "40x24", "--runs", "2", "--warmup", "0",
                 "--peak-runs", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for k in KEYS:
        assert k in r
    assert r["size"] == "40x24"
    # the CPU's relevant instruction-set features are recorded with every result
    from edge_deblur.runtime.cpu_features import cpu_features

    f = cpu_features()
    assert r["machine"]["cpu_features"] == sorted(f.relevant) and r["machine"]["isa"] == f.isa
    assert r["machine"]["int8_dot_product"] == f.int8_dot
    # a model folder: which file ran and why (here with a CPU without VNNI mocked: FP32)
    import os

    os.environ["EDGE_DEBLUR_CPU_FLAGS"] = "avx2 fma"
    try:
        assert main(["bench", "--model", str(tiny["onnx"].parent), "--size", "40x24", "--runs", "1", "--warmup", "0",
                     "--no-peak", "--json"]) == 0
    finally:
        del os.environ["EDGE_DEBLUR_CPU_FLAGS"]
    r = json.loads(capsys.readouterr().out)
    assert r["selection"]["file"] == "model.onnx" and r["selection"]["method"] == "features"
    assert r["selection"]["cpu"]["features"] == ["avx2", "fma"] and "AVX2" in r["selection"]["reason"]
    assert main(["bench", "--model", str(tiny["onnx"]), "--size", "40by24"]) == 2
    assert "40by24" in capsys.readouterr().err
