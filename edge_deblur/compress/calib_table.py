"""Calibration tables: per-tensor activation ranges computed by ONNX Runtime's calibrators
(minmax, percentile, entropy) and their JSON form (``calibration/<model>/.../table.json``), tied to
the FP32 ONNX file by its sha256. numpy + onnxruntime only."""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError

log = logging.getLogger("edge_deblur.compress.quantize")

TABLE_FORMAT = "edge_deblur.calibration.v1"
METHODS = ("minmax", "percentile", "entropy")
ENTROPY_BINS = 512  # histogram bins for entropy calibration (KL over 128 quantized bins, as TensorRT)


class _DropORTHints(logging.Filter):
    """ONNX Runtime's quantizer logs a 'consider pre-processing' hint to the root logger on
    every call; it does not apply to these conv-only graphs (shapes are static per op)."""

    def filter(self, record):
        return "pre-process" not in record.getMessage()


class _quiet:
    """Drop ORT's pre-processing hint and send the calibrators' print() output to the log, so
    stdout stays clean for --json."""

    def __enter__(self):
        import contextlib
        import io

        self.f = _DropORTHints()
        logging.getLogger().addFilter(self.f)
        self.buf = io.StringIO()
        self.redirect = contextlib.redirect_stdout(self.buf)
        self.redirect.__enter__()

    def __exit__(self, *exc):
        self.redirect.__exit__(*exc)
        logging.getLogger().removeFilter(self.f)
        for line in self.buf.getvalue().splitlines():
            log.debug("onnxruntime: %s", line)
        return False




class TensorReader:
    """ONNX Runtime CalibrationDataReader over preprocessed tensors, or over whole feed dicts (a
    recurrent model's image and state), with strided collection."""

    def __init__(self, input_name: str, tensors: Sequence):
        self.input_name = input_name
        self.tensors = list(tensors)
        self.set_range(0, len(self.tensors))

    def set_range(self, start_index: int, end_index: int):
        self._items = iter(self.tensors[start_index:end_index])

    def __len__(self):
        return len(self.tensors)

    def get_next(self):
        t = next(self._items, None)
        if t is None:
            return None
        return t if isinstance(t, dict) else {self.input_name: t}

    def __iter__(self):
        return self

    def __next__(self):
        r = self.get_next()
        if r is None:
            raise StopIteration
        return r




def save_table(path, ranges: dict[str, tuple[float, float]], method: str, onnx_sha256: str,
               target: str = "tensorrt", graph: str | None = None) -> dict:
    """Write a table. ``target`` says how the ranges become scales: ``tensorrt`` (signed,
    symmetric: max(|min|, |max|) / 127) or ``cpu`` (unsigned, asymmetric: (max - min) / 255 with a
    zero point); ``graph`` names the rewrite the tensor names refer to (None: the ONNX as exported)."""
    from ..runtime.manifest import atomic_write_json

    table = {
        "format": TABLE_FORMAT,
        "method": method,
        "onnx_sha256": onnx_sha256,
        "target": target,
        "graph": graph,
        "scale": "(max - min) / 255, zero point round(-min / scale)" if target in ("cpu", "cpu-avx2") else "max(|min|, |max|) / 127",
        "tensors": {k: {"min": float(lo), "max": float(hi)} for k, (lo, hi) in sorted(ranges.items())},
    }
    atomic_write_json(path, table)
    return table


def load_table(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"calibration table {str(p)!r} not found; run 'edge-deblur quantize' with --calib to make one")
    try:
        t = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{str(p)!r} is not a readable calibration table ({e})") from e
    if not isinstance(t, dict) or t.get("format") != TABLE_FORMAT or not isinstance(t.get("tensors"), dict):
        raise InputError(f"{str(p)!r} is not an edge-deblur calibration table (format {TABLE_FORMAT})")
    if t.get("method") not in METHODS:
        raise InputError(f"{str(p)!r}: unknown calibration method {t.get('method')!r}")
    for k, v in t["tensors"].items():
        if not (isinstance(v, dict) and all(isinstance(v.get(x), (int, float)) for x in ("min", "max")) and v["min"] <= v["max"]):
            raise InputError(f"{str(p)!r}: bad range for tensor {k!r}: {v!r}")
    return t


def _to_tensors_data(ranges: dict[str, tuple[float, float]], method: str):
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    cm = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
          "entropy": CalibrationMethod.Entropy}[method]
    return TensorsData(cm, {k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in ranges.items()})


def _from_tensors_data(td) -> dict[str, tuple[float, float]]:
    out = {}
    for k in td.data:
        lo, hi = td.data[k].range_value
        out[k] = (float(np.asarray(lo, np.float32).reshape(-1)[0]), float(np.asarray(hi, np.float32).reshape(-1)[0]))
    return out


def _method_enum(method: str):
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise InputError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")
    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[method]




def collect_ranges(src: Path, tensors: Sequence[np.ndarray], input_name: str, method: str, percentile: float,
                   symmetric: bool = True) -> dict:
    """Run ONNX Runtime's calibrator over ``tensors``; -> {tensor name: (min, max)}.

    The calibrator is driven directly (not through quantize_static, which cannot set the number
    of histogram bins: its entropy calibration would use 128 bins for 128 quantized levels, i.e.
    plain min/max), in chunks of at most 8 tiles to bound memory. ``symmetric``: percentile and
    entropy ranges centred on zero (TensorRT's signed INT8) or not (the CPU's unsigned activations)."""
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    calib_opts: dict = {}
    if method == "percentile":
        calib_opts = {"percentile": float(percentile), "symmetric": symmetric, "num_bins": 2048}
    elif method == "entropy":
        calib_opts = {"num_bins": ENTROPY_BINS, "num_quantized_bins": 128, "symmetric": symmetric}
    n = len(tensors)
    chunk = min(8, n)
    reader = TensorReader(input_name, tensors)
    with tempfile.TemporaryDirectory(prefix="edge_deblur_cal.") as tmp, _quiet():
        cal = create_calibrator(Path(src), ops, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                calibrate_method=_method_enum(method), extra_options=calib_opts)
        for start in range(0, n, chunk):
            reader.set_range(start, min(n, start + chunk))
            cal.collect_data(reader)
        td = cal.compute_data()
        del cal
    return _from_tensors_data(td)


