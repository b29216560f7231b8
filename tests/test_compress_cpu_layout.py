"""compress/cpu_layout.py: the channels-last rewrites are exact in float, and leave alone what
they do not recognise (onnx + onnxruntime graphs made here, no torch)."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_deblur.compress import cpu_layout as L  # noqa: E402


def _const(name, values):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64), name + "_v"))


def _model(mode="CRD", unshuffle=True, out_ch=2):
    """input -> [PixelUnshuffle(2) as torch exports it] -> Conv3x3 -> Relu -> Conv1x1 (-> C*4) ->
    DepthToSpace(2, mode) -> + input (a tiny edgenet-shaped graph)."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    cin = 12 if unshuffle else 3
    x = "input"
    if unshuffle:
        nodes += [_const("ax", [3]), helper.make_node("Unsqueeze", ["input", "ax"], ["u0"]),
                  _const("s1", [0, 0, -1, 2, 0]), helper.make_node("Reshape", ["u0", "s1"], ["u1"]),
                  _const("s2", [0, 0, 0, 0, -1, 2]), helper.make_node("Reshape", ["u1", "s2"], ["u2"]),
                  helper.make_node("Transpose", ["u2"], ["u3"], perm=[0, 1, 3, 5, 2, 4]),
                  _const("s3", [0, -1, 1, 1, 0, 0]), helper.make_node("Reshape", ["u3", "s3"], ["u4"]),
                  _const("ax2", [2, 3]), helper.make_node("Squeeze", ["u4", "ax2"], ["u5"])]
        x = "u5"
    c = out_ch * 4
    inits += [numpy_helper.from_array(rng.standard_normal((16, cin, 3, 3)).astype(np.float32) * 0.2, "w1"),
              numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) * 0.1, "b1"),
              numpy_helper.from_array(rng.standard_normal((c * (1 if unshuffle else 1), 16, 1, 1)).astype(np.float32) * 0.2, "w2"),
              numpy_helper.from_array(rng.standard_normal(c).astype(np.float32) * 0.1, "b2")]
    nodes += [helper.make_node("Conv", [x, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], name="head"),
              helper.make_node("Relu", ["c1"], ["r1"]),
              helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[1, 1], name="up"),
              helper.make_node("DepthToSpace", ["c2"], ["d"], blocksize=2, mode=mode, name="shuffle")]
    out_shape = ["n", out_ch, "h", "w"]
    if unshuffle and out_ch == 3:
        nodes.append(helper.make_node("Add", ["d", "input"], ["output"]))
    else:
        nodes.append(helper.make_node("Identity", ["d"], ["output"]))
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _run(m, x):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.mark.parametrize("mode, out_ch", [("CRD", 3), ("CRD", 8), ("DCR", 8)])
def test_rewrites_are_exact(mode, out_ch):
    m = _model(mode, out_ch=out_ch)
    x = np.random.default_rng(1).random((1, 3, 20, 28), dtype=np.float32)
    ref = _run(m, x)
    done = L.fold_input_space_to_depth(m)
    assert len(done) == 1 and "6x6 conv with stride 2" in done[0]
    ops = [n.op_type for n in m.graph.node]
    assert "Transpose" not in ops and "Unsqueeze" not in ops  # the unshuffle is gone
    d2s = L.depth_to_space_channels_last(m, min_channels=8)
    assert len(d2s) == (1 if out_ch >= 8 else 0)  # the 3-channel (RGB) shuffle is left to ORT's kernel
    if d2s:
        assert "DepthToSpace" not in [n.op_type for n in m.graph.node]
        assert ("CRD -> DCR" in d2s[0]) == (mode == "CRD")
    onnx.checker.check_model(m)
    np.testing.assert_allclose(_run(m, x), ref, atol=2e-5)
    # another frame size through the same (dynamic-shape) graph
    x2 = np.random.default_rng(2).random((2, 3, 12, 8), dtype=np.float32)
    np.testing.assert_allclose(_run(m, x2), _run(_model(mode, out_ch=out_ch), x2), atol=2e-5)


def test_what_is_not_recognised_is_left_alone():
    m = _model(unshuffle=False, out_ch=8)  # the input goes straight into a conv: nothing to fold
    before = m.SerializeToString()
    assert L.fold_input_space_to_depth(m) == [] and m.SerializeToString() == before
    m = _model(out_ch=8)
    m.graph.node[-1].input[0] = "c2"  # the conv feeding DepthToSpace has a second consumer: no channel permutation
    m.graph.node[-1].op_type = "Identity"
    extra = helper.make_node("Identity", ["c2"], ["c2_copy"])
    m.graph.node.append(extra)
    m.graph.output.append(helper.make_tensor_value_info("c2_copy", TensorProto.FLOAT, None))
    assert L.depth_to_space_channels_last(m) == []


def test_shapes_read_the_quantized_tensor():
    g = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["f"]), helper.make_node("Shape", ["f"], ["shape"])],
        "t", [helper.make_tensor_value_info("q", TensorProto.UINT8, [1, 2])],
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(3, np.uint8), "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert L.shapes_from_quantized(m) == 1 and m.graph.node[1].input[0] == "q"


def _tail_model(cin=3, cout=12, mode="CRD"):
    """input (3 ch) -> Conv3x3 (cin -> 16) -> Relu -> Conv3x3 (16 -> cout) -> DepthToSpace(2) -> output:
    an image-reading conv and an edgenet-style output conv before the final PixelShuffle."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((16, cin, 3, 3)).astype(np.float32) * 0.2, "w1"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) * 0.1, "b1"),
             numpy_helper.from_array(rng.standard_normal((cout, 16, 3, 3)).astype(np.float32) * 0.2, "w2"),
             numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32) * 0.1, "b2")]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], name="head"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], name="tail"),
             helper.make_node("DepthToSpace", ["c2"], ["output"], blocksize=2, mode=mode, name="shuffle")]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", cin, "h", "w"])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", cout // 4, "h2", "w2"])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("mode", ["CRD", "DCR"])
def test_conv_channel_padding_is_exact(mode):
    m = _tail_model(mode=mode)
    x = np.random.default_rng(4).random((1, 3, 14, 18), dtype=np.float32)
    ref = _run(m, x)
    done = L.pad_conv_channels(m)
    assert len(done) == 2 and "input 3 -> 4" in done[0] and "output 12 -> 16" in done[1]
    w = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    assert w["w1"].shape == (16, 4, 3, 3) and not w["w1"][:, 3].any()  # zero weights meet the zero channel
    assert w["w2"].shape == (16, 16, 3, 3) and w["b2"].shape == (16,) and not w["w2"][12:].any() and not w["b2"][12:].any()
    ops = [n.op_type for n in m.graph.node]
    assert ops == ["Pad", "Conv", "Relu", "Conv", "Slice", "DepthToSpace"]
    onnx.checker.check_model(m)
    np.testing.assert_allclose(_run(m, x), ref, atol=1e-5)


def test_conv_output_padding_only_and_growth_limit():
    m = _tail_model()
    done = L.pad_conv_outputs(m)  # the cpu target's rewrite: outputs only
    assert len(done) == 1 and "output 12 -> 16" in done[0] and "Pad" not in [n.op_type for n in m.graph.node]
    m = _tail_model(cin=4, cout=8)  # 8 -> 16 would double the conv's work: left alone
    before = m.SerializeToString()
    assert L.pad_conv_channels(m) == [] and m.SerializeToString() == before


def test_ranges_tied_across_value_moving_ops(tmp_path):
    from edge_deblur.compress.qdq_graph import tie_ranges

    m = _tail_model()
    L.pad_conv_outputs(m)
    onnx.save(m, str(tmp_path / "m.onnx"))
    # a percentile range of the padded tensor differs from that of the channels the Slice keeps
    ranges = {"input": (0.0, 1.0), "c1": (-1.0, 2.0), "r1": (0.0, 2.0), "c2_pad16": (-0.4, 0.3),
              "c2": (-0.5, 0.4), "output": (-0.45, 0.41)}
    changed = tie_ranges(tmp_path / "m.onnx", ranges)
    assert sorted(changed) == ["c2_pad16", "output"]
    assert ranges["c2_pad16"] == ranges["c2"] == ranges["output"] == (-0.5, 0.4)
    assert ranges["r1"] == (0.0, 2.0)  # a Relu changes values: not tied
