"""Blur synthesis: kernels, trajectories, identity, determinism, linear light, alignment, clips.
Images are made here with numpy; nothing is read from disk."""
import dataclasses

import numpy as np
import pytest

from edge_deblur.config.schema import BlurConfig
from edge_deblur.data import blur as B
from edge_deblur.errors import InputError

CLEAN = dict(noise_prob=0.0, jpeg_prob=0.0, defocus_prob=0.0, sharp_prob=0.0, quantize=False,
             highlight_gain=[1.0, 1.0])


def clean_cfg(**kw):
    return BlurConfig(**{**CLEAN, **kw})


def textured(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.random((h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    import cv2

    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    img += 0.05 * rng.standard_normal((h, w, 3)).astype(np.float32)
    return np.clip(img, 0.02, 0.98).astype(np.float32)


def test_no_torch_import():
    import subprocess
    import sys

    code = ("import sys, edge_deblur.data.blur, edge_deblur.data.pairs; "
            "assert 'torch' not in sys.modules, 'blur/pairs import torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("length", [0.5, 3.0, 17.3, 40.0])
def test_kernels_sum_to_one_and_are_centred(length):
    rng = np.random.default_rng(1)
    for _ in range(5):
        traj = B.random_trajectory(rng, length, 64, 0.005, 0.5)
        k = B.trajectory_to_kernel(traj)
        assert k.dtype == np.float32 and k.ndim == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert (k >= 0).all()
        assert k.sum() == pytest.approx(1.0, abs=1e-5)
        # the PSF centroid is the centre pixel: convolving does not shift the image
        c = k.shape[0] // 2
        ys, xs = np.mgrid[: k.shape[0], : k.shape[1]]
        assert (k * xs).sum() == pytest.approx(c, abs=1e-4)
        assert (k * ys).sum() == pytest.approx(c, abs=1e-4)


def test_trajectory_extent_and_shape():
    rng = np.random.default_rng(2)
    for length in (1.0, 10.0, 33.0):
        t = B.random_trajectory(rng, length, 24, 0.005, 0.2)
        assert t.shape == (24, 2)
        ext = np.hypot(*(t.max(0) - t.min(0)))
        assert ext == pytest.approx(length, rel=1e-6)
    # no anxiety and no shake: a straight line
    t = B.random_trajectory(rng, 10.0, 32, 0.0, 0.0)
    d = t - t[0]
    cross = d[:, 0] * d[-1, 1] - d[:, 1] * d[-1, 0]
    assert np.abs(cross).max() < 1e-6


def test_zero_trajectory_is_delta_kernel():
    rng = np.random.default_rng(0)
    t = B.random_trajectory(rng, 0.0, 24)
    assert t.shape == (24, 2) and not t.any()
    for size in (None, 7):
        k = B.trajectory_to_kernel(t, size)
        c = k.shape[0] // 2
        assert k[c, c] == 1.0 and k.sum() == 1.0
    # a constant trajectory away from the origin is a delta too (the kernel is centred on it)
    k = B.trajectory_to_kernel(np.full((10, 2), 3.7))
    assert k[k.shape[0] // 2, k.shape[0] // 2] == pytest.approx(1.0)


def test_disk_kernel():
    for r in (0.0, 0.7, 2.5):
        k = B.disk_kernel(r)
        assert k.sum() == pytest.approx(1.0, abs=1e-6) and np.allclose(k, k[::-1, ::-1])


@pytest.mark.parametrize("hp", [0.0, 1.0])
def test_zero_length_is_identity(hp):
    img = textured()
    cfg = clean_cfg(length=[0.0, 0.0], homography_prob=hp, rotation_deg=0.0, zoom=0.0)
    blurred, target = B.synthesize(img, np.random.default_rng(3), cfg)
    assert blurred.shape == img.shape and blurred.dtype == np.float32
    np.testing.assert_allclose(blurred, img, atol=1e-5)
    np.testing.assert_allclose(target, img, atol=1e-6)
    blurred, target = B.synthesize(img, np.random.default_rng(3), cfg, crop=24)
    assert blurred.shape == (24, 24, 3)
    np.testing.assert_allclose(blurred, target, atol=1e-5)


def test_sharp_prob_leaves_input_unblurred():
    img = textured()
    cfg = clean_cfg(sharp_prob=1.0, length=[10.0, 20.0])
    blurred, target, info = B.synthesize(img, np.random.default_rng(0), cfg, return_info=True)
    assert info["sharp"] and info["mode"] == "none"
    np.testing.assert_allclose(blurred, target, atol=1e-5)


def test_blur_changes_image():
    img = textured()
    for hp in (0.0, 1.0):
        blurred, target = B.synthesize(img, np.random.default_rng(4), clean_cfg(length=[8.0, 8.0], homography_prob=hp))
        assert np.abs(blurred - target).mean() > 0.01
        # blur removes high frequencies
        assert np.abs(np.diff(blurred, axis=1)).mean() < np.abs(np.diff(target, axis=1)).mean()


@pytest.mark.parametrize("crop", [None, 32])
def test_synthesis_is_deterministic_for_a_seed(crop):
    img = textured(64, 80)
    cfg = BlurConfig(noise_prob=1.0, jpeg_prob=0.5, defocus_prob=0.5)
    for seed in range(4):
        a = B.synthesize(img, np.random.default_rng(seed), cfg, crop=crop)
        b = B.synthesize(img, np.random.default_rng(seed), cfg, crop=crop)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    a = B.synthesize(img, np.random.default_rng(10), cfg, crop=crop)[0]
    b = B.synthesize(img, np.random.default_rng(11), cfg, crop=crop)[0]
    assert not np.array_equal(a, b)


def test_uint8_input_matches_float_input():
    img8 = (textured() * 255).round().astype(np.uint8)
    cfg = clean_cfg(length=[5.0, 9.0], highlight_gain=[1.0, 3.0])
    a = B.synthesize(img8, np.random.default_rng(5), cfg)
    b = B.synthesize(img8.astype(np.float32) / 255.0, np.random.default_rng(5), cfg)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)


def _line_image():
    img = np.full((41, 61, 3), 0.05, np.float32)
    img[:, 30] = 1.0  # a saturated vertical line
    return img


def test_linear_light_averaging_differs_from_srgb_averaging():
    """A saturated line smeared sideways: averaging in linear light makes the streak much brighter
    than averaging the gamma-encoded values (what a naive filter does)."""
    img = _line_image()
    cfg = clean_cfg(homography_prob=0.0, length=[10.0, 10.0], anxiety=0.0, impulsive_prob=0.0)
    blurred, target, info = B.synthesize(img, np.random.default_rng(0), cfg, return_info=True)
    k = info["kernel"]
    naive = B.blur_with_kernel(img, k)
    linear = B.linear_to_srgb(B.blur_with_kernel(B.srgb_to_linear(img, 2.2), k), 2.2)
    np.testing.assert_allclose(blurred, linear, atol=1e-5)
    row = 20
    streak = slice(24, 37)
    assert (blurred[row, streak] - naive[row, streak]).max() > 0.2
    assert blurred[row, streak].mean() > naive[row, streak].mean() + 0.1
    # the homography path averages in linear light as well
    cfg_h = dataclasses.replace(cfg, homography_prob=1.0, rotation_deg=0.0, zoom=0.0)
    bh, _ = B.synthesize(img, np.random.default_rng(0), cfg_h)
    lin_mean = B.srgb_to_linear(bh, 2.2)[row].mean()
    naive_mean = B.srgb_to_linear(img, 2.2)[row].mean()
    assert lin_mean == pytest.approx(naive_mean, rel=0.02)  # energy is preserved in linear light
    assert bh[row].mean() > img[row].mean() + 0.02         # so the sRGB mean rises


def test_gamma_range_draws_a_gamma_per_image():
    """gamma_range draws each image's gamma; a steeper curve brightens the same blur more; a seed
    gives the same gamma and pixels."""
    img = _line_image()
    base = clean_cfg(homography_prob=0.0, length=[10.0, 10.0], anxiety=0.0, impulsive_prob=0.0)
    drawn = [B.synthesize(img, np.random.default_rng(s), dataclasses.replace(base, gamma_range=[2.0, 3.6]),
                          return_info=True)[2]["gamma"] for s in range(12)]
    assert all(2.0 <= g <= 3.6 for g in drawn) and max(drawn) - min(drawn) > 0.5
    a = B.synthesize(img, np.random.default_rng(3), dataclasses.replace(base, gamma_range=[2.0, 3.6]))
    b = B.synthesize(img, np.random.default_rng(3), dataclasses.replace(base, gamma_range=[2.0, 3.6]))
    np.testing.assert_array_equal(a[0], b[0])
    # a fixed range [g, g] is the scalar gamma g, drawn or not
    lo = B.synthesize(img, np.random.default_rng(0), dataclasses.replace(base, gamma_range=[2.2, 2.2]))[0]
    hi = B.synthesize(img, np.random.default_rng(0), dataclasses.replace(base, gamma_range=[3.4, 3.4]))[0]
    np.testing.assert_allclose(hi, B.synthesize(img, np.random.default_rng(0), dataclasses.replace(base, gamma=3.4))[0],
                               atol=1e-6)
    assert hi.mean() > lo.mean() + 0.01  # the same smear of a bright line brightens more


def test_bad_gamma_range_is_reported():
    from edge_deblur.errors import ConfigError

    with pytest.raises(ConfigError, match="gamma_range"):
        BlurConfig(gamma_range=[3.0, 2.0]).validate()
    with pytest.raises(ConfigError, match="gamma_range"):
        BlurConfig(gamma_range=[0.0, 2.0]).validate()


def test_highlight_gain_makes_light_streaks():
    img = _line_image()
    base = clean_cfg(homography_prob=0.0, length=[12.0, 12.0], anxiety=0.0, impulsive_prob=0.0)
    b1, t1 = B.synthesize(img, np.random.default_rng(0), base)
    b3, t3 = B.synthesize(img, np.random.default_rng(0), dataclasses.replace(base, highlight_gain=[3.0, 3.0]))
    assert b3.mean() > b1.mean() + 0.01
    np.testing.assert_allclose(t1, t3, atol=1e-6)  # the saturated target stays saturated, nothing else moves


def test_kernel_mode_is_centred_on_the_exposure():
    """A single point light: the blurred spot's centre of mass (linear light) is where the sharp
    target has the point, so the model never has to predict a shift."""
    img = np.zeros((61, 61, 3), np.float32)
    img[30, 30] = 1.0
    cfg = clean_cfg(homography_prob=0.0, length=[14.0, 14.0])
    for seed in range(3):
        blurred, target = B.synthesize(img, np.random.default_rng(seed), cfg)
        lin = B.srgb_to_linear(blurred, 2.2)[..., 0].astype(np.float64)
        ys, xs = np.mgrid[:61, :61]
        assert (lin * xs).sum() / lin.sum() == pytest.approx(30.0, abs=0.05)
        assert (lin * ys).sum() / lin.sum() == pytest.approx(30.0, abs=0.05)
        assert target[30, 30, 0] == 1.0 and target.sum() == 3.0


def test_homography_mode_is_aligned_to_the_middle_of_the_exposure():
    img = np.zeros((61, 61, 3), np.float32)
    img[30, 30] = 1.0
    cfg = clean_cfg(homography_prob=1.0, length=[16.0, 16.0], rotation_deg=0.0, zoom=0.0)
    for seed in range(3):
        blurred, target, info = B.synthesize(img, np.random.default_rng(seed), cfg, return_info=True)
        d = info["trajectory"]  # sub-frame displacements from the middle of the exposure
        assert np.abs(d).max() > 2.0
        # each sub-frame shows the point at 30 + d[t]: the streak is that path
        lin = B.srgb_to_linear(blurred, 2.2)[..., 0].astype(np.float64)
        ys, xs = np.mgrid[:61, :61]
        com = np.array([(lin * xs).sum(), (lin * ys).sum()]) / lin.sum()
        np.testing.assert_allclose(com, 30.0 + d.mean(0), atol=0.02)
        assert target[30, 30, 0] == 1.0


def test_noise_and_jpeg():
    img = textured()
    cfg = clean_cfg(length=[0.0, 0.0], noise_prob=1.0, poisson_peak=[100.0, 100.0], gaussian_sigma=[0.01, 0.01])
    b, t = B.synthesize(img, np.random.default_rng(0), cfg)
    assert 0.005 < np.abs(b - t).mean() < 0.1
    cfg = clean_cfg(length=[0.0, 0.0], jpeg_prob=1.0, jpeg_quality=[30, 30])
    b, t = B.synthesize(img, np.random.default_rng(0), cfg)
    assert np.allclose(b * 255, np.round(b * 255), atol=1e-3)  # 8-bit levels
    assert np.abs(b - t).mean() > 0.002


def test_clip_frames_follow_one_path():
    img = textured(96, 112)
    cfg = BlurConfig(length=[4.0, 8.0], noise_prob=0.0, jpeg_prob=0.0)
    blurred, sharp = B.synthesize_clip(img, np.random.default_rng(0), cfg, frames=4, crop=32)
    assert len(blurred) == len(sharp) == 4
    assert all(x.shape == (32, 32, 3) and x.dtype == np.float32 for x in blurred + sharp)
    assert all(0.0 <= x.min() and x.max() <= 1.0 for x in blurred + sharp)
    # the window follows the camera: consecutive ground-truth frames differ
    assert all(np.abs(sharp[i] - sharp[i + 1]).mean() > 1e-3 for i in range(3))
    again = B.synthesize_clip(img, np.random.default_rng(0), cfg, frames=4, crop=32)
    for a, b in zip(blurred + sharp, again[0] + again[1]):
        np.testing.assert_array_equal(a, b)
    other = B.synthesize_clip(img, np.random.default_rng(1), cfg, frames=4, crop=32)
    assert not np.array_equal(blurred[0], other[0][0])


def test_clip_without_motion_is_static():
    img = textured(64, 64)
    cfg = clean_cfg(length=[0.0, 0.0], rotation_deg=0.0, zoom=0.0)
    blurred, sharp = B.synthesize_clip(img, np.random.default_rng(0), cfg, frames=3)
    for b, s in zip(blurred, sharp):
        np.testing.assert_allclose(s, img, atol=1e-6)
        np.testing.assert_allclose(b, img, atol=1e-5)


def test_bad_input_is_reported():
    with pytest.raises(InputError, match="H x W x 3"):
        B.synthesize(np.zeros((8, 8)), np.random.default_rng(0))
    with pytest.raises(InputError, match="dtype"):
        B.synthesize(np.zeros((8, 8, 3), np.int32), np.random.default_rng(0))
    with pytest.raises(InputError):
        B.random_trajectory(np.random.default_rng(0), -1.0)
    with pytest.raises(InputError, match="too small"):
        B.trajectory_to_kernel(np.array([[0.0, 0.0], [10.0, 0.0]]), size=3)


def test_display_prob_draws_both_averaging_spaces():
    """display_prob draws each image's averaging space: display space (gamma 1) keeps the mean
    brightness of a blurred bright line, linear light raises it; both appear at 0.5."""
    img = _line_image()
    base = clean_cfg(homography_prob=0.0, length=[10.0, 10.0], anxiety=0.0, impulsive_prob=0.0, display_prob=0.5)
    infos = [B.synthesize(img, np.random.default_rng(s), base, return_info=True) for s in range(24)]
    spaces = [i[2]["space"] for i in infos]
    assert 6 <= spaces.count("display") <= 18, spaces
    for blurred, target, info in infos:
        if info["space"] == "display":
            assert info["gamma"] == 1.0
            assert blurred.mean() == pytest.approx(img.mean(), abs=2e-3)   # no brightening
        else:
            assert blurred.mean() > img.mean() + 0.005
    # display_prob=0 draws nothing: the same seed gives what it gave before the option existed
    a = B.synthesize(img, np.random.default_rng(5), dataclasses.replace(base, display_prob=0.0))[0]
    b = B.synthesize(img, np.random.default_rng(5), clean_cfg(homography_prob=0.0, length=[10.0, 10.0], anxiety=0.0,
                                                              impulsive_prob=0.0))[0]
    np.testing.assert_array_equal(a, b)


def test_lengths_stay_in_the_configured_range():
    img = textured(200, 200)
    cfg = clean_cfg(length=[20.0, 80.0], homography_prob=0.5)
    lengths = [B.synthesize(img, np.random.default_rng(s), cfg, crop=64, return_info=True)[2]["length"]
               for s in range(40)]
    assert all(20.0 <= v <= 80.0 for v in lengths)
    assert max(lengths) > 65 and min(lengths) < 35  # the range is covered, not one end of it


def test_foreground_layer_moves_independently_of_the_camera():
    """With no camera motion at all, a moving layer still blurs its own region and leaves the rest
    of the frame exactly sharp; the target shows the layer at mid-exposure."""
    img = textured(96, 96, seed=3)
    cfg = clean_cfg(homography_prob=1.0, length=[0.0, 0.0], rotation_deg=0.0, zoom=0.0, layer_prob=1.0,
                    layer_length=[16.0, 16.0])
    blurred, target, info = B.synthesize(img, np.random.default_rng(1), cfg, crop=64, return_info=True)
    mask = info["layer_mask"]
    assert info["layer_length"] == 16.0 and mask.max() > 0.99
    err = np.abs(blurred - target).mean(2)
    outside = cv2_dilate_free(mask, 12) < 1e-3          # far from the layer's path
    assert err[outside].max() < 1e-5                     # the background did not move
    assert err[mask > 0.5].mean() > 0.01                 # the layer smeared


def cv2_dilate_free(mask, r):
    import cv2

    return cv2.dilate(mask, np.ones((2 * r + 1, 2 * r + 1), np.uint8))


def test_layer_options_are_validated():
    from edge_deblur.errors import ConfigError

    with pytest.raises(ConfigError, match="layer_prob"):
        BlurConfig(layer_prob=1.5).validate()
    with pytest.raises(ConfigError, match="display_prob"):
        BlurConfig(display_prob=-0.1).validate()
    with pytest.raises(ConfigError, match="layer_length"):
        BlurConfig(layer_length=[30.0, 10.0]).validate()


def test_length_log_draws_mostly_moderate_blur_with_a_long_tail():
    cfg = BlurConfig(length=[4.0, 80.0], length_log=True)
    rng = np.random.default_rng(0)
    v = np.array([B.draw_length(rng, cfg) for _ in range(4000)])
    assert v.min() >= 4.0 and v.max() <= 80.0
    assert np.median(v) == pytest.approx(np.sqrt(4.0 * 80.0), rel=0.08)   # log-uniform: geometric mean
    assert 0.18 < (v > 40).mean() < 0.28
    uni = np.array([B.draw_length(rng, BlurConfig(length=[4.0, 80.0])) for _ in range(4000)])
    assert np.median(uni) == pytest.approx(42.0, rel=0.08)


def test_a_crop_larger_than_the_image_is_reported():
    img = textured(48, 64)
    with pytest.raises(InputError, match=r"crop 96x96 is larger than the 64x48 image.*data\.crop"):
        B.synthesize(img, np.random.default_rng(0), clean_cfg(), crop=96)
    with pytest.raises(InputError, match="larger than"):
        B.synthesize_clip(img, np.random.default_rng(0), clean_cfg(), frames=3, crop=(64, 80))


def _dot_copies(blurred: np.ndarray) -> int:
    import cv2

    return cv2.connectedComponents((blurred.max(2) > 0.004).astype(np.uint8))[0] - 1


def test_discrete_frames_leave_separate_copies_and_the_middle_one_is_the_target():
    """Summed from F discrete frames (GoPro's 7-13 frames of 240 fps video), a moving point leaves F
    separate copies, the middle one where the sharp target has it; a continuous sweep leaves one
    streak."""
    img = np.zeros((129, 129, 3), np.float32)
    img[64, 64] = 1.0
    still = dict(homography_prob=1.0, display_prob=1.0, length=[60.0, 60.0], anxiety=0.0, impulsive_prob=0.0,
                 rotation_deg=0.0, zoom=0.0)
    seen = set()
    for seed in range(6):
        cfg = clean_cfg(**still, discrete_prob=1.0, discrete_frames=[7, 13], discrete_duty=[0.0, 0.0])
        blurred, target, info = B.synthesize(img, np.random.default_rng(seed), cfg, return_info=True)
        F = info["discrete_frames"]
        assert F % 2 == 1 and 7 <= F <= 13 and info["subframes"] == F
        assert _dot_copies(blurred) == F
        assert blurred[64, 64].max() == pytest.approx(1.0 / F, abs=1e-3)  # the middle frame, unmoved
        assert target[64, 64].max() == pytest.approx(1.0)
        seen.add(F)
    assert len(seen) > 1
    blurred, _, info = B.synthesize(img, np.random.default_rng(0), clean_cfg(**still), return_info=True)
    assert "discrete_frames" not in info and _dot_copies(blurred) == 1
    # each frame's own exposure (duty) smears its copy: still F copies, each longer
    cfg = clean_cfg(**still, discrete_prob=1.0, discrete_frames=[7, 7], discrete_duty=[0.5, 0.5])
    blurred, _, info = B.synthesize(img, np.random.default_rng(0), cfg, return_info=True)
    assert info["subframes"] > 7 and _dot_copies(blurred) == 7


def test_discrete_options_are_validated():
    from edge_deblur.errors import ConfigError

    with pytest.raises(ConfigError, match=r"discrete_frames.*\[8, 8\].*\[7, 13\]"):
        BlurConfig(discrete_frames=[8, 8]).validate()
    with pytest.raises(ConfigError, match="discrete_duty"):
        BlurConfig(discrete_duty=[0.2, 1.5]).validate()
    with pytest.raises(ConfigError, match="discrete_prob"):
        BlurConfig(discrete_prob=2.0).validate()


@pytest.mark.parametrize("extra", [{}, {"discrete_prob": 1.0}])
def test_centroid_alignment_puts_the_target_at_the_blur_centre_of_mass(extra):
    """blur.align 'centroid': the blurred point's centre of mass is where the target has the point
    (with discrete frames too); 'mid_time' keeps the target at the
    middle of the exposure, which a varying-speed path leaves pixels away from it."""
    import dataclasses as dc

    from blur_helpers import centre_offset

    base = BlurConfig(homography_prob=1.0, display_prob=1.0, length=[30.0, 60.0], rotation_deg=0.0, zoom=0.0,
                      noise_prob=0.0, jpeg_prob=0.0, sharp_prob=0.0, defocus_prob=0.0, highlight_gain=[1.0, 1.0],
                      quantize=False, impulsive_prob=0.3, **extra)

    def offsets(align):
        out = []
        for seed in range(8):
            img = np.zeros((200, 200, 3), np.float32)
            img[99:101, 99:101] = 1.0
            b, s = B.synthesize(img, np.random.default_rng(seed), dc.replace(base, align=align))
            out.append(centre_offset(b[..., 1], s[..., 1]))
        return np.array(out)

    assert offsets("centroid").max() < 0.1
    assert offsets("mid_time").max() > 1.0
    from edge_deblur.errors import ConfigError

    with pytest.raises(ConfigError, match="align"):
        dc.replace(base, align="middle").validate()


def test_layer_shifts_are_zero_at_the_reference_the_alignment_names():
    path = B.random_trajectory(np.random.default_rng(4), 30.0, 40, 0.003, 0.0)
    taus = np.concatenate([np.linspace(0.0, 0.2, 5), np.linspace(0.6, 1.0, 9)])  # uneven sub-frame times
    c = B._layer_shifts({"path": path}, taus, "centroid")
    assert np.allclose(c.mean(0), 0.0, atol=1e-9)
    m = B._layer_shifts({"path": path}, taus, "mid_time")
    assert np.allclose(m - c, (m - c)[0], atol=1e-9)  # the same motion, shifted
    assert np.abs(m.mean(0)).max() > 0.1               # uneven times: mid-exposure is not the centroid


def test_display_space_averaging_gets_no_highlight_boost():
    """Display space (8-bit frames averaged, as GoPro's): the highlight boost brightened these
    blurs (3.6 levels on average, up to 77), a tone change GoPro's pairs do not have."""
    img = _line_image()
    cfg = clean_cfg(homography_prob=0.0, length=[10.0, 10.0], anxiety=0.0, impulsive_prob=0.0, display_prob=1.0,
                    highlight_gain=[3.0, 3.0])
    for s in range(4):
        blurred, target, info = B.synthesize(img, np.random.default_rng(s), cfg, return_info=True)
        assert info["gain"] == 1.0 and blurred.mean() == pytest.approx(target.mean(), abs=2e-3)
    lin = dataclasses.replace(cfg, display_prob=0.0, gamma=2.2)
    assert B.synthesize(img, np.random.default_rng(0), lin, return_info=True)[2]["gain"] == 3.0  # linear light: kept


def test_a_moving_layer_reaching_the_border_continues_beyond_it():
    """The layer's mask was shifted with a constant-0 border: an object touching the crop's edge
    was cut off there, and the cut slid into the frame with its motion (43% of layer samples)."""
    ch, cw = 32, 48
    lin4 = np.zeros((ch, cw, 4), np.float32)                        # a black background
    mask = np.zeros((ch, cw), np.float32)
    mask[:, :20] = 1.0                                               # a white object over the left edge
    layer = {"tex4": np.ones((ch, cw, 4), np.float32), "mask": mask}
    ident = np.tile(np.float32([[1, 0, 0], [0, 1, 0]]), (4, 1, 1))
    shifts = np.float32([[0, 0], [3, 0], [6, 0], [9, 0]])            # moving right
    out = B._warp_average_layer(lin4, ident, ch, cw, layer, shifts)
    assert np.allclose(out[:, :8], 1.0)  # the object still covers the left edge in every sub-frame
