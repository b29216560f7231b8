"""torch -> ONNX export: deploy graph, dynamic shapes, parity with PyTorch, manifest, FP16."""
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from runtime_helpers import TINY_FRAMES_SPEC, TINY_RNN_SPEC, TINY_SPEC, exported, make_checkpoint  # noqa: E402

from edge_deblur.errors import ModelError  # noqa: E402
from edge_deblur.runtime.manifest import sha256_file  # noqa: E402
from edge_deblur.runtime.preprocess import frame_to_tensor  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return exported(tmp_path_factory)


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("h,w,n", [(23, 37, 1), (41, 18, 2), (64, 52, 1), (5, 3, 1)])
def test_onnx_matches_pytorch_on_odd_sizes(tiny, h, w, n):
    from edge_deblur.models.checkpoint import load_model

    model = load_model(tiny["ckpt"])  # the train-time form: checks re-parameterization and export together
    rng = np.random.default_rng(h * w)
    x = np.concatenate([frame_to_tensor(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), 4)[0] for _ in range(n)])
    got = _session(tiny["onnx"]).run(["output"], {"input": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert got.shape == ref.shape == x.shape
    assert np.abs(got - ref).max() <= 1e-4
    assert np.abs(got - x).max() > 1e-2  # the model is not the identity, so the comparison means something


def test_graph_contract(tiny):
    m = onnx.load(str(tiny["onnx"]))
    onnx.checker.check_model(m, full_check=True)
    assert m.opset_import[0].version >= 17
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["output"]
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    ops = {n.op_type for n in m.graph.node}
    assert "Conv" in ops
    # deploy form: as many convs as the re-parameterized torch model, not the train-time branches
    from edge_deblur.models.checkpoint import load_model

    deploy = load_model(tiny["ckpt"], deploy=True)
    assert sum(n.op_type == "Conv" for n in m.graph.node) == sum(isinstance(x, torch.nn.Conv2d) for x in deploy.modules())
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["edge_deblur.stride"] == "4" and meta["edge_deblur.precision"] == "fp32"


def test_manifest(tiny):
    from edge_deblur.models.checkpoint import load_model
    from edge_deblur.models.profile import count_macs, count_params
    from edge_deblur.runtime.onnx_info import graph_macs

    man = json.loads((tiny["dir"] / "manifest.json").read_text())
    assert man["onnx"] == "model.onnx"
    assert man["onnx_sha256"] == sha256_file(tiny["onnx"]) == man["artifacts"]["model.onnx"]["sha256"]
    assert man["checkpoint"]["sha256"] == sha256_file(tiny["ckpt"])
    assert man["stride"] == 4 and man["precision"] == "fp32" and man["opset"] >= 17
    assert man["input"]["name"] == "input" and man["output"]["name"] == "output"
    assert man["layout"] == "NCHW" and man["range"] == [0.0, 1.0] and man["colour"] == "RGB" and man["dtype"] == "float32"
    assert man["arch"]["rep"] is False and man["arch"]["widths"] == TINY_SPEC["widths"]
    assert 0 <= man["parity"]["max_abs_diff"] <= 1e-4 and len(man["parity"]["cases"]) >= 4
    assert any("odd" in c["input"] for c in man["parity"]["cases"])
    assert man["model_meta"]["iterations"] == 123 and man["model_meta"]["metrics"] == {"psnr": 30.5}
    assert {"torch", "onnx", "onnxruntime"} <= set(man["tools"])
    deploy = load_model(tiny["ckpt"], deploy=True)
    assert man["params"] == count_params(deploy)
    assert man["gmacs_1280x720"] * 1e9 == pytest.approx(count_macs(deploy, (1280, 720)))
    # MACs counted independently on the ONNX graph agree with the manifest's per-pixel figure
    for h, w in ((720, 1280), (36, 60)):
        assert graph_macs(tiny["onnx"], h, w) == pytest.approx(man["macs_per_pixel"] * h * w, rel=1e-9)


def test_parity_check_can_fail(tiny):
    from edge_deblur.export.onnx_export import check_parity
    from edge_deblur.models.checkpoint import load_model

    other = load_model(make_checkpoint(tiny["dir"].parent / "other.safetensors", seed=7))
    with pytest.raises(ModelError, match="parity"):
        check_parity(other, tiny["onnx"].read_bytes(), stride=4)


def test_fp16_model(tiny):
    from edge_deblur.models.checkpoint import load_model

    m16 = onnx.load(str(tiny["fp16"]))
    assert m16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_w = [i for i in m16.graph.initializer if len(i.dims) == 4]
    assert conv_w and all(i.data_type == onnx.TensorProto.FLOAT16 for i in conv_w)
    assert m16.graph.node[0].op_type == "Cast" and m16.graph.node[-1].op_type == "Cast"
    x = frame_to_tensor(np.random.default_rng(3).integers(0, 256, (29, 31, 3), dtype=np.uint8), 4)[0]
    y16 = _session(tiny["fp16"]).run(["output"], {"input": x})[0]
    y32 = _session(tiny["onnx"]).run(["output"], {"input": x})[0]
    assert y16.dtype == np.float32 and y16.shape == y32.shape
    d = np.abs(y16 - y32).max()
    assert 0 < d < 2e-2  # FP16 compute really happened, and stayed close
    entry = json.loads((tiny["dir"] / "manifest.json").read_text())["artifacts"]["model.fp16.onnx"]
    assert entry["precision"] == "fp16" and entry["sha256"] == sha256_file(tiny["fp16"])
    assert entry["source_sha256"] == sha256_file(tiny["onnx"])
    with torch.no_grad():
        ref = load_model(tiny["ckpt"])(torch.from_numpy(x)).numpy()
    assert np.abs(y16 - ref).max() < 2e-2


def test_export_cli_and_errors(tmp_path, capsys):
    from edge_deblur.cli import main

    ckpt = make_checkpoint(tmp_path / "c.safetensors", seed=1)
    assert main(["export", str(ckpt), "-o", str(tmp_path / "models" / "m1"), "--default"]) == 0
    out = capsys.readouterr().out
    assert "parity" in out and "model.onnx" in out
    assert (tmp_path / "models" / "m1" / "model.onnx").is_file()
    assert (tmp_path / "models" / "DEFAULT").read_text().strip() == "m1"
    assert json.loads((tmp_path / "models" / "m1" / "manifest.json").read_text())["default"] is True
    assert not list((tmp_path / "models" / "m1").glob(".*tmp"))  # atomic writes leave no temp files
    # the checkpoint travels with the ONNX, so the folder alone verifies (it held only the ONNX and
    # a manifest naming c.safetensors, which was not there: "only the reference could run")
    m1 = tmp_path / "models" / "m1"
    assert sha256_file(m1 / "model.safetensors") == sha256_file(ckpt)
    assert json.loads((m1 / "manifest.json").read_text())["checkpoint"]["file"] == "model.safetensors"
    assert main(["verify", str(m1), "--frames", "1", "--size", "64x48"]) == 0
    assert "PASSED" in capsys.readouterr().out

    assert main(["export", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    assert main(["export", str(bad), "-o", str(tmp_path / "y")]) == 2
    assert "bad.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    for flag in (["--tolerance", "-1"], ["--fp16", "--fp16-tolerance", "nan"]):  # was: a failed parity check
        assert main(["export", str(ckpt), "-o", str(tmp_path / "z"), *flag]) == 2
        assert f"{flag[-2]} must be a finite number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


@pytest.mark.parametrize("name,spec,scale", [("tiny_rnn", TINY_RNN_SPEC, 4), ("tiny_frames", TINY_FRAMES_SPEC, 1)])
def test_recurrent_export_carries_state(tmp_path_factory, name, spec, scale):
    """Both recurrent kinds: a bottleneck state at 1/stride (edgenet_rnn) and the previous input
    frames at full resolution (edgenet_frames), whose scale the graph's metadata records."""
    from edge_deblur.models.checkpoint import load_model
    from edge_deblur.runtime.deblurrer import Deblurrer

    e = exported(tmp_path_factory, name, spec, fp16=False)
    man = e["manifest"]
    assert man["recurrent"] is True and man["state"][0]["input"] == "state_in"
    assert man["state"][0]["scale"] == scale
    assert man["macs_per_pixel"] > 0
    meta = {p.key: p.value for p in onnx.load(str(e["onnx"])).metadata_props}
    assert meta["edge_deblur.state_scale.state_in"] == str(scale)
    sess = _session(e["onnx"])
    assert [i.name for i in sess.get_inputs()] == ["input", "state_in"]
    assert [o.name for o in sess.get_outputs()] == ["output", "state_out"]

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (18, 22, 3), dtype=np.uint8) for _ in range(3)]
    # reference: the torch model stepped by hand, state carried, starting from zeros
    model = load_model(e["ckpt"])
    state = torch.zeros(model.state_shape(20, 24))
    ref = []
    with torch.no_grad():
        for f in frames:
            y, state = model(torch.from_numpy(frame_to_tensor(f, 4)[0]), state)
            ref.append(y.numpy())
    with Deblurrer.open(e["onnx"], rgb=False) as d:
        outs = [d.infer_tensor(frame_to_tensor(f, 4)[0]) for f in frames]
        for a, b in zip(outs, ref):
            assert np.abs(a - b).max() <= 1e-4
        d.reset()
        again = d.infer_tensor(frame_to_tensor(frames[2], 4)[0])
    fresh = sess.run(["output"], {"input": frame_to_tensor(frames[2], 4)[0],
                                  "state_in": np.zeros(model.state_shape(20, 24), np.float32)})[0]
    assert np.abs(again - fresh).max() <= 1e-6
    assert np.abs(outs[2] - fresh).max() > 1e-4  # the carried state changed the output


def test_frames_model_cpu_rewrite_folds_the_image_and_the_state(tmp_path_factory, tmp_path):
    """The INT8-CPU layout rewrites apply to an edgenet_frames graph: the image's and the state's
    PixelUnshuffle each fold into their own first conv, exactly (outputs and state out)."""
    from edge_deblur.compress.cpu_layout import rewrite_for_cpu

    e = exported(tmp_path_factory, "tiny_frames", TINY_FRAMES_SPEC, fp16=False)
    done = rewrite_for_cpu(e["onnx"], tmp_path / "cpu.onnx")
    folds = [d for d in done if "space-to-depth" in d]
    assert len(folds) == 2 and "'state_in'" in folds[1] and "6-channel" in folds[1]
    rng = np.random.default_rng(3)
    feeds = {"input": rng.random((1, 3, 20, 24), dtype=np.float32),
             "state_in": rng.random((1, 6, 20, 24), dtype=np.float32)}
    ref = _session(e["onnx"]).run(None, feeds)
    got = _session(tmp_path / "cpu.onnx").run(None, feeds)
    assert "Transpose" not in {n.op_type for n in onnx.load(str(tmp_path / "cpu.onnx")).graph.node
                               if n.output[0].startswith("/unshuffle")}
    np.testing.assert_allclose(got[0], ref[0], atol=1e-4)
    np.testing.assert_array_equal(got[1], ref[1])


def test_strip_blocks_export_as_grouped_convs_and_quantize(tmp_path_factory, tmp_path):
    """An edgenet with strip blocks exports (parity is checked by export_onnx itself), its long
    depthwise convs stay Conv nodes with group == channels, and ONNX Runtime's QDQ INT8 keeps it
    close to FP32."""
    from edge_deblur.compress.quantize import QuantizeOptions, quantize_model

    spec = dict(TINY_SPEC, strip_levels=[0], strip_kernel=9)
    e = exported(tmp_path_factory, "tiny_strip", spec, fp16=False)
    m = onnx.load(str(e["onnx"]))
    long = [n for n in m.graph.node if n.op_type == "Conv" and
            any(a.name == "kernel_shape" and sorted(a.ints) == [1, 9] for a in n.attribute)]
    assert len(long) == 4  # horizontal + vertical, encoder + decoder
    for n in long:
        assert {a.name: a.i for a in n.attribute if a.name == "group"}["group"] == TINY_SPEC["widths"][0]
    assert e["manifest"]["arch"]["strip_levels"] == [0]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(8)]
    q = tmp_path / "model.int8.onnx"
    opts = QuantizeOptions(samples=8, tile=(48, 32), eval_samples=4, min_samples=8)
    quantize_model(e["onnx"], q, frames=frames, options=opts, calib_dir=tmp_path / "calibration",
                   update_manifest=False)
    qops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= qops
    x = frame_to_tensor(frames[0], 4)[0]
    ref = _session(e["onnx"]).run(["output"], {"input": x})[0]
    got = _session(q).run(["output"], {"input": x})[0]
    # random weights (no trained model here) put the output far outside [0, 1]; INT8 must still
    # follow FP32 closely relative to that spread
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.95
    # the strip convs' weights are quantized too (a DequantizeLinear feeds each of them)
    qm = onnx.load(str(q))
    producers = {o: n for n in qm.graph.node for o in n.output}
    qlong = [n for n in qm.graph.node if n.op_type == "Conv" and
             any(a.name == "kernel_shape" and sorted(a.ints) == [1, 9] for a in n.attribute)]
    assert len(qlong) == 4 and all(producers[n.input[1]].op_type == "DequantizeLinear" for n in qlong)
