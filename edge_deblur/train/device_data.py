"""Training batches made on the training device (``data.synth: torch``): no DataLoader workers.

The sharp photos and real pairs are decoded once into uint8 tensors on the device (from a data
pack, ``data.pack``, or from the recipe's folders), and each batch is cut, rescaled, augmented and
blurred there by ``data.torch_blur.BatchBlur``: the blur model and the data of the OpenCV path
(``data.datasets``), but batched tensor work instead of per-image CPU work.

Per batch: a share ``data.pair_prob`` of the samples (binomial) are real pairs (random crop,
flips/transposes, ``data.pair_stack`` stacking in linear light); the rest are synthetic: a photo,
a scale from ``data.scale``, a window cut with the margin the drawn motion needs, resampled as the
OpenCV path resamples (bilinear at twice the size, then a 2x2 box; from a half-resolution copy
below 0.5x) with a random flip/transpose, then blurred. ``data.downscale`` is drawn once per batch (the CPU path draws it per image).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
from typing import Iterator, Optional

import cv2
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


def _fit(img: np.ndarray, max_side: int = 1024) -> np.ndarray:
    """Photos read from folders are shrunk (area) to at most ``max_side`` on the long side, as
    ``edge-deblur pack`` does by default, so that the canvases (one per photo, all of the
    largest photo's size) stay small."""
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return img
    r = max_side / max(h, w)
    return cv2.resize(img, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_AREA)


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
    """An endless iterator of ``{"blur", "sharp"}`` batches (B, 3, crop, crop) float32 on ``device``
    (made ahead by a background thread when ``prefetch``, the default on CUDA)."""

    def __init__(self, cfg: TrainConfig, device=None, seed: int = 0, batch_size: Optional[int] = None,
                 check_sources: bool = True, prefetch: Optional[bool] = None):
        d = cfg.data
        d.validate()
        if d.clip_frames > 0:
            raise ConfigError("data.synth: torch makes single frames; clips (data.clip_frames > 0) need data.synth: cpu")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.cfg = cfg
        self.batch = int(batch_size or cfg.train.batch_size)
        # a producer thread on GPUs; on the CPU it would only compete with training for the cores
        self.prefetch = (self.device.type == "cuda") if prefetch is None else bool(prefetch)
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
        self._canvases(sharp)
        self.pairs = [(sc, fr, _to_dev(b, self.device), _to_dev(s, self.device)) for sc, fr, b, s in pairs]
        self._index = {(sc, fr): i for i, (sc, fr, _, _) in enumerate(pairs) if fr.isdigit()}
        self.gamma = float(d.blur.gamma)
        log.info(f"device data on {self.device}: {self.n_images} sharp photos, {len(self.pairs)} pairs, "
                 f"{(self.canvas.numel() + self.half.numel()) / 2**20:.0f} MiB of uint8 canvases")

    def _canvases(self, sharp: list[np.ndarray]):
        """All photos in one uint8 tensor (N, 3, Hmax, Wmax), each mirrored beyond its own edges to
        fill its canvas (so a window reaching past the photo reads reflected content, as
        blur._take_region), and the same at half resolution (area filter) for scales below 0.5."""
        self.n_images = len(sharp)
        if not sharp:
            self.canvas = self.half = torch.zeros(0, 3, 1, 1, dtype=torch.uint8, device=self.device)
            self.sizes = self.half_sizes = np.zeros((0, 2), np.int64)
            return
        Hc = max(im.shape[0] for im in sharp)
        Wc = max(im.shape[1] for im in sharp)
        self.sizes = np.array([im.shape[:2] for im in sharp], np.int64)
        canvas = torch.empty(len(sharp), 3, Hc, Wc, dtype=torch.uint8, device=self.device)
        halves = []
        for i, im in enumerate(sharp):
            H, W = im.shape[:2]
            canvas[i] = _to_dev(np.pad(im, ((0, Hc - H), (0, Wc - W), (0, 0)), mode="symmetric"), self.device)
            halves.append(cv2.resize(im, (max(1, W // 2), max(1, H // 2)), interpolation=cv2.INTER_AREA))
        self.canvas = canvas
        self.half_sizes = np.array([h.shape[:2] for h in halves], np.int64)
        Hh, Wh = self.half_sizes.max(0)
        self.half = torch.stack([_to_dev(np.pad(h, ((0, Hh - h.shape[0]), (0, Wh - h.shape[1]), (0, 0)), mode="symmetric"),
                                         self.device) for h in halves])

    def _load(self, d, check_sources: bool):
        if d.pack:
            from ..data.pack import open_pack

            pc = open_pack(d.pack, d.sharp_roots, d.pair_roots, d.pair_exclude, check_sources=check_sources)
            return pc.sharp, pc.pairs
        from ..data.datasets import _select
        from ..data.pairs import _to_uint8, find_pairs, list_images, load_pair, read_image

        sharp = [_fit(_to_uint8(read_image(p))) for p in list_images(d.sharp_roots)] if d.sharp_roots else []
        pairs = []
        if d.pair_roots and d.pair_prob > 0:
            found = [p for r in d.pair_roots for p in find_pairs(r)]
            for scene, bp, sp in _select(found, None, list(d.pair_exclude), d.pair_roots):
                b, s = load_pair(bp, sp)
                pairs.append((scene, bp.stem, _to_uint8(b), _to_uint8(s)))
        return sharp, pairs

    def __iter__(self) -> Iterator[dict]:
        if not self.prefetch:
            while True:
                yield self.next()
        yield from self._prefetched()

    def _prefetched(self, depth: int = 3) -> Iterator[dict]:
        """Batches made by a background thread (on its own CUDA stream on a GPU), so the host-side
        work of the next batches (paths, index maths, kernel launches) overlaps the training step.
        The batches are the same, in the same order, as ``next()`` gives."""
        cuda = self.device.type == "cuda"
        q: queue.Queue = queue.Queue(maxsize=depth)
        stop = threading.Event()
        stream = torch.cuda.Stream(self.device) if cuda else None

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work():
            try:
                with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                    while not stop.is_set():
                        b = self.next()
                        ev = None
                        if cuda:
                            ev = torch.cuda.Event()
                            ev.record(stream)
                        if not put((b, ev)):
                            return
            except BaseException as e:  # handed to the consumer, raised there
                put(e)

        th = threading.Thread(target=work, name="device-batches", daemon=True)
        th.start()
        try:
            while True:
                item = q.get()
                if isinstance(item, BaseException):
                    raise item
                b, ev = item
                if ev is not None:
                    cur = torch.cuda.current_stream(self.device)
                    cur.wait_event(ev)
                    for t in b.values():
                        t.record_stream(cur)
                yield b
        finally:
            stop.set()

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
                                      layer_length=[v * dsc for v in cfg.layer_length],
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
        the crop itself to fit, as data.datasets), at a random place (reflected where it reaches
        past the photo), with a random flip/transpose. Resampled as ``data.datasets._resize``
        does, so both paths see the same sharpness: a reduction is bilinear onto a grid of twice
        the size, then a 2x2 box filter (from the half-resolution copy below 0.5x, where the CPU
        path's single INTER_AREA step keeps more of a fine texture's aliasing than this does); an
        enlargement is bicubic. Float [0, 1] out."""
        rng = self.rng
        ks = rng.integers(0, self.n_images, n)
        s = rng.uniform(self.scale[0], self.scale[1], n) if self.scale[1] > self.scale[0] else np.full(n, self.scale[0])
        codes = rng.integers(0, 8, n)
        fx, fy = rng.random(n), rng.random(n)
        H, W = self.sizes[ks, 0].astype(np.float64), self.sizes[ks, 1].astype(np.float64)
        s = np.maximum(s, np.maximum((crop + 4) / H, (crop + 4) / W))
        hh, hw = self.half_sizes[ks, 0].astype(np.float64), self.half_sizes[ks, 1].astype(np.float64)
        use_half = (s < 0.5) & (np.minimum(hh, hw) >= crop + 8)
        s_eff = np.where(use_half, s * hh / H, s)
        Hs, Ws = np.where(use_half, hh, H), np.where(use_half, hw, W)
        need = R / s_eff  # the window's side in source pixels
        y0 = np.where(need <= Hs, fy * (Hs - need), 0.5 * (Hs - need))  # centred when the photo is smaller
        x0 = np.where(need <= Ws, fx * (Ws - need), 0.5 * (Ws - need))
        reduce = s_eff < 1.0  # bilinear at 2x the output size, then a 2x2 box (datasets._resize)
        f = np.where(reduce, 2.0, 1.0)  # grid pixels per output pixel
        # grid pixel (u, v) -> source pixel: x = x0 + (u + 0.5) / (f s) - 0.5, after the flip/transpose
        maps = np.zeros((n, 2, 3))
        for i in range(n):
            g = f[i] * s_eff[i]
            A = np.array([[1 / g, 0, x0[i] + 0.5 / g - 0.5],
                          [0, 1 / g, y0[i] + 0.5 / g - 0.5], [0, 0, 1]]) @ _aug_matrix(int(codes[i]), int(f[i]) * R)
            maps[i] = A[:2]
        out = torch.empty(n, 3, R, R, device=self.device)
        for half, canvas in ((False, self.canvas), (True, self.half)):
            for red in (True, False):
                sel = np.nonzero((use_half == half) & (reduce == red))[0]
                if not len(sel):
                    continue
                idx = torch.as_tensor(ks[sel], device=self.device)
                src = canvas.index_select(0, idx).float().mul_(1.0 / 255.0)
                G = 2 * R if red else R
                grid = _grid(maps[sel], tuple(canvas.shape[2:]), (G, G), self.device)
                # past the canvas, reflection continues the mirrored photo
                r = F.grid_sample(src, grid, mode="bilinear" if red else "bicubic", padding_mode="reflection",
                                  align_corners=False)
                out[torch.as_tensor(sel, device=self.device)] = F.avg_pool2d(r, 2) if red else r
        # 8-bit levels, as the OpenCV path's targets (uint8 windows resized in uint8)
        return out.clamp_(0, 1).mul_(255.0).round_().mul_(1.0 / 255.0)

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
