"""Backend selection and the errors on a machine without TensorRT, cuda-python or a GPU (this
one): each names the missing piece and the way out. Also: every GPU module imports without
torch, TensorRT or CUDA."""
import importlib.util
import subprocess
import sys
import textwrap

import pytest

from edge_deblur.errors import BackendError, DependencyError, EdgeDeblurError
from edge_deblur.runtime.backends import open_backend
from edge_deblur.runtime.backends.tensorrt import check_in_profile, parse_device, profile_error

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_CUDA_PYTHON = importlib.util.find_spec("cuda") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _torch_cuda():
    if not HAS_TORCH:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_engine_without_tensorrt_names_extra_and_fallback(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(DependencyError) as e:
        open_backend(engine)  # chosen by the suffix
    msg = str(e.value)
    assert "TensorRT is not installed" in msg
    assert "pip install 'edge-deblur[tensorrt]'" in msg and "--backend onnxruntime" in msg
    with pytest.raises(DependencyError):
        open_backend(engine, "trt")  # the alias


@pytest.mark.skipif(HAS_CUDA_PYTHON, reason="cuda-python is installed here")
def test_no_cuda_python_names_the_extra():
    from edge_deblur.runtime import cudart

    with pytest.raises(DependencyError, match=r"cuda-python.*edge-deblur\[tensorrt\].*--backend onnxruntime"):
        cudart.load()


def test_onnx_with_tensorrt_backend_is_refused_or_built(tmp_path):
    """Until open_backend routes .onnx to the TensorRT backend (engine cache), it says how to build."""
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(EdgeDeblurError) as e:
        open_backend(onnx, "tensorrt")
    assert "edge-deblur build" in str(e.value) or "TensorRT" in str(e.value)


@pytest.mark.skipif(_torch_cuda() or not HAS_TORCH, reason="needs torch without a CUDA GPU")
def test_torch_cuda_without_gpu_says_so(tmp_path):
    from runtime_helpers import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "m.safetensors")
    with pytest.raises(BackendError) as e:
        open_backend(ckpt, "torch-cuda")
    msg = str(e.value)
    assert "needs a CUDA GPU" in msg and "--backend onnxruntime" in msg


def test_profile_errors_say_how_to_widen():
    lo, hi = (1, 3, 256, 256), (1, 3, 736, 1280)
    check_in_profile((1, 3, 720, 1280), lo, hi)
    with pytest.raises(BackendError) as e:
        check_in_profile((1, 3, 1088, 1920), lo, hi)
    msg = str(e.value)
    assert "outside the TensorRT engine's optimization profile" in msg and "frame 1920x1088" in msg
    assert "--shapes 1x3x256x256:1x3x736x1280:1x3x1088x1920" in msg and "--backend onnxruntime" in msg
    with pytest.raises(BackendError, match="batch 2"):
        check_in_profile((2, 3, 256, 256), lo, hi)
    assert "1x3x736x1280" in profile_error((1, 3, 128, 128), lo, hi)  # too small: keep the max


def test_device_parsing():
    assert parse_device(None) == 0 and parse_device("cuda") == 0 and parse_device("cuda:1") == 1
    assert parse_device(2) == 2 and parse_device("tensorrt") == 0
    with pytest.raises(BackendError, match="CUDA device"):
        parse_device("cpu")


def test_gpu_modules_import_without_torch_tensorrt_or_cuda():
    """A fresh interpreter in which torch, tensorrt and cuda cannot be imported."""
    code = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'tensorrt', 'cuda', 'pycuda'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        import edge_deblur.runtime.gpu_pipeline, edge_deblur.runtime.cudart, edge_deblur.runtime.verify
        import edge_deblur.runtime.backends.tensorrt, edge_deblur.runtime.backends.torch_cuda
        import edge_deblur.export.trt_build, edge_deblur.export.engine_cache, edge_deblur.config.runtime
        import edge_deblur.cli.build_cmd, edge_deblur.cli.verify_cmd
        from edge_deblur.cli import build_parser
        build_parser()
        from edge_deblur.runtime.backends.torch_cuda import TorchCudaBackend
        try:
            TorchCudaBackend('x.safetensors')
        except Exception as e:
            print(type(e).__name__, e)
        assert not any(m.split('.')[0] in ('torch', 'tensorrt', 'cuda') for m in sys.modules)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("DependencyError") and "--backend onnxruntime" in r.stdout
