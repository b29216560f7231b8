"""Offline export stages: torch checkpoint -> ONNX (``onnx_export``), ONNX -> FP16 ONNX
(``fp16``), ONNX -> TensorRT engine. Each stage reads files and writes files with a manifest;
importing this package imports nothing heavy."""
