"""Realistic synthetic blur: camera-shake trajectories, kernels, sub-frame warps in linear light,
defocus, Poisson-Gaussian noise and JPEG. numpy + OpenCV only (the runtime demo and INT8
calibration use this module; it must not import torch).

Conventions
-----------
* Images are H x W x 3 RGB, float32 in [0, 1] (uint8 and uint16 inputs are accepted).
* A trajectory is a (T, 2) float array of (x, y) positions in pixels, one per exposure sample.
  Sub-frame ``t`` of the exposure shows the scene displaced by ``+traj[t]``, so the point-spread
  function (PSF) has its mass at the trajectory positions and blurring is a convolution with it.
* Everything is drawn from the ``numpy.random.Generator`` passed in: the same generator state
  gives the same output.
* The sharp target is aligned with the PSF centroid in kernel mode. In homography mode
  ``cfg.align`` chooses: the middle of the exposure time ('mid_time', as real pairs' centre
  frames) or the time-average of the sub-frames ('centroid', the PSF's centre of mass). Only the
  centroid can be read off the blurred image: with a varying speed along the path the middle of
  the exposure lies anywhere along it.

Speed: the dataset crops first and blurs the crop (``synthesize(..., crop=...)`` takes only the
margin that the drawn motion needs), so the cost scales with the crop, not the photo.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Sequence

import cv2
import numpy as np

from ..config.schema import BlurConfig
from ..errors import InputError

__all__ = [
    "random_trajectory",
    "trajectory_to_kernel",
    "disk_kernel",
    "srgb_to_linear",
    "linear_to_srgb",
    "blur_with_kernel",
    "draw_length",
    "max_margin",
    "synthesize",
    "synthesize_clip",
]

# Boracchi & Foi (2012), "Modeling the performance of image restoration from motion blur":
# their reference simulation uses 2000 steps along a path of length 60. We simulate fewer steps
# and rescale the per-step noise and drift so the paths have the same statistics.
_BF_STEPS = 2000
_BF_LENGTH = 60.0
_CORNER_SLACK = 2  # pixels of extra margin for interpolation support


# --------------------------------------------------------------------------- trajectories


def random_trajectory(
    rng: np.random.Generator,
    length: float,
    subframes: int = 24,
    anxiety: float = 0.005,
    impulsive_prob: float = 0.2,
    steps: int = 128,
) -> np.ndarray:
    """Boracchi-Foi camera-shake trajectory, scaled so its extent is ``length`` pixels.

    A complex-valued random walk with inertia: the velocity keeps a constant speed and turns by
    Gaussian kicks (strength ``anxiety``) and a centripetal pull towards the start; with
    probability ``impulsive_prob`` the path has one or more abrupt shakes (the velocity jerks back
    by about 180 degrees). The speed along the path varies smoothly in time (a slowing/accelerating
    hand). ``anxiety=0`` and no shake give a straight line.

    Returns ``(subframes, 2)`` float64 (x, y) positions sampled uniformly in time, with the
    bounding box centred on the origin and extent (bounding-box diagonal) equal to ``length``.
    """
    T = int(subframes)
    if T < 1:
        raise InputError(f"subframes must be >= 1, got {subframes}")
    if not math.isfinite(length) or length < 0:
        raise InputError(f"trajectory length must be a finite number >= 0, got {length}")
    if length == 0 or T == 1:
        return np.zeros((T, 2), np.float64)
    N = max(int(steps), 2 * T, 16)
    r = (_BF_STEPS - 1) / (N - 1)
    step = _BF_LENGTH / (N - 1)
    # BF draw U(0, 0.7); squaring favours gentler pulls, so fewer paths close into loops
    centripetal = 0.7 * rng.random() ** 2
    gaussian = 10.0 * rng.random()
    angle = 2.0 * math.pi * rng.random()
    z = rng.standard_normal((N - 1, 2))
    shakes: dict[int, float] = {}
    if rng.random() < impulsive_prob:
        n_shakes = 1 + int(rng.poisson(0.5))
        for t, turn in zip(rng.integers(1, N - 1, n_shakes), rng.random(n_shakes) - 0.5):
            shakes[int(t)] = float(turn)
    # smooth speed profile: exp of a few random low-frequency sinusoids
    speed_amp = 0.6 * rng.random()
    freqs = rng.uniform(0.3, 2.0, 3)
    phases = rng.uniform(0, 2 * math.pi, 3)
    weights = rng.standard_normal(3)

    noise_k = step * anxiety * gaussian * math.sqrt(r)
    pull_k = step * anxiety * centripetal * r
    v = complex(math.cos(angle), math.sin(angle)) * step
    x = np.zeros(N, np.complex128)
    pos = 0j
    for t in range(N - 1):
        dv = noise_k * complex(z[t, 0], z[t, 1]) - pull_k * pos
        if t in shakes:
            dv += 2.0 * v * complex(math.cos(math.pi + shakes[t]), math.sin(math.pi + shakes[t]))
        v = v + dv
        a = abs(v)
        v = v / a * step if a > 0 else complex(math.cos(angle), math.sin(angle)) * step
        pos = pos + v
        x[t + 1] = pos

    # sample T instants uniformly in time along a path travelled at a varying speed
    tau = np.linspace(0.0, 1.0, N)
    speed = np.exp(speed_amp * (weights[:, None] * np.sin(2 * math.pi * freqs[:, None] * tau + phases[:, None])).sum(0) / 3.0)
    cum = np.concatenate([[0.0], np.cumsum(0.5 / speed[1:] + 0.5 / speed[:-1])])  # time spent per step
    cum /= cum[-1]
    u = np.interp(np.linspace(0.0, 1.0, T), cum, np.arange(N, dtype=np.float64))
    idx = np.arange(N, dtype=np.float64)
    traj = np.stack([np.interp(u, idx, x.real), np.interp(u, idx, x.imag)], axis=1)
    lo, hi = traj.min(0), traj.max(0)
    extent = float(np.hypot(*(hi - lo)))
    if extent < 1e-12:
        return np.zeros((T, 2), np.float64)
    traj = (traj - 0.5 * (lo + hi)) * (length / extent)
    return traj


def trajectory_to_kernel(traj: np.ndarray, size: Optional[int] = None) -> np.ndarray:
    """Render a trajectory into a float32 PSF that sums to 1, by sub-pixel bilinear splatting.

    The trajectory is shifted so that its centroid (every sample weighs the same) lands on the
    centre pixel of an odd-sized square kernel: convolving with it does not shift the image. A
    zero-length trajectory gives the identity (delta) kernel. ``size`` (odd, or made odd) defaults
    to the smallest square that holds the path.
    """
    traj = np.asarray(traj, np.float64).reshape(-1, 2)
    if len(traj) == 0:
        raise InputError("trajectory_to_kernel: the trajectory is empty; pass at least one (x, y) position")
    p = traj - traj.mean(0)
    p[np.abs(p) < 1e-9] = 0.0
    need = 2 * int(math.ceil(np.abs(p).max())) + 3 if p.size else 1
    if size is None:
        size = need
    size = int(size) | 1
    if size < need:
        raise InputError(f"kernel size {size} is too small for a trajectory that needs {need} px; leave size=None")
    c = size // 2
    q = p + c
    i0 = np.floor(q).astype(np.int64)
    f = q - i0
    f[f < 1e-9] = 0.0
    k = np.zeros((size, size), np.float64)
    w = 1.0 / len(q)
    x0, y0 = i0[:, 0], i0[:, 1]
    fx, fy = f[:, 0], f[:, 1]
    np.add.at(k, (y0, x0), w * (1 - fx) * (1 - fy))
    np.add.at(k, (y0, np.minimum(x0 + 1, size - 1)), w * fx * (1 - fy))
    np.add.at(k, (np.minimum(y0 + 1, size - 1), x0), w * (1 - fx) * fy)
    np.add.at(k, (np.minimum(y0 + 1, size - 1), np.minimum(x0 + 1, size - 1)), w * fx * fy)
    k /= k.sum()
    return k.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _disk(radius_centi: int) -> np.ndarray:
    radius = radius_centi / 100.0
    if radius <= 0:
        return np.ones((1, 1), np.float32)
    half = int(math.ceil(radius - 0.5)) if radius > 0.5 else 0
    half = max(half, 1)
    ss = 8  # supersampling for an anti-aliased edge
    size = 2 * half + 1
    g = (np.arange(size * ss) + 0.5) / ss - size / 2.0
    inside = (g[None, :] ** 2 + g[:, None] ** 2) <= radius * radius
    k = inside.reshape(size, ss, size, ss).mean(axis=(1, 3))
    if k.sum() == 0:
        k[half, half] = 1.0
    return (k / k.sum()).astype(np.float32)


def disk_kernel(radius: float) -> np.ndarray:
    """Anti-aliased disk (defocus) PSF of the given radius in pixels, float32, sums to 1."""
    if not math.isfinite(radius) or radius < 0:
        raise InputError(f"defocus radius must be >= 0, got {radius}")
    return _disk(int(round(radius * 100))).copy()


# --------------------------------------------------------------------------- colour


@functools.lru_cache(maxsize=16)
def _lut(bits: int, gamma: float) -> np.ndarray:
    n = 1 << bits
    return ((np.arange(n, dtype=np.float64) / (n - 1)) ** gamma).astype(np.float32)


def _to_float(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return cv2.LUT(img, _lut(8, 1.0))
    if img.dtype == np.uint16:
        return img.astype(np.float32) * np.float32(1.0 / 65535.0)
    return np.asarray(img, np.float32)


def srgb_to_linear(img: np.ndarray, gamma: float = 2.2) -> np.ndarray:
    """Undo the display gamma (a pure power law): uint8/uint16/float in, float32 linear out."""
    if img.dtype == np.uint8:
        return cv2.LUT(img, _lut(8, float(gamma)))
    x = np.clip(_to_float(img), 0.0, 1.0)
    return cv2.pow(x, float(gamma))


def linear_to_srgb(lin: np.ndarray, gamma: float = 2.2) -> np.ndarray:
    """Clip linear light to [0, 1] and re-apply the display gamma; float32 out."""
    x = np.clip(np.asarray(lin, np.float32), 0.0, 1.0)
    return cv2.pow(x, 1.0 / float(gamma))


def _check_image(img) -> np.ndarray:
    if not isinstance(img, np.ndarray):
        raise InputError(f"expected an H x W x 3 numpy image, got {type(img).__name__}")
    if img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"expected an H x W x 3 RGB image, got shape {img.shape}")
    if img.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise InputError(f"image dtype {img.dtype} is not supported; use uint8, uint16 or float32 in [0, 1]")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise InputError(f"image of shape {img.shape} is too small to blur")
    return img


def _highlight_boost(srgb: np.ndarray, gain: float, threshold: float = 0.9) -> Optional[np.ndarray]:
    """Per-pixel linear gain (H x W x 1) >= 1 that grows smoothly towards ``gain`` as the brightest
    channel approaches saturation: clipped lights carry more energy than their 8-bit value says."""
    if gain <= 1.0:
        return None
    v = np.maximum(np.maximum(srgb[..., 0], srgb[..., 1]), srgb[..., 2])
    if float(v.max()) <= threshold:
        return None
    w = np.clip((v - np.float32(threshold)) * np.float32(1.0 / (1.0 - threshold)), 0.0, 1.0)
    w = w * w * (3.0 - 2.0 * w)  # smoothstep
    return (1.0 + np.float32(gain - 1.0) * w)[..., None]


def blur_with_kernel(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve (not correlate) an H x W x C float image with a PSF; borders reflect."""
    k = np.ascontiguousarray(kernel[::-1, ::-1], np.float32)
    return cv2.filter2D(np.asarray(img, np.float32), -1, k, borderType=cv2.BORDER_REFLECT101)


# --------------------------------------------------------------------------- sampling helpers


def draw_length(rng: np.random.Generator, cfg: BlurConfig) -> float:
    """The camera-shake extent of one image: uniform in ``cfg.length``, or log-uniform with
    ``cfg.length_log`` (real hand-held blur is mostly moderate with a long tail: [4, 80] px
    log-uniform has its median at 18 px and 23% of the draws above 40 px)."""
    lo, hi = float(cfg.length[0]), float(cfg.length[1])
    if cfg.length_log and hi > lo > 0:
        return _log_uniform(rng, (lo, hi))
    return float(rng.uniform(lo, hi)) if hi > lo else lo


def _uniform(rng, pair) -> float:
    lo, hi = float(pair[0]), float(pair[1])
    return float(rng.uniform(lo, hi)) if hi > lo else lo


def _log_uniform(rng, pair) -> float:
    lo, hi = float(pair[0]), float(pair[1])
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else lo


def max_margin(cfg: BlurConfig, crop: int | Sequence[int], frames: int = 1, duty_min: float = 0.5) -> int:
    """A conservative bound of the margin (pixels per side) that ``synthesize`` (``frames=1``) or
    ``synthesize_clip`` may need around a crop: take a region this much larger on every side and
    the blur never has to invent border content."""
    ch, cw = _hw(crop)
    L = float(cfg.length[1])
    span = 1.0 if frames <= 1 else frames / max(duty_min, 1e-3)
    # rotation about a centre up to one crop size away, zoom about the same centre
    reach = 2.0 * math.hypot(ch, cw)
    rot = math.radians(cfg.rotation_deg) * reach * span
    zoom = cfg.zoom * reach * span
    return int(math.ceil(L * span + rot + zoom + float(cfg.defocus_radius[1]))) + _CORNER_SLACK + 2


def _hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _take_region(img: np.ndarray, rng, ch, cw, mt, mb, ml, mr, random_place: bool) -> np.ndarray:
    """Cut a (ch+mt+mb) x (cw+ml+mr) region whose inner ch x cw crop lies inside ``img`` when
    possible; parts that fall outside the image are filled by reflection."""
    H, W = img.shape[:2]
    Rh, Rw = ch + mt + mb, cw + ml + mr

    def place(n, inner, lo, size, rand):
        if n >= size and rand:
            return int(rng.integers(0, n - size + 1))
        if n >= inner:  # the crop fits, the margins may not: keep the crop inside
            c0 = int(rng.integers(0, n - inner + 1)) if rand else (n - inner) // 2
            return c0 - lo
        return (n - inner) // 2 - lo

    y0 = place(H, ch, mt, Rh, random_place)
    x0 = place(W, cw, ml, Rw, random_place)
    ya, yb, xa, xb = max(0, y0), min(H, y0 + Rh), max(0, x0), min(W, x0 + Rw)
    reg = img[ya:yb, xa:xb]
    pads = ((ya - y0, y0 + Rh - yb), (xa - x0, x0 + Rw - xb), (0, 0))
    if any(p for pp in pads[:2] for p in pp):
        reg = np.pad(reg, pads, mode="symmetric")
    return reg


def _draw_rot_zoom(rng, cfg: BlurConfig, ch: int, cw: int, exposure: float = 1.0):
    """Rotation and zoom rates (per unit of the time axis) and their centre. Rotation and zoom
    change linearly in time; over one exposure (``exposure`` of the time axis) they change by at
    most ``rotation_deg`` / ``zoom``. The centre (the optical axis) is up to one crop size away
    from the crop centre (at most half a 1280x720 frame), so small crops see the off-centre,
    spatially varying part too."""
    theta_ex = math.radians(cfg.rotation_deg) * rng.uniform(-1.0, 1.0)
    zoom_ex = cfg.zoom * rng.uniform(-1.0, 1.0)
    cx = cw / 2.0 + rng.uniform(-1.0, 1.0) * min(cw, 640)
    cy = ch / 2.0 + rng.uniform(-1.0, 1.0) * min(ch, 360)
    return theta_ex / exposure, zoom_ex / exposure, (cx, cy)


def _inverse_maps(dx, dy, theta, scale, centre) -> np.ndarray:
    """dst->src affine maps (n, 2, 3) of the forward motions ``u -> centre + scale R(theta)
    (u - centre) + d`` (one per element of the equally long arrays dx, dy, theta, scale)."""
    dx, dy, theta, scale = (np.atleast_1d(np.asarray(a, np.float64)) for a in (dx, dy, theta, scale))
    cx, cy = centre
    # inverse: u = centre + R(-theta) (x - centre - d) / scale
    c, s = np.cos(theta) / scale, np.sin(theta) / scale
    tx, ty = cx + dx, cy + dy
    m = np.empty((len(dx), 2, 3), np.float64)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = c, s, cx - c * tx - s * ty
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = -s, c, cy + s * tx - c * ty
    return m


def _bbox_margins(maps: np.ndarray, ch: int, cw: int, extra: int) -> tuple[int, int, int, int]:
    corners = np.array([[0, cw - 1, 0, cw - 1], [0, 0, ch - 1, ch - 1], [1, 1, 1, 1]], np.float64)
    pts = maps @ corners  # (n, 2, 4)
    minx, maxx = pts[:, 0].min(), pts[:, 0].max()
    miny, maxy = pts[:, 1].min(), pts[:, 1].max()
    ml = int(math.ceil(max(0.0, -minx))) + extra
    mr = int(math.ceil(max(0.0, maxx - (cw - 1)))) + extra
    mt = int(math.ceil(max(0.0, -miny))) + extra
    mb = int(math.ceil(max(0.0, maxy - (ch - 1)))) + extra
    return mt, mb, ml, mr


def _n_warps(arc: float, cfg: BlurConfig) -> int:
    """Sub-frames for homography mode: one per 1.5 px of motion (each bilinear warp spreads about
    half a pixel, so no ghost copies show), at most ``subframes`` unless that would space them
    more than 2 px apart."""
    want = int(math.ceil(arc / 1.5)) + 1
    cap = max(int(cfg.subframes), int(math.ceil(arc / 2.0)) + 1)
    return int(min(max(want, 2), cap))


def _discrete_taus(rng, cfg: BlurConfig, arc: float) -> tuple[np.ndarray, int]:
    """Sub-frame times for an exposure summed from F discrete frames (F odd, from
    ``cfg.discrete_frames``): frame k is exposed around the middle of its slot [k/F, (k+1)/F] for
    a share ``duty`` of it, sampled once per 1.5 px of its own motion. The middle frame's centre is
    0.5, the sharp target's instant. Returns (times, F)."""
    lo, hi = int(cfg.discrete_frames[0]), int(cfg.discrete_frames[1])
    F = int(rng.choice([k for k in range(lo, hi + 1) if k % 2]))
    duty = _uniform(rng, cfg.discrete_duty)
    m = int(math.ceil(arc * duty / F / 1.5)) + 1 if duty > 0 else 1
    offs = (np.linspace(-0.5, 0.5, m) if m > 1 else np.zeros(1)) * (duty / F)
    return ((np.arange(F) + 0.5)[:, None] / F + offs[None, :]).ravel(), F


def _arc_px(traj: np.ndarray, theta: float, zoom: float, ch: int, cw: int, centre) -> float:
    """Largest distance travelled by a crop corner over the path (translation + rotation + zoom)."""
    trans = float(np.sum(np.hypot(*np.diff(traj, axis=0).T))) if len(traj) > 1 else 0.0
    cx, cy = centre
    reach = max(math.hypot(x - cx, y - cy) for x in (0, cw) for y in (0, ch))
    return trans + abs(theta) * reach + abs(zoom) * reach


# --------------------------------------------------------------------------- degradations after blur


def _noise_jpeg_params(rng, cfg: BlurConfig):
    noise = None
    if rng.random() < cfg.noise_prob:
        noise = (_log_uniform(rng, cfg.poisson_peak), _uniform(rng, cfg.gaussian_sigma))
    q = None
    if rng.random() < cfg.jpeg_prob:
        lo, hi = int(cfg.jpeg_quality[0]), int(cfg.jpeg_quality[1])
        q = int(rng.integers(lo, hi + 1))
    return noise, q


def _randn(rng: np.random.Generator, shape) -> np.ndarray:
    """Standard normal float32 noise, seeded from ``rng`` (OpenCV's generator is ~2x faster than
    numpy's and thread-local, so the result still depends only on ``rng``)."""
    z = np.empty((int(np.prod(shape[:-1])), int(shape[-1])), np.float32)
    cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))
    cv2.randn(z, 0.0, 1.0)
    return z.reshape(shape)


def _draw_gamma(rng, cfg: BlurConfig) -> BlurConfig:
    """The averaging space of this image, as a copy of ``cfg`` with its gamma set.

    With ``display_prob`` > 0, that share of images is averaged in display space (gamma 1: a
    camera whose frames are averaged after the tone curve, as GoPro's blur is, which does not
    brighten), so no global tone shift can be learned from the blur. Otherwise linear light: with
    ``gamma_range`` set the gamma is drawn per image (cameras' response curves differ, and REDS'
    blur brightens its frames more than a 2.2 power law does at the same PSNR), else ``cfg.gamma``.
    Options left at their defaults draw no random number, so seeds give what they gave before."""
    if cfg.display_prob > 0 and rng.random() < cfg.display_prob:
        return dataclasses.replace(cfg, gamma=1.0)
    if not cfg.gamma_range:
        return cfg
    return dataclasses.replace(cfg, gamma=_uniform(rng, cfg.gamma_range))


def _finish(lin: np.ndarray, rng, cfg: BlurConfig, noise, quality) -> np.ndarray:
    """Linear light -> (Poisson-Gaussian noise) -> clip -> gamma -> (JPEG) -> (8-bit)."""
    if noise is not None:
        peak, sigma = noise
        sd = cv2.sqrt(np.clip(lin, 0.0, 1.0) * np.float32(1.0 / peak) + np.float32(sigma * sigma))
        lin = lin + sd * _randn(rng, lin.shape)
    out = linear_to_srgb(lin, cfg.gamma)
    if quality is not None:
        u8 = (out * 255.0 + 0.5).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:  # pragma: no cover - OpenCV always encodes JPEG
            raise InputError("JPEG encoding failed")
        out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) * np.float32(1 / 255.0)
    elif cfg.quantize:
        out = np.round(out * 255.0) * np.float32(1 / 255.0)
    return np.ascontiguousarray(out, np.float32)


# --------------------------------------------------------------------------- synthesis


def _prepare_region(region: np.ndarray, cfg: BlurConfig, gain: float, defocus: float):
    """Region (uint8/uint16/float sRGB) -> (linear light with boosted highlights and optional
    defocus, sRGB target with the same clipped highlights)."""
    srgb = _to_float(region)
    lin = srgb_to_linear(region, cfg.gamma)
    boost = _highlight_boost(srgb, gain)
    if boost is not None:
        lin = lin * boost
        target = np.minimum(srgb * np.power(boost, np.float32(1.0 / cfg.gamma)), 1.0)
    else:
        target = np.clip(srgb, 0.0, 1.0)
    if defocus > 0:
        lin = blur_with_kernel(lin, disk_kernel(defocus))
    return lin, target


def _crop(a, mt, ml, ch, cw):
    return np.ascontiguousarray(a[mt:mt + ch, ml:ml + cw])


def _rgba(lin: np.ndarray) -> np.ndarray:
    """4-channel copy: OpenCV's SIMD warp path for 4 x float32 is ~3x faster than for 3."""
    return cv2.cvtColor(lin, cv2.COLOR_RGB2RGBA)


def _warp_average(lin4: np.ndarray, maps: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """Average of the linear-light region warped by each dst->src affine map; (ch, cw, 3)."""
    acc = np.zeros((ch, cw, 4), np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for M in maps:
        cv2.add(acc, cv2.warpAffine(lin4, M.astype(np.float32), (cw, ch), flags=flags,
                                    borderMode=cv2.BORDER_REFLECT101), dst=acc)
    acc = acc[..., :3] * np.float32(1.0 / len(maps))
    return acc


def _layer_mask(rng, ch: int, cw: int) -> np.ndarray:
    """A soft-edged ellipse (an object) somewhere in a ch x cw crop: float32 (ch, cw) in [0, 1]."""
    mask = np.zeros((ch, cw), np.float32)
    ax = (max(2, int(cw * rng.uniform(0.12, 0.4))), max(2, int(ch * rng.uniform(0.12, 0.4))))
    centre = (int(rng.uniform(0.2, 0.8) * cw), int(rng.uniform(0.2, 0.8) * ch))
    cv2.ellipse(mask, centre, ax, float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA)
    sigma = float(rng.uniform(0.5, 2.0))
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def _draw_layer(rng, cfg: BlurConfig, lin: np.ndarray, target: np.ndarray, mt: int, ml: int, ch: int, cw: int):
    """A moving foreground layer for one image: its texture (linear light, RGBA), its sRGB target,
    its mask and its own straight-ish path. The texture is the crop turned 180 degrees and
    re-tinted, so it is real image content that differs from what lies behind it."""
    length = _uniform(rng, cfg.layer_length)
    tint = rng.uniform(0.6, 1.4, size=3).astype(np.float32)
    tex = np.ascontiguousarray(_crop(lin, mt, ml, ch, cw)[::-1, ::-1] * tint)
    tgt = np.ascontiguousarray(np.clip(_crop(target, mt, ml, ch, cw)[::-1, ::-1]
                                       * np.power(tint, np.float32(1.0 / cfg.gamma)), 0.0, 1.0))
    path = random_trajectory(rng, length, max(2 * int(math.ceil(length)) + 2, 8), cfg.anxiety * 0.2, 0.0)
    return {"tex4": _rgba(tex), "target": tgt, "mask": _layer_mask(rng, ch, cw), "path": path, "length": length}


def _layer_shifts(layer: dict, taus: np.ndarray, align: str = "mid_time") -> np.ndarray:
    """The layer's displacement (n, 2) at each sub-frame time, zero at mid-exposure (``align``
    'mid_time') or on average over the sub-frames ('centroid')."""
    path = layer["path"]
    tau = np.linspace(0.0, 1.0, len(path))
    x, y = np.interp(taus, tau, path[:, 0]), np.interp(taus, tau, path[:, 1])
    if align == "centroid":
        return np.stack([x - x.mean(), y - y.mean()], 1)
    return np.stack([x - np.interp(0.5, tau, path[:, 0]), y - np.interp(0.5, tau, path[:, 1])], 1)


def _warp_average_layer(lin4: np.ndarray, maps: np.ndarray, ch: int, cw: int, layer: dict,
                        shifts: np.ndarray) -> np.ndarray:
    """Like :func:`_warp_average`, with the layer composited over each background sub-frame at
    its own displacement before averaging (an object moving against the camera-moved scene)."""
    acc = np.zeros((ch, cw, 4), np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for M, (dx, dy) in zip(maps, shifts):
        bg = cv2.warpAffine(lin4, M.astype(np.float32), (cw, ch), flags=flags, borderMode=cv2.BORDER_REFLECT101)
        T = np.float32([[1, 0, dx], [0, 1, dy]])
        fg = cv2.warpAffine(layer["tex4"], T, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        # replicate: an object reaching the crop's border continues beyond it (a constant 0 cut it
        # off there, and the cut edge slid into the frame with the object's motion)
        m = cv2.warpAffine(layer["mask"], T, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[..., None]
        cv2.add(acc, bg + (fg - bg) * m, dst=acc)
    return acc[..., :3] * np.float32(1.0 / len(maps))


def _is_integer_shift(M: np.ndarray) -> bool:
    return bool(np.allclose(M[:, :2], np.eye(2), atol=1e-9) and np.allclose(M[:, 2], np.round(M[:, 2]), atol=1e-9))


def _check_crop(ch: int, cw: int, H: int, W: int, crop) -> None:
    if ch < 1 or cw < 1:
        raise InputError(f"crop must be positive, got {crop}")
    if ch > H or cw > W:
        raise InputError(f"crop {cw}x{ch} is larger than the {W}x{H} image: the blur would be made of mirrored "
                         f"border, not the photo; use a crop of at most {W}x{H} (data.crop) or upscale the image first "
                         f"(data.scale)")


def synthesize(sharp: np.ndarray, rng: np.random.Generator, cfg: Optional[BlurConfig] = None,
               crop: int | Sequence[int] | None = None, return_info: bool = False):
    """Blur one sharp image; returns ``(blurred, sharp_target)`` float32 H x W x 3 RGB in [0, 1].

    ``sharp``: H x W x 3 RGB, uint8/uint16 or float in [0, 1]. ``crop``: output size (int or
    (h, w)); the crop is placed at random where the drawn motion's margin fits inside the image
    (the blur reads real pixels around it). Without ``crop`` the whole image is blurred and borders
    reflect. With ``return_info=True`` a third element describes what was drawn.

    Pipeline (all in linear light): highlight boost -> optional defocus -> camera shake, either
    sub-frame affine warps (translation along a Boracchi-Foi path + rotation + zoom) averaged, or a
    PSF convolution -> Poisson-Gaussian noise -> clip -> gamma -> optional JPEG -> 8-bit levels.
    With probability ``sharp_prob`` there is no blur (noise and JPEG may still apply).
    """
    cfg = _draw_gamma(rng, cfg or BlurConfig())
    img = _check_image(sharp)
    H, W = img.shape[:2]
    ch, cw = (H, W) if crop is None else _hw(crop)
    _check_crop(ch, cw, H, W, crop)

    is_sharp = rng.random() < cfg.sharp_prob
    gain = _uniform(rng, cfg.highlight_gain)
    if cfg.gamma == 1.0:
        # averaged in display space (8-bit frames, as GoPro's): no light beyond white to spread, so
        # no highlight boost (it brightened these blurs by 3.6 levels on average, up to 77)
        gain = 1.0
    mode = "homography" if rng.random() < cfg.homography_prob else "kernel"
    length = 0.0 if is_sharp else draw_length(rng, cfg)
    defocus = 0.0
    if not is_sharp and rng.random() < cfg.defocus_prob:
        defocus = _uniform(rng, cfg.defocus_radius)
    extra = (int(math.ceil(defocus)) + 1 if defocus > 0 else 0) + _CORNER_SLACK
    info = {"sharp": is_sharp, "mode": "none" if is_sharp else mode, "length": length, "gain": gain, "defocus": defocus,
            "gamma": cfg.gamma, "space": "display" if cfg.display_prob > 0 and cfg.gamma == 1.0 else "linear"}

    if mode == "homography" and not is_sharp:
        dense = random_trajectory(rng, length, max(int(cfg.subframes), 2 * int(math.ceil(length)) + 2),
                                  cfg.anxiety, cfg.impulsive_prob)
        theta, zoom, centre = _draw_rot_zoom(rng, cfg, ch, cw)
        n = _n_warps(_arc_px(dense, theta, zoom, ch, cw, centre), cfg)
        with_layer = cfg.layer_prob > 0 and rng.random() < cfg.layer_prob
        if with_layer:  # one sub-frame per 1.5 px of the layer's own motion too
            layer_len = float(cfg.layer_length[1])
            n = max(n, _n_warps(layer_len, cfg))
        tau_dense = np.linspace(0.0, 1.0, len(dense))
        taus = np.linspace(0.0, 1.0, n) if n > 1 else np.array([0.5])
        if cfg.discrete_prob > 0 and rng.random() < cfg.discrete_prob:
            arc = max(_arc_px(dense, theta, zoom, ch, cw, centre), float(cfg.layer_length[1]) if with_layer else 0.0)
            taus, n_frames = _discrete_taus(rng, cfg, arc)
            n = len(taus)
            info.update(discrete_frames=n_frames)
        px = np.interp(taus, tau_dense, dense[:, 0])
        py = np.interp(taus, tau_dense, dense[:, 1])
        if cfg.align == "centroid":  # the time-average of the sub-frames: what the blurred image shows
            mx, my, t_ref = float(px.mean()), float(py.mean()), float(taus.mean())
        else:                        # the middle of the exposure
            mx, my, t_ref = np.interp(0.5, tau_dense, dense[:, 0]), np.interp(0.5, tau_dense, dense[:, 1]), 0.5
        maps = _inverse_maps(px - mx, py - my, theta * (taus - t_ref), 1.0 + zoom * (taus - t_ref), centre)
        mt, mb, ml, mr = _bbox_margins(maps, ch, cw, extra)
        region = _take_region(img, rng, ch, cw, mt, mb, ml, mr, crop is not None)
        lin, target = _prepare_region(region, cfg, gain, defocus)
        maps[:, 0, 2] += ml
        maps[:, 1, 2] += mt
        if with_layer:
            layer = _draw_layer(rng, cfg, lin, target, mt, ml, ch, cw)
            out = _warp_average_layer(_rgba(lin), maps, ch, cw, layer, _layer_shifts(layer, taus, cfg.align))
            tc = _crop(target, mt, ml, ch, cw)
            target = tc + (layer["target"] - tc) * layer["mask"][..., None]
            mt = ml = 0  # target is already the crop
            info.update(layer_length=layer["length"], layer_mask=layer["mask"])
        else:
            out = _warp_average(_rgba(lin), maps, ch, cw)
        # trajectory: the sub-frame displacements relative to the middle of the exposure
        info.update(subframes=n, rotation_deg=math.degrees(theta), zoom=zoom,
                    trajectory=np.stack([px - mx, py - my], 1))
    else:
        if is_sharp:
            kernel = np.ones((1, 1), np.float32)
        else:
            dense = random_trajectory(rng, length, max(int(cfg.subframes), 4 * int(math.ceil(length)) + 2),
                                      cfg.anxiety, cfg.impulsive_prob)
            kernel = trajectory_to_kernel(dense)
            info.update(trajectory=dense)
        m = kernel.shape[0] // 2 + extra
        region = _take_region(img, rng, ch, cw, m, m, m, m, crop is not None)
        lin, target = _prepare_region(region, cfg, gain, defocus)
        out = blur_with_kernel(lin, kernel) if kernel.shape[0] > 1 else lin
        out = _crop(out, m, m, ch, cw)
        mt = ml = m
        info.update(kernel=kernel)
    target = _crop(target, mt, ml, ch, cw)
    noise, quality = _noise_jpeg_params(rng, cfg)
    info.update(noise=noise, jpeg_quality=quality)
    blurred = _finish(out, rng, cfg, noise, quality)
    if return_info:
        return blurred, target, info
    return blurred, target


def synthesize_clip(sharp: np.ndarray, rng: np.random.Generator, cfg: Optional[BlurConfig] = None,
                    frames: int = 5, crop: int | Sequence[int] | None = None,
                    duty: Sequence[float] = (0.5, 1.0), return_info: bool = False):
    """Consecutive blurred video frames along ONE smooth camera path over one sharp image.

    The camera follows a single Boracchi-Foi trajectory (plus slow rotation and zoom) over the
    whole clip. Frame ``k`` is exposed for a fraction ``duty`` (the shutter's duty cycle, drawn
    once per clip) of its frame interval, so its blur is one segment of the path and consecutive
    frames move on. The crop window follows the camera: frame k's sharp ground truth is what the
    camera sees at the middle of exposure k. Each exposure travels about ``cfg.length`` pixels of
    path (its extent is at most that; less where the path curls).

    Returns ``(blurred_frames, sharp_frames)``: two lists of ``frames`` float32 (h, w, 3) RGB
    images in [0, 1]. Highlight gain, defocus and JPEG quality are drawn once per clip; noise
    is independent per frame. ``sharp_prob`` is ignored (a clip always moves).
    """
    cfg = _draw_gamma(rng, cfg or BlurConfig())
    img = _check_image(sharp)
    F = int(frames)
    if F < 1:
        raise InputError(f"frames must be >= 1, got {frames}")
    H, W = img.shape[:2]
    ch, cw = (H, W) if crop is None else _hw(crop)
    _check_crop(ch, cw, H, W, crop)

    gain = _uniform(rng, cfg.highlight_gain)
    if cfg.gamma == 1.0:  # display-space averaging: no highlight boost (see synthesize_blur)
        gain = 1.0
    d = _uniform(rng, duty)
    d = min(max(d, 1e-3), 1.0)
    length = draw_length(rng, cfg)  # typical blur extent of one exposure
    defocus = _uniform(rng, cfg.defocus_radius) if rng.random() < cfg.defocus_prob else 0.0
    extra = (int(math.ceil(defocus)) + 1 if defocus > 0 else 0) + _CORNER_SLACK

    # time axis [0, 1] spans the whole clip; exposure k covers [k/F, k/F + e]
    e = d / F
    span = (F - 1) / F + e  # the part of the axis that is actually used
    total_len = length * span / e  # path length so that one exposure travels about `length`
    n_ex = max(int(cfg.subframes), 2)
    dense_n = max(n_ex * F * 4, int(math.ceil(total_len)) * 2 + 2)
    dense = random_trajectory(rng, total_len, dense_n, cfg.anxiety, cfg.impulsive_prob)
    arc = float(np.sum(np.hypot(*np.diff(dense, axis=0).T))) if len(dense) > 1 else 0.0
    if arc > 0:  # scale by path length, not extent: a looping path must not blur each frame more
        dense = dense * (total_len / arc)
    theta_rate, zoom_rate, centre = _draw_rot_zoom(rng, cfg, ch, cw, exposure=e)
    tau_dense = np.linspace(0.0, span, len(dense))
    mid = 0.5 * span
    mx, my = np.interp(mid, tau_dense, dense[:, 0]), np.interp(mid, tau_dense, dense[:, 1])

    def maps_at(t):
        t = np.atleast_1d(t)
        return _inverse_maps(np.interp(t, tau_dense, dense[:, 0]) - mx, np.interp(t, tau_dense, dense[:, 1]) - my,
                             theta_rate * (t - mid), 1.0 + zoom_rate * (t - mid), centre)

    frame_maps, target_maps, n_per = [], [], []
    for k in range(F):
        t0, t1 = k / F, k / F + e
        seg = np.linspace(t0, t1, 8)
        seg_traj = np.stack([np.interp(seg, tau_dense, dense[:, 0]), np.interp(seg, tau_dense, dense[:, 1])], 1)
        n = _n_warps(_arc_px(seg_traj, theta_rate * e, zoom_rate * e, ch, cw, centre), cfg)
        taus = np.linspace(t0, t1, n) if n > 1 else np.array([0.5 * (t0 + t1)])
        frame_maps.append(maps_at(taus))
        # the frame's target: its sub-frames' mean map ('centroid': their mean displacement) or the
        # scene at the middle of its exposure
        target_maps.append(frame_maps[-1].mean(0) if cfg.align == "centroid" else maps_at(0.5 * (t0 + t1))[0])
        n_per.append(n)
    allm = np.concatenate(frame_maps + [np.stack(target_maps)])
    mt, mb, ml, mr = _bbox_margins(allm, ch, cw, extra + 2)  # +2: Lanczos support for the targets
    region = _take_region(img, rng, ch, cw, mt, mb, ml, mr, crop is not None)
    lin, target_src = _prepare_region(region, cfg, gain, defocus)
    shift = np.array([[0, 0, ml], [0, 0, mt]], np.float64)
    noise, quality = _noise_jpeg_params(rng, cfg)
    blurred, sharp_frames = [], []
    lin = _rgba(lin)
    for maps, tmap in zip(frame_maps, target_maps):
        out = _warp_average(lin, maps + shift, ch, cw)
        blurred.append(_finish(out, rng, cfg, noise, quality))
        tm = tmap + shift
        if _is_integer_shift(tm):
            x0, y0 = int(round(tm[0, 2])), int(round(tm[1, 2]))
            sharp_frames.append(_crop(target_src, y0, x0, ch, cw))
        else:  # sub-pixel window: Lanczos keeps the ground truth sharp
            t = cv2.warpAffine(target_src, tm.astype(np.float32), (cw, ch),
                               flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT101)
            sharp_frames.append(np.clip(t, 0.0, 1.0))
    if return_info:
        info = {"duty": d, "length": length, "gain": gain, "defocus": defocus, "subframes": n_per,
                "noise": noise, "jpeg_quality": quality, "trajectory": dense, "rotation_rate": theta_rate}
        return blurred, sharp_frames, info
    return blurred, sharp_frames
