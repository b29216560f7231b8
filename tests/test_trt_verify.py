"""edge-deblur verify on the CPU: ONNX Runtime (FP32 and FP16 graphs) against the FP32 PyTorch
checkpoint, PASSED/FAILED with the exit code, unavailable backends skipped with a note, and a
failure when only unavailable backends were asked for."""
import importlib.util
import json

import numpy as np
import pytest

from edge_deblur.runtime import verify as V

pytest.importorskip("torch")
pytest.importorskip("onnx")

from runtime_helpers import TINY_RNN_SPEC, exported  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return exported(tmp_path_factory)


def test_synthetic_frames_are_deterministic_and_any_size():
    a = V.synthetic_frames(3, 37, 23, seed=1)
    b = V.synthetic_frames(3, 37, 23, seed=1)
    assert all(f.shape == (23, 37, 3) and f.dtype == np.uint8 for f in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1]) and a[0].std() > 10
    # any size: the street scene of the odd frames too (its buildings' heights were rng.integers(0, 0) at 1 px)
    for w, h in ((37, 1), (1, 1), (1, 37), (16, 16)):
        assert [f.shape for f in V.synthetic_frames(2, w, h)] == [(h, w, 3)] * 2



def test_odd_synthetic_frames_are_the_street_scene():
    """Every other frame is the demo's street scene (text, windows, checkerboards), the content that
    shows an 8-bit-weight CPU INT8 file saturating on a CPU without VNNI (30.6 dB from FP32 there,
    45 on the gradient frames), blurred like the others."""
    from edge_deblur.runtime.scene import make_scene

    f = V.synthetic_frames(2, 320, 180, seed=0)
    street = V._motion_blur(make_scene(180, 320, 1).astype(np.float32) / 255.0, 1)
    assert np.array_equal(f[1], street) and not np.array_equal(f[0], V._motion_blur(make_scene(180, 320, 0) / 255.0, 0))


def test_onnxruntime_vs_torch_fp32_and_fp16(tiny):
    r = V.verify(tiny["onnx"], backends="onnxruntime,torch", frames=2, size=(45, 30), checkpoint=tiny["ckpt"])
    rows = {row.backend: row for row in r.rows}
    assert r.passed, V.format_report(r)
    assert rows["torch"].status == "reference" and "torch (cpu, fp32)" in r.reference
    assert rows["onnxruntime"].status == "pass" and rows["onnxruntime"].precision == "fp32"
    assert rows["onnxruntime"].threshold == 50 and rows["onnxruntime"].psnr_min >= 50

    r16 = V.verify(tiny["fp16"], backends="onnxruntime,torch", frames=2, size=(45, 30), checkpoint=tiny["ckpt"])
    row = {row.backend: row for row in r16.rows}["onnxruntime"]
    assert r16.passed and row.precision == "fp16" and row.threshold == 40 and row.psnr_min >= 40
    assert row.psnr_min < 200  # really a different graph


def test_model_folder_and_unavailable_backends_are_skipped(tiny):
    # the folder's manifest names model.onnx; the checkpoint is found beside it or passed in
    r = V.verify(tiny["dir"], frames=1, size=(32, 24), checkpoint=tiny["ckpt"])
    text = V.format_report(r)
    assert r.passed, text
    skipped = {row.backend: row.note for row in r.rows if row.status == "skipped"}
    if importlib.util.find_spec("tensorrt") is None:
        assert "edge-deblur[tensorrt]" in skipped["tensorrt"]
    assert text.rstrip().endswith("PASSED")


def test_only_unavailable_backends_fail(tiny):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    r = V.verify(tiny["onnx"], backends="tensorrt", frames=1, size=(32, 24), checkpoint=tiny["ckpt"])
    assert not r.passed and "none of the requested backends can run here" in r.reason
    assert V.format_report(r).splitlines()[-1].startswith("FAILED")


def test_threshold_miss_fails(tiny):
    r = V.verify(tiny["fp16"], backends="onnxruntime,torch", frames=1, size=(32, 24), checkpoint=tiny["ckpt"],
                 thresholds={"fp16": 500.0})
    row = {row.backend: row for row in r.rows}["onnxruntime"]
    assert not r.passed and row.status == "fail" and "< 500 dB for fp16" in row.note


def test_cli_exit_codes_and_json(tiny, tmp_path, capsys):
    from edge_deblur.cli import main

    out = tmp_path / "r.json"
    rc = main(["verify", str(tiny["onnx"]), "--checkpoint", str(tiny["ckpt"]), "--backends", "onnxruntime,torch",
               "--frames", "1", "--size", "40x24", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and text.rstrip().endswith("PASSED")
    assert json.loads(out.read_text())["passed"] is True
    rc = main(["verify", str(tiny["onnx"]), "--checkpoint", str(tiny["ckpt"]), "--backends", "onnxruntime,torch",
               "--frames", "1", "--size", "40x24", "--min-psnr", "fp32=900"])
    assert rc == 1 and "FAILED" in capsys.readouterr().out
    rc = main(["verify", str(tiny["onnx"]), "--backends", "tensorflow"])
    assert rc == 2 and "unknown backend" in capsys.readouterr().err


def test_recurrent_model_state_is_carried(tmp_path_factory):
    rnn = exported(tmp_path_factory, "tiny_rnn", TINY_RNN_SPEC, fp16=False)
    r = V.verify(rnn["onnx"], backends="onnxruntime", frames=3, size=(32, 24), checkpoint=rnn["ckpt"])
    assert r.passed and r.rows[0].psnr_min >= 50, V.format_report(r)


def test_tensorrt_profile_for_verify_covers_the_frames():
    a = V.Artifacts(stride=16)
    assert V._trt_opts(a, (320, 256), {}) == {}  # the default profile: the deployed engine is the one checked
    assert V._trt_opts(a, (320, 240), {}) == {"shapes": "1x3x240x320"}  # below its 256 minimum: a fixed profile
    assert V._trt_opts(a, (100, 75), {"shapes": "1x3x80x112"}) == {"shapes": "1x3x80x112"}
