"""Batch jobs that finish: `deblur` over a folder goes on past a corrupt file and reports every
failure with a non-zero exit; a corrupt or foreign state.pt is a clear error naming the file
(never a hint to unpickle it); non-finite numbers in a config are refused; the shipped smoke
config is complete on its own."""
import json

import cv2
import numpy as np
import pytest

from edge_deblur.cli import main
from edge_deblur.config import load_train_config
from edge_deblur.errors import ConfigError, ModelError

from test_cli_stream import tiny_onnx  # noqa: F401  (fixture)


def test_deblur_goes_on_past_bad_files_and_reports_them(tmp_path, tiny_onnx, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        cv2.imwrite(str(src / f"f{i}.png"), np.full((16, 16, 3), 40 * i, np.uint8))
    (src / "f1.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")       # corrupt, sorts second
    (src / "f3.png").write_bytes(b"")                                      # empty
    (src / "clip.avi").write_bytes(b"RIFF0000AVI garbage")                # undecodable video
    out = tmp_path / "out"
    rc = main(["deblur", str(src), "-o", str(out), "--model", str(tiny_onnx), "--json"])
    stdout, err = capsys.readouterr()
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["f0.png", "f2.png"]  # the good files after a bad one too
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert sorted(f["input"].rsplit("/", 1)[-1] for f in summary["failed"]) == ["clip.avi", "f1.png", "f3.png"]
    assert summary["images"] == 2 and "3 of 5 inputs failed" in err
    for name in ("f1.png", "f3.png", "clip.avi"):
        assert name in err


def test_corrupt_or_foreign_state_is_a_clear_error(tmp_path):
    torch = pytest.importorskip("torch")
    from edge_deblur.train.resume import load_resume_state

    bad = tmp_path / "state.pt"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ModelError) as e:
        load_resume_state(bad, "cpu")
    msg = str(e.value)
    assert str(bad) in msg and "corrupt" in msg and "weights_only" not in msg

    import argparse

    torch.save({"model": argparse.Namespace(x=1)}, bad)  # needs unpickling of a foreign class
    with pytest.raises(ModelError, match="objects other than tensors") as e:
        load_resume_state(bad, "cpu")
    assert "weights_only" not in str(e.value)

    torch.save({"weights": torch.zeros(2)}, bad)  # a plain tensor file, not a training state
    with pytest.raises(ModelError, match="not a training state"):
        load_resume_state(bad, "cpu")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_training_refuses_a_corrupt_state_naming_it(tmp_path, capsys):
    pytest.importorskip("torch")
    sharp = tmp_path / "sharp"
    sharp.mkdir()
    cv2.imwrite(str(sharp / "a.png"), np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.pt").write_bytes(b"\x80\x04garbage")
    rc = main(["train", "-c", "configs/train/smoke.yaml", "--no-progress", f"out_dir={run}",
               f"data.sharp_roots=[{sharp}]", "train.iters=2"])
    err = capsys.readouterr().err
    assert rc == 2 and "state.pt" in err and "weights_only" not in err and "Traceback" not in err


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ConfigError, match="train.lr: must be a finite number"):
        load_train_config("configs/train/smoke.yaml", [f"train.lr={value}"])


def test_smoke_config_is_complete_on_its_own():
    cfg = load_train_config("configs/train/smoke.yaml")
    assert cfg.data.sharp_roots and cfg.train.iters > 0
