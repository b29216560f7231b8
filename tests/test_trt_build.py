"""Engine build, CPU side: profile parsing and validation, precision read from the ONNX,
manifests, parser-error formatting, TensorRT 10/11 feature detection, and the clear error when
TensorRT is missing (this machine has none)."""
import importlib.util
import json
import types

import numpy as np
import pytest

from edge_deblur.errors import DependencyError, InputError, ModelError
from edge_deblur.export import trt_build as tb

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


# -- --shapes ----------------------------------------------------------------------------------


def test_default_profile_is_valid_and_covers_720p_and_1080p():
    p = tb.parse_shapes(None, stride=16)
    assert str(p) == tb.DEFAULT_SHAPES
    assert p.covers((1, 3, 720, 1280)) and p.covers((1, 3, 1088, 1920)) and p.covers((1, 3, 256, 256))
    assert not p.covers((1, 3, 1104, 1920)) and not p.covers((2, 3, 720, 1280))


def test_single_shape_means_static_profile():
    p = tb.parse_shapes("1x3x720x1280", stride=16)
    assert p.static and p.min == p.opt == p.max == (1, 3, 720, 1280)


@pytest.mark.parametrize("text, words", [
    ("1x3x256x256:1x3x721x1280:1x3x1088x1920", ["opt", "H=721", "multiple of the model stride 16", "1x3x736x1280"]),
    ("1x3x256x250:1x3x720x1280:1x3x1088x1920", ["min", "W=250", "1x3x256x256"]),
    ("1x3x720x1280:1x3x256x256:1x3x1088x1920", ["min <= opt <= max", "H"]),
    ("1x3x256x256:1x3x720x1280:1x3x480x1920", ["min <= opt <= max", "H", "256, 720, 480"]),
    ("1x1x256x256:1x1x720x1280:1x1x1088x1920", ["C is 1", "3 channels"]),
    ("3x256x256:3x720x1280:3x1088x1920", ["3 dimensions", "NxCxHxW"]),
    ("1x3xHx256", ["not NxCxHxW"]),
    ("1x3x0x256:1x3x16x16:1x3x32x32", ["<= 0"]),
    ("1x3x16x16:1x3x32x32", ["MIN:OPT:MAX"]),
])
def test_bad_shapes_say_what_is_wrong(text, words):
    with pytest.raises(InputError) as e:
        tb.parse_shapes(text, stride=16)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_stride_applies_to_h_and_w_only():
    assert tb.parse_shapes("1x3x20x28", stride=4).max == (1, 3, 20, 28)
    with pytest.raises(InputError, match="stride 8"):
        tb.parse_shapes("1x3x20x24", stride=8)


def test_profile_roundtrip_and_containment():
    wide = tb.parse_shapes(tb.DEFAULT_SHAPES)
    narrow = tb.parse_shapes("1x3x512x512:1x3x720x1280:1x3x720x1280")
    assert tb.ShapeProfile.from_dict(json.loads(json.dumps(wide.to_dict()))) == wide
    assert wide.contains(narrow) and not narrow.contains(wide)
    with pytest.raises(ModelError):
        tb.ShapeProfile.from_dict({"min": [1]})


def test_profile_must_fit_static_onnx_dims():
    p = tb.parse_shapes(tb.DEFAULT_SHAPES)
    tb.check_profile_fits(p, "input", (-1, 3, -1, -1))
    with pytest.raises(ModelError, match="fixed to 720 in dimension H.*dynamic axes"):
        tb.check_profile_fits(p, "input", (1, 3, 720, 1280))
    tb.check_profile_fits(tb.parse_shapes("1x3x720x1280"), "input", (1, 3, 720, 1280))
    with pytest.raises(ModelError, match="3-D"):
        tb.check_profile_fits(p, "input", (3, -1, -1))


def test_state_profile_follows_the_image():
    img = tb.parse_shapes("1x3x256x256:1x3x720x1280:2x3x1088x1920")
    st = tb.derive_profile((-1, 32, -1, -1), img, downscale=16)
    assert st.min == (1, 32, 16, 16) and st.opt == (1, 32, 45, 80) and st.max == (2, 32, 68, 120)
    with pytest.raises(ModelError, match="static channels"):
        tb.derive_profile((-1, -1, -1, -1), img, 16)


# -- precision from the ONNX -------------------------------------------------------------------


def _graph(kind):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    x = h.make_tensor_value_info("input", T.FLOAT, [1, 3, 4, 4])
    y = h.make_tensor_value_info("output", T.FLOAT, [1, 3, 4, 4])
    if kind == "fp32":
        nodes = [h.make_node("Relu", ["input"], ["output"])]
        inits = []
    elif kind == "fp16":  # FP16 compute behind Casts, FP32 I/O (what export --fp16 makes)
        nodes = [h.make_node("Cast", ["input"], ["x16"], to=T.FLOAT16), h.make_node("Relu", ["x16"], ["r16"]),
                 h.make_node("Cast", ["r16"], ["output"], to=T.FLOAT)]
        inits = []
    else:  # int8 Q/DQ
        inits = [nh.from_array(np.array(0.02, np.float32), "s"), nh.from_array(np.array(0, np.int8), "z")]
        nodes = [h.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                 h.make_node("DequantizeLinear", ["q", "s", "z"], ["output"])]
    g = h.make_graph(nodes, "g", [x], [y], initializer=inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


@pytest.mark.parametrize("kind", ["fp32", "fp16", "int8"])
def test_precision_is_read_from_the_onnx(tmp_path, kind):
    onnx = pytest.importorskip("onnx")
    path = tmp_path / f"{kind}.onnx"
    onnx.save(_graph(kind), str(path))
    assert tb.onnx_precision(path) == kind


def test_classify_precision_rules():
    assert tb.classify_precision(["Conv"], ["float"]) == "fp32"
    assert tb.classify_precision(["Conv", "Cast"], ["float", "float16"]) == "fp16"
    assert tb.classify_precision(["QuantizeLinear", "DequantizeLinear", "Conv"], ["float", "int8"], ["int8"]) == "int8"
    assert tb.classify_precision(["QuantizeLinear"], ["float"], ["float8e4m3fn"]) == "fp8"
    # TensorRT layer names (network_precision)
    assert tb.classify_precision(["quantize", "dequantize", "convolution"], ["float"], ["int8"]) == "int8"
    assert tb.classify_precision(["convolution"], ["half", "float"]) == "fp16"


def test_unreadable_onnx_is_a_model_error(tmp_path):
    pytest.importorskip("onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf\xff" * 10)
    with pytest.raises(ModelError, match="re-export"):
        tb.onnx_precision(bad)


def test_stride_from_export_manifest_then_metadata(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import helper as h

    m = _graph("fp32")
    e = m.metadata_props.add()
    e.key, e.value = "edge_deblur.stride", "8"
    onnx.save(m, str(tmp_path / "model.onnx"))
    assert tb.onnx_stride(tmp_path / "model.onnx") == 8
    (tmp_path / "manifest.json").write_text(json.dumps({"stride": 16, "onnx": "model.onnx"}))
    assert tb.onnx_stride(tmp_path / "model.onnx") == 16
    assert h  # helper imported for _graph
    md = {"edge_deblur.state_scale.state_in": "4"}
    assert tb.state_scale("state_in", md, {}, 16) == 4
    assert tb.state_scale("state_in", {}, {"state": [{"input": "state_in", "scale": 8}]}, 16) == 8
    assert tb.state_scale("state_in", {}, {}, 16) == 16


# -- manifests, names, parser errors -----------------------------------------------------------


def test_gpu_slug_and_manifest_path(tmp_path):
    assert tb.gpu_slug("NVIDIA H100 80GB HBM3", "9.0") == "h100-80gb-hbm3-sm90"
    assert tb.gpu_slug("Orin", "8.7") == "orin-sm87"
    assert tb.gpu_slug("NVIDIA GeForce RTX 4090", "8.9") == "geforce-rtx-4090-sm89"
    e = tmp_path / "model.orin-sm87.trt10.3.0.engine"
    assert tb.manifest_path(e).name == "model.orin-sm87.trt10.3.0.manifest.json"


def test_manifest_roundtrip_and_corrupt_manifest(tmp_path):
    engine = tmp_path / "m.engine"
    man = tb.make_manifest(engine_path=engine, engine_sha256="ab", onnx_path=tmp_path / "m.onnx", onnx_sha256="cd",
                           precision="fp16", trt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                           profile=tb.parse_shapes(None), stride=16, build={"workspace_mb": 1024})
    tb.write_manifest(engine, man)
    got = tb.read_manifest(engine)
    for key in ("tensorrt", "gpu", "onnx", "profile", "precision", "build", "stride"):
        assert got[key] == man[key]
    assert got["gpu"]["slug"] == "orin-sm87"
    tb.manifest_path(engine).write_text("{not json")
    with pytest.raises(ModelError, match="rebuild"):
        tb.read_manifest(engine)
    assert tb.read_manifest(tmp_path / "none.engine") is None


class _ParserError:
    def __init__(self, desc, code, node, name, op):
        self._d, self._c, self._n, self._nm, self._op = desc, code, node, name, op

    def desc(self):
        return self._d

    def code(self):
        return self._c

    def node(self):
        return self._n

    def node_name(self):
        return self._nm

    def node_operator(self):
        return self._op


def test_parser_errors_listed_one_by_one():
    errs = [_ParserError("No importer registered for op: GridSample3D", "ErrorCode.UNSUPPORTED_NODE", 12, "/warp/g", "GridSample3D"),
            _ParserError("Invalid weights", "ErrorCode.INVALID_VALUE", 3, "conv_1", "Conv")]
    text = tb.format_parser_errors(errs, "m.onnx", "10.3.0")
    lines = text.splitlines()
    assert "2 errors" in lines[0] and "TensorRT 10.3.0" in lines[0]
    assert lines[1].startswith("  1. node 12 '/warp/g' (GridSample3D): No importer") and "[UNSUPPORTED_NODE]" in lines[1]
    assert lines[2].startswith("  2. node 3 'conv_1' (Conv): Invalid weights")
    assert "--backend onnxruntime" in lines[-1] and "cannot build" in lines[-1]


def test_network_flags_feature_detect_trt10_and_trt11():
    trt10 = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1))
    trt11 = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=0))
    older = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0))
    assert tb.strongly_typed_flags(trt10) == 1 << 1  # never EXPLICIT_BATCH (deprecated in 10, gone in 11)
    assert tb.strongly_typed_flags(trt11) == 1 << 0
    assert tb.strongly_typed_flags(older) == 0


# -- without TensorRT --------------------------------------------------------------------------


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_build_without_tensorrt_names_the_extra(tmp_path):
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "m.onnx"
    onnx.save(_graph("fp32"), str(path))
    with pytest.raises(DependencyError) as e:
        tb.build_engine(path, tmp_path / "m.engine", "1x3x16x16:1x3x32x32:1x3x64x64")
    assert "edge-deblur[tensorrt]" in str(e.value) and "--backend onnxruntime" in str(e.value)


def test_build_cli_validates_shapes_before_anything(tmp_path, capsys):
    from edge_deblur.cli import main

    rc = main(["build", str(tmp_path / "missing.onnx"), "--shapes", "1x3x100x100", "--stride", "16"])
    assert rc == 2
    assert "multiple of the model stride 16" in capsys.readouterr().err


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_build_cli_without_tensorrt(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "m.onnx"
    onnx.save(_graph("fp32"), str(path))
    from edge_deblur.cli import main

    assert main(["build", str(path), "--stride", "16", "-o", str(tmp_path / "m.engine")]) == 2
    err = capsys.readouterr().err
    assert "edge-deblur build: error:" in err and "pip install 'edge-deblur[tensorrt]'" in err
