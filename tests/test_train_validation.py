"""The trainer validates on several sets (data.val_sets) and reports like `edge-deblur eval`:
per-set gains, tone-aligned gains, worst scenes, the mean of the per-set gains (the selection
metric for best.safetensors) and the real scenes below their input; log.csv keeps older columns."""
import csv
import logging

import cv2
import numpy as np
import torch

from edge_deblur.config import load_train_config
from edge_deblur.models.checkpoint import read_checkpoint
from edge_deblur.train import train

from test_metrics_suite import make_pairs, scene_image


def test_training_validates_on_several_sets_and_selects_by_the_mean_gain(tmp_path, caplog):
    sharp = tmp_path / "sharp"
    sharp.mkdir()
    for i in range(2):
        cv2.imwrite(str(sharp / f"{i}.png"), cv2.resize(scene_image(10 + i), (96, 96)))
    cam = make_pairs(tmp_path / "cam", {"s1": 1, "s2": 1})
    run = tmp_path / "run"
    run.mkdir()
    # a log from before this change: its columns and rows stay, the new ones are added
    (run / "log.csv").write_text("iter,lr,loss,it_per_s,real_psnr,real_psnr_gain,real_ssim\n5,0.001,0.1,1.0,,,\n")
    cfg = load_train_config("configs/train/smoke.yaml", [
        f"out_dir={run}", f"data.sharp_roots=[{sharp}]", "train.iters=4", "train.val_every=2",
        "train.ckpt_every=2", "train.log_every=2",
        f"data.val_sets=[{{name: cam, path: {cam}, crop: [48, 32]}}, {{name: syn, kind: synthetic, "
        f"path: {tmp_path / 'syn'}, source: {sharp}, count: 1, size: [64, 48]}}]",
    ])
    with caplog.at_level(logging.INFO, logger="edge_deblur.train"):
        result = train(cfg, progress=False)
    report = result["metrics"]
    assert set(report["sets"]) == {"cam", "syn"} and report["sets"]["cam"]["crop"] == [48, 32]
    assert report["sets"]["syn"]["kind"] == "synthetic" and (tmp_path / "syn" / "val" / "blur" / "000.png").is_file()
    gains = [s["psnr_gain"] for s in report["sets"].values()]
    assert np.isclose(report["mean_gain"], np.mean(gains))
    assert any("mean gain" in r.message and "cam " in r.message and "worst" in r.message for r in caplog.records)
    rows = list(csv.DictReader(open(run / "log.csv")))
    header = list(rows[0])
    assert header[:7] == ["iter", "lr", "loss", "it_per_s", "real_psnr", "real_psnr_gain", "real_ssim"]
    for col in ("cam_psnr_gain", "cam_tone_gain", "cam_worst_scene_gain", "cam_ssim_gain", "syn_psnr",
                "mean_gain", "mean_tone_gain", "real_below_input"):
        assert col in header, col
    assert rows[0]["iter"] == "5" and rows[-1]["iter"] == "4" and rows[-1]["mean_gain"]
    assert int(rows[-1]["real_below_input"]) == len(report["real_below_input"])
    # best.safetensors is the validation with the highest mean of the per-set gains
    val_rows = [r for r in rows[1:] if r["mean_gain"]]
    best_row = max(val_rows, key=lambda r: float(r["mean_gain"]))
    _, _, _, meta = read_checkpoint(run / "best.safetensors")
    assert meta["iters"] == int(best_row["iter"]) and abs(meta["metrics"]["mean_gain"] - float(best_row["mean_gain"])) < 1e-3
    assert abs(torch.load(run / "state.pt", weights_only=True)["best"] - float(best_row["mean_gain"])) < 1e-3
