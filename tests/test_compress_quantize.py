"""INT8 Q/DQ quantization: graph form, accuracy on a fitted tiny model, calibration tables,
calibration through the runtime's preprocessing, sources, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from edge_deblur.compress import calib_frames as F  # noqa: E402
from edge_deblur.compress import calib_table as T  # noqa: E402
from edge_deblur.compress import quant_eval as QE  # noqa: E402
from edge_deblur.compress import quantize as Q  # noqa: E402
from edge_deblur.compress.qdq_report import qdq_report  # noqa: E402
from edge_deblur.runtime import preprocess  # noqa: E402
from edge_deblur.errors import DatasetError, InputError, ModelError  # noqa: E402

TILE = (32, 32)
SPEC = {"type": "edgenet", "widths": [8, 16], "enc_blocks": [1], "mid_blocks": 1, "dec_blocks": [1], "rep": False}


def _scene(rng, h, w):
    """A smooth random image with a few hard edges (uint8 BGR)."""
    img = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 3)
    img = (img - img.min()) / (np.ptp(img) + 1e-6)
    for _ in range(3):
        x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
        img[y0:y0 + rng.integers(4, h // 2), x0:x0 + rng.integers(4, w // 2)] = rng.random(3)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


KERNEL = np.zeros((5, 5), np.float32)
KERNEL[2, :] = 1 / 5  # horizontal motion blur


def _blur(img):
    return cv2.filter2D(img, -1, KERNEL, borderType=cv2.BORDER_REFLECT)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny edgenet fitted for a few hundred steps to undo a motion blur, exported to ONNX,
    plus a folder of blurred calibration images."""
    torch = pytest.importorskip("torch")
    from edge_deblur.export.onnx_export import export_onnx
    from edge_deblur.models import build_model
    from edge_deblur.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("q")
    rng = np.random.default_rng(0)
    sharp = np.stack([_scene(rng, 32, 32) for _ in range(128)])
    blur = np.stack([_blur(s) for s in sharp])
    xs = torch.from_numpy(blur[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255
    ys = torch.from_numpy(sharp[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is much faster on a shared machine
    try:
        torch.manual_seed(0)
        model = build_model(SPEC)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for step in range(160):
            idx = torch.randint(0, len(xs), (8,))
            loss = (model(xs[idx]) - ys[idx]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    ckpt = root / "tiny.safetensors"
    save_checkpoint(ckpt, model.state_dict(), model.spec, {}, {"iters": 250})
    export_onnx(ckpt, root / "tiny")
    calib = root / "calib"
    calib.mkdir()
    for i in range(12):
        cv2.imwrite(str(calib / f"{i:02d}.png"), _blur(_scene(rng, 48, 56)))
    sharp_dir = root / "sharp"
    sharp_dir.mkdir()
    for i in range(4):
        cv2.imwrite(str(sharp_dir / f"{i}.png"), _scene(rng, 64, 64))
    return {"root": root, "onnx": root / "tiny" / "model.onnx", "calib": calib, "sharp": sharp_dir}


def _opts(**kw):
    base = dict(samples=8, tile=TILE, eval_samples=4, min_samples=8)
    base.update(kw)
    return Q.QuantizeOptions(**base)


@pytest.fixture(scope="module")
def quantized(work):
    out = work["root"] / "tiny" / "model.int8.onnx"
    recipe = Q.quantize_model(work["onnx"], out, calib=work["calib"], options=_opts(),
                              calib_dir=work["root"] / "calibration")
    return out, recipe


def test_qdq_graph_is_symmetric_int8_per_channel(quantized):
    out, recipe = quantized
    rep = qdq_report(out)
    assert rep["quantize_linear"] > 0 and rep["dequantize_linear"] > 0
    assert rep["zero_point_dtypes"] == ["int8"]
    assert rep["nonzero_zero_points"] == []
    assert rep["io_dtypes"] == {"input": "FLOAT", "output": "FLOAT"}
    float_nodes = recipe["quantization"]["float_nodes"]
    head = [c for c in rep["convs"] if c["conv"] in float_nodes]
    assert [c["conv"] for c in head] == ["/head/Conv"]  # only the conv that reads the image stays float
    assert not head[0]["per_channel"] and not head[0]["input_quantized"]
    quantized = [c for c in rep["convs"] if c not in head]
    assert len(quantized) == 9 and all(c["per_channel"] for c in quantized)
    for c in quantized:
        assert c["axis"] == 0 and c["scale_len"] == c["out_channels"] and c["weight_dtype"] == "int8"
        assert c["input_quantized"]
    adds = [a for a in rep["adds"] if a["op"] == "Add"]
    assert len(adds) == 5  # enc, mid and dec residual blocks, the skip, the global residual
    *inner, last = adds
    assert all(all(a["inputs_quantized"]) for a in inner)  # residual adds stay INT8 in TensorRT
    assert last["node"] in float_nodes and not last["inputs_quantized"][1]  # + the float input image
    # the manifest beside the models lists the INT8 file with its checksum and calibration
    man = json.loads((out.parent / "manifest.json").read_text())
    entry = man["artifacts"]["model.int8.onnx"]
    assert entry["precision"] == "int8" and entry["source_sha256"] == man["onnx_sha256"]
    md = {e.key: e.value for e in onnx.load(str(out)).metadata_props}
    assert md["edge_deblur.precision"] == "int8" and md["edge_deblur.stride"] == "4"


def test_int8_output_stays_close_to_fp32(work, quantized, tmp_path):
    out, recipe = quantized
    acc = recipe["accuracy"]["held_out_tiles"]
    assert acc["inputs"] == 4
    assert acc["psnr_int8_vs_fp32"] > 50.0, acc
    # quantizing the input conv and the output add too is measurably worse
    worse = Q.quantize_model(work["onnx"], tmp_path / "all.onnx", calib=work["calib"],
                             options=_opts(keep_input_conv_fp=False, keep_output_add_fp=False),
                             calib_dir=tmp_path / "cal", update_manifest=False)
    assert worse["quantization"]["float_nodes"] == []
    assert worse["accuracy"]["held_out_tiles"]["psnr_int8_vs_fp32"] < acc["psnr_int8_vs_fp32"] - 3.0
    # and on full frames (padded to the stride by the runtime's preprocessing)
    rng = np.random.default_rng(5)
    frames = [_blur(_scene(rng, 45, 61)) for _ in range(3)]
    tensors = [preprocess.frame_to_tensor(f, 4)[0] for f in frames]
    assert QE.compare_outputs(work["onnx"], out, tensors)["psnr_int8_vs_fp32"] > 42.0


def test_int8_vs_ground_truth_with_pairs(work, tmp_path):
    pairs = tmp_path / "pairs" / "scene_a"
    (pairs / "blur").mkdir(parents=True)
    (pairs / "sharp").mkdir()
    rng = np.random.default_rng(9)
    for i in range(3):
        s = _scene(rng, 40, 60)
        cv2.imwrite(str(pairs / "sharp" / f"{i}.png"), s)
        cv2.imwrite(str(pairs / "blur" / f"{i}.png"), _blur(s))
    recipe = Q.quantize_model(work["onnx"], tmp_path / "m.int8.onnx", calib=work["calib"], options=_opts(),
                              calib_dir=tmp_path / "cal", pairs=tmp_path / "pairs")
    p = recipe["accuracy"]["pairs"]
    assert p["count"] == 3
    assert p["fp32"]["psnr"] > p["fp32"]["input_psnr"]  # the fitted model deblurs
    assert abs(p["delta_psnr"]) < 0.2
    assert p["psnr_int8_vs_fp32"] > 42.0


def test_calibration_table_round_trips(work, quantized, tmp_path):
    out, recipe = quantized
    table = work["root"] / "calibration" / "tiny" / "table.json"
    rec = json.loads((table.parent / "recipe.json").read_text())
    assert rec["method"] == "minmax" and rec["samples"] == 8 and rec["tile"] == list(TILE) and rec["seed"] == 0
    assert rec["onnx_sha256"] == Q.sha256_file(work["onnx"]) and rec["tools"]["onnxruntime"]
    t = T.load_table(table)
    assert t["tensors"] and all(v["min"] <= v["max"] for v in t["tensors"].values())
    # save -> load gives the same numbers
    ranges = {k: (v["min"], v["max"]) for k, v in t["tensors"].items()}
    T.save_table(tmp_path / "copy.json", ranges, t["method"], t["onnx_sha256"])
    assert T.load_table(tmp_path / "copy.json")["tensors"] == t["tensors"]
    # re-quantizing from the table (no calibration) gives the identical graph
    again = tmp_path / "again.int8.onnx"
    Q.quantize_model(work["onnx"], again, table=tmp_path / "copy.json", options=_opts(),
                     calib_dir=work["root"] / "calibration", name="tiny", update_manifest=False)
    a, b = onnx.load(str(out)), onnx.load(str(again))
    assert a.graph.SerializeToString() == b.graph.SerializeToString()
    # a changed table changes the graph (the comparison above can fail)
    k = next(iter(ranges))
    ranges[k] = (ranges[k][0] * 2 - 1, ranges[k][1] * 2 + 1)
    T.save_table(tmp_path / "edited.json", ranges, t["method"], t["onnx_sha256"])
    Q.quantize_model(work["onnx"], tmp_path / "edited.int8.onnx", table=tmp_path / "edited.json", options=_opts(),
                     calib_dir=tmp_path / "cal2", name="tiny", update_manifest=False)
    assert onnx.load(str(tmp_path / "edited.int8.onnx")).graph.SerializeToString() != a.graph.SerializeToString()
    # a table made for another model is refused
    T.save_table(tmp_path / "other.json", ranges, "minmax", "0" * 64)
    with pytest.raises(InputError, match="recalibrate"):
        Q.quantize_model(work["onnx"], tmp_path / "x.onnx", table=tmp_path / "other.json", options=_opts(),
                         calib_dir=tmp_path / "cal3", update_manifest=False)


def test_calibration_frames_go_through_runtime_preprocessing(work, tmp_path, monkeypatch):
    calls = []
    real = preprocess.frame_to_tensor

    def spy(frame, stride=1, rgb=False):
        calls.append((frame.shape, stride, rgb))
        return real(frame, stride, rgb)

    monkeypatch.setattr(preprocess, "frame_to_tensor", spy)
    Q.quantize_model(work["onnx"], tmp_path / "m.onnx", calib=work["calib"], options=_opts(samples=10),
                     calib_dir=tmp_path / "cal", update_manifest=False)
    # 10 calibration tiles + 4 held-out tiles, all tile-sized, with the model's stride, BGR files
    assert len(calls) == 14
    assert all(c == ((TILE[1], TILE[0], 3), 4, False) for c in calls)


def test_sources_video_and_synthetic(work, tmp_path):
    video = tmp_path / "clip.avi"
    wr = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert wr.isOpened()
    rng = np.random.default_rng(1)
    for _ in range(6):
        wr.write(_scene(rng, 48, 64))
    wr.release()
    frames, rgb, info = F.calibration_frames(video, 9, TILE, seed=0)
    assert info["kind"] == "video" and info["distinct_frames"] == 6 and rgb is False
    assert len(frames) == 9 and all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)

    frames, rgb, info = F.calibration_frames(f"synthetic:{work['sharp']}", 5, TILE, seed=3)
    assert info["kind"] == "synthetic" and rgb is True
    assert len(frames) == 5 and all(f.shape == (32, 32, 3) and f.dtype == np.float32 for f in frames)
    again, _, _ = F.calibration_frames(f"synthetic:{work['sharp']}", 5, TILE, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))  # seeded: reproducible

    # a pairs folder: only the blurry inputs are used
    (tmp_path / "pairs" / "s" / "blur").mkdir(parents=True)
    (tmp_path / "pairs" / "s" / "sharp").mkdir()
    cv2.imwrite(str(tmp_path / "pairs" / "s" / "blur" / "0.png"), np.full((40, 40, 3), 10, np.uint8))
    cv2.imwrite(str(tmp_path / "pairs" / "s" / "sharp" / "0.png"), np.full((40, 40, 3), 200, np.uint8))
    frames, _, _ = F.calibration_frames(tmp_path / "pairs", 3, TILE)
    assert all(int(f.max()) == 10 for f in frames)


def test_bad_inputs_give_clear_errors(work, quantized, tmp_path):
    out, _ = quantized
    with pytest.raises(InputError, match="too few"):
        Q.quantize_model(work["onnx"], tmp_path / "a.onnx", calib=work["calib"], options=_opts(samples=3))
    with pytest.raises(ModelError, match="already quantized"):
        Q.quantize_model(out, tmp_path / "b.onnx", calib=work["calib"], options=_opts())
    with pytest.raises(InputError, match="stride"):
        Q.quantize_model(work["onnx"], tmp_path / "c.onnx", calib=work["calib"], options=_opts(tile=(30, 32)))
    with pytest.raises(InputError, match="WIDTHxHEIGHT"):
        F.parse_tile("32by32")
    good = [np.zeros((32, 32, 3), np.uint8)] * 8
    with pytest.raises(InputError, match="channels"):
        Q.quantize_model(work["onnx"], tmp_path / "d.onnx", frames=[np.zeros((32, 32, 2), np.uint8)] * 8,
                         options=_opts(), calib_dir=tmp_path / "cal")
    with pytest.raises(InputError, match="not the tile size"):
        Q.quantize_model(work["onnx"], tmp_path / "e.onnx", frames=good[:7] + [np.zeros((40, 32, 3), np.uint8)],
                         options=_opts(), calib_dir=tmp_path / "cal")
    with pytest.raises(InputError, match="too few"):
        Q.quantize_model(work["onnx"], tmp_path / "f.onnx", frames=good[:5], options=_opts(), calib_dir=tmp_path / "cal")
    small = tmp_path / "small"
    small.mkdir()
    cv2.imwrite(str(small / "0.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="smaller than the tile"):
        Q.quantize_model(work["onnx"], tmp_path / "g.onnx", calib=small, options=_opts(), calib_dir=tmp_path / "cal")
    with pytest.raises(DatasetError, match="not found"):
        Q.quantize_model(work["onnx"], tmp_path / "h.onnx", calib=tmp_path / "nope", options=_opts())
    with pytest.raises(InputError, match="method"):
        Q.quantize_model(work["onnx"], tmp_path / "i.onnx", calib=work["calib"], options=_opts(method="kl"))
    with pytest.raises(InputError, match="overwrite"):
        Q.quantize_model(work["onnx"], work["onnx"], calib=work["calib"], options=_opts())


def test_a_bad_pairs_folder_fails_before_calibrating(work, tmp_path, monkeypatch):
    def no_calibration(*a, **k):
        raise AssertionError("calibrated before checking --pairs")

    monkeypatch.setattr(Q, "collect_ranges", no_calibration)
    with pytest.raises(DatasetError, match="does not exist"):
        Q.quantize_model(work["onnx"], tmp_path / "p.onnx", calib=work["calib"], options=_opts(),
                         pairs=str(tmp_path / "nope"), calib_dir=tmp_path / "cal")
    assert not (tmp_path / "p.onnx").exists()


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_methods(work, quantized, tmp_path, method, monkeypatch):
    monkeypatch.setattr(T, "ENTROPY_BINS", 192)  # fewer KL candidates: faster, same code path
    recipe = Q.quantize_model(work["onnx"], tmp_path / "m.onnx", calib=work["calib"],
                              options=_opts(method=method, percentile=99.9), calib_dir=tmp_path / "cal",
                              update_manifest=False)
    assert recipe["method"] == method
    assert qdq_report(tmp_path / "m.onnx")["nonzero_zero_points"] == []
    # entropy (KL) clipping suits classifiers more than image regression; only a sanity bound here
    assert recipe["accuracy"]["held_out_tiles"]["psnr_int8_vs_fp32"] > (45.0 if method == "percentile" else 30.0)
    minmax = T.load_table(work["root"] / "calibration" / "tiny" / "table.json")["tensors"]
    got = T.load_table(tmp_path / "cal" / "tiny" / "table.json")["tensors"]
    assert got.keys() == minmax.keys()
    # histogram methods clip outliers: some activation range is tighter than its min/max
    assert any(got[k]["max"] < minmax[k]["max"] * 0.999 for k in got)
    assert all(got[k]["max"] <= minmax[k]["max"] * 1.0001 + 1e-6 for k in got)


def test_quantize_cli(work, tmp_path, capsys):
    from edge_deblur.cli import main

    out = tmp_path / "cli.int8.onnx"
    rc = main(["quantize", str(work["onnx"]), "--calib", str(work["calib"]), "-o", str(out), "--samples", "8",
               "--tile", "32x32", "--calib-dir", str(tmp_path / "cal"), "--name", "tiny"])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "INT8 vs FP32" in text and out.is_file()
    rc = main(["quantize", str(work["onnx"]), "--table", str(tmp_path / "cal" / "tiny" / "table.json"),
               "-o", str(tmp_path / "cli2.int8.onnx"), "--tile", "32x32", "--calib-dir", str(tmp_path / "cal"),
               "--name", "tiny"])
    assert rc == 0
    assert onnx.load(str(out)).graph.SerializeToString() == onnx.load(str(tmp_path / "cli2.int8.onnx")).graph.SerializeToString()
    rc = main(["quantize", str(out), "--calib", str(work["calib"]), "-o", str(tmp_path / "x.onnx"), "--tile", "32x32"])
    assert rc == 2 and "already quantized" in capsys.readouterr().err





@pytest.mark.parametrize("kind, target", [("edgenet_rnn", "tensorrt"), ("edgenet_frames", "cpu")])
def test_recurrent_model_quantizes_with_its_state(work, tmp_path, kind, target):
    """A recurrent model's state input is calibrated with the states the model itself makes; the
    INT8 graph keeps the state as float I/O and runs a stream through the runtime. The CPU target
    lays out a previous-frames state (edgenet_frames) like the image: both unshuffles folded."""
    torch = pytest.importorskip("torch")
    from edge_deblur.export.onnx_export import export_onnx
    from edge_deblur.models import build_model
    from edge_deblur.models.checkpoint import save_checkpoint
    from edge_deblur.runtime.deblurrer import Deblurrer

    torch.manual_seed(1)
    model = build_model(dict(SPEC, type=kind))
    with torch.no_grad():  # the model uses the state: the INT8 path must carry it
        if kind == "edgenet_rnn":
            model.fuse_state.weight[:, 16:].normal_(0, 0.05)
        else:
            model.state_head.weight.normal_(0, 0.05)
        model.tail.weight.normal_(0, 0.02)
    ckpt = tmp_path / "rnn.safetensors"
    save_checkpoint(ckpt, model.state_dict(), model.spec, {}, {"iters": 1})
    export_onnx(ckpt, tmp_path / "rnn")
    info = Q.inspect_float_model(tmp_path / "rnn" / "model.onnx")
    scale = 4 if kind == "edgenet_rnn" else 1
    assert [s["name"] for s in info.state_inputs] == ["state_in"] and info.state_inputs[0]["scale"] == scale
    out = tmp_path / "rnn" / "model.int8.onnx"
    recipe = Q.quantize_model(tmp_path / "rnn" / "model.onnx", out, calib=work["calib"], options=_opts(target=target),
                              calib_dir=tmp_path / "calibration")
    assert recipe["state_inputs"] == ["state_in"]
    if target == "cpu":
        folds = [r for r in recipe["quantization"]["graph_rewrites"] if "space-to-depth" in r]
        assert len(folds) == 2
    assert recipe["accuracy"]["held_out_tiles"]["psnr_int8_vs_fp32"] > 30
    g = onnx.load(str(out))
    assert [i.name for i in g.graph.input] == ["input", "state_in"]
    assert [o.name for o in g.graph.output] == ["output", "state_out"]
    assert qdq_report(out)["quantize_linear"] > 0
    rng = np.random.default_rng(2)
    frames = [_blur(_scene(rng, 32, 48)) for _ in range(3)]
    with Deblurrer.open(tmp_path / "rnn" / "model.onnx", scene_cut=0) as f32, Deblurrer.open(out, scene_cut=0) as i8:
        assert i8.info["kind"] == "recurrent"
        for f in frames:
            a, b = f32(f), i8(f)
            assert -10 * np.log10(np.mean((a / 255.0 - b / 255.0) ** 2) + 1e-12) > 30


# -- the CPU target (uint8 activations, laid out for ONNX Runtime on x86) --------------------------


@pytest.fixture(scope="module")
def quantized_cpu(work):
    recipe = Q.quantize_model(work["onnx"], calib=work["calib"], options=_opts(target="cpu"),
                              calib_dir=work["root"] / "calibration")
    return work["root"] / "tiny" / "model.int8-cpu.onnx", recipe


def _optimized_ops(path, tmp_path):
    import collections

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp_path / f"opt_{path.name}")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def test_cpu_target_layout_from_the_graph(work, quantized_cpu, tmp_path):
    out, recipe = quantized_cpu
    assert out.is_file() and recipe["target"] == "cpu"  # default name beside the FP32 model
    rep = qdq_report(out)
    assert rep["activation_dtypes"] == ["uint8"]  # unsigned activations ...
    assert rep["nonzero_zero_points"]  # ... asymmetric (zero points from the ranges)
    assert rep["float_convs"] == []  # every conv quantized, the image-reading one too
    for c in rep["convs"]:
        assert c["weight_dtype"] == "int8" and c["per_channel"] and c["axis"] == 0  # signed symmetric weights
    assert rep["io_dtypes"] == {"input": "FLOAT", "output": "FLOAT"}
    assert recipe["quantization"]["float_nodes"] == [] and recipe["quantization"]["bias"] == "int32"
    rewrites = recipe["quantization"]["graph_rewrites"]
    assert any("space-to-depth" in r for r in rewrites) and any("DepthToSpace" in r for r in rewrites)
    # the 12-channel output conv (8 -> 12 here) is padded to the 16 outputs of MLAS' indirect INT8 conv
    assert any("output 12 -> 16" in r for r in rewrites)
    m = onnx.load(str(out))
    assert [n.op_type for n in m.graph.node if n.op_type == "Slice"] == ["Slice"]
    md = {e.key: e.value for e in m.metadata_props}
    assert md["edge_deblur.int8_target"] == "cpu" and md["edge_deblur.precision"] == "int8"
    ops = {n.op_type for n in m.graph.node}
    assert "Relu" not in ops  # folded into the uint8 ranges
    # the recipe and table sit apart from the TensorRT ones, and record the calibrating machine
    cdir = work["root"] / "calibration" / "tiny" / "int8-cpu"
    rec = json.loads((cdir / "recipe.json").read_text())
    assert rec["target"] == "cpu" and T.load_table(cdir / "table.json")["target"] == "cpu"
    assert rec["machine"]["cores"] >= 1 and isinstance(rec["machine"]["features"], list) and rec["machine"]["cpu"]
    man = json.loads((out.parent / "manifest.json").read_text())
    entry = man["artifacts"]["model.int8-cpu.onnx"]
    assert entry["target"] == "cpu" and "avx512_vnni" in entry["tuned_for"]["any_of"]
    assert _max_weight(out) == 127 and entry["weight_bits"] == 8 and "avx2" not in entry["tuned_for"]["any_of"]
    # ONNX Runtime runs it channels-last without the layout transposes a plain QDQ graph gets
    from dataclasses import replace

    from edge_deblur.compress.qdq_graph import TARGETS

    Q.quantize_model(work["onnx"], tmp_path / "plain.onnx", calib=work["calib"],
                     options=_opts(target=replace(TARGETS["cpu"], name="cpu-plain", rewrites=())),
                     calib_dir=tmp_path / "cal", update_manifest=False)
    ours, theirs = _optimized_ops(out, tmp_path), _optimized_ops(tmp_path / "plain.onnx", tmp_path)
    assert ours["Transpose"] < theirs["Transpose"], (ours, theirs)
    assert ours["QLinearConv"] == theirs["QLinearConv"] == len(rep["convs"])
    assert ours["QuantizeLinear"] == ours["DequantizeLinear"] == 1, ours  # the image in, the image out: all else 8-bit


def _max_weight(path) -> int:
    from onnx import numpy_helper

    m = onnx.load(str(path))
    weights = [numpy_helper.to_array(i) for i in m.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights
    return max(int(np.abs(w).max()) for w in weights)


def test_cpu_avx2_target_has_7bit_weights(work, quantized_cpu, tmp_path):
    """--target cpu-avx2: the CPU layout with weights in [-64, 64] (exact on AVX2's 16-bit pair
    sums), from the CPU target's table (same ranges), its record in int8-cpu-avx2/, listed for avx2."""
    out, _ = quantized_cpu
    table = work["root"] / "calibration" / "tiny" / "int8-cpu" / "table.json"
    rec = Q.quantize_model(work["onnx"], table=table, options=_opts(target="cpu-avx2"),
                           calib_dir=work["root"] / "calibration")
    avx2 = work["root"] / "tiny" / "model.int8-avx2.onnx"
    assert avx2.is_file() and rec["target"] == "cpu-avx2" and rec["quantization"]["weight_bits"] == 7
    assert _max_weight(avx2) == 64
    assert (work["root"] / "calibration" / "tiny" / "int8-cpu-avx2" / "recipe.json").is_file()
    # the record names a table that exists (a copy of the one it was made from), so --table re-makes the file
    assert Path(rec["table"]) == work["root"] / "calibration" / "tiny" / "int8-cpu-avx2" / "table.json"
    assert T.load_table(rec["table"])["tensors"] == T.load_table(table)["tensors"]
    again = Q.quantize_model(work["onnx"], tmp_path / "again.onnx", table=rec["table"], options=_opts(target="cpu-avx2"),
                             calib_dir=tmp_path / "cal", name="tiny", update_manifest=False)
    assert onnx.load(str(tmp_path / "again.onnx")).graph.SerializeToString() == onnx.load(str(avx2)).graph.SerializeToString()
    md = {e.key: e.value for e in onnx.load(str(avx2)).metadata_props}
    assert md["edge_deblur.quantization"].endswith("-per-channel-7bit;activations=per-tensor")
    entry = json.loads((avx2.parent / "manifest.json").read_text())["artifacts"]["model.int8-avx2.onnx"]
    assert entry["weight_bits"] == 7 and "avx2" in entry["tuned_for"]["any_of"] and entry["target"] == "cpu-avx2"
    assert Path(entry["calibration"]["table"]).is_file()
    # the cpu file's graph and activation ranges, its two image-facing ends float by default
    assert qdq_report(avx2)["float_convs"] == ["/head/Conv"] and len(rec["quantization"]["float_nodes"]) == 2
    tensors = [preprocess.frame_to_tensor(_blur(_scene(np.random.default_rng(2), 45, 61)), 4)[0]]
    assert QE.compare_outputs(work["onnx"], avx2, tensors)["psnr_int8_vs_fp32"] > 35.0
    # a TensorRT table does not serve it
    with pytest.raises(InputError, match="--target tensorrt"):
        Q.quantize_model(work["onnx"], tmp_path / "x.onnx", table=work["root"] / "calibration" / "tiny" / "table.json",
                         options=_opts(target="cpu-avx2"), calib_dir=tmp_path / "cal", update_manifest=False)


def test_a_target_variant_is_listed_in_the_manifest(work, tmp_path):
    """A Target variant (QuantizeOptions.target takes one, e.g. benchmarks/cpu_int8_layouts.py's)
    written beside a manifest is listed like its base target; the manifest step looked the
    variant's name up again among the named targets and failed after the file was written."""
    import shutil
    from dataclasses import replace

    from edge_deblur.compress.qdq_graph import TARGETS

    folder = tmp_path / "tiny"
    shutil.copytree(work["onnx"].parent, folder)
    variant = replace(TARGETS["cpu"], name="cpu-plain", rewrites=())
    Q.quantize_model(folder / "model.onnx", folder / "model.plain.onnx", calib=work["calib"],
                     options=_opts(target=variant), calib_dir=tmp_path / "cal")
    entry = json.loads((folder / "manifest.json").read_text())["artifacts"]["model.plain.onnx"]
    assert entry["target"] == "cpu-plain" and entry["weight_bits"] == 8 and "avx2" not in entry["tuned_for"]["any_of"]


def test_cpu_target_percentile_ranges_stay_8bit(work, tmp_path):
    """Percentile ranges differ across the padded output conv's Slice and the PixelShuffle (the
    zero channels shift the percentile); tied, ONNX Runtime runs both on the uint8 tensor."""
    out = tmp_path / "p.onnx"
    Q.quantize_model(work["onnx"], out, calib=work["calib"], options=_opts(target="cpu", method="percentile", percentile=95.0),
                     calib_dir=tmp_path / "cal", update_manifest=False)
    table = T.load_table(tmp_path / "cal" / "tiny" / "int8-cpu" / "table.json")["tensors"]
    padded = [k for k in table if k.endswith("_pad16")]
    assert len(padded) == 1 and table[padded[0]] == table[padded[0][: -len("_pad16")]]
    ops = _optimized_ops(out, tmp_path)
    assert ops["QuantizeLinear"] == ops["DequantizeLinear"] == 1, ops


def test_cpu_target_accuracy(work, quantized_cpu, tmp_path):
    out, recipe = quantized_cpu
    assert recipe["accuracy"]["held_out_tiles"]["psnr_int8_vs_fp32"] > 40.0, recipe["accuracy"]
    rng = np.random.default_rng(5)
    frames = [_blur(_scene(rng, 45, 61)) for _ in range(3)]
    tensors = [preprocess.frame_to_tensor(f, 4)[0] for f in frames]
    assert QE.compare_outputs(work["onnx"], out, tensors)["psnr_int8_vs_fp32"] > 38.0
    # keeping the image-facing ends float is an option
    kept = Q.quantize_model(work["onnx"], tmp_path / "k.onnx", calib=work["calib"],
                            options=_opts(target="cpu", keep_input_conv_fp=True, keep_output_add_fp=True),
                            calib_dir=tmp_path / "cal", update_manifest=False)
    rep = qdq_report(tmp_path / "k.onnx")
    assert rep["float_convs"] == ["/head/Conv"] and len(kept["quantization"]["float_nodes"]) == 2


def test_cpu_table_reuse_and_mismatched_target(work, quantized, quantized_cpu, tmp_path):
    out, recipe = quantized_cpu
    again = tmp_path / "again.onnx"
    Q.quantize_model(work["onnx"], again, table=recipe["table"], options=_opts(target="cpu"),
                     calib_dir=tmp_path / "cal", name="tiny", update_manifest=False)
    assert onnx.load(str(again)).graph.SerializeToString() == onnx.load(str(out)).graph.SerializeToString()
    trt_table = work["root"] / "calibration" / "tiny" / "table.json"
    with pytest.raises(InputError, match="--target tensorrt"):
        Q.quantize_model(work["onnx"], tmp_path / "x.onnx", table=trt_table, options=_opts(target="cpu"),
                         calib_dir=tmp_path / "cal", update_manifest=False)
    with pytest.raises(InputError, match="tensorrt.*cpu|did you mean 'cpu'"):
        Q.quantize_model(work["onnx"], tmp_path / "y.onnx", calib=work["calib"], options=_opts(target="cpi"))


def test_tensorrt_builder_refuses_the_cpu_file(quantized, quantized_cpu):
    from edge_deblur.errors import ModelError as ME
    from edge_deblur.export.trt_build import check_symmetric_int8

    check_symmetric_int8(quantized[0])  # the TensorRT file passes
    with pytest.raises(ME, match="asymmetric activations.*--target tensorrt"):
        check_symmetric_int8(quantized_cpu[0])


def test_quantize_cli_target(work, tmp_path, capsys):
    from edge_deblur.cli import main

    rc = main(["quantize", str(work["onnx"]), "--target", "gpu-ish", "--calib", str(work["calib"])])
    assert rc != 0 and "--target 'gpu-ish'" in capsys.readouterr().err
    out = tmp_path / "c.onnx"
    rc = main(["quantize", str(work["onnx"]), "--target", "cpu", "--calib", str(work["calib"]), "-o", str(out),
               "--samples", "8", "--tile", "32x32", "--calib-dir", str(tmp_path / "cal"), "--name", "tiny"])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "for cpu" in text and "uint8" in text and "rewrote" in text
    assert (tmp_path / "cal" / "tiny" / "int8-cpu" / "recipe.json").is_file()


def test_cpu_file_keeps_the_image_io_at_0_to_1(work, tmp_path):
    """The output range was calibrated past [0, 1] ([-0.07, 1.06] in the shipped file), though the
    runtime clips there: 226 of 256 grey levels were left to the model's output."""
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "m.int8-cpu.onnx"
    Q.quantize_model(work["onnx"], out, calib=work["calib"], options=_opts(target="cpu"), calib_dir=tmp_path / "cal",
                     update_manifest=False)
    g = onnx.load(str(out)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    dq = producer[g.output[0].name]  # the graph's output comes out of a DequantizeLinear
    assert dq.op_type == "DequantizeLinear"
    assert float(inits[dq.input[1]]) == pytest.approx(1 / 255) and int(inits[dq.input[2]]) == 0


def test_an_int8_file_far_from_fp32_with_no_ground_truth_is_not_chosen():
    from edge_deblur.runtime.cpu_features import features_from
    from edge_deblur.runtime.select import _judge

    vnni = features_from({"avx2", "avx512f", "avx512_vnni"}, "VNNI CPU")
    entry = {"precision": "int8", "target": "cpu", "accuracy": {"held_out_tiles": {"psnr_int8_vs_fp32": 28.4}}}
    ok, why = _judge("model.int8-cpu.onnx", entry, vnni, 0.3)
    assert not ok and "28.4 dB from FP32" in why
    entry["accuracy"]["held_out_tiles"]["psnr_int8_vs_fp32"] = 44.0
    assert _judge("model.int8-cpu.onnx", entry, vnni, 0.3)[0]


@pytest.mark.parametrize("flags, target, emulated", [("avx2 fma", "cpu", True), ("avx2 avx512_vnni", "cpu", False),
                                                     ("avx2 fma", "cpu-avx2", False)])
def test_an_8bit_cpu_files_accuracy_is_measured_exactly_on_a_cpu_without_vnni(work, tmp_path, monkeypatch, flags,
                                                                               target, emulated):
    """On x86 without dot products ONNX Runtime saturates an 8-bit-weight file (edgenet M5: -0.16 dB
    on REDS there), so the file's recorded accuracy would not be what the VNNI/AMX CPUs it is for
    compute: it is measured on an exact float emulation of the Q/DQ graph, and the recipe says so."""
    monkeypatch.setenv("EDGE_DEBLUR_CPU_FLAGS", flags)
    seen = []
    real = QE.ort_session
    monkeypatch.setattr(QE, "ort_session", lambda m, threads=0, emulate=False: seen.append(emulate) or real(m, threads, emulate))
    rec = Q.quantize_model(work["onnx"], tmp_path / "q.onnx", calib=work["calib"], options=_opts(target=target),
                           calib_dir=tmp_path / "cal", update_manifest=False)
    assert ("int8_kernels" in rec["accuracy"]) is emulated
    assert any(seen) is emulated and not all(seen)  # the FP32 reference is never emulated
    if emulated:
        assert "emulation" in rec["accuracy"]["int8_kernels"] and "cpu-avx2" in rec["accuracy"]["int8_kernels"]
