"""Backends: choice by suffix or name, manifest checks, bad model files, no torch on the runtime path."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("torch")

from runtime_helpers import exported  # noqa: E402

from edge_deblur.errors import BackendError, EdgeDeblurError, InputError, ModelError  # noqa: E402
from edge_deblur.runtime.backends import open_backend  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return exported(tmp_path_factory)


@pytest.fixture
def folder_copy(tiny, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny["dir"], d)
    return d


def test_backend_by_suffix(tiny):
    from edge_deblur.runtime.backends.onnxruntime import OnnxRuntimeBackend, cpu_cores
    from edge_deblur.runtime.backends.torch_backend import TorchBackend

    with open_backend(tiny["onnx"]) as b:
        assert isinstance(b, OnnxRuntimeBackend)
        assert b.stride == 4 and b.precision == "fp32" and b.providers == ["CPUExecutionProvider"]
        assert b.threads == cpu_cores() and b.manifest["onnx_sha256"]
        x = np.random.default_rng(0).random((2, 3, 12, 20), dtype=np.float32)
        y_ort = b.infer(x)
        with pytest.raises(InputError, match="stride"):
            b.infer(np.zeros((1, 3, 10, 12), np.float32))
    with open_backend(tiny["ckpt"]) as t:
        assert isinstance(t, TorchBackend) and t.stride == 4
        assert np.abs(t.infer(x) - y_ort).max() <= 1e-4
        assert t.macs_per_pixel == pytest.approx(tiny["manifest"]["macs_per_pixel"])
    with open_backend(tiny["fp16"]) as h:
        assert h.precision == "fp16"
        assert np.abs(h.infer(x) - y_ort).max() < 2e-2
    with open_backend(tiny["dir"], backend="onnxruntime") as f:  # a model folder
        assert f.path.suffix == ".onnx"


def test_backend_names_and_mismatches(tiny, tmp_path):
    with pytest.raises(BackendError, match="cannot open"):
        open_backend(tiny["onnx"], backend="torch")
    with pytest.raises(BackendError, match="export"):
        open_backend(tiny["ckpt"], backend="onnxruntime")
    with pytest.raises(BackendError, match="onnxruntime"):
        open_backend(tiny["onnx"], backend="onxruntime")  # typo -> suggestion
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(ModelError, match="suffix"):
        open_backend(other)
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendError, match="CUDAExecutionProvider"):
            open_backend(tiny["onnx"], device="cuda")
    fake = tmp_path / "model.engine"
    fake.write_bytes(b"not an engine")
    with pytest.raises(EdgeDeblurError):  # TensorRT absent here, or the file rejected: a clear typed error
        open_backend(fake)


def test_missing_and_corrupt_models(tiny, tmp_path):
    with pytest.raises(ModelError, match="nope.onnx"):
        open_backend(tmp_path / "nope.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(ModelError, match="garbage.onnx"):
        open_backend(garbage)
    truncated = tmp_path / "truncated.onnx"
    data = tiny["onnx"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated.onnx"):
        open_backend(truncated)
    with pytest.raises(ModelError, match="nope.safetensors"):
        open_backend(tmp_path / "nope.safetensors")


def test_manifest_mismatch(folder_copy):
    import onnx

    path = folder_copy / "model.onnx"
    m = onnx.load(str(path))
    m.producer_version = "edited"  # still a valid model, but not the exported bytes
    onnx.save(m, str(path))
    with pytest.raises(ModelError, match="manifest .* does not match .*re-export"):
        open_backend(path)


def test_truncated_listed_file_is_a_mismatch(folder_copy):
    path = folder_copy / "model.fp16.onnx"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelError, match="does not match"):
        open_backend(path)


def test_corrupt_manifest(folder_copy):
    (folder_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="manifest"):
        open_backend(folder_copy / "model.onnx")


def test_unlisted_file_still_loads_from_its_metadata(folder_copy):
    shutil.copy(folder_copy / "model.onnx", folder_copy / "copy.onnx")
    with open_backend(folder_copy / "copy.onnx") as b:
        assert b.stride == 4  # from the ONNX metadata_props
        assert b.manifest == {}


def test_runtime_path_does_not_import_torch(tiny, tmp_path):
    code = textwrap.dedent(
        f"""
        import sys

        class Block:  # any attempt to import torch fails loudly
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch imported on the runtime path: " + name)
        sys.meta_path.insert(0, Block())

        import numpy as np
        import edge_deblur, edge_deblur.runtime
        from edge_deblur import Deblurrer
        from edge_deblur.runtime import open_backend
        import edge_deblur.runtime.tiling, edge_deblur.runtime.bench, edge_deblur.cli
        edge_deblur.cli.build_parser()  # every command module, imported as for --help
        with Deblurrer.open({str(tiny['onnx'])!r}, tile=16, overlap=4) as d:
            out = d(np.zeros((37, 41, 3), np.uint8))
            assert out.shape == (37, 41, 3)
        from edge_deblur.runtime.bench import bench
        r = bench({str(tiny['onnx'])!r}, size=(32, 24), runs=1, warmup=0, peak_runs=1)
        assert r["gmacs"] > 0
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
        print("OK")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OK" in r.stdout


def test_a_model_folder_on_another_device_or_backend(tmp_path, monkeypatch):
    """The CPU's choice (INT8 for x86 dot products) was also made for device cuda/tensorrt, and the
    torch backend refused a folder that holds the checkpoint."""
    import edge_deblur.runtime.select as sel
    from edge_deblur.runtime.backends import resolve_model
    from edge_deblur.runtime.cpu_features import features_from

    folder = Path(__file__).resolve().parents[1] / "export" / "edgenet_m5"
    monkeypatch.setattr(sel, "cpu_features", lambda *a, **k: features_from({"avx2", "avx512f", "amx_int8"}, "AMX CPU"))
    assert resolve_model(folder)[0].name == "model.int8-cpu.onnx"      # on this (mocked) CPU
    for device in ("cuda", "tensorrt"):
        assert resolve_model(folder, device=device)[0].name == "model.onnx"
    assert resolve_model(folder, "torch")[0].name == "model.safetensors"
