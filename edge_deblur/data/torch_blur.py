"""Batched blur synthesis in torch, on the training device (CUDA when training runs there).

The same blur model as the OpenCV synthesis in ``blur.py``, read from the same ``BlurConfig``,
applied to a whole batch of sharp regions at once with tensor ops:

* camera shake: Boracchi-Foi trajectories (drawn vectorised over the batch on the host), either
  sub-frame affine warps (translation along the path + rotation + zoom about an off-centre axis)
  by ``grid_sample``, averaged, or a PSF (the path splatted bilinearly) applied by FFT
  convolution, per sample;
* averaging in linear light (``gamma``, or a gamma drawn from ``gamma_range``) or, with
  probability ``display_prob``, in display space (gamma 1: no brightening);
* with probability ``layer_prob`` one moving foreground layer: a soft-edged blob of another
  sample's texture with its own translation path (extent ``layer_length``), composited over the
  camera-moved background sub-frame by sub-frame before averaging; the sharp target is the
  composite at mid-exposure;
* highlight boost of near-saturated pixels, defocus (disk PSFs by grouped convolution),
  Poisson-Gaussian noise, clip, gamma, JPEG-like compression (8x8 DCT quantised with the JPEG
  tables of the drawn quality, 4:2:0 chroma) and 8-bit levels.

Random draws: per-sample scalars and paths come from a ``numpy.random.Generator`` (cheap, on the
host), per-pixel noise from a ``torch.Generator`` on the device; the same two seeds give the same
batch on the same device.

Regions: ``BatchBlur.draw`` says how much margin the drawn motion needs (``Draw.margin``); the
caller cuts regions of ``crop + 2 * margin`` pixels (``PackSampler`` does this from a data pack)
and ``BatchBlur.apply`` returns the blurred input and the sharp target, both crop-sized.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config.schema import BlurConfig
from ..errors import InputError
from .blur import _BF_LENGTH, _BF_STEPS, _CORNER_SLACK, disk_kernel

__all__ = ["batch_trajectories", "trajectory_kernels", "disk_kernels", "jpeg_like", "Draw", "BatchBlur",
           "synthesize_batch"]


# --------------------------------------------------------------------------- trajectories


_PATH_SAMPLES = 400   # instants a path is drawn at (the most sub-frames or PSF samples a sample takes)
_MAX_SUBFRAMES = 240  # warps per warped sample at most (2 px apart up to 478 px of path)


def batch_trajectories(rng: np.random.Generator, lengths, samples: int, anxiety: float = 0.005,
                       impulsive_prob: float = 0.2, steps: int = 128) -> np.ndarray:
    """Boracchi-Foi camera-shake paths for a batch, vectorised: ``(B, samples, 2)`` float64 (x, y).

    The model of ``blur.random_trajectory`` (constant-speed random walk with Gaussian kicks, a
    centripetal pull, optional abrupt shakes, a smoothly varying speed along the path), stepped
    for all samples at once; each path's bounding box is centred on the origin and its extent
    (bounding-box diagonal) equals its length. Zero lengths give zeros.
    """
    L = np.asarray(lengths, np.float64).reshape(-1)
    B, T = len(L), int(samples)
    if T < 1:
        raise InputError(f"samples must be >= 1, got {samples}")
    if np.any(~np.isfinite(L)) or np.any(L < 0):
        raise InputError(f"trajectory lengths must be finite and >= 0, got {L[(~np.isfinite(L)) | (L < 0)][:4]}")
    out = np.zeros((B, T, 2), np.float64)
    if B == 0 or T == 1:
        return out
    # the walk takes `steps` steps (the per-step noise and pull are rescaled to Boracchi-Foi's 2000,
    # as blur.random_trajectory does) and is sampled at T instants along it: the cost is per step
    N = int(min(max(int(steps), 16), 512))
    r = (_BF_STEPS - 1) / (N - 1)
    step = _BF_LENGTH / (N - 1)
    centripetal = 0.7 * rng.random(B) ** 2
    gaussian = 10.0 * rng.random(B)
    angle = 2.0 * math.pi * rng.random(B)
    z = rng.standard_normal((N - 1, B)) + 1j * rng.standard_normal((N - 1, B))
    # shakes: at most 3 per path (1 + Poisson(0.5) is 3 or fewer 98.6% of the time)
    has = rng.random(B) < impulsive_prob
    n_sh = np.where(has, 1 + np.minimum(rng.poisson(0.5, B), 2), 0)
    sh_t = rng.integers(1, N - 1, (3, B))
    sh_turn = rng.random((3, B)) - 0.5
    shake_at = np.full((N - 1, B), np.nan)
    for j in range(3):
        sel = n_sh > j
        shake_at[sh_t[j, sel], np.nonzero(sel)[0]] = sh_turn[j, sel]
    speed_amp = 0.6 * rng.random(B)
    freqs = rng.uniform(0.3, 2.0, (3, B))
    phases = rng.uniform(0, 2 * math.pi, (3, B))
    weights = rng.standard_normal((3, B))

    noise_k = step * anxiety * gaussian * math.sqrt(r)
    pull_k = step * anxiety * centripetal * r
    v = np.exp(1j * angle) * step
    x = np.zeros((N, B), np.complex128)
    pos = np.zeros(B, np.complex128)
    kick = np.exp(1j * (math.pi + np.nan_to_num(shake_at)))
    for t in range(N - 1):
        dv = noise_k * z[t] - pull_k * pos
        s = ~np.isnan(shake_at[t])
        if s.any():
            dv = dv + np.where(s, 2.0 * v * kick[t], 0)
        v = v + dv
        a = np.abs(v)
        v = np.where(a > 0, v / np.where(a > 0, a, 1.0) * step, np.exp(1j * angle) * step)
        pos = pos + v
        x[t + 1] = pos
    tau = np.linspace(0.0, 1.0, N)
    speed = np.exp(speed_amp * (weights[:, None, :] * np.sin(2 * math.pi * freqs[:, None, :] * tau[None, :, None]
                                                             + phases[:, None, :])).sum(0) / 3.0)  # (N, B)
    cum = np.concatenate([np.zeros((1, B)), np.cumsum(0.5 / speed[1:] + 0.5 / speed[:-1], axis=0)])
    cum /= cum[-1]
    # sample T instants uniformly in time: invert the cumulative time of each path
    q = np.linspace(0.0, 1.0, T)
    idx = np.empty((B, T))
    for b in range(B):
        idx[b] = np.interp(q, cum[:, b], np.arange(N, dtype=np.float64))
    i0 = np.clip(np.floor(idx).astype(np.int64), 0, N - 2)
    f = idx - i0
    xb = x.T  # (B, N)
    rows = np.arange(B)[:, None]
    pts = xb[rows, i0] * (1 - f) + xb[rows, i0 + 1] * f
    traj = np.stack([pts.real, pts.imag], -1)
    lo, hi = traj.min(1, keepdims=True), traj.max(1, keepdims=True)
    extent = np.hypot(*(hi - lo)[:, 0].T)
    scale = np.where(extent > 1e-12, L / np.maximum(extent, 1e-12), 0.0)
    out[:] = (traj - 0.5 * (lo + hi)) * scale[:, None, None]
    return out


def trajectory_kernels(traj: torch.Tensor, size: Optional[int] = None) -> torch.Tensor:
    """Render paths ``(B, T, 2)`` into PSFs ``(B, K, K)`` that each sum to 1 (bilinear splats,
    every sample of a path weighs the same, the centroid on the centre pixel: no shift).
    ``size`` (odd, or made odd) defaults to the smallest square that holds every path."""
    if traj.ndim != 3 or traj.shape[-1] != 2 or traj.shape[1] < 1:
        raise InputError(f"trajectories must be (B, T, 2) with T >= 1, got {tuple(traj.shape)}")
    B, T, _ = traj.shape
    p = traj.double() - traj.double().mean(1, keepdim=True)
    need = 2 * int(math.ceil(float(p.abs().max()) if p.numel() else 0.0)) + 3
    K = int(size if size is not None else need) | 1
    if K < need:
        raise InputError(f"kernel size {K} is too small for paths that need {need} px; leave size=None")
    c = K // 2
    q = p + c
    i0 = torch.floor(q)
    f = q - i0
    i0 = i0.long()
    x0, y0 = i0[..., 0], i0[..., 1]
    fx, fy = f[..., 0], f[..., 1]
    x1, y1 = (x0 + 1).clamp(max=K - 1), (y0 + 1).clamp(max=K - 1)
    k = torch.zeros(B, K * K, dtype=torch.float64, device=traj.device)
    for yy, xx, w in ((y0, x0, (1 - fx) * (1 - fy)), (y0, x1, fx * (1 - fy)), (y1, x0, (1 - fx) * fy), (y1, x1, fx * fy)):
        k.scatter_add_(1, yy * K + xx, w / T)
    k = k / k.sum(1, keepdim=True)
    return k.view(B, K, K).float()


def disk_kernels(radii: Sequence[float], device=None) -> torch.Tensor:
    """Anti-aliased disk PSFs (``blur.disk_kernel``) for each radius, zero-padded to one odd
    size: ``(B, K, K)`` float32, each sums to 1 (radius 0: the identity)."""
    ks = [disk_kernel(float(r)) if r > 0 else np.ones((1, 1), np.float32) for r in radii]
    K = max(k.shape[0] for k in ks) if ks else 1
    out = np.zeros((len(ks), K, K), np.float32)
    for i, k in enumerate(ks):
        o = (K - k.shape[0]) // 2
        out[i, o:o + k.shape[0], o:o + k.shape[0]] = k
    return torch.from_numpy(out).to(device)


# --------------------------------------------------------------------------- JPEG-like compression

_Q_LUMA = torch.tensor([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=torch.float32).view(8, 8)
_Q_CHROMA = torch.tensor([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=torch.float32).view(8, 8)


def _dct_matrix(device, dtype=torch.float32) -> torch.Tensor:
    n = torch.arange(8, dtype=torch.float64)
    D = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    D[0] /= math.sqrt(2)
    return D.to(device=device, dtype=dtype)


def _quant_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """libjpeg's quality scaling of the standard tables: (B, 8, 8) luma and chroma steps."""
    q = quality.float().clamp(1, 100)
    scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)[:, None, None]
    dev = quality.device
    luma = torch.floor((_Q_LUMA.to(dev) * scale + 50) / 100).clamp(1, 255)
    chroma = torch.floor((_Q_CHROMA.to(dev) * scale + 50) / 100).clamp(1, 255)
    return luma, chroma


def _blocks_dct_quant(x: torch.Tensor, table: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) in level-shifted 8-bit units, H and W multiples of 8; quantise the 8x8 DCT
    of each block with ``table`` (B, 8, 8) and transform back."""
    B, C, H, W = x.shape
    blk = x.reshape(B, C, H // 8, 8, W // 8, 8).permute(0, 1, 2, 4, 3, 5)  # (B, C, h, w, 8, 8)
    coef = D @ blk @ D.T
    t = table[:, None, None, None]
    coef = torch.round(coef / t) * t
    blk = D.T @ coef @ D
    return blk.permute(0, 1, 2, 4, 3, 5).reshape(B, C, H, W)


def jpeg_like(x: torch.Tensor, quality) -> torch.Tensor:
    """JPEG-like compression of RGB ``x`` (B, 3, H, W) in [0, 1] at per-sample ``quality`` (1-100):
    8-bit levels, JFIF YCbCr, 4:2:0 chroma (2x2 means, bilinear back), 8x8 DCT quantised with the
    standard tables scaled as libjpeg scales them. Returns float32 in [0, 1] on 8-bit levels."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"jpeg_like expects (B, 3, H, W), got {tuple(x.shape)}")
    B, _, H, W = x.shape
    q = torch.as_tensor(quality, device=x.device).reshape(-1).expand(B)
    ph, pw = (-H) % 16, (-W) % 16
    v = torch.round(x.clamp(0, 1) * 255.0)
    if ph or pw:
        v = F.pad(v, (0, pw, 0, ph), mode="replicate")
    r, g, b = v[:, 0:1], v[:, 1:2], v[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    luma_t, chroma_t = _quant_tables(q)
    D = _dct_matrix(x.device)
    y = _blocks_dct_quant(y - 128.0, luma_t, D) + 128.0
    c = F.avg_pool2d(torch.cat([cb, cr], 1), 2)
    c = _blocks_dct_quant(c, chroma_t, D)
    c = F.interpolate(c, scale_factor=2, mode="bilinear", align_corners=False)
    cb, cr = c[:, 0:1], c[:, 1:2]
    rgb = torch.cat([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    rgb = torch.round(rgb.clamp(0, 255))[:, :, :H, :W]
    return rgb * (1.0 / 255.0)


# --------------------------------------------------------------------------- drawing


@dataclasses.dataclass
class Draw:
    """What one batch drew (host arrays, one entry per sample)."""

    sharp: np.ndarray          # (B,) bool: no blur
    display: np.ndarray        # (B,) bool: averaged in display space (gamma 1)
    gamma: np.ndarray          # (B,) the display gamma of each sample
    gain: np.ndarray           # (B,) highlight gain
    warp: np.ndarray           # (B,) bool: sub-frame warps (homography mode, or a layer); else a PSF
    length: np.ndarray         # (B,) camera path extent (px)
    defocus: np.ndarray        # (B,) disk radius (0: none)
    traj: np.ndarray           # (B, T, 2) sub-frame displacements relative to mid-exposure
    theta: np.ndarray          # (B,) rotation over the exposure (rad)
    zoom: np.ndarray           # (B,) relative scale change over the exposure
    centre: np.ndarray         # (B, 2) rotation/zoom centre in crop pixels
    layer: np.ndarray          # (B,) bool: one moving foreground layer
    layer_traj: np.ndarray     # (B, T, 2) the layer's own displacements
    layer_blob: np.ndarray     # (B, 6) centre x, y, semi-axes a, b, angle, edge blur sigma (crop pixels)
    layer_tint: np.ndarray     # (B, 3) per-channel gain of the layer's texture (linear light)
    noise: np.ndarray          # (B,) bool
    peak: np.ndarray           # (B,) photons at white
    sigma: np.ndarray          # (B,) read noise
    jpeg: np.ndarray           # (B,) quality, 0 for none
    n_sub: np.ndarray          # (B,) sub-frames a warped sample needs (0: not warped)
    crop: tuple[int, int]
    margin: int                # pixels per side the regions need around the crop
    frames: Optional[np.ndarray] = None  # (B,) discrete frames summed (cfg.discrete_prob; 0: a continuous sweep)
    duty: Optional[np.ndarray] = None    # (B,) each discrete frame's exposure, a share of its slot

    @property
    def region(self) -> tuple[int, int]:
        return self.crop[0] + 2 * self.margin, self.crop[1] + 2 * self.margin


def _u(rng, pair, n):
    lo, hi = float(pair[0]), float(pair[1])
    return rng.uniform(lo, hi, n) if hi > lo else np.full(n, lo)


def _logu(rng, pair, n):
    lo, hi = float(pair[0]), float(pair[1])
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n)) if hi > lo else np.full(n, lo)


def _inverse_maps(d: np.ndarray, theta: np.ndarray, scale: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """dst->src affine maps (B, T, 2, 3) of the forward motions u -> c + s R(theta) (u - c) + d."""
    cx, cy = centre[:, 0][:, None], centre[:, 1][:, None]
    c, s = np.cos(theta) / scale, np.sin(theta) / scale
    tx, ty = cx + d[..., 0], cy + d[..., 1]
    m = np.empty(d.shape[:2] + (2, 3), np.float64)
    m[..., 0, 0], m[..., 0, 1], m[..., 0, 2] = c, s, cx - c * tx - s * ty
    m[..., 1, 0], m[..., 1, 1], m[..., 1, 2] = -s, c, cy + s * tx - c * ty
    return m


class BatchBlur:
    """The blur model of ``blur.synthesize`` for batches of regions, on ``device``.

    ``crop``: output size (int or (h, w)). ``cfg.length``, ``layer_length`` and
    ``defocus_radius`` are in output pixels.
    """

    def __init__(self, cfg: Optional[BlurConfig] = None, crop=256, device=None):
        self.cfg = cfg or BlurConfig()
        self.cfg.validate()
        self.crop = (int(crop), int(crop)) if isinstance(crop, (int, np.integer)) else (int(crop[0]), int(crop[1]))
        if min(self.crop) < 8:
            raise InputError(f"crop must be at least 8x8, got {self.crop}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    # ---- draws (host)

    def draw(self, batch: int, rng: np.random.Generator) -> Draw:
        cfg, (ch, cw) = self.cfg, self.crop
        B = int(batch)
        if B < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        sharp = rng.random(B) < cfg.sharp_prob
        display = rng.random(B) < cfg.display_prob
        gamma = _u(rng, cfg.gamma_range, B) if cfg.gamma_range else np.full(B, float(cfg.gamma))
        gain = _u(rng, cfg.highlight_gain, B)
        homog = rng.random(B) < cfg.homography_prob
        # as blur.draw_length: log-uniform with cfg.length_log (most blur moderate, a long tail)
        draw_len = _logu if cfg.length_log and cfg.length[0] > 0 else _u
        length = np.where(sharp, 0.0, draw_len(rng, cfg.length, B))
        defocus = np.where(~sharp & (rng.random(B) < cfg.defocus_prob), _u(rng, cfg.defocus_radius, B), 0.0)
        # as blur.synthesize: a share of the homography-mode images get a moving foreground layer
        layer = homog & ~sharp & (rng.random(B) < cfg.layer_prob)
        layer_len = np.where(layer, _u(rng, cfg.layer_length, B), 0.0)
        warp = (homog | layer) & ~sharp
        # rotation and zoom about an axis up to one crop size away (at most half a 1280x720 frame)
        theta = np.where(homog, np.radians(cfg.rotation_deg) * rng.uniform(-1, 1, B), 0.0)
        zoom = np.where(homog, cfg.zoom * rng.uniform(-1, 1, B), 0.0)
        centre = np.stack([cw / 2 + rng.uniform(-1, 1, B) * min(cw, 640), ch / 2 + rng.uniform(-1, 1, B) * min(ch, 360)], 1)
        # the object (as blur._layer_mask): an ellipse with semi-axes of 12-40% of the crop, its
        # centre in the middle 60%, any angle, its edge softened by a Gaussian of 0.5-2 px; its
        # texture is the crop turned 180 degrees and re-tinted (blur._draw_layer)
        rad = np.stack([np.maximum(2, rng.uniform(0.12, 0.4, B) * cw), np.maximum(2, rng.uniform(0.12, 0.4, B) * ch)], 1)
        blob = np.concatenate([np.stack([rng.uniform(0.2, 0.8, B) * cw, rng.uniform(0.2, 0.8, B) * ch], 1), rad,
                               rng.uniform(0, math.pi, B)[:, None], rng.uniform(0.5, 2.0, B)[:, None]], 1)
        tint = rng.uniform(0.6, 1.4, (B, 3))
        # the paths first, finely sampled, so that each sample's sub-frames follow its own path
        # length (a Boracchi-Foi path is 1.9x its extent at the median, 2.8x at the 90th percentile)
        traj_f = batch_trajectories(rng, length, _PATH_SAMPLES, cfg.anxiety, cfg.impulsive_prob)
        # the layer moves along a gentler path of its own (an object, not a shaking hand)
        ltraj_f = batch_trajectories(rng, layer_len, _PATH_SAMPLES, cfg.anxiety * 0.2, 0.0)
        path_len, layer_path = _path_len(traj_f), _path_len(ltraj_f)
        # as blur._n_warps: one sub-frame per 1.5 px of each sample's motion (no ghost copies), at
        # most cfg.subframes unless that would space them more than 2 px apart; PSFs take 4
        # samples per pixel of path like blur.synthesize
        reach = max(math.hypot(x, y) for x in (ch, cw) for y in (ch, cw)) * 2.0
        arc = np.maximum(path_len + np.abs(theta) * reach + np.abs(zoom) * reach, layer_path)
        want = np.ceil(arc / 1.5).astype(np.int64) + 1
        cap = np.maximum(int(cfg.subframes), np.ceil(arc / 2.0).astype(np.int64) + 1)
        n_sub = np.clip(np.minimum(want, cap), 2, _MAX_SUBFRAMES)
        n_sub = np.where(warp, n_sub, 0)
        frames, duty = np.zeros(B, np.int64), np.zeros(B)
        if cfg.discrete_prob > 0:  # as blur._discrete_taus: F odd frames, each sampled per 1.5 px of its own motion
            disc = warp & (rng.random(B) < cfg.discrete_prob)
            lo, hi = int(cfg.discrete_frames[0]), int(cfg.discrete_frames[1])
            frames = np.where(disc, rng.choice([k for k in range(lo, hi + 1) if k % 2], B), 0)
            duty = np.where(disc, _u(rng, cfg.discrete_duty, B), 0.0)
            per = np.ceil(arc * duty / np.maximum(frames, 1) / 1.5).astype(np.int64) + 1
            n_sub = np.where(disc, frames * per, n_sub)
        n_warp = int(max(n_sub.max(initial=0), 2))
        n_kern = int(min(max(int(cfg.subframes), 4 * int(math.ceil(float(np.max(length, initial=0.0)))) + 2), _PATH_SAMPLES))
        T = max(n_warp, n_kern) if np.any(~warp & ~sharp) else n_warp
        t_f, t_T = np.linspace(0.0, 1.0, _PATH_SAMPLES), np.linspace(0.0, 1.0, T)
        traj, ltraj = _resample(traj_f, t_f, t_T), _resample(ltraj_f, t_f, t_T)
        # displacements relative to the middle of the exposure (the sharp target's instant)
        traj = traj - _mid(traj)
        ltraj = ltraj - _mid(ltraj)
        noise = rng.random(B) < cfg.noise_prob
        peak = _logu(rng, cfg.poisson_peak, B)
        sigma = _u(rng, cfg.gaussian_sigma, B)
        jq = rng.integers(int(cfg.jpeg_quality[0]), int(cfg.jpeg_quality[1]) + 1, B)
        jpeg = np.where(rng.random(B) < cfg.jpeg_prob, jq, 0)
        d = Draw(sharp=sharp, display=display, gamma=gamma, gain=gain, warp=warp, length=length, defocus=defocus,
                 traj=traj, theta=theta, zoom=zoom, centre=centre, layer=layer, layer_traj=ltraj, layer_blob=blob,
                 layer_tint=tint,
                 noise=noise, peak=peak, sigma=sigma, jpeg=jpeg, n_sub=n_sub, crop=(ch, cw), margin=0,
                 frames=frames, duty=duty)
        d.margin = self._margin(d, n_warp)
        return d

    def _margin(self, d: Draw, n_warp: int) -> int:
        ch, cw = d.crop
        extra = int(math.ceil(float(np.max(d.defocus, initial=0.0)))) + 1 + _CORNER_SLACK
        m = 0.0
        if np.any(d.warp):
            maps = self._warp_maps(d, n_warp)[d.warp]  # (b, n, 2, 3)
            corners = np.array([[0, cw - 1, 0, cw - 1], [0, 0, ch - 1, ch - 1], [1, 1, 1, 1]], np.float64)
            pts = maps @ corners
            m = max(m, float(np.max(-pts[..., 0, :])), float(np.max(pts[..., 0, :] - (cw - 1))),
                    float(np.max(-pts[..., 1, :])), float(np.max(pts[..., 1, :] - (ch - 1))))
        k = ~d.warp & ~d.sharp
        if np.any(k):
            p = d.traj[k] - d.traj[k].mean(1, keepdims=True)
            m = max(m, float(np.max(np.abs(p))) + 2)
        return int(math.ceil(max(m, 0.0))) + extra

    @staticmethod
    def _times(d: Draw, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Each sample's n sub-frame times (B, n) in [0, 1] and their weights (B, n, summing to 1).
        A continuous sweep: n even steps, equal weights. F discrete frames (``d.frames``): the n
        slots shared out among the frames in order, frame k's spread over the middle ``duty`` of
        its slot [k/F, (k+1)/F], each frame weighing 1/F whatever its number of slots."""
        B = len(d.sharp)
        tq = np.tile(np.linspace(0.0, 1.0, n) if n > 1 else np.array([0.5]), (B, 1))
        w = np.full((B, n), 1.0 / n)
        rows = np.nonzero(d.frames)[0] if d.frames is not None else np.zeros(0, np.int64)
        if len(rows):
            Fb = d.frames[rows].astype(np.int64)[:, None]  # (r, 1)
            if n < Fb.max():
                raise InputError(f"{n} sub-frames cannot sum {int(Fb.max())} discrete frames")
            j = np.arange(n)[None, :]
            k = j * Fb // n                                  # each slot's frame
            first = lambda kk: -((-kk * n) // Fb)            # the first slot of frame kk: ceil(kk n / F)
            c = first(k + 1) - first(k)                      # slots of each slot's frame
            pos = j - first(k)                               # index within its frame
            off = np.where(c > 1, pos / np.maximum(c - 1, 1) - 0.5, 0.0) * (d.duty[rows][:, None] / Fb)
            tq[rows] = (k + 0.5) / Fb + off
            w[rows] = 1.0 / (Fb * c)
        return tq, w

    def _warp_maps(self, d: Draw, n: int, tq: Optional[np.ndarray] = None, w: Optional[np.ndarray] = None) -> np.ndarray:
        """(B, n, 2, 3) dst->src maps in crop pixels for each sample's n sub-frames at the times
        ``tq`` (B, n) with weights ``w`` (default: ``_times``). With ``cfg.align`` 'centroid' the
        sub-frames' weighted mean displacement, rotation and zoom are zero (the target sits at the
        PSF's centre of mass); with 'mid_time' those at the middle of the exposure are."""
        T = d.traj.shape[1]
        if tq is None:
            tq, w = self._times(d, n)
        tt = np.linspace(0.0, 1.0, T)
        disp = _resample(d.traj, tt, tq)
        t_ref = 0.5
        if self.cfg.align == "centroid":
            if w is None:
                raise InputError("_warp_maps needs the sub-frame weights with tq when blur.align is 'centroid'")
            disp = disp - (w[..., None] * disp).sum(1, keepdims=True)
            t_ref = (w * tq).sum(1, keepdims=True)
        return _inverse_maps(disp, d.theta[:, None] * (tq - t_ref), 1.0 + d.zoom[:, None] * (tq - t_ref), d.centre)

    # ---- application (device)

    @torch.no_grad()
    def apply(self, region: torch.Tensor, d: Draw, generator: Optional[torch.Generator] = None):
        """``region``: (B, 3, crop_h + 2m, crop_w + 2m) sRGB float in [0, 1] (or uint8) on the
        device, m = ``d.margin``. Returns ``(blurred, sharp)``: (B, 3, crop_h, crop_w) float32."""
        ch, cw = d.crop
        m = d.margin
        B = len(d.sharp)
        if region.ndim != 4 or region.shape[0] != B or region.shape[1] != 3 or tuple(region.shape[2:]) != d.region:
            raise InputError(f"region batch must be ({B}, 3, {d.region[0]}, {d.region[1]}) for this draw, "
                             f"got {tuple(region.shape)}")
        dev = region.device
        srgb = region.float() * (1.0 / 255.0) if region.dtype == torch.uint8 else region.float().clamp(0, 1)
        g_avg = torch.from_numpy(np.where(d.display, 1.0, d.gamma)).float().to(dev)[:, None, None, None]
        lin = srgb.clamp_min(0).pow(g_avg)
        # highlights: clipped lights carry more energy than their 8-bit value says
        v = srgb.amax(1, keepdim=True)
        w = ((v - 0.9) * 10.0).clamp(0, 1)
        w = w * w * (3 - 2 * w)
        # display-space samples (8-bit frames averaged, as GoPro's) get no highlight boost: see blur.py
        gain = torch.from_numpy(np.where(d.display, 1.0, d.gain)).float().to(dev)[:, None, None, None]
        boost = 1.0 + (gain - 1.0) * w
        lin = lin * boost
        target = torch.minimum(srgb * boost.pow(1.0 / g_avg), torch.ones((), device=dev))
        if np.any(d.defocus > 0):
            lin = _conv_per_sample(lin, disk_kernels(d.defocus, dev))
        out = lin[:, :, m:m + ch, m:m + cw].clone()
        target = target[:, :, m:m + ch, m:m + cw].contiguous()
        widx = np.nonzero(d.warp)[0]
        # two groups by sub-frame count (short and long motion), each warped with its own count,
        # so short blurs do not pay for the batch's longest
        widx = widx[np.argsort(d.n_sub[widx], kind="stable")]
        groups = [widx] if len(widx) < 8 else [widx[:len(widx) // 2], widx[len(widx) // 2:]]
        for gidx in groups:
            if not len(gidx):
                continue
            acc, tgt_w = self._warp_average(lin, target, g_avg, d, gidx, int(d.n_sub[gidx].max()))
            wsel = torch.as_tensor(gidx, device=dev)
            out[wsel] = acc
            target[wsel] = tgt_w
        kidx = np.nonzero(~d.warp & ~d.sharp)[0]
        if len(kidx):
            ksel = torch.as_tensor(kidx, device=dev)
            out[ksel] = self._psf_blur(lin[ksel], d.traj[kidx], m, ch, cw)
        # noise in linear light, clip, gamma, JPEG-like, 8-bit levels
        nidx = np.nonzero(d.noise)[0]
        if len(nidx):
            nsel = torch.as_tensor(nidx, device=dev)
            peak = torch.from_numpy(d.peak[nidx]).float().to(dev)[:, None, None, None]
            sig = torch.from_numpy(d.sigma[nidx]).float().to(dev)[:, None, None, None]
            x = out[nsel]
            z = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
            out[nsel] = x + torch.sqrt(x.clamp(0, 1) / peak + sig * sig) * z
        out = out.clamp(0, 1).pow(1.0 / g_avg)
        jidx = np.nonzero(d.jpeg > 0)[0]
        if len(jidx):
            jsel = torch.as_tensor(jidx, device=dev)
            out[jsel] = jpeg_like(out[jsel], torch.from_numpy(d.jpeg[jidx]).to(dev))
        if self.cfg.quantize:
            out = torch.round(out * 255.0) * (1.0 / 255.0)
        return out.contiguous(), target.clamp(0, 1)

    def _warp_average(self, lin, target, g_avg, d: Draw, idx, n: int):
        """Sub-frame warps of the selected samples (camera motion, plus the layer where drawn),
        averaged; returns (their blurred linear light, their sharp targets)."""
        ch, cw = d.crop
        m = d.margin
        R = d.region
        tq, wq = self._times(d, n)
        maps = self._warp_maps(d, n, tq, wq)[idx]  # (b, n, 2, 3) crop pixels
        wq_host = wq[idx]
        tq, wq = tq[idx], torch.from_numpy(wq[idx]).float().to(lin.device)
        maps[..., 0, 2] += m
        maps[..., 1, 2] += m
        dev = lin.device
        src = lin[torch.as_tensor(idx, device=dev)]
        b = len(idx)
        acc = torch.zeros(b, 3, ch, cw, device=dev)
        lay = d.layer[idx]
        lidx = np.nonzero(lay)[0]
        tgt = target[torch.as_tensor(idx, device=dev)]
        if len(lidx):
            # texture: the sample's own region turned 180 degrees (the crop maps onto the crop) and
            # re-tinted, in linear light; its target likewise (blur._draw_layer)
            lsel = torch.as_tensor(lidx, device=dev)
            gsel = torch.as_tensor(idx[lidx], device=dev)
            tint = torch.from_numpy(d.layer_tint[idx[lidx]]).float().to(dev)[:, :, None, None]
            tex = torch.flip(lin[gsel], dims=(2, 3)) * tint
            tex_t = (torch.flip(tgt[lsel], dims=(2, 3)) * tint.pow(1.0 / g_avg[gsel])).clamp(0, 1)
            T = d.layer_traj.shape[1]
            ldisp = _resample(d.layer_traj[idx[lidx]], np.linspace(0.0, 1.0, T), tq[lidx])  # (l, n, 2)
            if self.cfg.align == "centroid":  # the layer's target where it is on average
                ldisp = ldisp - (wq_host[lidx][..., None] * ldisp).sum(1, keepdims=True)
            blob = torch.from_numpy(d.layer_blob[idx[lidx]]).float().to(dev)
            yy, xx = torch.meshgrid(torch.arange(ch, device=dev, dtype=torch.float32),
                                    torch.arange(cw, device=dev, dtype=torch.float32), indexing="ij")
            # sub-frame j shows the texture displaced by the layer's own ldisp[j] (from the margin m)
            lmaps = np.zeros((len(lidx), n, 2, 3))
            lmaps[..., 0, 0] = lmaps[..., 1, 1] = 1.0
            lmaps[..., 0, 2] = m - ldisp[..., 0]
            lmaps[..., 1, 2] = m - ldisp[..., 1]
            # sharp target: the composite at zero layer displacement (mid-exposure, or the centroid)
            a0 = _blob_alpha(blob, xx, yy, 0.0, 0.0)
            tgt[lsel] = tgt[lsel] * (1 - a0) + tex_t * a0
        # J sub-frames per grid_sample call: their grids sit side by side along the width, so the
        # source is read once per call and never copied (J * cw output columns)
        cap = (1 << 27) if dev.type == "cuda" else (1 << 25)  # floats per call: 512 MiB on a GPU, 128 MiB here
        J = max(1, min(n, cap // max(1, b * 3 * ch * cw)))
        for j0 in range(0, n, J):
            js = slice(j0, min(n, j0 + J))
            nj = js.stop - js.start
            grid = _grid_multi(maps[:, js], R, (ch, cw), dev)
            frames = F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            frames = frames.view(b, 3, ch, nj, cw)
            if len(lidx):
                lg = _grid_multi(lmaps[:, js], R, (ch, cw), dev)
                lt = F.grid_sample(tex, lg, mode="bilinear", padding_mode="reflection", align_corners=False)
                lt = lt.view(len(lidx), 3, ch, nj, cw)
                dx = torch.from_numpy(ldisp[:, js, 0]).float().to(dev)  # (l, nj)
                dy = torch.from_numpy(ldisp[:, js, 1]).float().to(dev)
                a = _blob_alpha_multi(blob, xx, yy, dx, dy)  # (l, 1, ch, nj, cw)
                frames[lsel] = frames[lsel] * (1 - a) + lt * a
            acc += (frames * wq[:, None, None, js, None]).sum(3)
        return acc, tgt

    def _psf_blur(self, lin, traj: np.ndarray, m: int, ch: int, cw: int) -> torch.Tensor:
        """Convolve each region with its path's PSF by FFT; returns the crop (b, 3, ch, cw)."""
        k = trajectory_kernels(torch.from_numpy(traj).to(lin.device))  # (b, K, K)
        b, _, H, W = lin.shape
        K = k.shape[-1]
        if K // 2 > m:
            raise InputError(f"PSF of {K} px needs a margin of {K // 2}, the region has {m}")
        kp = torch.zeros(b, H, W, device=lin.device)
        kp[:, :K, :K] = k
        kp = torch.roll(kp, shifts=(-(K // 2), -(K // 2)), dims=(1, 2))  # centre on (0, 0)
        out = torch.fft.irfft2(torch.fft.rfft2(lin) * torch.fft.rfft2(kp)[:, None], s=(H, W))
        return out[:, :, m:m + ch, m:m + cw]


def _path_len(traj: np.ndarray) -> np.ndarray:
    """Each (B, T, 2) path's length in px, (B,)."""
    return np.hypot(*np.diff(traj, axis=1).transpose(2, 0, 1)).sum(1)


def _mid(traj: np.ndarray) -> np.ndarray:
    """Each path's position at the middle of the exposure, (B, 1, 2)."""
    T = traj.shape[1]
    if T % 2:
        return traj[:, T // 2:T // 2 + 1]
    return 0.5 * (traj[:, T // 2 - 1:T // 2] + traj[:, T // 2:T // 2 + 1])


def _resample(traj: np.ndarray, t_from: np.ndarray, t_to: np.ndarray) -> np.ndarray:
    """Linear interpolation of (B, T, 2) paths from times ``t_from`` (T,) to ``t_to``: (n,) for
    all paths alike, or (B, n), each path its own times."""
    t_to = np.asarray(t_to, np.float64)
    if t_to.ndim == 1 and len(t_from) == len(t_to) and np.allclose(t_from, t_to):
        return traj.copy()
    if len(t_from) == 1:
        return np.repeat(traj, t_to.shape[-1], axis=1)
    pos = np.interp(t_to, t_from, np.arange(len(t_from), dtype=np.float64))
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, len(t_from) - 2)
    f = (pos - i0)[..., None]
    if t_to.ndim == 1:
        return traj[:, i0] * (1 - f[None]) + traj[:, i0 + 1] * f[None]
    rows = np.arange(traj.shape[0])[:, None]
    return traj[rows, i0] * (1 - f) + traj[rows, i0 + 1] * f


def _norm_maps(maps: np.ndarray, src_hw, dst_hw) -> np.ndarray:
    """dst->src maps in pixels (..., 2, 3) -> the same maps in ``grid_sample``'s normalised
    coordinates (``align_corners=False``) for a source of ``src_hw`` and an output of ``dst_hw``."""
    Hs, Ws = src_hw
    Hd, Wd = dst_hw
    M = np.zeros(maps.shape[:-2] + (3, 3))
    M[..., :2, :] = maps
    M[..., 2, 2] = 1.0
    # normalised dst -> dst pixels, then the map, then src pixels -> normalised src
    Nd_inv = np.array([[Wd / 2, 0, (Wd - 1) / 2], [0, Hd / 2, (Hd - 1) / 2], [0, 0, 1]])
    Ns = np.array([[2 / Ws, 0, 1 / Ws - 1], [0, 2 / Hs, 1 / Hs - 1], [0, 0, 1]])
    return (Ns @ M @ Nd_inv)[..., :2, :]


def _grid(maps: np.ndarray, src_hw, dst_hw, device) -> torch.Tensor:
    """Sampling grid (b, h, w, 2) for ``grid_sample(align_corners=False)`` from dst->src maps in
    pixels (b, 2, 3), a source of ``src_hw`` and an output of ``dst_hw``."""
    return _grid_multi(maps[:, None], src_hw, dst_hw, device)


def _grid_multi(maps: np.ndarray, src_hw, dst_hw, device) -> torch.Tensor:
    """Grids of J sub-frames per sample side by side: maps (b, J, 2, 3) -> (b, h, J * w, 2), made
    by broadcasting (x' = a x + b y + c) straight into that layout (no matmul, no copy)."""
    b, J = maps.shape[:2]
    h, w = dst_hw
    A = torch.from_numpy(_norm_maps(maps, src_hw, dst_hw)).float().to(device)  # (b, J, 2, 3)
    xs = (torch.arange(w, device=device, dtype=torch.float32) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=device, dtype=torch.float32) * 2 + 1) / h - 1
    X, Y = xs.view(1, 1, 1, w), ys.view(1, h, 1, 1)
    coef = [A[:, :, r, c].reshape(b, 1, J, 1) for r in range(2) for c in range(3)]
    gx = coef[0] * X + coef[1] * Y + coef[2]  # (b, h, J, w)
    gy = coef[3] * X + coef[4] * Y + coef[5]
    return torch.stack([gx, gy], -1).view(b, h, J * w, 2)


def _blob_alpha_multi(blob: torch.Tensor, xx, yy, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Blob alphas of J displacements per sample, laid out like ``_grid_multi``: (l, 1, h, J, w)."""
    l, J = dx.shape
    rep = blob.repeat_interleave(J, 0)
    a = _blob_alpha(rep, xx, yy, dx.reshape(-1), dy.reshape(-1))  # (l * J, 1, h, w)
    h, w = xx.shape
    return a.view(l, J, h, w).permute(0, 2, 1, 3)[:, None]


def _blob_alpha(blob: torch.Tensor, xx, yy, dx, dy) -> torch.Tensor:
    """Soft-edged ellipse (b, 1, h, w) in [0, 1] displaced by (dx, dy) (scalars or (b,)): a hard
    ellipse blurred by a Gaussian of the blob's sigma, approximated along the edge normal."""
    dx = torch.as_tensor(dx, device=xx.device).reshape(-1, 1, 1)
    dy = torch.as_tensor(dy, device=xx.device).reshape(-1, 1, 1)
    cx, cy = blob[:, 0, None, None] + dx, blob[:, 1, None, None] + dy
    a, bb, ang, sig = (blob[:, i, None, None] for i in (2, 3, 4, 5))
    u, v = xx[None] - cx, yy[None] - cy
    c, s = torch.cos(ang), torch.sin(ang)
    r = torch.sqrt(((u * c + v * s) / a) ** 2 + ((-u * s + v * c) / bb) ** 2)
    dist = (1.0 - r) * torch.minimum(a, bb)  # signed distance to the edge in pixels (approx.)
    return (0.5 * (1.0 + torch.erf(dist / (math.sqrt(2.0) * sig))))[:, None]


def _conv_per_sample(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Convolve each sample of (B, C, H, W) with its own (B, K, K) kernel (grouped conv, reflect
    borders); the kernel is flipped, so this is a convolution, not a correlation."""
    B, C, H, W = x.shape
    K = k.shape[-1]
    if K == 1:
        return x * k.reshape(B, 1, 1, 1)
    p = K // 2
    xp = F.pad(x.reshape(1, B * C, H, W), (p, p, p, p), mode="reflect")
    w = torch.flip(k, dims=(1, 2)).repeat_interleave(C, 0)[:, None]
    return F.conv2d(xp, w.to(x.dtype), groups=B * C).reshape(B, C, H, W)


def synthesize_batch(sharp: torch.Tensor, rng: np.random.Generator, cfg: Optional[BlurConfig] = None,
                     crop=None, generator: Optional[torch.Generator] = None, return_draw: bool = False):
    """Blur a batch of sharp images ``(B, 3, H, W)`` (uint8, or float in [0, 1]) on their device.

    ``crop``: output size (default: the whole image, borders reflected where the motion reaches
    past them); crops are centred. Returns ``(blurred, sharp_target)`` float32 ``(B, 3, h, w)``,
    and the ``Draw`` with ``return_draw``.
    """
    if not isinstance(sharp, torch.Tensor) or sharp.ndim != 4 or sharp.shape[1] != 3:
        raise InputError(f"expected a (B, 3, H, W) tensor, got {getattr(sharp, 'shape', type(sharp).__name__)}")
    B, _, H, W = sharp.shape
    ch, cw = (H, W) if crop is None else ((int(crop), int(crop)) if isinstance(crop, int) else tuple(crop))
    if ch > H or cw > W:
        raise InputError(f"crop {ch}x{cw} is larger than the images ({H}x{W}); pass a smaller crop")
    bb = BatchBlur(cfg, (ch, cw), sharp.device)
    d = bb.draw(B, rng)
    m = d.margin
    y0, x0 = (H - ch) // 2, (W - cw) // 2
    x = sharp.float() * (1.0 / 255.0) if sharp.dtype == torch.uint8 else sharp.float()
    top, left = y0 - m, x0 - m
    bottom, right = H - (y0 + ch + m), W - (x0 + cw + m)
    pad = [max(0, -left), max(0, -right), max(0, -top), max(0, -bottom)]
    x = x[:, :, max(0, top):H - max(0, bottom), max(0, left):W - max(0, right)]
    while any(pad):  # reflect in steps: one reflection cannot reach further than the image
        step = [min(p, s - 1) for p, s in zip(pad, (x.shape[3], x.shape[3], x.shape[2], x.shape[2]))]
        x = F.pad(x, step, mode="reflect")
        pad = [p - s for p, s in zip(pad, step)]
    blurred, target = bb.apply(x, d, generator)
    return (blurred, target, d) if return_draw else (blurred, target)
