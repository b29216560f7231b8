"""Datasets for training and evaluation: real blur/sharp pairs (GoPro / REDS layouts), synthetic
blur from sharp photos, synthetic video clips, a mix of both, and a fixed full-resolution
synthetic validation set written to disk.

Every item is a dict ``{"blur": (3, H, W) float32 tensor, "sharp": (3, H, W) float32 tensor,
"scene": str, "name": str}`` (clips: ``(T, 3, H, W)``), RGB in [0, 1]. Random draws depend only
on ``(seed, epoch, index)``, so DataLoader workers are reproducible and need no shared state;
decoded images are cached in memory once, in the main process, before workers fork.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Iterable, Optional

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..config.schema import BlurConfig, DataConfig
from ..errors import DatasetError
from .blur import _hw, max_margin, synthesize, synthesize_clip
from .pairs import IMAGE_EXTS, _to_uint8, find_pairs, list_images, load_pair, read_image, to_float

__all__ = [
    "IMAGE_EXTS",
    "read_image",
    "to_float",
    "list_images",
    "find_pairs",
    "PairedDataset",
    "SyntheticDataset",
    "SyntheticClipDataset",
    "PairedClipDataset",
    "MixedDataset",
    "worker_init_fn",
    "build_train_dataset",
    "stack_frames",
    "make_synthetic_val_set",
]

def _fork_safe_cv2():
    """OpenCV's thread pool does not survive fork(): a DataLoader worker forked after the parent
    ran multi-threaded OpenCV calls can hang forever. Datasets therefore switch OpenCV to
    single-threaded mode in the process that builds them (before workers fork); the data work is
    parallel across workers instead."""
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(to_float(img).transpose(2, 0, 1)))


def _scene_matches(scene: str, name: str) -> bool:
    return scene == name or scene.rsplit("/", 1)[-1] == name


def _select(pairs, include, exclude, roots):
    scenes = sorted({s for s, _, _ in pairs})
    for label, names in (("include", include or ()), ("exclude", exclude or ())):
        for n in names:
            if not any(_scene_matches(s, n) for s in scenes):
                raise DatasetError(
                    f"{label}: scene {n!r} is not in {', '.join(map(str, roots))}; scenes are: {', '.join(scenes)}"
                )
    out = [p for p in pairs if (include is None or any(_scene_matches(p[0], n) for n in include))
           and not any(_scene_matches(p[0], n) for n in (exclude or ()))]
    if not out:
        raise DatasetError(f"no pairs left in {', '.join(map(str, roots))} after include={include} exclude={list(exclude or ())}")
    return out


# --------------------------------------------------------------------------- augmentation


def _augment_code(rng: np.random.Generator, square: bool) -> int:
    """0..7: bit 0 flip left-right, bit 1 flip up-down, bit 2 transpose (only for square outputs)."""
    return int(rng.integers(0, 8 if square else 4))


def _apply_aug(img: np.ndarray, code: int) -> np.ndarray:
    # cv2.flip/transpose copy in C; numpy's reversed views are slow to make contiguous
    if code & 3:
        img = cv2.flip(np.ascontiguousarray(img), {1: 1, 2: 0, 3: -1}[code & 3])
    if code & 4:
        img = cv2.transpose(np.ascontiguousarray(img))
    return img


def _rng(seed: int, epoch: int, index: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index), salt])


class _EpochMixin:
    epoch: int = 0

    def set_epoch(self, epoch: int):
        """Mix the epoch into the random draws (call before each epoch; workers re-fork)."""
        self.epoch = int(epoch)


# --------------------------------------------------------------------------- paired


class PairedDataset(_EpochMixin, Dataset):
    """Real blur/sharp pairs from one or more roots (see ``find_pairs``).

    ``crop``: int or (h, w) random crop (same window on both; images smaller than the crop are
    reflect-padded), or None for whole frames (evaluation). ``augment``: random flips and
    transposes (rot90 / flips), the same on both. ``include``/``exclude``: scene names (the full
    name or its last component); a name that matches no scene is an error, so a typo cannot
    silently leak a held-out scene into training. ``length``: items per epoch (index modulo the
    number of pairs; default: the number of pairs). Images are decoded once and cached.

    ``stack``: odd frame counts drawn from uniformly per item (default ``(1,)``: the pair as it
    is). With k > 1 the blurred input is the average, in linear light (``gamma``), of the k
    consecutive blurred frames centred on the pair, and the target stays the centre sharp frame:
    real blur k times as long, with the scene's own object motion, parallax and brightening (the
    way REDS and GoPro make blur: sub-frames averaged in linear light). Frames are consecutive
    when their names are consecutive integers in one scene; near a scene's ends or a gap the
    largest odd k that fits is used.
    """

    def __init__(self, root, crop=None, exclude: Iterable[str] = (), include: Optional[Iterable[str]] = None,
                 augment: bool = True, length: Optional[int] = None, seed: int = 0, cache: bool = True,
                 stack: Iterable[int] = (1,), gamma: float = 2.2):
        roots = [root] if isinstance(root, (str, os.PathLike)) else list(root)
        if not roots:
            raise DatasetError("no pair folders given; set data.pair_roots")
        _fork_safe_cv2()
        pairs = [p for r in roots for p in find_pairs(r)]
        self.pairs = _select(pairs, None if include is None else list(include), list(exclude), roots)
        self.crop = None if crop in (None, 0) else _hw(crop)
        self.augment = bool(augment)
        self.length = int(length) if length else len(self.pairs)
        self.seed = int(seed)
        self.stack = _check_stack(stack)
        self.gamma = float(gamma)
        # (scene, frame number) -> pair index, for the neighbours of a stacked item
        self._frame_index: dict[tuple[str, int], int] = {}
        for j, (scene, bp, _) in enumerate(self.pairs):
            if bp.stem.isdigit():
                self._frame_index[(scene, int(bp.stem))] = j
        self.cache: Optional[list[tuple[np.ndarray, np.ndarray]]] = None
        if cache:
            self.cache = [load_pair(bp, sp) for _, bp, sp in self.pairs]

    @property
    def scenes(self) -> list[str]:
        return sorted({s for s, _, _ in self.pairs})

    def __len__(self) -> int:
        return self.length

    def load(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        if self.cache is not None:
            return self.cache[j]
        _, bp, sp = self.pairs[j]
        return load_pair(bp, sp)

    def __getitem__(self, index: int) -> dict:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        j = index % len(self.pairs)
        b, s = self.load(j)
        rng = _rng(self.seed, self.epoch, index, 1)
        blurs = [b]
        if len(self.stack) > 1 or self.stack[0] > 1:
            k = self.stack[int(_rng(self.seed, self.epoch, index, 5).integers(len(self.stack)))]
            neighbours = self.neighbours(j, k)
            if len(neighbours) > 1:
                blurs = [self.load(i)[0] for i in neighbours]
                for i, f in zip(neighbours, blurs):
                    if f.shape != b.shape:
                        raise DatasetError(
                            f"cannot stack {self.pairs[i][1]} ({f.shape[1]}x{f.shape[0]}) with {self.pairs[j][1]} "
                            f"({b.shape[1]}x{b.shape[0]}): frames of one scene must share a size for data.pair_stack; "
                            "resize the scene or set data.pair_stack: [1]")
        if self.crop is not None:  # crop first (the same window on every frame), then stack
            ch, cw = self.crop
            H, W = b.shape[:2]
            if H < ch or W < cw:
                if 2 * H < ch or 2 * W < cw:  # more than half the sample would be mirrored border
                    raise DatasetError(
                        f"data.crop {cw}x{ch} is more than twice the {W}x{H} frames of {self.pairs[j][1].parent}: "
                        f"lower data.crop to at most {2 * min(H, W) // 16 * 16}, or leave these pairs out (pair_roots)")
                pad = ((0, max(0, ch - H)), (0, max(0, cw - W)), (0, 0))
                s = np.pad(s, pad, mode="reflect")
                blurs = [np.pad(f, pad, mode="reflect") for f in blurs]
                H, W = s.shape[:2]
            y = int(rng.integers(0, H - ch + 1))
            x = int(rng.integers(0, W - cw + 1))
            s = s[y:y + ch, x:x + cw]
            blurs = [f[y:y + ch, x:x + cw] for f in blurs]
        b = blurs[0] if len(blurs) == 1 else stack_frames(blurs, self.gamma)
        if self.augment:
            code = _augment_code(rng, b.shape[0] == b.shape[1])
            b, s = _apply_aug(b, code), _apply_aug(s, code)
        scene, bp, _ = self.pairs[j]
        return {"blur": _tensor(b), "sharp": _tensor(s), "scene": scene, "name": bp.stem}

    def neighbours(self, j: int, k: int) -> list[int]:
        """Pair indices of the (at most) k consecutive frames centred on pair j: the largest odd
        count <= k whose frames all exist (``[j]`` when the frame name is not a number)."""
        scene, bp, _ = self.pairs[j]
        if not bp.stem.isdigit():
            return [j]
        n = int(bp.stem)
        r = k // 2
        while r > 0:
            idx = [self._frame_index.get((scene, n + d)) for d in range(-r, r + 1)]
            if all(i is not None for i in idx):
                return idx
            r -= 1
        return [j]


class PairedClipDataset(PairedDataset):
    """Clips of ``frames`` consecutive real blur/sharp pairs (REDS-style scenes whose frame names
    are consecutive integers): ``{"blur": (T, 3, h, w), "sharp": (T, 3, h, w)}``, the same crop
    window and augmentation on every frame, for recurrent models. Every run of ``frames``
    consecutive frames in a selected scene is one clip (``exclude`` holds scenes out, as in
    :class:`PairedDataset`); ``stack`` re-blurs every frame of a clip with the same k (its k
    neighbours averaged in linear light), as the single-frame dataset does."""

    def __init__(self, root, frames: int = 4, crop=128, exclude: Iterable[str] = (),
                 include: Optional[Iterable[str]] = None, augment: bool = True, length: Optional[int] = None,
                 seed: int = 0, cache: bool = True, stack: Iterable[int] = (1,), gamma: float = 2.2):
        super().__init__(root, crop, exclude=exclude, include=include, augment=augment, length=length or 1,
                         seed=seed, cache=cache, stack=stack, gamma=gamma)
        self.frames = int(frames)
        if self.frames < 1:
            raise DatasetError(f"clip frames must be >= 1, got {frames}")
        self.clips: list[list[int]] = []
        for j, (scene, bp, _) in enumerate(self.pairs):
            if not bp.stem.isdigit():
                continue
            idx = [self._frame_index.get((scene, int(bp.stem) + d)) for d in range(self.frames)]
            if all(i is not None for i in idx):
                self.clips.append(idx)
        if not self.clips:
            raise DatasetError(
                f"no run of {self.frames} consecutive frames (integer file names in one scene) in {self.scenes}; "
                "lower data.clip_frames or add sequence data"
            )
        self.length = int(length) if length else len(self.clips)

    def __getitem__(self, index: int) -> dict:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        clip = self.clips[index % len(self.clips)]
        rng = _rng(self.seed, self.epoch, index, 6)
        k = self.stack[int(rng.integers(len(self.stack)))]
        blurs, sharps = [], []
        for j in clip:
            nb = self.neighbours(j, k) if k > 1 else [j]
            frames = [self.load(i)[0] for i in nb]
            sharps.append(self.load(j)[1])
            blurs.append(frames)
        h0, w0 = sharps[0].shape[:2]
        for j, f in zip(clip, sharps):
            if f.shape[:2] != (h0, w0):
                raise DatasetError(f"frames of one clip must share a size: {self.pairs[j][2]} is {f.shape[1]}x{f.shape[0]}, "
                                   f"{self.pairs[clip[0]][2]} is {w0}x{h0}")
        if self.crop is not None:
            ch, cw = self.crop
            if h0 < ch or w0 < cw:
                pad = ((0, max(0, ch - h0)), (0, max(0, cw - w0)), (0, 0))
                sharps = [np.pad(f, pad, mode="reflect") for f in sharps]
                blurs = [[np.pad(f, pad, mode="reflect") for f in fs] for fs in blurs]
                h0, w0 = sharps[0].shape[:2]
            y = int(rng.integers(0, h0 - ch + 1))
            x = int(rng.integers(0, w0 - cw + 1))
            sharps = [f[y:y + ch, x:x + cw] for f in sharps]
            blurs = [[f[y:y + ch, x:x + cw] for f in fs] for fs in blurs]
        blur = [fs[0] if len(fs) == 1 else stack_frames(fs, self.gamma) for fs in blurs]
        if self.augment:
            code = _augment_code(rng, blur[0].shape[0] == blur[0].shape[1])
            blur = [_apply_aug(b, code) for b in blur]
            sharps = [_apply_aug(s, code) for s in sharps]
        scene, bp, _ = self.pairs[clip[0]]
        return {"blur": torch.stack([_tensor(b) for b in blur]), "sharp": torch.stack([_tensor(s) for s in sharps]),
                "scene": scene, "name": bp.stem}


def _check_stack(stack: Iterable[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in stack)
    if not out or any(k < 1 or k % 2 == 0 for k in out):
        raise DatasetError(f"pair stack sizes must be odd numbers >= 1 (1 = the pair as it is), got {list(stack)}")
    return out


def stack_frames(frames: list[np.ndarray], gamma: float = 2.2) -> np.ndarray:
    """Average same-sized frames in linear light (undo ``gamma``, mean, re-apply), keeping the
    dtype: uint8/uint16 are rounded back to their levels, float stays float32."""
    if not frames:
        raise DatasetError("stack_frames: no frames given")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise DatasetError(f"stack_frames: frames differ in size {sorted(shapes)}; stacked frames must match")
    lin = np.mean([np.power(to_float(f), np.float32(gamma)) for f in frames], axis=0, dtype=np.float32)
    out = np.power(np.clip(lin, 0.0, 1.0), np.float32(1.0 / gamma))
    dtype = frames[0].dtype
    if dtype == np.uint8 or dtype == np.uint16:
        top = 255.0 if dtype == np.uint8 else 65535.0
        return (out * top + 0.5).astype(dtype)
    return out.astype(np.float32)


# --------------------------------------------------------------------------- synthetic


class _SharpImages:
    """Sharp photos found under ``roots``, decoded once to uint8 RGB and kept in memory."""

    def __init__(self, roots, cache: bool = True):
        _fork_safe_cv2()
        self.paths = list_images(roots)
        self.images: Optional[list[np.ndarray]] = None
        if cache:
            self.images = [_to_uint8(read_image(p)) for p in self.paths]

    def __len__(self):
        return len(self.paths)

    def get(self, k: int) -> np.ndarray:
        if self.images is not None:
            return self.images[k]
        return _to_uint8(read_image(self.paths[k]))


def _scaled_window(img: np.ndarray, rng, out_hw: tuple[int, int], margin: int, scale, augment: bool) -> np.ndarray:
    """A random window of ``img`` rescaled by a random factor so that it covers the output crop
    plus ``margin`` on each side (as far as the image allows), randomly flipped/transposed."""
    ch, cw = out_hw
    H, W = img.shape[:2]
    s = float(rng.uniform(scale[0], scale[1])) if scale[1] > scale[0] else float(scale[0])
    s = max(s, (ch + 4) / H, (cw + 4) / W)  # the crop itself must fit: upscale small images
    code = _augment_code(rng, ch == cw) if augment else 0
    if code & 4:  # the window is transposed after cutting: cut it in the transposed shape
        ch, cw = cw, ch
    wh = min(H, int(math.ceil((ch + 2 * margin) / s)))
    ww = min(W, int(math.ceil((cw + 2 * margin) / s)))
    y = int(rng.integers(0, H - wh + 1))
    x = int(rng.integers(0, W - ww + 1))
    win = np.ascontiguousarray(img[y:y + wh, x:x + ww])
    oh, ow = max(ch, int(round(wh * s))), max(cw, int(round(ww * s)))
    win = _resize(win, ow, oh)
    return _apply_aug(win, code)


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Anti-aliased resize that stays fast for any factor: OpenCV's INTER_AREA is slow for
    non-integer factors, so downscaling goes bilinear to twice the size, then a 2x box filter."""
    H, W = img.shape[:2]
    if (w, h) == (W, H):
        return img
    if w >= W and h >= H:
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
    if 2 * w <= W or 2 * h <= H:
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.resize(img, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR), (w, h),
                      interpolation=cv2.INTER_AREA)


class SyntheticDataset(_EpochMixin, Dataset):
    """Sharp photos + realistic synthetic blur (``blur.synthesize``), generated on the fly.

    Item ``i`` depends only on ``(seed, epoch, i)``: pick a photo, rescale by a random factor in
    ``scale``, cut a window with the margin the blur needs, flip/transpose, synthesize and crop.
    ``length`` is the number of items per epoch (any number; they are all different).

    ``downscale`` = [low, high] (default [1, 1]: off): draw d from it, blur a window d times the
    crop with blur lengths (and defocus) d times as long, then shrink blurred and sharp alike to
    the crop with an area filter on the 8-bit levels, as frames are downscaled after capture
    (REDS_320x180 is REDS shrunk 4x). The blur then averages detail finer than the output pixels
    in linear light, which brightens the frame about 1.5x as much as blurring the already-shrunk
    image (a 40 px pan over 12 Kodak24 images shrunk 4x: +1.7 to +10.9 levels against +1.0 to
    +6.9). Blur lengths stay in output pixels.
    """

    def __init__(self, roots, crop=128, blur_cfg: Optional[BlurConfig] = None, scale=(0.5, 1.0), seed: int = 0,
                 length: int = 10000, augment: bool = True, cache: bool = True, downscale=(1.0, 1.0)):
        self.images = _SharpImages(roots, cache)
        self.crop = _hw(crop)
        self.blur_cfg = blur_cfg or BlurConfig()
        self.scale = (float(scale[0]), float(scale[1]))
        if not 0 < self.scale[0] <= self.scale[1]:
            raise DatasetError(f"scale must be [low, high] with 0 < low <= high, got {list(scale)}")
        self.seed = int(seed)
        self.length = int(length)
        self.augment = bool(augment)
        self.margin = max_margin(self.blur_cfg, self.crop)
        self.downscale = (float(downscale[0]), float(downscale[1]))
        if not 1.0 <= self.downscale[0] <= self.downscale[1]:
            raise DatasetError(f"downscale must be [low, high] with 1 <= low <= high, got {list(downscale)}")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        rng = _rng(self.seed, self.epoch, index, 2)
        k = int(rng.integers(len(self.images)))
        lo, hi = self.downscale
        d = float(_rng(self.seed, self.epoch, index, 6).uniform(lo, hi)) if hi > lo else lo
        if d == 1.0:
            win = _scaled_window(self.images.get(k), rng, self.crop, self.margin, self.scale, self.augment)
            blurred, sharp = synthesize(win, rng, self.blur_cfg, crop=self.crop)
        else:
            ch, cw = self.crop
            big = (int(round(ch * d)), int(round(cw * d)))
            cfg = dataclasses.replace(self.blur_cfg, length=[v * d for v in self.blur_cfg.length],
                                      layer_length=[v * d for v in self.blur_cfg.layer_length],
                                      defocus_radius=[v * d for v in self.blur_cfg.defocus_radius])
            win = _scaled_window(self.images.get(k), rng, big, max_margin(cfg, big), self.scale, self.augment)
            blurred, sharp = (_shrink_levels(x, cw, ch) for x in synthesize(win, rng, cfg, crop=big))
        return {"blur": _tensor(blurred), "sharp": _tensor(sharp), "scene": "synthetic",
                "name": f"{self.images.paths[k].stem}_{index}"}


def _shrink_levels(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Area-filter a float [0, 1] image down to w x h and round it to 8-bit levels again."""
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return np.round(out * 255.0).astype(np.float32) * np.float32(1.0 / 255.0)


class SyntheticClipDataset(_EpochMixin, Dataset):
    """Synthetic video clips (``blur.synthesize_clip``): ``{"blur": (T, 3, h, w), "sharp": (T, 3, h, w)}``,
    consecutive frames along one camera path over one sharp photo."""

    def __init__(self, roots, crop=128, blur_cfg: Optional[BlurConfig] = None, frames: int = 5,
                 scale=(0.5, 1.0), seed: int = 0, length: int = 10000, duty=(0.5, 1.0),
                 augment: bool = True, cache: bool = True):
        self.images = _SharpImages(roots, cache)
        self.crop = _hw(crop)
        self.blur_cfg = blur_cfg or BlurConfig()
        self.frames = int(frames)
        if self.frames < 1:
            raise DatasetError(f"frames must be >= 1, got {frames}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.seed = int(seed)
        self.length = int(length)
        self.duty = (float(duty[0]), float(duty[1]))
        self.augment = bool(augment)
        self.margin = max_margin(self.blur_cfg, self.crop, self.frames, self.duty[0])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        rng = _rng(self.seed, self.epoch, index, 3)
        k = int(rng.integers(len(self.images)))
        win = _scaled_window(self.images.get(k), rng, self.crop, self.margin, self.scale, self.augment)
        blurred, sharp = synthesize_clip(win, rng, self.blur_cfg, frames=self.frames, crop=self.crop, duty=self.duty)
        return {"blur": torch.stack([_tensor(b) for b in blurred]), "sharp": torch.stack([_tensor(s) for s in sharp]),
                "scene": "synthetic_clip", "name": f"{self.images.paths[k].stem}_{index}"}


class MixedDataset(_EpochMixin, Dataset):
    """Draw a share ``pair_prob`` of items from ``paired`` and the rest from ``synthetic`` (no
    sampler needed): item ``i`` flips a coin seeded by ``(seed, epoch, i)``."""

    def __init__(self, paired: Optional[Dataset], synthetic: Optional[Dataset], pair_prob: float,
                 seed: int = 0, length: Optional[int] = None):
        if not 0.0 <= pair_prob <= 1.0:
            raise DatasetError(f"pair_prob must be in [0, 1], got {pair_prob}")
        if pair_prob > 0 and paired is None:
            raise DatasetError(f"pair_prob is {pair_prob} but there is no paired dataset; set data.pair_roots")
        if pair_prob < 1 and synthetic is None:
            raise DatasetError(f"pair_prob is {pair_prob} < 1 but there is no synthetic dataset; set data.sharp_roots")
        self.paired, self.synthetic, self.pair_prob = paired, synthetic, float(pair_prob)
        self.seed = int(seed)
        self.length = int(length) if length else len(synthetic if synthetic is not None else paired)

    def set_epoch(self, epoch: int):
        super().set_epoch(epoch)
        for d in (self.paired, self.synthetic):
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        use_pair = _rng(self.seed, self.epoch, index, 4).random() < self.pair_prob
        d = self.paired if use_pair else self.synthetic
        return d[index % len(d)]


def worker_init_fn(worker_id: int):
    """DataLoader ``worker_init_fn``: one OpenCV thread per worker (no oversubscription). The data
    itself does not depend on worker seeds: every draw is keyed by (seed, epoch, index)."""
    cv2.setNumThreads(1)


def build_train_dataset(cfg: DataConfig, length: int, seed: int = 0) -> Dataset:
    """The training dataset a ``DataConfig`` describes: synthetic blur on ``sharp_roots``, real pairs
    from ``pair_roots`` (minus ``pair_exclude``), mixed with share ``pair_prob``."""
    cfg.validate()
    synthetic = paired = None
    if cfg.clip_frames > 0:  # recurrent models: synthetic clips and clips of consecutive real pairs
        if cfg.sharp_roots and cfg.pair_prob < 1.0:
            synthetic = SyntheticClipDataset(cfg.sharp_roots, cfg.crop, cfg.blur, frames=cfg.clip_frames,
                                             scale=cfg.scale, seed=seed, length=length)
        if cfg.pair_roots and cfg.pair_prob > 0.0:
            paired = PairedClipDataset(cfg.pair_roots, cfg.clip_frames, cfg.crop, exclude=cfg.pair_exclude,
                                       length=length, seed=seed + 1, stack=cfg.pair_stack, gamma=cfg.blur.gamma)
        if paired is None:
            if synthetic is None:
                raise DatasetError("data.clip_frames > 0 needs data.sharp_roots (synthetic clips) with pair_prob < 1, "
                                   "or data.pair_roots with pair_prob > 0 (consecutive real pairs)")
            return synthetic
        if synthetic is None:
            return paired
        return MixedDataset(paired, synthetic, cfg.pair_prob, seed=seed + 2, length=length)
    if cfg.sharp_roots and cfg.pair_prob < 1.0:
        synthetic = SyntheticDataset(cfg.sharp_roots, cfg.crop, cfg.blur, cfg.scale, seed=seed, length=length,
                                     downscale=cfg.downscale)
    if cfg.pair_roots and cfg.pair_prob > 0.0:
        paired = PairedDataset(cfg.pair_roots, cfg.crop, exclude=cfg.pair_exclude, length=length, seed=seed + 1,
                               stack=cfg.pair_stack, gamma=cfg.blur.gamma)
    if paired is None:
        return synthetic
    if synthetic is None:
        return paired
    return MixedDataset(paired, synthetic, cfg.pair_prob, seed=seed + 2, length=length)


# --------------------------------------------------------------------------- fixed synthetic validation set


def make_synthetic_val_set(root, out_dir, count: int = 4, size=(1280, 720), seed: int = 1234,
                           blur_cfg: Optional[BlurConfig] = None, length=(8.0, 48.0)) -> Path:
    """Write a fixed full-resolution synthetic validation set in GoPro layout and return ``out_dir``
    (``find_pairs(out_dir)`` reads it; its one scene is ``val``).

    Picks ``count`` sharp images under ``root`` (a folder or list; deterministic for ``seed``),
    resizes each to cover ``size`` = (width, height) plus the blur's margin (upscaling if needed),
    and blurs it with ``blur_cfg`` at full-resolution lengths (``length`` px, never left sharp).
    Files: ``out_dir/val/blur/NNN.png``, ``out_dir/val/sharp/NNN.png``, ``out_dir/manifest.json``
    (seed, size, sources, blur config). Idempotent: a complete set made with the same settings is
    left as it is; different settings rewrite it. ``out_dir`` must be missing, empty, or a set this
    function made (its manifest.json's ``kind`` says so): any other folder (a model folder, a real
    pair set) is refused, never written into. Sides are capped at 4096 px.
    """
    from ..runtime.manifest import atomic_write_bytes
    from .valsets import SYNTHETIC_KIND

    max_side = 4096
    out = Path(out_dir)
    W, H = int(size[0]), int(size[1])
    if W < 16 or H < 16:
        raise DatasetError(f"validation size must be at least 16x16, got {W}x{H}")
    if max(W, H) > max_side:
        raise DatasetError(f"validation size {W}x{H} is too large: at most {max_side} px per side (e.g. 1280x720)")
    if count < 1:
        raise DatasetError(f"validation count must be >= 1, got {count}")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"cannot make a synthetic validation set in {str(out)!r}: it is a file, not a folder; "
                           "pass a new folder")
    if out.is_dir() and any(out.iterdir()):
        try:
            marker = json.loads((out / "manifest.json").read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            marker = None
        if marker != SYNTHETIC_KIND:
            raise DatasetError(f"refusing to make a synthetic validation set in {str(out)!r}: the folder already "
                               "holds files and is not a synthetic set made by edge-deblur (no manifest.json with "
                               f"kind {SYNTHETIC_KIND!r}); pass a new or empty folder")

    def write_manifest(obj: dict):
        try:
            atomic_write_bytes(mpath, (json.dumps(obj, indent=2) + "\n").encode())
        except OSError as e:
            raise DatasetError(f"cannot write {str(mpath)!r} ({e}); pass a new folder that can be written") from e

    cfg = dataclasses.replace(blur_cfg or BlurConfig(), length=[float(length[0]), float(length[1])], sharp_prob=0.0)
    cfg.validate()
    paths = list_images(root)
    if count > len(paths):
        raise DatasetError(f"asked for {count} validation images but {root} holds only {len(paths)}; lower the count")
    rng = np.random.default_rng([int(seed), 0x5A1])
    chosen = [paths[i] for i in sorted(rng.choice(len(paths), size=count, replace=False))]
    manifest = {
        "format": 1,
        "kind": SYNTHETIC_KIND,
        "seed": int(seed),
        "count": int(count),
        "size": [W, H],
        "sources": [str(p) for p in chosen],
        "blur": dataclasses.asdict(cfg),
    }
    blur_dir, sharp_dir = out / "val" / "blur", out / "val" / "sharp"
    names = [f"{i:03d}.png" for i in range(count)]
    mpath = out / "manifest.json"
    if mpath.is_file():
        try:
            old = json.loads(mpath.read_text())
        except (OSError, ValueError):
            old = None
        if old == manifest and all((blur_dir / n).is_file() and (sharp_dir / n).is_file() for n in names):
            return out
    # incomplete or other settings: rebuild. Mark the folder as a synthetic set being made first,
    # so an interrupted build is still recognised (and rebuilt, never taken for complete) next time
    write_manifest({"format": 1, "kind": SYNTHETIC_KIND, "complete": False})
    try:
        blur_dir.mkdir(parents=True, exist_ok=True)
        sharp_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot make {str(blur_dir)!r} ({e}); pass a new folder that can be written") from e
    for d in (blur_dir, sharp_dir):  # drop frames of an earlier, larger set
        for p in d.glob("[0-9][0-9][0-9].png"):
            if p.name not in names:
                p.unlink()
    margin = max_margin(cfg, (H, W))
    for i, (src, name) in enumerate(zip(chosen, names)):
        img = _to_uint8(read_image(src))
        h, w = img.shape[:2]
        s = max((W + 2 * margin) / w, (H + 2 * margin) / h)
        img = _resize(img, max(W, int(round(w * s))), max(H, int(round(h * s))))
        rng_i = np.random.default_rng([int(seed), i])
        blurred, sharp = synthesize(img, rng_i, cfg, crop=(H, W))
        for d, im in ((blur_dir, blurred), (sharp_dir, sharp)):
            ok = cv2.imwrite(str(d / name), cv2.cvtColor(_to_uint8(im), cv2.COLOR_RGB2BGR))
            if not ok:
                raise DatasetError(f"cannot write {str(d / name)!r}; check that {str(out)!r} is writable")
    write_manifest(manifest)
    return out
