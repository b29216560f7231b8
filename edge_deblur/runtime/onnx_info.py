"""Facts read from an ONNX graph without running it (needs the ``onnx`` package, not torch):
multiply-accumulates of the Conv/ConvTranspose/MatMul/Gemm nodes at a given input size."""
from __future__ import annotations

from ..errors import DependencyError, ModelError


def _onnx():
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - onnx is a base dependency
        raise DependencyError(f"counting MACs of an ONNX graph needs the 'onnx' package ({e}); pip install onnx") from e
    return onnx


def graph_macs(model, height: int, width: int, batch: int = 1, input_name: str | None = None) -> int:
    """MACs of one forward pass of ``model`` (a path or ``onnx.ModelProto``) on a
    ``(batch, C, height, width)`` input: the input's free dims are fixed and shapes inferred."""
    onnx = _onnx()
    m = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
    fixed = onnx.ModelProto()
    fixed.CopyFrom(m)
    g = fixed.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if input_name is None:
        main = [i for i in inputs if i.name == "input"] or inputs[:1]
    else:
        main = [i for i in inputs if i.name == input_name]
    if not main:
        raise ModelError(f"the ONNX graph has no input named {input_name or 'input'!r}")
    want = {0: batch, 2: height, 3: width}
    for i, d in enumerate(main[0].type.tensor_type.shape.dim):
        if i in want:
            d.Clear()
            d.dim_value = want[i]
    # other (recurrent state) inputs: batch, and H/W divided by their edge_deblur.state_scale
    meta = {e.key: e.value for e in fixed.metadata_props}
    for inp in inputs:
        if inp is main[0]:
            continue
        scale = int(meta.get(f"edge_deblur.state_scale.{inp.name}", 1))
        sizes = {0: batch, 2: height // scale, 3: width // scale}
        for i, d in enumerate(inp.type.tensor_type.shape.dim):
            if i in sizes and not d.HasField("dim_value"):
                d.Clear()
                d.dim_value = sizes[i]
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception as e:  # onnx raises several types here
        raise ModelError(f"cannot infer the ONNX graph's shapes at {width}x{height}: {e}") from e
    try:
        return _count(inferred)
    except _UnknownShape:
        pass
    # shapes computed at run time (Shape -> Div -> Reshape, as torch.export writes PixelUnshuffle):
    # ONNX Runtime's symbolic shape inference follows those
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(fixed, auto_merge=False)
    except Exception as e:
        raise ModelError(f"cannot infer the ONNX graph's shapes at {width}x{height}: {e}") from e
    try:
        return _count(inferred)
    except _UnknownShape as e:
        raise ModelError(f"shape of {e} is unknown at {width}x{height}; cannot count MACs") from None


class _UnknownShape(Exception):
    pass


def _count(inferred) -> int:
    from onnx import numpy_helper

    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    weights = {i.name: tuple(i.dims) for i in inferred.graph.initializer}
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    weights[node.output[0]] = tuple(numpy_helper.to_array(a.t).shape)

    def shape_of(name):
        s = shapes.get(name) or (list(weights[name]) if name in weights else None)
        if s is None or any(v is None for v in s):
            raise _UnknownShape(repr(name))
        return s

    def numel(s):
        n = 1
        for v in s:
            n *= v
        return n

    total = 0
    for node in inferred.graph.node:
        op = node.op_type
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            wi = 3 if op == "QLinearConv" else 1
            w = shape_of(node.input[wi])
            out = shape_of(node.output[0])
            total += numel(out) * numel(w[1:])  # (Cin/groups) * kh * kw per output
        elif op == "ConvTranspose":
            w = shape_of(node.input[1])  # (Cin, Cout/groups, kh, kw)
            x = shape_of(node.input[0])
            total += numel(x) * numel(w[1:])
        elif op in ("MatMul", "MatMulInteger", "Gemm"):
            a = shape_of(node.input[0])
            out = shape_of(node.output[0])
            k = a[-1]
            if op == "Gemm":
                for at in node.attribute:
                    if at.name == "transA" and at.i:
                        k = a[0]
            total += numel(out) * k
    return int(total)
