"""Accuracy of a quantized ONNX model against its FP32 source: output PSNR on model inputs, and
PSNR/SSIM against ground truth on real blur/sharp pairs through the runtime's preprocessing
(pairs found by ``data.pairs``, scored by ``metrics.evaluate``). numpy, OpenCV, onnxruntime."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ModelError
from ..runtime import preprocess


def ort_session(model, threads: int = 0, emulate: bool = False):
    """An ONNX Runtime CPU session. ``emulate``: every graph optimization off, so each
    DequantizeLinear -> op -> QuantizeLinear of a Q/DQ graph runs in float: the exact result of
    its integer arithmetic (what VNNI/AMX kernels compute), on a CPU whose own INT8 kernels would
    saturate an 8-bit-weight graph (x86 without VNNI: ``compress/qdq_graph.py``)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if emulate:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    # worker threads stop spinning when a run returns: several sessions timed in turn (frontier,
    # layout benchmarks) would otherwise take the cores from each other's runs
    so.add_session_config_entry("session.force_spinning_stop", "1")
    src = model if isinstance(model, (bytes, str)) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def compare_outputs(fp32_path, int8_path, tensors: Sequence, threads: int = 0, emulate: bool = False) -> dict:
    """INT8 vs FP32 image outputs (clipped to [0, 1], as frames are) on model inputs (tensors, or
    feed dicts with a recurrent model's state): PSNR over all. ``emulate``: the INT8 graph as
    :func:`ort_session` emulates it."""
    a_s, b_s = ort_session(fp32_path, threads), ort_session(int8_path, threads, emulate)
    name = next(i.name for i in a_s.get_inputs() if not i.name.startswith("state_in"))
    out = next(o.name for o in a_s.get_outputs() if not o.name.startswith("state_out"))
    se, n, worst = 0.0, 0, 0.0
    for t in tensors:
        feed = t if isinstance(t, dict) else {name: t}
        a = np.clip(a_s.run([out], feed)[0], 0, 1).astype(np.float64)
        b = np.clip(b_s.run([out], feed)[0], 0, 1).astype(np.float64)
        se += float(np.sum((a - b) ** 2))
        n += a.size
        worst = max(worst, float(np.max(np.abs(a - b))))
    mse = se / max(1, n)
    return {"psnr_int8_vs_fp32": float("inf") if mse == 0 else 10 * math.log10(1.0 / mse),
            "max_abs_diff": worst, "inputs": len(tensors)}


def find_pairs(root, scenes: Sequence[str] | None = None) -> list[tuple[str, str, str]]:
    """(scene, blur, sharp) of ``scenes`` (all when empty) under ``root`` (GoPro or REDS layout)."""
    from ..data.pairs import find_pairs as _find, select_scenes

    return [(s, str(b), str(sh)) for s, b, sh in select_scenes(_find(root), list(scenes or []), root)]


def model_stride(path) -> int:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    md = {e.key: e.value for e in m.metadata_props}
    if "edge_deblur.stride" in md:
        return int(md["edge_deblur.stride"])
    from ..runtime.manifest import read_manifest

    s = read_manifest(Path(path).parent).get("stride")
    if not s:
        raise ModelError(f"{str(path)!r} does not record its stride; pass stride=")
    return int(s)


def evaluate_onnx_on_pairs(model_path, pairs, with_ssim: bool = True, threads: int = 0, stride: int | None = None,
                           emulate: bool = False) -> dict:
    """PSNR/SSIM of an ONNX model on (scene, blur, sharp) pairs, through the runtime's
    preprocessing (pad to stride, crop back, clip, 8-bit)."""
    from ..metrics.evaluate import evaluate_pairs

    stride = stride or model_stride(model_path)
    sess = ort_session(model_path, threads, emulate)
    ins = sess.get_inputs()
    name = next(i.name for i in ins if not i.name.startswith("state_in"))
    states = [i for i in ins if i.name.startswith("state_in")]
    meta = dict(sess.get_modelmeta().custom_metadata_map or {})
    scale = {i.name: int(meta.get(f"edge_deblur.state_scale.{i.name}", 1)) for i in states}
    outs = [next(o.name for o in sess.get_outputs() if not o.name.startswith("state_out"))]
    outs += ["state_out" + i.name[len("state_in"):] for i in states]
    carried: dict = {}

    def fn(frame):  # a recurrent model's state is carried through a scene, from zeros
        t, info = preprocess.frame_to_tensor(frame, stride)
        feed = {name: t}
        for i in states:
            v = carried.get(i.name)
            n, _, h, w = t.shape
            shape = (n, i.shape[1], h // scale[i.name], w // scale[i.name])
            feed[i.name] = v if v is not None and v.shape == shape else np.zeros(shape, np.float32)
        res = sess.run(outs, feed)
        carried.update({i.name: o for i, o in zip(states, res[1:])})
        return preprocess.tensor_to_frame(res[0], info)

    return evaluate_pairs(fn, pairs, with_ssim=with_ssim, reset=carried.clear)


def pairs_int8_vs_fp32(fp32_path, int8_path, pairs, stride: int, threads: int = 0, feeds=None,
                       emulate: bool = False) -> float:
    """INT8 vs FP32 output PSNR on the blurry frames of ``pairs`` (whole frames, padded);
    ``feeds(tensors)`` makes the feeds (a recurrent model's state: ``quantize.model_feeds``)."""
    from ..metrics.evaluate import read_image

    tensors = [preprocess.frame_to_tensor(read_image(b), stride)[0] for _, b, _ in pairs]
    return compare_outputs(fp32_path, int8_path, feeds(tensors) if feeds else tensors, threads, emulate)["psnr_int8_vs_fp32"]


def accuracy_on_pairs(fp32_path, int8_path, root, scenes, stride: int, threads: int = 0, feeds=None,
                      emulate: bool = False) -> dict:
    """FP32 and INT8 against ground truth on the pairs of ``root``/``scenes``, and their difference."""
    pl = find_pairs(root, scenes)
    f32 = evaluate_onnx_on_pairs(fp32_path, pl, threads=threads, stride=stride)
    i8 = evaluate_onnx_on_pairs(int8_path, pl, threads=threads, stride=stride, emulate=emulate)
    return {
        "root": str(root), "scenes": list(scenes or []), "count": len(pl),
        "fp32": {k: f32[k] for k in ("psnr", "ssim", "input_psnr")},
        "int8": {k: i8[k] for k in ("psnr", "ssim", "input_psnr")},
        "delta_psnr": i8["psnr"] - f32["psnr"],
        "psnr_int8_vs_fp32": pairs_int8_vs_fp32(fp32_path, int8_path, pl, stride, threads, feeds, emulate),
    }
