"""Float-exact rewrites that let ONNX Runtime run an INT8 graph channels-last without layout
transposes on x86 (the ``cpu`` quantization target).

ONNX Runtime turns INT8 convolutions into channels-last ``QLinearConv`` and inserts a Transpose
wherever an op has no channels-last INT8 kernel. In an edgenet that happens at the input's
PixelUnshuffle (a 6-D transpose of the whole image) and at each PixelShuffle (``DepthToSpace``,
run channels-first, with Transposes around it and around the residual Adds it feeds). Measured
at 640x368 on one core, those layout ops were ~30 % of the INT8 run time. The rewrites:

* :func:`fold_input_space_to_depth`: a space-to-depth (PixelUnshuffle) chain of layout ops from
  the graph input into the first Conv becomes part of that Conv: a k x k conv over the b x b
  unshuffled image is the same sum as a (b k) x (b k) conv with stride b over the image itself
  (same MACs, no transpose).
* :func:`depth_to_space_channels_last`: a ``DepthToSpace`` becomes its channels-last form
  (Transpose to NHWC, Reshape, a transpose that moves one axis, Reshape, Transpose back); ONNX
  Runtime cancels the outer Transposes against the ones it inserts. A CRD DepthToSpace is first
  turned into DCR by permuting the output channels of the Conv that feeds it, so the middle
  transpose moves whole ``b x C`` pixel blocks. Skipped where the output has fewer than
  ``min_channels`` channels (the final PixelShuffle to RGB: its blocks are 6 bytes, and ONNX
  Runtime's DepthToSpace kernel is faster there).
* :func:`pad_conv_outputs`: a Conv with fewer than 16 output channels (the 12-channel conv
  before the final PixelShuffle to RGB) gets zero filters up to 16 and a Slice after it, so
  that ONNX Runtime runs it with MLAS' indirect INT8 convolution instead of im2col + GEMM
  (:func:`pad_conv_channels`).
* :func:`shapes_from_quantized` (after quantization): ``Shape`` nodes read the quantized tensor
  instead of a DequantizeLinear output, so no tensor is dequantized only for its shape.

Every rewrite is checked to give the same float outputs (tests, and ``verify``). numpy + onnx +
onnxruntime only.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelError

SPACE_OPS = {"Unsqueeze", "Squeeze", "Reshape", "Transpose", "SpaceToDepth", "Identity"}


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _consumers(graph) -> dict:
    out: dict = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _probe_layout(nodes, graph, input_name: str, channels: int, probe: tuple[int, int]) -> np.ndarray:
    """Run the layout-only ``nodes`` on an index image (value = flat index) with ONNX Runtime."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    needed = {i for n in nodes for i in n.input}
    produced = {o for n in nodes for o in n.output}
    consts = [n for n in graph.node if n.op_type == "Constant" and set(n.output) & needed]
    inits = [i for i in graph.initializer if i.name in needed]
    out = nodes[-1].output[0]
    h, w = probe
    g = helper.make_graph(consts + list(nodes), "probe",
                          [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, channels, h, w])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    assert produced
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.arange(channels * h * w, dtype=np.float32).reshape(1, channels, h, w)
    return sess.run(None, {input_name: x})[0]


def fold_input_space_to_depth(model) -> list[str]:
    """Fold a space-to-depth chain between a graph input and the first Conv into that Conv, for
    every graph input that has one (the image, and the previous frames of an ``edgenet_frames``
    state), in place on the ModelProto ``model``. Returns what was done (empty: nothing to fold)."""
    inits = {i.name for i in model.graph.initializer}
    done = []
    for name in [i.name for i in model.graph.input if i.name not in inits]:
        done += _fold_one_input(model, name)
    return done


def _fold_one_input(model, name: str) -> list[str]:
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    inp = next(i for i in g.input if i.name == name)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4 or not dims[1]:
        return []
    channels = int(dims[1])
    cons = _consumers(g)
    chain, t = [], inp.name
    while True:
        nxt = cons.get(t, [])
        if t == inp.name:  # the input may also feed other nodes (the global residual Add)
            nxt = [n for n in nxt if n.op_type in SPACE_OPS | {"Conv"}]
        if len(nxt) != 1:
            return []
        n = nxt[0]
        if n.op_type == "Conv":
            conv = n
            break
        if n.op_type not in SPACE_OPS or len(n.output) != 1:
            return []
        chain.append(n)
        t = n.output[0]
    if not chain:
        return []
    a = _attrs(conv)
    w_init = inits.get(conv.input[1])
    if w_init is None or a.get("group", 1) != 1 or any(s != 1 for s in a.get("strides", [1, 1])) \
            or any(d != 1 for d in a.get("dilations", [1, 1])) or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return []
    W = numpy_helper.to_array(w_init)
    probe = (24, 48)
    try:
        u = _probe_layout(chain, g, inp.name, channels, probe)
    except Exception:  # a chain ONNX Runtime cannot run on the probe: leave it alone
        return []
    if u.ndim != 4 or u.shape[0] != 1:
        return []
    k_ch, hh, ww = u.shape[1:]
    b = probe[0] // hh if hh else 0
    if b < 2 or probe[0] != b * hh or probe[1] != b * ww or k_ch != channels * b * b or W.shape[1] != k_ch:
        return []
    H, Wd = probe
    mapping = []
    ys, xs = np.meshgrid(np.arange(hh), np.arange(ww), indexing="ij")
    for k in range(k_ch):
        v = int(u[0, k, 0, 0])
        c, rem = divmod(v, H * Wd)
        i, j = divmod(rem, Wd)
        if i >= b or j >= b or not np.array_equal(u[0, k], c * H * Wd + (b * ys + i) * Wd + (b * xs + j)):
            return []
        mapping.append((c, i, j))
    kh, kw = W.shape[2], W.shape[3]
    W2 = np.zeros((W.shape[0], channels, b * kh, b * kw), W.dtype)
    for k, (c, i, j) in enumerate(mapping):
        W2[:, c, i::b, j::b] += W[:, k]
    pads = list(a.get("pads", [0, 0, 0, 0]))
    folded = conv.input[1] + "_space_to_depth_folded"
    g.initializer.append(numpy_helper.from_array(W2, folded))
    conv.input[0] = inp.name
    conv.input[1] = folded
    for attr in list(conv.attribute):
        if attr.name in ("strides", "pads", "kernel_shape"):
            conv.attribute.remove(attr)
    from onnx import helper

    conv.attribute.extend([helper.make_attribute("strides", [b, b]), helper.make_attribute("pads", [b * p for p in pads]),
                           helper.make_attribute("kernel_shape", [b * kh, b * kw])])
    drop = {id(n) for n in chain}
    keep = [n for n in g.node if id(n) not in drop]
    used = {i for n in keep for i in n.input}
    keep = [n for n in keep if not (n.op_type == "Constant" and not set(n.output) & used)]
    del g.node[:]
    g.node.extend(keep)
    _drop_unused_initializers(g)
    return [f"space-to-depth ({len(chain)} layout ops, block {b}) folded into {conv.name or 'the first Conv'}: "
            f"{kh}x{kw} conv on {k_ch} channels -> {b * kh}x{b * kw} conv with stride {b} on the {channels}-channel "
            f"{'input' if len(g.input) == 1 else repr(name)}"]


def _drop_unused_initializers(g):
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def depth_to_space_channels_last(model, min_channels: int = 8) -> list[str]:
    """Rewrite each DepthToSpace with at least ``min_channels`` output channels into its
    channels-last form (in place). Returns what was done."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    cons = _consumers(g)
    done, new_nodes, consts = [], [], []
    for n in g.node:
        if n.op_type != "DepthToSpace":
            new_nodes.append(n)
            continue
        a = _attrs(n)
        b = int(a["blocksize"])
        mode = a.get("mode", b"DCR")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        x, y = n.input[0], n.output[0]
        conv = prod.get(x)
        w_init = inits.get(conv.input[1]) if conv is not None and conv.op_type == "Conv" else None
        if w_init is None:
            new_nodes.append(n)
            continue
        W = numpy_helper.to_array(w_init)
        C = W.shape[0] // (b * b)
        if C < min_channels or W.shape[0] != C * b * b:
            new_nodes.append(n)
            continue
        if mode == "CRD":
            if len(cons.get(x, [])) != 1 or sum(1 for m in g.node if m.op_type == "Conv" and m.input[1] == w_init.name) != 1:
                new_nodes.append(n)
                continue
            idx = np.arange(C * b * b).reshape(C, b * b).T.reshape(-1)  # DCR channel (i, j, c) <- CRD channel (c, i, j)
            w_init.CopyFrom(numpy_helper.from_array(W[idx], w_init.name))
            if len(conv.input) > 2 and conv.input[2] in inits:
                bias = inits[conv.input[2]]
                bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias)[idx], bias.name))
        p = (n.name or y) + "_nhwc"
        consts += [numpy_helper.from_array(np.array([0, 0, 0, b, -1], np.int64), f"{p}/split_shape"),
                   numpy_helper.from_array(np.array([2, 3], np.int64), f"{p}/hw_index"),
                   numpy_helper.from_array(np.array(b, np.int64), f"{p}/block"),
                   numpy_helper.from_array(np.array([0], np.int64), f"{p}/n_index"),
                   numpy_helper.from_array(np.array([-1], np.int64), f"{p}/rest")]
        new_nodes += [
            helper.make_node("Transpose", [x], [f"{p}/in"], perm=[0, 2, 3, 1], name=f"{p}/to_nhwc"),
            helper.make_node("Reshape", [f"{p}/in", f"{p}/split_shape"], [f"{p}/split"], name=f"{p}/split"),
            # [N, H, W, b, b*C] -> [N, H, b, W, b*C]: moves one axis, whole b*C blocks
            helper.make_node("Transpose", [f"{p}/split"], [f"{p}/rows"], perm=[0, 1, 3, 2, 4], name=f"{p}/rows"),
            helper.make_node("Shape", [x], [f"{p}/shape"], name=f"{p}/shape"),
            helper.make_node("Gather", [f"{p}/shape", f"{p}/hw_index"], [f"{p}/hw"], axis=0, name=f"{p}/hw"),
            helper.make_node("Mul", [f"{p}/hw", f"{p}/block"], [f"{p}/hw_out"], name=f"{p}/hw_out"),
            helper.make_node("Gather", [f"{p}/shape", f"{p}/n_index"], [f"{p}/n"], axis=0, name=f"{p}/n"),
            helper.make_node("Concat", [f"{p}/n", f"{p}/hw_out", f"{p}/rest"], [f"{p}/target"], axis=0, name=f"{p}/target"),
            helper.make_node("Reshape", [f"{p}/rows", f"{p}/target"], [f"{p}/out"], name=f"{p}/merge"),
            helper.make_node("Transpose", [f"{p}/out"], [y], perm=[0, 3, 1, 2], name=f"{p}/to_nchw"),
        ]
        done.append(f"{n.name or y}: DepthToSpace {mode} block {b} to {C} channels -> channels-last"
                    + (" (CRD -> DCR by permuting the output channels of " + (conv.name or "its Conv") + ")" if mode == "CRD" else ""))
    if done:
        del g.node[:]
        g.node.extend(new_nodes)
        g.initializer.extend(consts)
    return done


def _ceil(v: int, m: int) -> int:
    return -(-v // m) * m


def pad_conv_channels(model, in_multiple: int = 4, min_out: int = 16, out_multiple: int = 4,
                      max_growth: float = 4 / 3) -> list[str]:
    """Give plain Convs (group 1, constant weights) the channel counts ONNX Runtime's indirect
    ("symmetric") INT8 convolution takes on x86 (in place): input channels a multiple of
    ``in_multiple``, output channels at least ``min_out`` and a multiple of ``out_multiple``
    (MLAS ``MlasConvSymPackWSize``); other shapes fall back to im2col + GEMM. Measured on edgenet
    M5 at 640x368 (docs/BENCHMARKS.md), the 12-channel output conv before the final PixelShuffle
    took 5.9 ms by im2col and 2.9 ms padded to 16, twice a dense 16-channel conv of more MACs.
    The extra input channels come from a Pad of zeros and meet zero weights; the extra output
    channels have zero weights and bias and are sliced off right after the Conv, so the rewrite
    is exact in float. A side is padded only where that adds at most ``max_growth`` times the
    work (12 -> 16 yes, 8 -> 16 no: not measured). Returns what was done."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    done, new_nodes, consts, padded = [], [], [], {}
    for n in g.node:
        a = _attrs(n) if n.op_type == "Conv" else {}
        w_init = inits.get(n.input[1]) if n.op_type == "Conv" else None
        if w_init is None or a.get("group", 1) != 1 or sum(1 for m in g.node if w_init.name in m.input) != 1:
            new_nodes.append(n)
            continue
        W = numpy_helper.to_array(w_init)
        cout, cin = W.shape[:2]
        cin2 = _ceil(cin, in_multiple)
        cout2 = max(min_out, _ceil(cout, out_multiple))
        cin2 = cin2 if cin2 <= max_growth * cin else cin
        cout2 = cout2 if cout2 <= max_growth * cout else cout
        if cin2 == cin and cout2 == cout:
            new_nodes.append(n)
            continue
        what = []
        if cin2 != cin:
            x = n.input[0]
            if x not in padded:
                padded[x] = f"{x}_pad{cin2}"
                pads = np.zeros(2 * W.ndim, np.int64)
                pads[W.ndim + 1] = cin2 - cin  # end of the channel axis
                consts.append(numpy_helper.from_array(pads, f"{padded[x]}/pads"))
                new_nodes.append(helper.make_node("Pad", [x, f"{padded[x]}/pads"], [padded[x]], mode="constant",
                                                  name=f"{padded[x]}/pad"))
            n.input[0] = padded[x]
            W = np.concatenate([W, np.zeros((cout, cin2 - cin) + W.shape[2:], W.dtype)], axis=1)
            what.append(f"input {cin} -> {cin2} channels (zero Pad)")
        if cout2 != cout:
            W = np.concatenate([W, np.zeros((cout2 - cout,) + W.shape[1:], W.dtype)], axis=0)
            if len(n.input) > 2 and n.input[2]:
                b_init = inits[n.input[2]]
                b = numpy_helper.to_array(b_init)
                b_init.CopyFrom(numpy_helper.from_array(np.concatenate([b, np.zeros(cout2 - cout, b.dtype)]), b_init.name))
            y = n.output[0]
            n.output[0] = f"{y}_pad{cout2}"
            p = f"{y}_slice"
            consts += [numpy_helper.from_array(np.array([0], np.int64), f"{p}/starts"),
                       numpy_helper.from_array(np.array([cout], np.int64), f"{p}/ends"),
                       numpy_helper.from_array(np.array([1], np.int64), f"{p}/axes")]
            new_nodes.append(n)
            new_nodes.append(helper.make_node("Slice", [n.output[0], f"{p}/starts", f"{p}/ends", f"{p}/axes"], [y],
                                              name=p))
            what.append(f"output {cout} -> {cout2} channels (zero filters, sliced off after it)")
        else:
            new_nodes.append(n)
        w_init.CopyFrom(numpy_helper.from_array(W, w_init.name))
        done.append(f"{n.name or n.output[0]}: " + ", ".join(what))
    if done:
        del g.node[:]
        g.node.extend(new_nodes)
        g.initializer.extend(consts)
    return done


def shapes_from_quantized(model) -> int:
    """Point Shape nodes that read a DequantizeLinear output at the quantized tensor (in place)."""
    prod = {o: n for n in model.graph.node for o in n.output}
    k = 0
    for n in model.graph.node:
        if n.op_type == "Shape":
            p = prod.get(n.input[0])
            if p is not None and p.op_type == "DequantizeLinear":
                n.input[0] = p.input[0]
                k += 1
    return k


def pad_conv_outputs(model) -> list[str]:
    """:func:`pad_conv_channels` for output channels only (the ``cpu`` target's choice: padding
    the image's 3 channels to 4 made the folded 6x6 first conv slower, not faster)."""
    return pad_conv_channels(model, in_multiple=1)


REWRITES = {"fold_input_space_to_depth": fold_input_space_to_depth,
            "depth_to_space_channels_last": depth_to_space_channels_last,
            "pad_conv_outputs": pad_conv_outputs,
            "pad_conv_channels": pad_conv_channels}


def rewrite_for_cpu(src, dst, rewrites=tuple(REWRITES), check: bool = True) -> list[str]:
    """Apply ``rewrites`` to the float ONNX ``src`` and save it to ``dst``; with ``check``, the
    rewritten graph must give the same outputs as ``src`` (ModelError otherwise)."""
    import onnx

    m = onnx.load(str(src))
    done = []
    for name in rewrites:
        done += REWRITES[name](m)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))
    if check and done:
        _check_same(src, dst)
    return done


def _check_same(a, b, shape=(1, 3, 64, 96)):
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sa = ort.InferenceSession(str(a), so, providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(str(b), so, providers=["CPUExecutionProvider"])
    meta = {p.key: p.value for p in onnx.load(str(a), load_external_data=False).metadata_props}
    rng = np.random.default_rng(0)
    n, _, h, w = shape
    feeds = {}
    for k, i in enumerate(sa.get_inputs()):  # the image; a recurrent model's state at its scale and channels
        if k == 0:
            feeds[i.name] = rng.random(shape, dtype=np.float32)
        else:
            s = int(meta.get(f"edge_deblur.state_scale.{i.name}", 1))
            feeds[i.name] = rng.random((n, int(i.shape[1]), h // s, w // s), dtype=np.float32)
    ya, yb = sa.run(None, feeds)[0], sb.run(None, feeds)[0]
    err = float(np.max(np.abs(ya - yb)))
    if ya.shape != yb.shape or err > 1e-4:
        raise ModelError(f"the CPU layout rewrite of {str(a)!r} changed its output (max diff {err:.2e}); this is a bug: "
                         "quantize with --target tensorrt, or report it")
