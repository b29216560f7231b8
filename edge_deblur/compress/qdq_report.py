"""Facts about a Q/DQ graph, read from the file: Q/DQ counts, activation and weight types, zero
points, per-channel weight scales, which Convs and Adds are quantized. Used by the quantize stage
(a TensorRT graph must have only zero zero points), the tests and the TensorRT builder's check."""
from __future__ import annotations

import numpy as np

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def qdq_report(path) -> dict:
    """Facts about a Q/DQ graph: counts, zero points, per-channel weight scales."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    bad_zp, dtypes, act_dtypes = [], set(), set()
    for n in m.graph.node:
        if n.op_type in QDQ_OPS and len(n.input) > 2:
            zp = inits.get(n.input[2])
            if zp is None:
                bad_zp.append((n.name, "not an initializer"))
                continue
            dtypes.add(str(zp.dtype))
            if n.op_type == "QuantizeLinear":  # weights are stored quantized: a Q node quantizes an activation
                act_dtypes.add(str(zp.dtype))
            if np.any(zp != 0):
                bad_zp.append((n.name, zp.tolist()))
    convs = []
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        dq = producers.get(n.input[1])
        w_info = {"conv": n.name, "per_channel": False}
        if dq is not None and dq.op_type == "DequantizeLinear":
            w = inits.get(dq.input[0])
            s = inits.get(dq.input[1])
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            w_info.update(
                weight_dtype=str(w.dtype) if w is not None else None,
                out_channels=int(w.shape[0]) if w is not None else None,
                scale_len=int(s.size) if s is not None else None,
                axis=int(axis),
                per_channel=bool(s is not None and w is not None and s.ndim == 1 and s.size == w.shape[0] and axis == 0),
            )
        in_dq = producers.get(n.input[0])
        w_info["input_quantized"] = bool(in_dq is not None and in_dq.op_type == "DequantizeLinear")
        convs.append(w_info)
    adds = []
    for n in m.graph.node:
        if n.op_type in ("Add", "Concat"):
            q = [bool(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear") for i in n.input]
            adds.append({"node": n.name, "op": n.op_type, "inputs_quantized": q})
    io = {vi.name: onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type) for vi in list(m.graph.input) + list(m.graph.output)}
    return {
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in m.graph.node),
        "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in m.graph.node),
        "zero_point_dtypes": sorted(dtypes),
        "activation_dtypes": sorted(act_dtypes),
        "nonzero_zero_points": bad_zp,
        "convs": convs,
        "adds": adds,
        "io_dtypes": io,
        "float_convs": [c["conv"] for c in convs if not c.get("input_quantized")],
    }


