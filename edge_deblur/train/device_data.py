"""Training batches made on the training device (``data.synth: torch``): no DataLoader workers.

The sharp photos and real pairs are decoded once into uint8 tensors on the device (from a data
pack, ``data.pack``, or from the recipe's folders), and each batch is cut, rescaled, augmented and
blurred there by ``data.torch_blur.BatchBlur``: the blur model and the data of the OpenCV path
(``data.datasets``), but batched tensor work instead of per-image CPU work.

Per batch: a share ``data.pair_prob`` of the samples (binomial) are real pairs (random crop,
flips/transposes, ``data.pair_stack`` stacking in linear light); the rest are synthetic: a photo,
a scale from ``data.scale``, a window cut with the margin the drawn motion needs, resampled
(bicubic, from a half-resolution copy below 0.75x so nothing aliases) with a random flip/transpose,
then blurred. ``data.downscale`` is drawn once per batch (the CPU path draws it per image).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..data.torch_blur import BatchBlur, _grid
from ..errors import ConfigError, DatasetError

log = logging.getLogger("edge_deblur.train")

__all__ = ["DeviceBatches"]


def _to_dev(img: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).to(device)


def _half(t: torch.Tensor) -> torch.Tensor:
    """2x2 area downscale of a (3, H, W) uint8 tensor."""
    return torch.round(F.avg_pool2d(t[None].float(), 2)[0]).to(torch.uint8)


def _reflect_pad(x: torch.Tensor, pads) -> torch.Tensor:
    """Reflect-pad a (C, H, W) float tensor by (left, right, top, bottom), further than the image
    is wide if need be (reflects repeatedly)."""
    pads = list(pads)
    x = x[None]
    while any(pads):
        h, w = x.shape[-2:]
        step = [min(pads[0], w - 1), min(pads[1], w - 1), min(pads[2], h - 1), min(pads[3], h - 1)]
        if not any(step):  # a 1-pixel image: repeat it
            return F.pad(x, pads, mode="replicate")[0]
        x = F.pad(x, step, mode="reflect")
        pads = [p - s for p, s in zip(pads, step)]
    return x[0]


def _aug(x: torch.Tensor, code: int) -> torch.Tensor:
    """bit 0: flip left-right, bit 1: flip up-down, bit 2: transpose (as data.datasets)."""
    if code & 1:
        x = torch.flip(x, dims=(-1,))
    if code & 2:
        x = torch.flip(x, dims=(-2,))
    if code & 4:
        x = x.transpose(-1, -2)
    return x


class DeviceBatches:
    """An endless iterator of ``{"blur", "sharp"}`` batches (B, 3, crop, crop) float32 on ``device``."""

    def __init__(self, cfg: TrainConfig, device=None, seed: int = 0, batch_size: Optional[int] = None,
                 check_sources: bool = True):
        d = cfg.data
        d.validate()
        if d.clip_frames > 0:
            raise ConfigError("data.synth: torch makes single frames; clips (data.clip_frames > 0) need data.synth: cpu")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.cfg = cfg
        self.batch = int(batch_size or cfg.train.batch_size)
        self.crop = int(d.crop)
        self.scale = (float(d.scale[0]), float(d.scale[1]))
        self.downscale = (float(d.downscale[0]), float(d.downscale[1]))
        self.pair_prob = float(d.pair_prob) if d.pair_roots else 0.0
        self.stack = tuple(int(k) for k in d.pair_stack)
        self.rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x7B1])
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(seed) * 7919 + 17)
        sharp, pairs = self._load(d, check_sources)
        if self.pair_prob < 1.0 and not sharp:
            raise DatasetError("data.synth: torch needs sharp photos (data.sharp_roots) unless data.pair_prob is 1")
        if self.pair_prob > 0 and not pairs:
            raise DatasetError(f"data.pair_prob is {self.pair_prob} but no training pairs were found in {d.pair_roots}")
        self.images = [_to_dev(im, self.device) for im in sharp]
        self.halves = [_half(t) if min(t.shape[1:]) >= 2 * (self.crop + 8) else None for t in self.images]
        self.pairs = [(sc, fr, _to_dev(b, self.device), _to_dev(s, self.device)) for sc, fr, b, s in pairs]
        self._index = {(sc, fr): i for i, (sc, fr, _, _) in enumerate(pairs) if fr.isdigit()}
        self.gamma = float(d.blur.gamma)
        log.info(f"device data on {self.device}: {len(self.images)} sharp photos, {len(self.pairs)} pairs, "
                 f"{sum(t.numel() for t in self.images) / 2**20:.0f} MiB of uint8 pixels")

    def _load(self, d, check_sources: bool):
        if d.pack:
            from ..data.pack import open_pack

            pc = open_pack(d.pack, d.sharp_roots, d.pair_roots, d.pair_exclude, check_sources=check_sources)
            return pc.sharp, pc.pairs
        from ..data.datasets import _select
        from ..data.pairs import _to_uint8, find_pairs, list_images, load_pair, read_image

        sharp = [_to_uint8(read_image(p)) for p in list_images(d.sharp_roots)] if d.sharp_roots else []
        pairs = []
        if d.pair_roots and d.pair_prob > 0:
            found = [p for r in d.pair_roots for p in find_pairs(r)]
            for scene, bp, sp in _select(found, None, list(d.pair_exclude), d.pair_roots):
                b, s = load_pair(bp, sp)
                pairs.append((scene, bp.stem, _to_uint8(b), _to_uint8(s)))
        return sharp, pairs

    def __iter__(self) -> Iterator[dict]:
        while True:
            yield self.next()

    def next(self) -> dict:
        B = self.batch
        n_pair = int(self.rng.binomial(B, self.pair_prob)) if self.pair_prob > 0 else 0
        parts = []
        if B - n_pair > 0:
            parts.append(self._synthetic(B - n_pair))
        if n_pair > 0:
            parts.append(self._real(n_pair))
        blur = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        sharp = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        return {"blur": blur, "sharp": sharp}

    # ---- synthetic

    def _synthetic(self, n: int):
        lo, hi = self.downscale
        dsc = float(self.rng.uniform(lo, hi)) if hi > lo else lo
        cfg = self.cfg.data.blur
        big = self.crop
        if dsc != 1.0:
            big = int(round(self.crop * dsc))
            cfg = dataclasses.replace(cfg, length=[v * dsc for v in cfg.length],
                                      defocus_radius=[v * dsc for v in cfg.defocus_radius])
        bb = BatchBlur(cfg, big, self.device)
        draw = bb.draw(n, self.rng)
        R = draw.region[0]
        regions = self._regions(n, R, big)
        blurred, sharp = bb.apply(regions, draw, self.gen)
        if big != self.crop:  # shrink both with an area filter onto 8-bit levels (as SyntheticDataset)
            blurred = torch.round(F.interpolate(blurred, size=(self.crop, self.crop), mode="area") * 255) / 255
            sharp = torch.round(F.interpolate(sharp, size=(self.crop, self.crop), mode="area") * 255) / 255
        return blurred, sharp

    def _regions(self, n: int, R: int, crop: int) -> torch.Tensor:
        """n windows of R x R output pixels: a random photo at a random scale (at least enough for
        the crop itself to fit, as data.datasets), cut with reflection where the image ends,
        resampled bicubic, flipped/transposed at random. uint8 in, float [0, 1] out."""
        rng = self.rng
        ks = rng.integers(0, len(self.images), n)
        s_draw = rng.uniform(self.scale[0], self.scale[1], n) if self.scale[1] > self.scale[0] else np.full(n, self.scale[0])
        codes = rng.integers(0, 8, n)
        fx, fy = rng.random(n), rng.random(n)
        wins, maps, sizes = [], [], []
        for i in range(n):
            img = self.images[ks[i]]
            H, W = img.shape[1:]
            s = max(float(s_draw[i]), (crop + 4) / H, (crop + 4) / W)
            src = img
            if s < 0.75 and self.halves[ks[i]] is not None:
                src = self.halves[ks[i]]
                s = s * src.shape[1] / H
            Hs, Ws = src.shape[1:]
            need = int(math.ceil(R / s)) + 4  # window side in source pixels (bicubic support)
            wh, ww = min(Hs, need), min(Ws, need)
            y0 = int(fy[i] * (Hs - wh + 1))
            x0 = int(fx[i] * (Ws - ww + 1))
            win = src[:, y0:y0 + wh, x0:x0 + ww]
            if wh < need or ww < need:  # the image ends: reflect (as blur._take_region)
                ph, pw = need - wh, need - ww
                win = _reflect_pad(win.float(), (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)).to(torch.uint8)
            wins.append(win)
            sizes.append(win.shape[1:])
            # region pixel (u, v) -> window pixel: centre to centre, scaled by 1/s, after the flip/transpose
            c = (need - 1) / 2.0
            A = np.array([[1 / s, 0, c - (R - 1) / 2.0 / s], [0, 1 / s, c - (R - 1) / 2.0 / s], [0, 0, 1]])
            A = A @ _aug_matrix(int(codes[i]), R)
            maps.append(A[:2])
        side = max(max(h, w) for h, w in sizes)
        buf = torch.zeros(n, 3, side, side, dtype=torch.uint8, device=self.device)
        for i, w in enumerate(wins):
            buf[i, :, :w.shape[1], :w.shape[2]] = w
        out = torch.empty(n, 3, R, R, device=self.device)
        # one grid per sample: the windows share the buffer's size, each in its top-left corner
        grid = _grid(np.stack(maps), (side, side), (R, R), self.device)
        out = F.grid_sample(buf.float() * (1.0 / 255.0), grid, mode="bicubic", padding_mode="border", align_corners=False)
        return out.clamp_(0, 1)

    # ---- real pairs

    def _real(self, n: int):
        rng = self.rng
        c = self.crop
        bl, sh = [], []
        for _ in range(n):
            j = int(rng.integers(len(self.pairs)))
            scene, frame, b, s = self.pairs[j]
            k = self.stack[int(rng.integers(len(self.stack)))]
            frames = [b]
            if k > 1:
                idx = self._neighbours(j, k)
                frames = [self.pairs[i][2] for i in idx]
                if any(f.shape != b.shape for f in frames):
                    raise DatasetError(f"cannot stack frames of scene {scene!r} that differ in size; "
                                       "resize the scene or set data.pair_stack: [1]")
            H, W = b.shape[1:]
            y = int(rng.integers(0, max(1, H - c + 1)))
            x = int(rng.integers(0, max(1, W - c + 1)))
            code = int(rng.integers(0, 8))
            fb = [f[:, y:y + c, x:x + c].float() for f in frames]
            fs = s[:, y:y + c, x:x + c].float()
            if H < c or W < c:
                pads = (0, max(0, c - W), 0, max(0, c - H))
                fb = [_reflect_pad(f, pads) for f in fb]
                fs = _reflect_pad(fs, pads)
            if len(fb) > 1:  # real blur k frames long: average in linear light, back to 8-bit levels
                lin = torch.stack([(f / 255.0).pow(self.gamma) for f in fb]).mean(0)
                blur = torch.round(lin.clamp(0, 1).pow(1.0 / self.gamma) * 255.0)
            else:
                blur = fb[0]
            bl.append(_aug(blur, code))
            sh.append(_aug(fs, code))
        return torch.stack(bl) / 255.0, torch.stack(sh) / 255.0

    def _neighbours(self, j: int, k: int) -> list[int]:
        scene, frame = self.pairs[j][0], self.pairs[j][1]
        if not frame.isdigit():
            return [j]
        f, width = int(frame), len(frame)
        r = k // 2
        while r > 0:
            idx = [self._index.get((scene, str(f + o).zfill(width))) for o in range(-r, r + 1)]
            if all(i is not None for i in idx):
                return idx
            r -= 1
        return [j]


def _aug_matrix(code: int, R: int) -> np.ndarray:
    """Region-pixel map of a flip/transpose (bit 0 flip x, bit 1 flip y, bit 2 transpose); the
    window is read through it, so the region shows the flipped/transposed photo."""
    M = np.eye(3)
    if code & 4:
        M = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], np.float64) @ M
    if code & 1:
        M = np.array([[-1, 0, R - 1], [0, 1, 0], [0, 0, 1]], np.float64) @ M
    if code & 2:
        M = np.array([[1, 0, 0], [0, -1, R - 1], [0, 0, 1]], np.float64) @ M
    return M
