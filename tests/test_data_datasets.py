"""Datasets: pairing (GoPro/REDS), clear errors, shapes/dtypes, determinism, mixing, the fixed
synthetic validation set. Every image is made here with numpy and written to tmp_path."""
import json

import cv2
import numpy as np
import pytest
import torch

from edge_deblur.config.schema import BlurConfig, DataConfig
from edge_deblur.data.datasets import (
    MixedDataset,
    PairedDataset,
    SyntheticClipDataset,
    SyntheticDataset,
    build_train_dataset,
    find_pairs,
    make_synthetic_val_set,
    read_image,
    stack_frames,
    worker_init_fn,
)
from edge_deblur.errors import ConfigError, DatasetError


def _img(h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def make_gopro(root, scenes=(("s1", 3), ("s2", 2)), size=(40, 56)):
    h, w = size
    for si, (scene, n) in enumerate(scenes):
        for i in range(n):
            sharp = _img(h, w, 100 * si + i)
            _write(root / scene / "sharp" / f"{i:06d}.png", sharp)
            _write(root / scene / "blur" / f"{i:06d}.png", cv2.blur(sharp, (5, 1)))
    return root


def make_sharp_folder(root, n=3, size=(72, 88)):
    for i in range(n):
        ext = ".png" if i % 2 == 0 else ".jpg"
        _write(root / ("sub" if i == 2 else ".") / f"img{i}{ext}", _img(*size, 7 + i))
    return root


# --------------------------------------------------------------------------- pairing


def test_find_pairs_gopro_layout(tmp_path):
    root = make_gopro(tmp_path / "gopro")
    _write(root / "s1" / "blur_gamma" / "000000.png", _img(40, 56, 0))  # GoPro extra: ignored
    pairs = find_pairs(root)
    assert [p[0] for p in pairs] == ["s1"] * 3 + ["s2"] * 2
    for scene, b, s in pairs:
        assert b.parent.name == "blur" and s.parent.name == "sharp" and b.name == s.name


def test_find_pairs_nested_and_scene_root(tmp_path):
    make_gopro(tmp_path / "g" / "train", scenes=(("GOPR0001", 2),))
    assert {p[0] for p in find_pairs(tmp_path / "g")} == {"train/GOPR0001"}
    assert len(find_pairs(tmp_path / "g" / "train" / "GOPR0001")) == 2  # a scene folder itself


def test_find_pairs_reds_layout(tmp_path):
    root = tmp_path / "reds"
    for scene in ("000", "001"):
        for i in range(2):
            im = _img(32, 48, i)
            _write(root / "val_sharp" / scene / f"{i:08d}.png", im)
            _write(root / "val_blur" / scene / f"{i:08d}.png", im)
    pairs = find_pairs(root)
    assert len(pairs) == 4
    assert {p[0] for p in pairs} == {"val_000", "val_001"}


def test_missing_partner_file_is_named(tmp_path):
    root = make_gopro(tmp_path / "d")
    (root / "s1" / "sharp" / "000001.png").unlink()
    with pytest.raises(DatasetError) as e:
        find_pairs(root)
    msg = str(e.value)
    assert str(root / "s1" / "sharp" / "000001.png") in msg and "000001.png" in msg and "partner" in msg


def test_missing_blurred_partner_is_named(tmp_path):
    root = make_gopro(tmp_path / "d")
    (root / "s2" / "blur" / "000000.png").unlink()
    with pytest.raises(DatasetError, match="no blurred partner") as e:
        find_pairs(root)
    assert str(root / "s2" / "blur" / "000000.png") in str(e.value)


def test_missing_partner_folder(tmp_path):
    _write(tmp_path / "d" / "s1" / "blur" / "0.png", _img(16, 16, 0))
    with pytest.raises(DatasetError, match="no partner folder") as e:
        find_pairs(tmp_path / "d")
    assert str(tmp_path / "d" / "s1" / "sharp") in str(e.value)
    _write(tmp_path / "r" / "train_blur" / "000" / "0.png", _img(16, 16, 0))
    with pytest.raises(DatasetError, match="train_sharp"):
        find_pairs(tmp_path / "r")


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as e:
        find_pairs(tmp_path / "nope")
    assert "nope" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no blur/sharp pairs") as e:
        find_pairs(tmp_path / "empty")
    assert "GoPro layout" in str(e.value)
    (tmp_path / "e2" / "s" / "blur").mkdir(parents=True)
    (tmp_path / "e2" / "s" / "sharp").mkdir(parents=True)
    with pytest.raises(DatasetError, match="hold no images"):
        find_pairs(tmp_path / "e2")
    with pytest.raises(DatasetError, match="sharp_roots"):
        SyntheticDataset(tmp_path / "empty", 16)


def test_size_mismatch(tmp_path):
    root = make_gopro(tmp_path / "d")
    bad = root / "s2" / "sharp" / "000001.png"
    _write(bad, _img(30, 56, 0))
    with pytest.raises(DatasetError, match="size mismatch") as e:
        PairedDataset(root, crop=16)
    assert str(bad) in str(e.value) and "56x30" in str(e.value) and "56x40" in str(e.value)
    with pytest.raises(DatasetError, match="size mismatch"):
        find_pairs(root, check=True)


def test_unreadable_image(tmp_path):
    root = make_gopro(tmp_path / "d")
    bad = root / "s1" / "blur" / "000002.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DatasetError, match="cannot read image") as e:
        PairedDataset(root, crop=16)
    assert str(bad) in str(e.value)
    sharp = make_sharp_folder(tmp_path / "sharp")
    (sharp / "broken.jpg").write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(DatasetError, match="broken.jpg"):
        SyntheticDataset(sharp, 16)


def test_read_image_formats(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    _write(tmp_path / "g.png", gray)
    assert read_image(tmp_path / "g.png").shape == (8, 8, 3)
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    _write(tmp_path / "d.png", np.dstack([deep] * 3))
    im = read_image(tmp_path / "d.png")
    assert im.dtype == np.uint16 and im.shape == (8, 8, 3)
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    _write(tmp_path / "r.png", bgr)
    assert (read_image(tmp_path / "r.png")[..., 0] == 255).all()  # read back as RGB


# --------------------------------------------------------------------------- datasets


def test_paired_dataset_shapes_and_filters(tmp_path):
    root = make_gopro(tmp_path / "d")
    ds = PairedDataset(root, crop=32)
    assert len(ds) == 5 and ds.scenes == ["s1", "s2"]
    x = ds[0]
    assert x["blur"].shape == (3, 32, 32) and x["sharp"].shape == (3, 32, 32)
    assert x["blur"].dtype == torch.float32 and 0 <= x["blur"].min() and x["blur"].max() <= 1
    assert x["scene"] == "s1" and x["name"] == "000000"
    assert len(PairedDataset(root, crop=32, exclude=["s1"])) == 2
    assert {p[0] for p in PairedDataset(root, include=["s1"]).pairs} == {"s1"}
    with pytest.raises(DatasetError, match="'s3' is not in"):
        PairedDataset(root, crop=32, exclude=["s3"])
    full = PairedDataset(root, crop=None, augment=False)[3]
    assert full["blur"].shape == (3, 40, 56)
    big = PairedDataset(root, crop=64, length=12)  # larger than the frames: reflect-padded
    assert len(big) == 12 and big[11]["blur"].shape == (3, 64, 64)


def test_paired_augmentation_is_the_same_on_both(tmp_path):
    root = tmp_path / "same"
    for i in range(2):
        im = _img(40, 40, i)
        _write(root / "a" / "blur" / f"{i}.png", im)
        _write(root / "a" / "sharp" / f"{i}.png", im)
    ds = PairedDataset(root, crop=24, length=16)
    for i in range(16):
        x = ds[i]
        assert torch.equal(x["blur"], x["sharp"])
    # random crops/augmentations really vary, and repeat for the same (seed, index)
    assert not torch.equal(ds[0]["blur"], ds[2]["blur"])
    assert torch.equal(ds[3]["blur"], PairedDataset(root, crop=24, length=16)[3]["blur"])


def test_stack_frames_averages_in_linear_light():
    black, white = np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)
    # half black, half white in linear light is 0.5 ** (1 / 2.2) = 186 levels, not the sRGB mean 128
    assert (stack_frames([black, white]) == 186).all()
    assert (stack_frames([black, white], gamma=1.0) == 128).all()
    assert stack_frames([black.astype(np.uint16) * 0, white.astype(np.uint16) * 257]).dtype == np.uint16
    same = _img(8, 8, 3)
    assert np.array_equal(stack_frames([same, same, same]), same)
    with pytest.raises(DatasetError, match="differ in size"):
        stack_frames([black, np.zeros((3, 2, 3), np.uint8)])


def test_paired_stack_averages_consecutive_blurred_frames(tmp_path):
    root = make_gopro(tmp_path / "d", scenes=(("s1", 5), ("s2", 1)))
    ds = PairedDataset(root, crop=None, augment=False, stack=[3], length=6)
    assert ds.neighbours(0, 3) == [0]              # first frame of s1: no left neighbour
    assert ds.neighbours(2, 5) == [0, 1, 2, 3, 4]
    assert ds.neighbours(4, 5) == [4]              # last frame of s1
    assert ds.neighbours(5, 3) == [5]              # a one-frame scene never borrows from s1
    x = ds[2]
    blurs = [read_image(root / "s1" / "blur" / f"{i:06d}.png") for i in (1, 2, 3)]
    want = torch.from_numpy(stack_frames(blurs).astype(np.float32).transpose(2, 0, 1) / 255)
    assert torch.allclose(x["blur"], want)
    # the target stays the centre sharp frame
    assert torch.allclose(x["sharp"], PairedDataset(root, crop=None, augment=False)[2]["sharp"])
    assert torch.equal(ds[0]["blur"], PairedDataset(root, crop=None, augment=False)[0]["blur"])
    with pytest.raises(DatasetError, match="odd numbers"):
        PairedDataset(root, stack=[2])
    # cropping happens before stacking: same pixels as stacking whole frames, then cropping
    cropped = PairedDataset(root, crop=16, augment=False, stack=[3], length=6)
    c, full = cropped[2]["blur"], x["blur"]
    assert c.shape == (3, 16, 16)
    assert any(torch.allclose(c, full[:, y:y + 16, x0:x0 + 16]) for y in range(25) for x0 in range(41))
    other = tmp_path / "odd"
    for i, w in enumerate((56, 56, 48)):
        _write(other / "s" / "sharp" / f"{i}.png", _img(40, w, i))
        _write(other / "s" / "blur" / f"{i}.png", _img(40, w, i))
    with pytest.raises(DatasetError, match="must share a size"):
        PairedDataset(other, crop=16, stack=[3])[1]
    cfg = DataConfig(pair_roots=[str(root)], pair_prob=1.0, pair_stack=[1, 4])
    with pytest.raises(ConfigError, match="pair_stack"):
        cfg.validate()


def test_synthetic_dataset(tmp_path):
    root = make_sharp_folder(tmp_path / "sharp")
    ds = SyntheticDataset(root, crop=32, scale=(0.5, 1.0), seed=3, length=10)
    assert len(ds) == 10 and len(ds.images) == 3
    x = ds[4]
    assert x["blur"].shape == (3, 32, 32) and x["sharp"].shape == (3, 32, 32)
    assert x["blur"].dtype == torch.float32 and x["sharp"].dtype == torch.float32
    assert 0 <= x["blur"].min() and x["blur"].max() <= 1 and x["scene"] == "synthetic"
    again = SyntheticDataset(root, crop=32, scale=(0.5, 1.0), seed=3, length=10)[4]
    assert torch.equal(x["blur"], again["blur"]) and torch.equal(x["sharp"], again["sharp"])
    assert not torch.equal(x["blur"], ds[5]["blur"])
    other_seed = SyntheticDataset(root, crop=32, seed=4, length=10)[4]
    assert not torch.equal(x["blur"], other_seed["blur"])
    ds.set_epoch(1)
    assert not torch.equal(x["blur"], ds[4]["blur"])
    with pytest.raises(IndexError):
        ds[10]


def test_synthetic_dataset_upscales_small_images(tmp_path):
    root = make_sharp_folder(tmp_path / "sharp", n=1, size=(20, 24))
    x = SyntheticDataset(root, crop=48, length=2)[1]
    assert x["blur"].shape == (3, 48, 48)


def test_synthetic_downscale_blurs_before_shrinking(tmp_path):
    # a 1-pixel checkerboard: detail finer than the output pixels once shrunk 2x
    board = ((np.indices((160, 160)).sum(0) % 2) * 255).astype(np.uint8)
    _write(tmp_path / "b" / "board.png", np.dstack([board] * 3))
    quiet = dict(noise_prob=0.0, jpeg_prob=0.0, defocus_prob=0.0, highlight_gain=[1.0, 1.0])
    still = BlurConfig(sharp_prob=1.0, **quiet)
    plain = SyntheticDataset(tmp_path / "b", crop=32, blur_cfg=still, scale=(1.0, 1.0), length=2, augment=False)
    assert plain[0]["sharp"].std() > 0.4                       # d = 1: the board itself
    shrunk = SyntheticDataset(tmp_path / "b", crop=32, blur_cfg=still, scale=(1.0, 1.0), length=2,
                              augment=False, downscale=(2.0, 2.0))
    x = shrunk[0]
    assert x["sharp"].shape == (3, 32, 32)
    assert torch.allclose(x["sharp"], torch.full_like(x["sharp"], 128 / 255), atol=1 / 255)  # area mean
    assert torch.equal(x["sharp"] * 255, (x["sharp"] * 255).round())                         # 8-bit levels
    # blurred at 2x in linear light, then shrunk: the flat grey target comes with a much brighter
    # blurred frame (0.5 ** (1 / 2.2) = 186 levels), as real blur on detail finer than a pixel
    moving = BlurConfig(sharp_prob=0.0, length=[6.0, 10.0], **quiet)
    y = SyntheticDataset(tmp_path / "b", crop=32, blur_cfg=moving, scale=(1.0, 1.0), length=4,
                         augment=False, downscale=(2.0, 2.0))[1]
    assert y["sharp"].std() < 2 / 255 and y["blur"].mean() * 255 > 170
    with pytest.raises(DatasetError, match="downscale"):
        SyntheticDataset(tmp_path / "b", crop=32, downscale=(0.5, 1.0))
    with pytest.raises(ConfigError, match="downscale"):
        DataConfig(sharp_roots=["x"], downscale=[0.5, 2.0]).validate()


def test_synthetic_clip_dataset(tmp_path):
    root = make_sharp_folder(tmp_path / "sharp")
    ds = SyntheticClipDataset(root, crop=32, frames=3, length=4, blur_cfg=BlurConfig(length=[2.0, 6.0]))
    x = ds[0]
    assert x["blur"].shape == (3, 3, 32, 32) and x["sharp"].shape == (3, 3, 32, 32)
    assert x["blur"].dtype == torch.float32
    assert torch.equal(x["sharp"], ds[0]["sharp"])


def test_mixed_dataset_and_loader(tmp_path):
    pairs = PairedDataset(make_gopro(tmp_path / "d"), crop=32, length=40)
    synth = SyntheticDataset(make_sharp_folder(tmp_path / "sharp"), crop=32, length=40)
    assert all(MixedDataset(pairs, synth, 0.0)[i]["scene"] == "synthetic" for i in range(8))
    assert all(MixedDataset(pairs, synth, 1.0)[i]["scene"] != "synthetic" for i in range(8))
    mixed = MixedDataset(pairs, synth, 0.5, length=40)
    kinds = [mixed[i]["scene"] == "synthetic" for i in range(40)]
    assert 5 < sum(kinds) < 35
    with pytest.raises(DatasetError, match="pair_roots"):
        MixedDataset(None, synth, 0.3)
    # the batches do not depend on the number of workers
    kw = dict(batch_size=4, shuffle=False)
    a = next(iter(torch.utils.data.DataLoader(mixed, num_workers=0, **kw)))
    b = next(iter(torch.utils.data.DataLoader(mixed, num_workers=2, worker_init_fn=worker_init_fn, **kw)))
    assert a["blur"].shape == (4, 3, 32, 32)
    assert torch.equal(a["blur"], b["blur"]) and a["scene"] == b["scene"]


def test_build_train_dataset(tmp_path):
    cfg = DataConfig(sharp_roots=[str(make_sharp_folder(tmp_path / "sharp"))],
                     pair_roots=[str(make_gopro(tmp_path / "d"))], pair_exclude=["s2"], pair_prob=0.5, crop=32)
    ds = build_train_dataset(cfg, length=20)
    assert isinstance(ds, MixedDataset) and len(ds) == 20
    assert {p[0] for p in ds.paired.pairs} == {"s1"}
    cfg.pair_prob = 0.0
    assert isinstance(build_train_dataset(cfg, length=5), SyntheticDataset)


def test_synthetic_val_set(tmp_path):
    src = make_sharp_folder(tmp_path / "sharp")
    out = tmp_path / "val"
    cfg = BlurConfig(noise_prob=0.0)
    r = make_synthetic_val_set(src, out, count=2, size=(64, 48), seed=5, blur_cfg=cfg, length=(3, 6))
    pairs = find_pairs(r)
    assert len(pairs) == 2 and {p[0] for p in pairs} == {"val"}
    for _, b, s in pairs:
        bi, si = read_image(b), read_image(s)
        assert bi.shape == si.shape == (48, 64, 3)
        assert np.abs(bi.astype(int) - si.astype(int)).mean() > 0.5  # really blurred
    man = json.loads((out / "manifest.json").read_text())
    assert man["seed"] == 5 and man["size"] == [64, 48] and man["blur"]["length"] == [3.0, 6.0]
    stamp = [p[1].stat().st_mtime_ns for p in pairs]
    make_synthetic_val_set(src, out, count=2, size=(64, 48), seed=5, blur_cfg=cfg, length=(3, 6))
    assert [p[1].stat().st_mtime_ns for p in find_pairs(out)] == stamp  # complete: left alone
    before = read_image(pairs[0][1])
    make_synthetic_val_set(src, out, count=1, size=(64, 48), seed=6, blur_cfg=cfg, length=(3, 6))
    now = find_pairs(out)
    assert len(now) == 1 and not np.array_equal(read_image(now[0][1]), before)
    with pytest.raises(DatasetError, match="holds only 3"):
        make_synthetic_val_set(src, out, count=9, size=(64, 48))


def test_pair_crop_far_larger_than_the_frames_is_reported(tmp_path):
    root = make_gopro(tmp_path / "gopro", size=(40, 56))
    assert PairedDataset(root, crop=64)[0]["blur"].shape[-2:] == (64, 64)   # a little mirrored border is fine
    with pytest.raises(DatasetError, match=r"data\.crop 96x96 is more than twice the 56x40 frames.*lower data\.crop"):
        PairedDataset(root, crop=96)[0]


def test_downscale_scales_the_moving_layers_lengths_too(tmp_path, monkeypatch):
    """At downscale 2 the camera's blur was drawn at twice its length before shrinking, the moving
    layer's at its own: half as long as configured in the output."""
    import edge_deblur.data.datasets as D

    _write(tmp_path / "b" / "img.png", (np.random.default_rng(0).random((160, 160, 3)) * 255).astype(np.uint8))
    seen = []
    real = D.synthesize

    def spy(win, rng, cfg, crop=None):
        seen.append(cfg)
        return real(win, rng, cfg, crop=crop)

    monkeypatch.setattr(D, "synthesize", spy)
    cfg = BlurConfig(layer_length=[4.0, 10.0], length=[2.0, 6.0])
    SyntheticDataset(tmp_path / "b", crop=32, blur_cfg=cfg, scale=(1.0, 1.0), length=2, augment=False,
                     downscale=(2.0, 2.0))[0]
    assert seen[0].length == [4.0, 12.0] and seen[0].layer_length == [8.0, 20.0]
