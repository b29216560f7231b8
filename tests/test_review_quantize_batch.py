"""Review fixes for `quantize` and `batch`: FP16 graphs refused up front, outputs written
atomically, a calibration record another INT8 file points at never overwritten, output path,
sample count and calibration source checked before calibrating; `batch` options, the model and
tile/overlap checked before Ray starts, and a pool the cluster cannot hold refused in seconds.
No torch, no Ray instance: tiny hand-made ONNX graphs, and Ray's entry points replaced by stubs
that fail the test if the run gets that far."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_deblur.cli import main  # noqa: E402
from edge_deblur.compress import qdq_graph as G  # noqa: E402
from edge_deblur.compress import quantize as Q  # noqa: E402
from edge_deblur.errors import ClusterError, InputError, ModelError  # noqa: E402
from edge_deblur.runtime import ray_batch as RB  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH_MODEL = ROOT / "checkpoints" / "edgenet_s" / "model.onnx"
QARGS = ["--samples", "8", "--tile", "32x32"]


def _tiny_model(path: Path, fp16: bool = False) -> Path:
    """input -> Conv(3->8) -> Relu -> Conv(8->3) -> + input, stride 4 in the metadata; with
    ``fp16`` the weights are float16 (Cast in and out), like export's model.fp16.onnx."""
    rng = np.random.default_rng(0)
    wt = np.float16 if fp16 else np.float32
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(wt), "w1"),
             numpy_helper.from_array(np.zeros(8, wt), "b1"),
             numpy_helper.from_array((rng.standard_normal((3, 8, 3, 3)) * 0.1).astype(wt), "w2"),
             numpy_helper.from_array(np.zeros(3, wt), "b2")]
    x = "x16" if fp16 else "input"
    nodes = [helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16, name="cast_in")] if fp16 else []
    nodes += [helper.make_node("Conv", [x, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
              helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
              helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
              helper.make_node("Add", ["c2", x], ["y16" if fp16 else "output"], name="add")]
    if fp16:
        nodes.append(helper.make_node("Cast", ["y16"], ["output"], to=TensorProto.FLOAT, name="cast_out"))
    shape = ["N", 3, "H", "W"]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    for k, v in {"edge_deblur.stride": "4", "edge_deblur.precision": "fp16" if fp16 else "fp32"}.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(path))
    return path


@pytest.fixture()
def qwork(tmp_path):
    model = _tiny_model(tmp_path / "tiny" / "model.onnx")
    fp16 = _tiny_model(tmp_path / "tiny" / "model.fp16.onnx", fp16=True)
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(1)
    for i in range(10):
        img = cv2.GaussianBlur((rng.random((48, 48, 3)) * 255).astype(np.uint8), (0, 0), 1.0)
        cv2.imwrite(str(calib / f"{i}.png"), img)
    return {"root": tmp_path, "model": model, "fp16": fp16, "calib": calib, "cal": tmp_path / "cal"}


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_calibration(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("calibration started before the arguments were checked")

    monkeypatch.setattr(Q, "calibration_frames", refuse)


# -- 1: FP16 graphs, atomic output -----------------------------------------------------------


def test_fp16_graph_refused_before_anything_is_written(qwork, capsys):
    rc = main(["quantize", str(qwork["fp16"]), "--calib", str(qwork["calib"]), "--calib-dir", str(qwork["cal"])]
              + QARGS)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "FP16" in err and "float16" in err and str(qwork["model"]) in err  # names the FP32 file to use
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (qwork["fp16"].parent / "model.fp16.int8.onnx").exists()
    assert not qwork["cal"].exists()
    with pytest.raises(ModelError, match="FP16"):
        Q.inspect_float_model(qwork["fp16"])


def test_failed_quantization_leaves_no_output_and_no_table(qwork, monkeypatch):
    def broken(*a, **k):
        raise ModelError("checker failed (simulated)")

    monkeypatch.setattr(Q, "finish_graph", broken)
    out = qwork["root"] / "tiny" / "model.int8.onnx"
    with pytest.raises(ModelError, match="simulated"):
        Q.quantize_model(qwork["model"], out, calib=qwork["calib"], calib_dir=qwork["cal"],
                         options=Q.QuantizeOptions(samples=8, tile=(32, 32), eval_samples=2))
    assert not out.exists()
    assert not qwork["cal"].exists()  # the table is written with the model, not before it
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.fp16.onnx", "model.onnx"]


def test_quantize_with_ranges_replaces_dst_only_on_success(qwork, monkeypatch):
    import onnxruntime.quantization as oq

    dst = qwork["root"] / "keep.onnx"
    dst.write_bytes(b"previous INT8 model")

    def half_written(src, out, **k):
        Path(out).write_bytes(b"partial")
        raise RuntimeError("quantize_static failed (simulated)")

    monkeypatch.setattr(oq, "quantize_static", half_written)
    with pytest.raises(RuntimeError, match="simulated"):
        G.quantize_with_ranges(qwork["model"], dst, {}, "minmax", [], "tensorrt")
    assert dst.read_bytes() == b"previous INT8 model"
    assert [p.name for p in dst.parent.iterdir() if p.name.startswith(".keep")] == []


# -- 2: the calibration record of another INT8 file --------------------------------------------


def test_other_output_does_not_overwrite_the_default_record(qwork):
    opts = dict(samples=8, tile=(32, 32), eval_samples=2)
    default = Q.quantize_model(qwork["model"], calib=qwork["calib"], calib_dir=qwork["cal"],
                               options=Q.QuantizeOptions(**opts))
    base = qwork["cal"] / "tiny"
    assert Path(default["table"]) == base / "table.json"  # the recorded default layout
    before = _digest(base)
    default_out = qwork["root"] / "tiny" / "model.int8.onnx"

    other = qwork["root"] / "elsewhere" / "other.onnx"
    rec = Q.quantize_model(qwork["model"], other, calib=qwork["calib"], calib_dir=qwork["cal"],
                           options=Q.QuantizeOptions(seed=3, **opts))
    assert _digest(base).items() >= before.items()  # the default record is unchanged
    assert Path(rec["table"]).parent == base / "other"
    assert json.loads((base / "other" / "recipe.json").read_text())["output"] == str(other)
    md = {e.key: e.value for e in onnx.load(str(other)).metadata_props}
    assert md["edge_deblur.calibration"] == str(base / "other" / "recipe.json")
    md = {e.key: e.value for e in onnx.load(str(default_out)).metadata_props}
    assert json.loads(Path(md["edge_deblur.calibration"]).read_text())["output"] == str(default_out)

    # the same name in another folder gets its own record too; re-quantizing a file replaces its own
    third = qwork["root"] / "third" / "other.onnx"
    assert Q.record_folder(qwork["cal"], "tiny", "tensorrt", third) == base / "other-2"
    assert Q.record_folder(qwork["cal"], "tiny", "tensorrt", other) == base / "other"
    assert Q.record_folder(qwork["cal"], "tiny", "tensorrt", default_out) == base


# -- 3: output path, samples, calibration source ----------------------------------------------


def test_bad_quantize_arguments_fail_before_calibrating(qwork, monkeypatch, capsys):
    _no_calibration(monkeypatch)
    base = ["quantize", str(qwork["model"]), "--calib-dir", str(qwork["cal"])]

    folder = qwork["root"] / "outdir"
    folder.mkdir()
    assert main(base + ["--calib", str(qwork["calib"]), "-o", str(folder)] + QARGS) == 2
    assert "is a folder" in capsys.readouterr().err and list(folder.iterdir()) == []

    assert main(base + ["--calib", str(qwork["calib"]), "--samples", "100000", "--tile", "32x32"]) == 2
    err = capsys.readouterr().err
    assert "100000" in err and "4096" in err

    monkeypatch.chdir(qwork["calib"])  # images under '.': what an empty folder spec used to calibrate on
    for spec in ("synthetic:", ""):
        assert main(base + ["--calib", spec] + QARGS) == 2
        assert "names no folder" in capsys.readouterr().err

    victim = qwork["root"] / "notes.txt"
    victim.write_text("keep me")
    assert main(base + ["--calib", str(qwork["calib"]), "-o", str(victim)] + QARGS) == 2
    assert "not an INT8 model" in capsys.readouterr().err and victim.read_text() == "keep me"
    assert not qwork["cal"].exists()
    with pytest.raises(InputError, match="4096"):
        Q.QuantizeOptions(samples=5000).validate()


# -- 4-6: batch, before Ray starts ----------------------------------------------------------------


@pytest.fixture()
def bwork(tmp_path, monkeypatch):
    if not BATCH_MODEL.is_file():
        pytest.skip(f"{BATCH_MODEL} is not here")
    inp = tmp_path / "in"
    inp.mkdir()
    cv2.imwrite(str(inp / "a.png"), (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8))
    started = []

    def no_ray(*a, **k):
        started.append(a)
        raise AssertionError("Ray was started before the options were checked")

    monkeypatch.setattr(RB, "connect", no_ray)
    return {"in": inp, "out": tmp_path / "out", "started": started, "root": tmp_path}


@pytest.mark.parametrize("flags, words", [
    (["--num-cpus", "0"], "--num-cpus"),
    (["--actors", "0"], "--actors"),
    (["--cpus-per-actor", "0"], "--cpus-per-actor"),
    (["--gpus-per-actor", "-1"], "--gpus-per-actor"),
    (["--rows-per-task", "0"], "--rows-per-task"),
    (["--connect-timeout", "0"], "--connect-timeout"),
    (["--ray", "127.0.0.1:9", "--connect-timeout", "-1"], "--connect-timeout"),
    (["--tile", "32", "--overlap", "0"], "--overlap > 0"),
    (["--tile", "64", "--overlap", "40"], "twice the --overlap"),
])
def test_batch_options_checked_before_ray(bwork, capsys, flags, words):
    rc = main(["batch", str(bwork["in"]), "-o", str(bwork["out"]), "-m", str(BATCH_MODEL)] + flags)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert words in err and len(err.strip().splitlines()) == 1
    assert bwork["started"] == []


def test_batch_bad_model_is_one_line_before_ray(bwork, capsys):
    bad = bwork["root"] / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    rc = main(["batch", str(bwork["in"]), "-o", str(bwork["out"]), "-m", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "bad.onnx" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert bwork["started"] == []


def test_batch_pool_the_cluster_cannot_hold_fails_fast(bwork, monkeypatch, capsys):
    ray = pytest.importorskip("ray")
    import ray.data

    monkeypatch.setattr(RB, "connect", lambda *a, **k: ray)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "memory": 1e9})

    def pool(*a, **k):
        raise AssertionError("the actor pool was started on a cluster that cannot hold it")

    monkeypatch.setattr(ray.data, "from_items", pool)
    t0 = time.perf_counter()
    rc = main(["batch", str(bwork["in"]), "-o", str(bwork["out"]), "-m", str(BATCH_MODEL), "--gpus-per-actor", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "1 GPUs" in err and "0 GPUs" in err and "--gpus-per-actor 0" in err
    rc = main(["batch", str(bwork["in"]), "-o", str(bwork["out"]), "-m", str(BATCH_MODEL), "--actors", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and "--actors 3" in err and "--actors 2 or fewer" in err
    assert time.perf_counter() - t0 < 60


def test_check_cluster_fits():
    RB.check_cluster_fits({"CPU": 4.0, "GPU": 1.0}, cpus_per_actor=2, gpus_per_actor=1)
    RB.check_cluster_fits({"CPU": 4.0}, cpus_per_actor=0.5, gpus_per_actor=0, actors=8)
    with pytest.raises(ClusterError, match="4 CPUs and 0 GPUs"):
        RB.check_cluster_fits({"CPU": 4.0}, cpus_per_actor=1, gpus_per_actor=0.5)
    with pytest.raises(ClusterError, match="--cpus-per-actor 4 or less"):
        RB.check_cluster_fits({"CPU": 4.0}, cpus_per_actor=8, gpus_per_actor=0)
    with pytest.raises(ClusterError, match="--actors 1 or fewer"):
        RB.check_cluster_fits({"CPU": 4.0, "GPU": 1.0}, cpus_per_actor=1, gpus_per_actor=1, actors=2)
