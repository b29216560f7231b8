"""Recurrent training: a recurrent edgenet starts from any image edgenet checkpoint with its first
frame unchanged, clips of consecutive real pairs share one crop, held-out scenes stay out, and a
run on mixed synthetic + real clips with truncated back-propagation through time completes."""
import cv2
import numpy as np
import pytest
import torch

from edge_deblur.config import load_train_config
from edge_deblur.data.datasets import PairedClipDataset, build_train_dataset
from edge_deblur.errors import DatasetError
from edge_deblur.models import build_model
from edge_deblur.models.checkpoint import load_model, save_checkpoint
from edge_deblur.models.grow import to_recurrent
from edge_deblur.train import train

IMAGE_SPEC = {"type": "edgenet", "widths": [8, 16], "enc_blocks": [1], "mid_blocks": 1, "dec_blocks": [1], "rep": False}


def _random_image_model(spec=IMAGE_SPEC, seed=0):
    torch.manual_seed(seed)
    m = build_model(spec)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return m.eval()


@pytest.mark.parametrize("extra", [{}, {"mid_blocks": 2}])
def test_recurrent_model_starts_as_the_image_model(extra):
    image = _random_image_model()
    rnn = to_recurrent(image, dict(IMAGE_SPEC, type="edgenet_rnn", **extra)).eval()
    x = torch.rand(2, 3, 24, 20)
    with torch.no_grad():
        y, h = rnn(x, torch.zeros(rnn.state_shape(24, 20, 2)))
        assert torch.equal(y, image(x)) or torch.allclose(y, image(x), atol=1e-6)
        y2, _ = rnn(x, h)  # a trained fuse would use h; the identity init ignores it
        assert torch.allclose(y2, y, atol=1e-6)
    with pytest.raises(ValueError, match="widths"):
        to_recurrent(image, dict(IMAGE_SPEC, type="edgenet_rnn", widths=[8, 24]))


@pytest.fixture(scope="module")
def reds_like(tmp_path_factory):
    """REDS layout, two scenes of 6 consecutive frames: sharp frame t is the base image + 10 t."""
    root = tmp_path_factory.mktemp("reds")
    rng = np.random.default_rng(1)
    for scene in ("000", "001"):
        base = rng.integers(0, 150, (40, 56, 3), dtype=np.uint8)
        for t in range(6):
            sharp = base + np.uint8(10 * t)
            for split, img in (("sharp", sharp), ("blur", cv2.blur(sharp, (3, 3)))):
                d = root / f"train_{split}" / scene
                d.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(d / f"{t:08d}.png"), img)
    return root


def test_paired_clips_are_consecutive_and_share_one_crop(reds_like):
    ds = PairedClipDataset(reds_like, frames=3, crop=32, exclude=["train_001"], length=20)
    assert ds.scenes == ["train_000"] and len(ds.clips) == 4 and len(ds) == 20
    for i in range(8):
        item = ds[i]
        assert item["blur"].shape == item["sharp"].shape == (3, 3, 32, 32)
        diffs = item["sharp"][1:] - item["sharp"][:-1]  # same window: exactly +10 levels a frame
        assert torch.allclose(diffs, torch.full_like(diffs, 10 / 255), atol=1e-6)
    with pytest.raises(DatasetError, match="consecutive frames"):
        PairedClipDataset(reds_like, frames=7, crop=32)
    with pytest.raises(DatasetError, match="train_009"):
        PairedClipDataset(reds_like, frames=3, crop=32, exclude=["train_009"])


def test_recurrent_training_from_an_image_checkpoint(tmp_path, reds_like):
    sharp = tmp_path / "sharp"
    sharp.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(sharp / f"{i}.png"), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    image = _random_image_model()
    ckpt = tmp_path / "image.safetensors"
    save_checkpoint(ckpt, image.state_dict(), image.spec, meta={"iterations": 5})
    cfg = load_train_config("configs/train/smoke.yaml", [
        f"out_dir={tmp_path / 'rnn'}", f"data.sharp_roots=[{sharp}]", f"data.pair_roots=[{reds_like}]",
        "data.pair_exclude=[train_001]", "data.pair_prob=0.5", "data.clip_frames=3", "model={type: edgenet_rnn}",
        f"train.init_from={ckpt}", "train.tbptt=2", "train.iters=2", "train.val_every=2", "train.batch_size=2",
    ])
    ds = build_train_dataset(cfg.data, length=8)
    assert {ds[i]["scene"] for i in range(8)} == {"synthetic_clip", "train_000"}
    train(cfg, progress=False)
    m = load_model(tmp_path / "rnn" / "last.safetensors")
    assert m.recurrent and m.spec["widths"] == [8, 16] and m.spec["rep"] is False
    from edge_deblur.errors import ConfigError

    with pytest.raises(ConfigError, match="tbptt"):
        load_train_config("configs/train/smoke.yaml", [f"data.sharp_roots=[{sharp}]", "train.tbptt=-1"])
