"""cuda-python on a machine whose driver is older than its CUDA runtime, or that has no driver:
the runtime says which (not "no CUDA GPU") and names the extra that fits the driver."""
import pytest

from edge_deblur.errors import BackendError
from edge_deblur.runtime import cudart


class FakeRuntime:
    """cuda.bindings.runtime as cuda-python 13 reports it on an older or missing driver."""

    class cudaError_t:
        cudaSuccess = 0
        cudaErrorInsufficientDriver = 35

    def __init__(self, driver, runtime):
        self.driver, self.runtime = driver, runtime

    def cudaGetDeviceCount(self):
        return (self.cudaError_t.cudaErrorInsufficientDriver, 0)

    def cudaDriverGetVersion(self):
        return (0, self.driver)

    def cudaRuntimeGetVersion(self):
        return (0, self.runtime)

    def cudaGetErrorName(self, err):
        return (0, b"cudaErrorInsufficientDriver")

    def cudaGetErrorString(self, err):
        return (0, b"CUDA driver version is insufficient for CUDA runtime version")


@pytest.mark.parametrize("driver, runtime, words", [
    (12040, 13000, ["driver is too old", "supports CUDA 12.4", "needs CUDA 13.0", "580.65",
                    "pip install 'edge-deblur[tensorrt]'"]),
    (11080, 12090, ["driver is too old", "supports CUDA 11.8", "needs CUDA 12.9", "update the driver"]),
    (0, 12090, ["no NVIDIA driver is loaded", "nvidia-smi", "--backend onnxruntime"]),
])
def test_insufficient_driver_says_which(monkeypatch, driver, runtime, words):
    monkeypatch.setattr(cudart, "_cudart", FakeRuntime(driver, runtime))
    with pytest.raises(BackendError) as e:
        cudart.require_gpu(0)
    msg = str(e.value)
    for w in words:
        assert w in msg, (w, msg)
    assert "no CUDA GPU is available" not in msg
    n, why = cudart.device_count()
    assert n == 0 and why == msg
