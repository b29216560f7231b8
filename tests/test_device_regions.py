"""The torch path's photo crops (train/device_data.py) are as sharp as the OpenCV path's
(data/datasets.py ``_resize``): the same photo at the same scale has the same gradient energy in
both, so the two paths train on the same targets (an unfiltered bicubic reduction gave the torch
path's crops 1.5x the gradient energy: aliased, over-sharp targets)."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_deblur.config import load_train_config
from edge_deblur.data.datasets import _resize
from edge_deblur.train.device_data import DeviceBatches

ROOT = Path(__file__).resolve().parents[1]


def _energy(x: np.ndarray) -> float:
    g = x.astype(np.float64).mean(-1)
    return float(np.mean(np.diff(g, axis=0) ** 2) + np.mean(np.diff(g, axis=1) ** 2))


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("photo")
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (480, 480, 3)).astype(np.float32), (0, 0), 0.8)
    img = np.clip((img - img.mean()) * 3 + 128, 0, 255).astype(np.uint8)  # fine texture up to near Nyquist
    cv2.imwrite(str(d / "tex.png"), img)
    return d, img


@pytest.mark.parametrize("scale", [0.95, 0.8, 0.6])  # the recipes draw 0.5-1
def test_torch_crops_are_as_sharp_as_the_opencv_crops(tmp_path, photo_dir, scale):
    d, img = photo_dir
    R = 48
    cfg = load_train_config(ROOT / "configs/train/smoke.yaml", [
        f"out_dir={tmp_path / 'run'}", f"data.sharp_roots=[{d}]", "data.pair_roots=[]", "data.pair_prob=0",
        "data.synth=torch", "data.pack=null", f"data.scale=[{scale}, {scale}]", f"data.crop={R}"])
    db = DeviceBatches(cfg, "cpu", seed=1, batch_size=2)
    torch_e = np.mean([_energy(r.permute(1, 2, 0).numpy() * 255) for r in db._regions(24, R, R)])
    rng = np.random.default_rng(2)
    side = int(round(R / scale))
    cpu_e = []
    for _ in range(24):
        y, x = rng.integers(0, img.shape[0] - side, 2)
        cpu_e.append(_energy(_resize(img[y:y + side, x:x + side], R, R).astype(np.float64)))
    assert np.mean(torch_e) == pytest.approx(np.mean(cpu_e), rel=0.12)
