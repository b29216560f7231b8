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
    wide = to_recurrent(image, dict(IMAGE_SPEC, type="edgenet_rnn", widths=[8, 24], **extra)).eval()
    with torch.no_grad():  # wider levels are a growth too: the new channels start unread
        assert torch.allclose(wide(x, torch.zeros(wide.state_shape(24, 20, 2)))[0], y, atol=1e-5)
    with pytest.raises(ValueError, match="widths"):
        to_recurrent(image, dict(IMAGE_SPEC, type="edgenet_rnn", widths=[8, 8]))


@pytest.mark.parametrize("rep", [False, True])
def test_frames_model_starts_as_the_image_model_and_shifts_its_frames(rep):
    """edgenet_frames from an image model: a zero state gives exactly the image model's output,
    the state out is the current frame followed by the newest previous one, and once its state
    weights are trained (random here) the earlier frames change the output."""
    image = _random_image_model(dict(IMAGE_SPEC, rep=rep))
    frames = to_recurrent(image, dict(IMAGE_SPEC, rep=rep, type="edgenet_frames", prev_frames=2)).eval()
    assert frames.state_shape(24, 20, 2) == (2, 6, 24, 20)
    x0, x1 = torch.rand(2, 3, 24, 20), torch.rand(2, 3, 24, 20)
    with torch.no_grad():
        y, s = frames(x1, torch.zeros(frames.state_shape(24, 20, 2)))
        assert torch.allclose(y, image(x1), atol=1e-6)
        assert torch.equal(s[:, :3], x1) and not s[:, 3:].any()
        _, s2 = frames(x0, s)
        assert torch.equal(s2, torch.cat([x0, x1], 1))  # newest first, the oldest dropped
        for name, w in frames.state_head.named_parameters():
            if name.endswith("weight"):  # trained weights; the biases stay 0 so that a zero state still reads as none
                w.normal_(std=0.2)
        y_seen, _ = frames(x1, s2)
        assert (y_seen - image(x1)).abs().max() > 1e-3
        assert torch.allclose(frames(x1, torch.zeros_like(s2))[0], image(x1), atol=1e-6)
    with pytest.raises(Exception, match="prev_frames"):
        build_model(dict(IMAGE_SPEC, type="edgenet_frames", prev_frames=0))


def test_validation_carries_a_full_resolution_state_through_a_scene(reds_like):
    """The trainer's validation feeds an edgenet_frames model its previous frames within a scene of
    consecutive frames (its state is at full resolution, not 1/stride), as the runtime does."""
    from edge_deblur.config.validation import ValSetConfig
    from edge_deblur.runtime.preprocess import frame_to_tensor, tensor_to_frame
    from edge_deblur.train.loop import Validator

    torch.manual_seed(0)
    frames = to_recurrent(_random_image_model(), dict(IMAGE_SPEC, type="edgenet_frames")).eval()
    with torch.no_grad():
        frames.state_head.weight.normal_(std=0.3)
    set_cfg = ValSetConfig(path=str(reds_like), name="reds", kind="real", scenes=["train_000"])
    report = Validator([set_cfg], torch.device("cpu"))(frames)
    blur_dir = reds_like / "train_blur" / "000"
    sharp_dir = reds_like / "train_sharp" / "000"
    state, psnrs, alone = None, [], []
    from edge_deblur.metrics import psnr
    with torch.no_grad():
        for t in range(6):
            x, info = frame_to_tensor(cv2.imread(str(blur_dir / f"{t:08d}.png")), frames.stride)
            x = torch.from_numpy(x)
            zero = torch.zeros(frames.state_shape(x.shape[2], x.shape[3]))
            y, state = frames(x, zero if state is None else state)
            sharp = cv2.imread(str(sharp_dir / f"{t:08d}.png"))
            psnrs.append(psnr(tensor_to_frame(y.numpy(), info), sharp))
            alone.append(psnr(tensor_to_frame(frames(x, zero)[0].numpy(), info), sharp))
    assert report["sets"]["reds"]["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-6)
    assert abs(np.mean(psnrs) - np.mean(alone)) > 1e-3  # the carried frames mattered


def test_replay_pool_takes_clips_and_flips_all_their_frames_alike():
    from edge_deblur.train.replay import ReplayPool

    clip = torch.arange(2 * 3 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 3, 1, 4, 4)
    pool = ReplayPool([{"blur": clip, "sharp": clip + 1}] * 6, batch_size=4, size=8, seed=0)
    batches = list(pool)
    assert batches and all(b["blur"].shape == (4, 3, 1, 4, 4) for b in batches)
    for b in batches:
        for item, target in zip(b["blur"], b["sharp"]):
            assert torch.equal(target, item + 1)  # blur and sharp got the same symmetry
            src = clip[0] if item[0].sum() == clip[0, 0].sum() else clip[1]
            # one symmetry for the whole clip: frame k's change from frame 0 is the source's, moved alike
            code = [c for c in range(8) if torch.equal(_dihedral_ref(src[0], c), item[0])]
            assert code and all(torch.equal(_dihedral_ref(src[k], code[0]), item[k]) for k in range(3))


def _dihedral_ref(x, code):
    if code & 1:
        x = x.flip(-1)
    if code & 2:
        x = x.flip(-2)
    if code & 4:
        x = x.transpose(-1, -2)
    return x


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


def test_widening_a_recurrent_edgenet_keeps_its_output():
    """fuse_state reads cat([features, state]): a prefix copy of its weights made the old state
    columns read new feature channels (output off by 0.2); adding a level raised a RuntimeError."""
    from edge_deblur.models import build_model
    from edge_deblur.models.grow import grow_to

    torch.manual_seed(0)
    spec = {"type": "edgenet_rnn", "widths": [8, 16], "enc_blocks": [1], "mid_blocks": 1, "dec_blocks": [1]}
    m = build_model(spec).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))  # as after training: the fuse reads the state
    g = grow_to(m, dict(spec, widths=[8, 24])).eval()
    x, h = torch.rand(1, 3, 16, 16), torch.rand(1, 16, 4, 4)
    with torch.no_grad():
        for state in (torch.zeros_like(h), h):
            wide_state = torch.cat([state, torch.zeros(1, 8, 4, 4)], 1)
            assert torch.allclose(m(x, state)[0], g(x, wide_state)[0], atol=1e-5)
    with pytest.raises(ValueError, match="cannot add a level to a recurrent edgenet"):
        grow_to(m, dict(spec, widths=[8, 16, 32], enc_blocks=[1, 1], dec_blocks=[1, 0]))
