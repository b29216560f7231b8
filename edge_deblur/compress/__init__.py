"""Compression: structured pruning (``prune``, torch + Torch-Pruning), INT8 Q/DQ quantization with
calibration (``quantize``, ONNX Runtime; no torch). Import the submodules directly."""
