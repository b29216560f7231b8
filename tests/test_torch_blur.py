"""Batched torch blur synthesis (edge_deblur/data/torch_blur.py), on CPU tensors."""
import dataclasses

import cv2
import numpy as np
import pytest
import torch

from edge_deblur.config.schema import BlurConfig
from edge_deblur.data import blur as cpu
from edge_deblur.data.torch_blur import (BatchBlur, batch_trajectories, disk_kernels, jpeg_like, synthesize_batch,
                                         trajectory_kernels)
from edge_deblur.errors import InputError

CLEAN = dict(noise_prob=0.0, jpeg_prob=0.0, highlight_gain=[1.0, 1.0], defocus_prob=0.0, sharp_prob=0.0)


def _photo(n=4, h=96, w=96, seed=0):
    """Smooth random 'photos' (uint8, B x 3 x H x W) with edges: blur must show on them."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        im = cv2.resize(rng.random((h // 8, w // 8, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
        im = cv2.GaussianBlur(im, (0, 0), 0.7)
        out.append((im * 230 + 10).astype(np.uint8).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


def test_kernels_normalized():
    rng = np.random.default_rng(1)
    traj = batch_trajectories(rng, [0.0, 3.0, 17.5, 60.0], 64)
    k = trajectory_kernels(torch.from_numpy(traj))
    assert k.shape[0] == 4 and k.shape[1] == k.shape[2] and k.shape[1] % 2 == 1
    assert torch.allclose(k.sum((1, 2)), torch.ones(4), atol=1e-5)
    assert (k >= 0).all()
    c = k.shape[1] // 2
    assert k[0, c, c] == pytest.approx(1.0)  # zero length: the identity
    # the centroid sits on the centre pixel: the PSF does not shift the image
    yy, xx = torch.meshgrid(torch.arange(k.shape[1]), torch.arange(k.shape[2]), indexing="ij")
    for i in range(4):
        assert float((k[i] * xx).sum()) == pytest.approx(c, abs=1e-3)
        assert float((k[i] * yy).sum()) == pytest.approx(c, abs=1e-3)
    d = disk_kernels([0.0, 1.2, 2.5])
    assert torch.allclose(d.sum((1, 2)), torch.ones(3), atol=1e-5)


def test_trajectory_extent_is_the_length():
    rng = np.random.default_rng(2)
    L = rng.uniform(2, 80, 32)
    traj = batch_trajectories(rng, L, 50)
    ext = np.hypot(*(traj.max(1) - traj.min(1)).T)
    np.testing.assert_allclose(ext, L, rtol=1e-6)
    with pytest.raises(InputError, match="lengths"):
        batch_trajectories(rng, [-1.0], 10)


@pytest.mark.parametrize("length_log", [False, True])
def test_drawn_lengths_follow_the_cpu_distribution(length_log):
    """The batched draw uses the CPU path's length law: log-uniform with ``length_log`` (median
    at the geometric mean, 18 px for [4, 80]), uniform without (median 42 px)."""
    cfg = BlurConfig(length=[4.0, 80.0], length_log=length_log, sharp_prob=0.0)
    torch_len = BatchBlur(cfg, crop=64).draw(4000, np.random.default_rng(7)).length
    rng = np.random.default_rng(8)
    cpu_len = np.array([cpu.draw_length(rng, cfg) for _ in range(4000)])
    assert torch_len.min() >= 4.0 and torch_len.max() <= 80.0
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert np.quantile(torch_len, q) == pytest.approx(np.quantile(cpu_len, q), rel=0.08)
    assert np.median(torch_len) == pytest.approx(17.9 if length_log else 42.0, rel=0.08)


def test_blur_length_statistics_agree_with_cpu_synthesis():
    """Same lengths, same Boracchi-Foi model: the PSFs' spread (RMS radius) and the paths' arc
    length per unit of extent have the same distribution in both implementations."""
    rng = np.random.default_rng(3)
    n = 150
    L = rng.uniform(4, 40, n)
    tt = batch_trajectories(rng, L, 100)
    tk = trajectory_kernels(torch.from_numpy(tt)).numpy()
    ck = [cpu.trajectory_to_kernel(cpu.random_trajectory(rng, float(l), 100)) for l in L]

    def rms(k):
        c = k.shape[0] // 2
        yy, xx = np.mgrid[:k.shape[0], :k.shape[1]] - c
        return float(np.sqrt((k * (xx ** 2 + yy ** 2)).sum()))

    r_t = np.array([rms(k) for k in tk]) / L
    r_c = np.array([rms(k) for k in ck]) / L
    assert abs(r_t.mean() - r_c.mean()) < 0.08 * r_c.mean()
    assert abs(np.median(r_t) - np.median(r_c)) < 0.1 * np.median(r_c)
    arc_t = np.hypot(*np.diff(tt, axis=1).transpose(2, 0, 1)).sum(1) / L
    cps = [cpu.random_trajectory(rng, float(l), 100) for l in L]
    arc_c = np.array([np.hypot(*np.diff(p, axis=0).T).sum() for p in cps]) / L
    assert abs(np.median(arc_t) - np.median(arc_c)) < 0.1 * np.median(arc_c)


def test_shapes_dtypes_and_range():
    x = _photo(3, 80, 96)
    cfg = BlurConfig(length=[2, 30])
    b, s, d = synthesize_batch(x, np.random.default_rng(0), cfg, crop=(48, 64), return_draw=True)
    assert b.shape == s.shape == (3, 3, 48, 64)
    assert b.dtype == s.dtype == torch.float32
    assert 0 <= float(b.min()) and float(b.max()) <= 1 and 0 <= float(s.min()) and float(s.max()) <= 1
    # 8-bit levels, as a real frame
    assert torch.allclose(b * 255, torch.round(b * 255), atol=1e-3)
    with pytest.raises(InputError, match="larger than the images"):
        synthesize_batch(x, np.random.default_rng(0), cfg, crop=128)
    bb = BatchBlur(cfg, 32)
    dr = bb.draw(2, np.random.default_rng(0))
    with pytest.raises(InputError, match="region batch"):
        bb.apply(torch.zeros(2, 3, 10, 10), dr)


def test_deterministic_under_seed():
    x = _photo(4)
    cfg = BlurConfig(length=[2, 30], layer_prob=0.5, display_prob=0.5)
    outs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(5)
        outs.append(synthesize_batch(x, np.random.default_rng(7), cfg, crop=64, generator=g))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    g = torch.Generator().manual_seed(5)
    other = synthesize_batch(x, np.random.default_rng(8), cfg, crop=64, generator=g)
    assert not torch.equal(outs[0][0], other[0])


def _display_cfg(**kw):
    return BlurConfig(**CLEAN, quantize=False, display_prob=1.0, **kw)


def test_display_space_keeps_mean_brightness_linear_light_brightens():
    x = _photo(6, 128, 128, seed=4)
    for homography in (0.0, 1.0):
        b, s = synthesize_batch(x, np.random.default_rng(1), _display_cfg(length=[20, 30], homography_prob=homography),
                                crop=64)
        assert abs(float(b.mean()) - float(s.mean())) < 0.004
        assert float((b - s).abs().mean()) > 0.01  # and it did blur
    lin = dataclasses.replace(_display_cfg(length=[20, 30]), display_prob=0.0, gamma=2.2)
    b, s = synthesize_batch(x, np.random.default_rng(1), lin, crop=64)
    assert float(b.mean()) > float(s.mean()) + 0.004  # averaging in linear light brightens


def test_psf_mode_matches_opencv_convolution():
    """A kernel-mode sample is the region convolved with its PSF, as blur.blur_with_kernel does."""
    x = _photo(1, 96, 96, seed=6)
    cfg = BlurConfig(**CLEAN, homography_prob=0.0, quantize=False, gamma=1.0, length=[12, 12])
    b, s, d = synthesize_batch(x, np.random.default_rng(2), cfg, crop=48, return_draw=True)
    k = trajectory_kernels(torch.from_numpy(d.traj))[0].numpy()
    img = x[0].numpy().transpose(1, 2, 0).astype(np.float32) / 255.0
    ref = cpu.blur_with_kernel(img, k)
    y0 = (96 - 48) // 2
    ref = ref[y0:y0 + 48, y0:y0 + 48].transpose(2, 0, 1)
    assert np.abs(b[0].numpy() - ref).max() < 2e-4


def test_warp_mode_identity_without_motion():
    x = _photo(2, 64, 64)
    cfg = BlurConfig(**CLEAN, homography_prob=1.0, rotation_deg=0.0, zoom=0.0, length=[0.0, 0.0], quantize=False)
    b, s = synthesize_batch(x, np.random.default_rng(0), cfg, crop=32)
    assert float((b - s).abs().max()) < 1e-4


def test_layer_moves_independently_of_the_camera():
    """No camera motion, a moving layer: the blur is where the layer is, the rest stays sharp,
    and the target holds the layer (the composite at mid-exposure)."""
    x = _photo(4, 96, 96, seed=8)
    cfg = BlurConfig(**CLEAN, homography_prob=1.0, rotation_deg=0.0, zoom=0.0, quantize=False, length=[0.0, 0.0],
                     layer_prob=1.0, layer_length=[20.0, 30.0])
    b, s, d = synthesize_batch(x, np.random.default_rng(3), cfg, crop=64, return_draw=True)
    assert d.layer.all()
    ys, xs = np.mgrid[:64, :64]
    moved = 0
    for i in range(4):
        cx, cy, a, bb, ang, _ = d.layer_blob[i]
        u, v = xs - cx, ys - cy
        r = np.hypot((u * np.cos(ang) + v * np.sin(ang)) / a, (-u * np.sin(ang) + v * np.cos(ang)) / bb)
        far = r > 1.0 + (30 + 6) / min(a, bb)  # beyond the layer's reach
        diff = (b[i] - s[i]).abs().sum(0).numpy()
        if far.any():
            assert diff[far].max() < 1e-4
        moved += diff[r < 1.2].mean()
        # target: the layer is the crop turned 180 degrees, so it differs from the background there
        assert (s[i] - x[i, :, 16:80, 16:80].float() / 255).abs().sum(0).numpy()[r < 0.5].mean() > 0.01
    assert moved / 4 > 0.01


def test_jpeg_like_close_to_libjpeg():
    x = _photo(1, 64, 64, seed=9).float() / 255
    img = (x[0].numpy().transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    errs = []
    for q in (30, 60, 90):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
        ref = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
        ours = jpeg_like(x, torch.tensor([q]))[0].numpy().transpose(1, 2, 0)
        psnr_ref = -10 * np.log10(np.mean((ours - ref) ** 2) + 1e-12)
        errs.append(np.mean((ours - img / 255.0) ** 2))
        assert psnr_ref > 33, (q, psnr_ref)  # the same artifacts as libjpeg, up to rounding and chroma filtering
    assert errs[0] > errs[1] > errs[2]  # lower quality, larger error


def test_discrete_frames_leave_separate_copies_like_the_cpu_synthesis():
    """As blur.synthesize: F discrete frames leave F copies of a moving point, the middle one
    unmoved and weighing 1/F; each sample's sub-frame weights sum to one."""
    cfg = BlurConfig(**CLEAN, homography_prob=1.0, display_prob=1.0, length=[60.0, 60.0], anxiety=0.0,
                     impulsive_prob=0.0, rotation_deg=0.0, zoom=0.0, quantize=False, discrete_prob=1.0,
                     discrete_frames=[7, 13], discrete_duty=[0.0, 0.0])
    bb = BatchBlur(cfg, crop=97)
    d = bb.draw(4, np.random.default_rng(5))
    assert set(d.frames) <= {7, 9, 11, 13} and (d.frames > 0).all()
    _, w = bb._times(d, int(d.n_sub.max()))
    assert np.allclose(w.sum(1), 1.0)
    region = torch.zeros(4, 3, *d.region)
    region[:, :, d.region[0] // 2, d.region[1] // 2] = 1.0
    b, s = bb.apply(region, d)
    for i in range(4):
        img = b[i].permute(1, 2, 0).numpy()
        copies = cv2.connectedComponents((img.max(2) > 0.004).astype(np.uint8))[0] - 1
        assert copies == d.frames[i]
        assert float(s[i, 0, 48, 48]) == pytest.approx(1.0)
        assert float(b[i, 0, 48, 48]) == pytest.approx(1.0 / d.frames[i], abs=1e-3)
    plain = BatchBlur(dataclasses.replace(cfg, discrete_prob=0.0), crop=97)
    d0 = plain.draw(4, np.random.default_rng(5))
    assert (d0.frames == 0).all()


def test_sub_frames_follow_each_paths_own_length():
    """As blur._n_warps: sub-frames 1.5-2 px apart along each sample's own path on average, however
    winding it is (a path's length over its extent ranges from about 1 to 3+), so a long sweep
    never shows separate copies."""
    cfg = BlurConfig(length=[30.0, 80.0], homography_prob=1.0, rotation_deg=0.0, zoom=0.0, layer_prob=0.0,
                     sharp_prob=0.0, discrete_prob=0.0, impulsive_prob=0.5)
    d = BatchBlur(cfg, crop=64).draw(256, np.random.default_rng(11))
    path = np.hypot(*np.diff(d.traj, axis=1).transpose(2, 0, 1)).sum(1)
    spacing = path / (d.n_sub - 1)
    assert np.all(d.warp) and spacing.max() <= 2.0 + 1e-6, spacing.max()
    assert np.median(spacing) >= 1.4  # and not wastefully dense
    ratio = path / d.length
    assert ratio.max() > 2.2  # the draw did include winding paths


@pytest.mark.parametrize("discrete", [0.0, 1.0])
def test_centroid_alignment_puts_the_target_at_the_blur_centre_of_mass(discrete):
    """blur.align 'centroid': a point's blurred mass is centred on the point's place in the target
    (the PSF's centre of mass), continuous sweeps and discrete frames alike; 'mid_time' puts the
    target where the path is at the middle of the exposure, pixels away on a varying-speed path."""
    from blur_helpers import centre_offset

    def offsets(align):
        cfg = BlurConfig(**CLEAN, homography_prob=1.0, display_prob=1.0, length=[30.0, 60.0], rotation_deg=0.0,
                         zoom=0.0, quantize=False, discrete_prob=discrete, impulsive_prob=0.3, align=align)
        bb = BatchBlur(cfg, crop=97)
        d = bb.draw(8, np.random.default_rng(11))
        region = torch.zeros(8, 3, *d.region)
        region[:, :, d.region[0] // 2, d.region[1] // 2] = 1.0
        b, s = bb.apply(region, d)
        return np.array([centre_offset(b[i, 1].numpy(), s[i, 1].numpy()) for i in range(8)])

    assert offsets("centroid").max() < 0.05
    assert offsets("mid_time").max() > 1.0


def test_display_space_gets_no_highlight_boost():
    x = _photo(6, 128, 128, seed=4)
    x[:, :, 40:60, 40:60] = 255  # saturated lights
    cfg = BlurConfig(**{**CLEAN, "highlight_gain": [3.0, 3.0]}, quantize=False, display_prob=1.0, length=[20, 30])
    b, s = synthesize_batch(x, np.random.default_rng(1), cfg, crop=64)
    assert abs(float(b.mean()) - float(s.mean())) < 0.004  # it brightened with the boost
