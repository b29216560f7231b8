"""FP32 ONNX -> FP16 ONNX with FP32 inputs/outputs, using only ``onnx`` helpers.

Float32 initializers and Constant tensors become float16, float32 Casts inside the graph
become float16 Casts, and a Cast node sits behind each float32 graph input and in front of
each float32 graph output, so callers keep feeding and reading float32. Operands that ONNX
requires to stay float32 (Resize scales/roi) are kept. The result is checked with
``onnx.checker`` and strict shape inference (which rejects any mixed-type node)."""
from __future__ import annotations

import numpy as np

from ..errors import ModelError

# (op_type, input index) pairs whose tensors must stay float32
_KEEP_FP32_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}


def convert_to_fp16(model, keep_io_fp32: bool = True):
    """Return a float16 copy of ``model`` (an ``onnx.ModelProto``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

    keep = set()
    for node in g.node:
        for i, name in enumerate(node.input):
            if (node.op_type, i) in _KEEP_FP32_INPUTS and name:
                keep.add(name)

    # weights
    for i, init in enumerate(g.initializer):
        if init.data_type == FLOAT and init.name not in keep:
            arr = numpy_helper.to_array(init)
            if np.isfinite(arr).all() and np.abs(arr).max(initial=0) > 65504:
                raise ModelError(f"initializer {init.name!r} has values beyond the FP16 range (|x| > 65504)")
            g.initializer[i].CopyFrom(numpy_helper.from_array(arr.astype(np.float16), init.name))

    # constants, casts, float tensor attributes
    for node in g.node:
        if node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to" and a.i == FLOAT and not (set(node.output) & keep):
                    a.i = HALF
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT:
                if node.op_type == "Constant" and set(node.output) & keep:
                    continue
                arr = numpy_helper.to_array(a.t).astype(np.float16)
                a.t.CopyFrom(numpy_helper.from_array(arr, a.t.name))
            elif a.type == onnx.AttributeProto.GRAPH:
                raise ModelError(f"FP16 conversion does not handle control flow (node {node.name or node.op_type})")

    del g.value_info[:]

    new_nodes = []
    # inputs: float32 graph input -> Cast(fp16) -> the old consumers
    for inp in g.input:
        if inp.type.tensor_type.elem_type != FLOAT or not keep_io_fp32:
            if inp.type.tensor_type.elem_type == FLOAT:
                inp.type.tensor_type.elem_type = HALF
            continue
        half_name = f"{inp.name}__fp16"
        for node in g.node:
            for i, name in enumerate(node.input):
                if name == inp.name:
                    node.input[i] = half_name
        new_nodes.append(helper.make_node("Cast", [inp.name], [half_name], name=f"{inp.name}_to_fp16", to=HALF))
    tail_nodes = []
    for out in g.output:
        if out.type.tensor_type.elem_type != FLOAT or not keep_io_fp32:
            if out.type.tensor_type.elem_type == FLOAT:
                out.type.tensor_type.elem_type = HALF
            continue
        half_name = f"{out.name}__fp16"
        for node in g.node:
            for i, name in enumerate(node.output):
                if name == out.name:
                    node.output[i] = half_name
            for i, name in enumerate(node.input):  # an output that is also consumed inside the graph
                if name == out.name:
                    node.input[i] = half_name
        tail_nodes.append(helper.make_node("Cast", [half_name], [out.name], name=f"{out.name}_to_fp32", to=FLOAT))
    nodes = new_nodes + list(g.node) + tail_nodes
    del g.node[:]
    g.node.extend(nodes)

    try:
        onnx.checker.check_model(m)
        onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ModelError(f"FP16 conversion produced an invalid graph: {e}") from e
    return m
