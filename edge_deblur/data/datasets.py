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
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..config.schema import BlurConfig, DataConfig
from ..errors import DatasetError
from .blur import _hw, max_margin, synthesize, synthesize_clip

__all__ = [
    "IMAGE_EXTS",
    "read_image",
    "to_float",
    "list_images",
    "find_pairs",
    "PairedDataset",
    "SyntheticDataset",
    "SyntheticClipDataset",
    "MixedDataset",
    "worker_init_fn",
    "build_train_dataset",
    "make_synthetic_val_set",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_LAYOUT_HELP = (
    "expected GoPro layout <root>/<scene>/blur/<frame> + <root>/<scene>/sharp/<frame> "
    "or REDS layout <root>/<split>_blur/<scene>/<frame> + <root>/<split>_sharp/<scene>/<frame>"
)


# --------------------------------------------------------------------------- images


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to H x W x 3 RGB (uint8, or uint16 for 16-bit files); grayscale is
    replicated, alpha dropped. Raises DatasetError naming the file when it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"image file not found: {str(p)!r}; check the dataset folder")
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DatasetError(
            f"cannot read image {str(p)!r} (corrupt, truncated or not an image); "
            "re-export it or delete it from the dataset folder"
        )
    if img.dtype not in (np.uint8, np.uint16):
        if img.dtype in (np.float32, np.float64):
            img = (np.clip(img, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
        else:
            raise DatasetError(f"image {str(p)!r} has unsupported sample type {img.dtype}; save it as 8- or 16-bit")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 1:
        img = cv2.cvtColor(img[..., 0], cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise DatasetError(f"image {str(p)!r} has {img.shape[2]} channels; expected 1, 3 or 4")
    return np.ascontiguousarray(img)


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8/uint16 -> float32 in [0, 1]; float passes through as float32."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) * np.float32(1.0 / 255.0)
    if img.dtype == np.uint16:
        return img.astype(np.float32) * np.float32(1.0 / 65535.0)
    return np.asarray(img, np.float32)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def list_images(roots: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """All image files under the given folders (recursive, sorted). A single file is allowed."""
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    if not roots:
        raise DatasetError("no image folders given; set data.sharp_roots to folders of sharp images")
    out: list[Path] = []
    for r in roots:
        p = Path(r)
        if not p.exists():
            raise DatasetError(f"image folder {str(p)!r} does not exist; check data.sharp_roots")
        if p.is_file():
            if not _is_image(p):
                raise DatasetError(f"{str(p)!r} is not an image file ({', '.join(IMAGE_EXTS)})")
            out.append(p)
            continue
        found = sorted(q for q in p.rglob("*") if _is_image(q))
        if not found:
            raise DatasetError(
                f"image folder {str(p)!r} holds no images ({', '.join(IMAGE_EXTS)}); "
                "point data.sharp_roots at a folder of sharp photos"
            )
        out.extend(found)
    return out


def _fork_safe_cv2():
    """OpenCV's thread pool does not survive fork(): a DataLoader worker forked after the parent
    ran multi-threaded OpenCV calls can hang forever. Datasets therefore switch OpenCV to
    single-threaded mode in the process that builds them (before workers fork); the data work is
    parallel across workers instead."""
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(to_float(img).transpose(2, 0, 1)))


# --------------------------------------------------------------------------- pairing


def _images_in(d: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(d.iterdir()) if _is_image(p)}


def _pair_dir(scene: str, blur_dir: Path, sharp_dir: Path) -> list[tuple[str, Path, Path]]:
    blur = _images_in(blur_dir)
    sharp = _images_in(sharp_dir)
    if not blur and not sharp:
        raise DatasetError(f"scene {scene!r}: {str(blur_dir)!r} and {str(sharp_dir)!r} hold no images; "
                           "add frames or remove the empty scene folder")
    if not blur:
        raise DatasetError(f"scene {scene!r}: blur folder {str(blur_dir)!r} is empty but {str(sharp_dir)!r} "
                           f"holds {len(sharp)} frames; add the blurred frames or remove the scene")
    if not sharp:
        raise DatasetError(f"scene {scene!r}: sharp folder {str(sharp_dir)!r} is empty but {str(blur_dir)!r} "
                           f"holds {len(blur)} frames; add the sharp frames or remove the scene")
    sharp_by_stem = {Path(n).stem: p for n, p in sharp.items()}
    blur_by_stem = {Path(n).stem: p for n, p in blur.items()}
    pairs, missing = [], []
    for name, bp in blur.items():
        sp = sharp.get(name) or sharp_by_stem.get(Path(name).stem)
        if sp is None:
            missing.append(f"{str(bp)!r} has no sharp partner {str(sharp_dir / name)!r}")
        else:
            pairs.append((scene, bp, sp))
    for name, sp in sharp.items():
        if name not in blur and Path(name).stem not in blur_by_stem:
            missing.append(f"{str(sp)!r} has no blurred partner {str(blur_dir / name)!r}")
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DatasetError(
            "unpaired frames: " + "; ".join(missing[:3]) + more
            + ". Every frame needs the same file name in blur/ and sharp/: add the missing partner or remove the frame"
        )
    return pairs


def find_pairs(root: str | os.PathLike, check: bool = False) -> list[tuple[str, Path, Path]]:
    """All (scene, blur_path, sharp_path) under ``root``, sorted by scene and frame.

    Layouts (mixed freely):
    * GoPro: ``<scene>/blur/<frame>`` <-> ``<scene>/sharp/<frame>`` at any depth up to 3 below
      ``root`` (e.g. ``train/GOPR0372_07_00/blur``; ``blur_gamma`` is ignored); ``root`` may
      itself be a scene. The scene name is the scene folder's path relative to ``root``.
    * REDS: ``<split>_blur/<scene>/<frame>`` <-> ``<split>_sharp/<scene>/<frame>``; the scene
      name is ``<split>_<scene>`` (e.g. ``test_000``).
    Frames pair by file name (or by stem when the extensions differ). ``check=True`` also decodes
    every pair and checks the sizes match (``PairedDataset`` always does).
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder {str(root)!r} does not exist; check the path ({_LAYOUT_HELP})")
    if not root.is_dir():
        raise DatasetError(f"dataset path {str(root)!r} is not a folder ({_LAYOUT_HELP})")
    pairs: list[tuple[str, Path, Path]] = []

    def rel(d: Path) -> str:
        r = d.relative_to(root).as_posix()
        return root.resolve().name if r == "." else r

    def walk(d: Path, depth: int):
        subs = {p.name: p for p in sorted(d.iterdir()) if p.is_dir() and not p.name.startswith(".")}
        if "blur" in subs or "sharp" in subs:
            if "sharp" not in subs:
                raise DatasetError(f"{str(subs['blur'])!r} has no partner folder {str(d / 'sharp')!r}; "
                                   f"add it ({_LAYOUT_HELP})")
            if "blur" not in subs:
                raise DatasetError(f"{str(subs['sharp'])!r} has no partner folder {str(d / 'blur')!r}; "
                                   f"add it ({_LAYOUT_HELP})")
            pairs.extend(_pair_dir(rel(d), subs["blur"], subs["sharp"]))
            return
        for name, sub in subs.items():
            if name.endswith("_blur"):
                split = name[: -len("_blur")]
                partner = d / f"{split}_sharp"
                if not partner.is_dir():
                    raise DatasetError(f"{str(sub)!r} has no partner folder {str(partner)!r}; add it ({_LAYOUT_HELP})")
                prefix = "" if d == root else rel(d) + "/"
                scenes = sorted(p for p in sub.iterdir() if p.is_dir() and not p.name.startswith("."))
                if not scenes:  # frames directly in <split>_blur/
                    pairs.extend(_pair_dir(prefix + split, sub, partner))
                for sc in scenes:
                    sp = partner / sc.name
                    if not sp.is_dir():
                        raise DatasetError(f"scene folder {str(sc)!r} has no partner {str(sp)!r}; add it or remove the scene")
                    pairs.extend(_pair_dir(f"{prefix}{split}_{sc.name}", sc, sp))
                for sc in sorted(p for p in partner.iterdir() if p.is_dir() and not p.name.startswith(".")):
                    if not (sub / sc.name).is_dir():
                        raise DatasetError(f"scene folder {str(sc)!r} has no partner {str(sub / sc.name)!r}; add it or remove the scene")
            elif name.endswith("_sharp"):
                if not (d / (name[: -len("_sharp")] + "_blur")).is_dir():
                    raise DatasetError(f"{str(sub)!r} has no partner folder "
                                       f"{str(d / (name[:-len('_sharp')] + '_blur'))!r}; add it ({_LAYOUT_HELP})")
            elif depth < 3:
                walk(sub, depth + 1)

    walk(root, 0)
    if not pairs:
        raise DatasetError(f"no blur/sharp pairs found under {str(root)!r}; {_LAYOUT_HELP}")
    pairs.sort(key=lambda t: (t[0], t[1].name))
    if check:
        for _, bp, sp in pairs:
            _load_pair(bp, sp)
    return pairs


def _load_pair(bp: Path, sp: Path) -> tuple[np.ndarray, np.ndarray]:
    b, s = read_image(bp), read_image(sp)
    if b.shape != s.shape:
        raise DatasetError(
            f"size mismatch: {str(bp)!r} is {b.shape[1]}x{b.shape[0]} but its partner {str(sp)!r} is "
            f"{s.shape[1]}x{s.shape[0]}; blurred and sharp frames must have the same size (re-export one of them)"
        )
    if b.dtype != s.dtype:
        b, s = _to_uint8(b), _to_uint8(s)
    return b, s


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
    """

    def __init__(self, root, crop=None, exclude: Iterable[str] = (), include: Optional[Iterable[str]] = None,
                 augment: bool = True, length: Optional[int] = None, seed: int = 0, cache: bool = True):
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
        self.cache: Optional[list[tuple[np.ndarray, np.ndarray]]] = None
        if cache:
            self.cache = [_load_pair(bp, sp) for _, bp, sp in self.pairs]

    @property
    def scenes(self) -> list[str]:
        return sorted({s for s, _, _ in self.pairs})

    def __len__(self) -> int:
        return self.length

    def load(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        if self.cache is not None:
            return self.cache[j]
        _, bp, sp = self.pairs[j]
        return _load_pair(bp, sp)

    def __getitem__(self, index: int) -> dict:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        j = index % len(self.pairs)
        b, s = self.load(j)
        rng = _rng(self.seed, self.epoch, index, 1)
        if self.crop is not None:
            ch, cw = self.crop
            H, W = b.shape[:2]
            if H < ch or W < cw:
                pad = ((0, max(0, ch - H)), (0, max(0, cw - W)), (0, 0))
                b, s = np.pad(b, pad, mode="reflect"), np.pad(s, pad, mode="reflect")
                H, W = b.shape[:2]
            y = int(rng.integers(0, H - ch + 1))
            x = int(rng.integers(0, W - cw + 1))
            b, s = b[y:y + ch, x:x + cw], s[y:y + ch, x:x + cw]
        if self.augment:
            code = _augment_code(rng, b.shape[0] == b.shape[1])
            b, s = _apply_aug(b, code), _apply_aug(s, code)
        scene, bp, _ = self.pairs[j]
        return {"blur": _tensor(b), "sharp": _tensor(s), "scene": scene, "name": bp.stem}


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
    """

    def __init__(self, roots, crop=128, blur_cfg: Optional[BlurConfig] = None, scale=(0.5, 1.0), seed: int = 0,
                 length: int = 10000, augment: bool = True, cache: bool = True):
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

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        rng = _rng(self.seed, self.epoch, index, 2)
        k = int(rng.integers(len(self.images)))
        win = _scaled_window(self.images.get(k), rng, self.crop, self.margin, self.scale, self.augment)
        blurred, sharp = synthesize(win, rng, self.blur_cfg, crop=self.crop)
        return {"blur": _tensor(blurred), "sharp": _tensor(sharp), "scene": "synthetic",
                "name": f"{self.images.paths[k].stem}_{index}"}


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
    if cfg.sharp_roots and cfg.pair_prob < 1.0:
        synthetic = SyntheticDataset(cfg.sharp_roots, cfg.crop, cfg.blur, cfg.scale, seed=seed, length=length)
    if cfg.pair_roots and cfg.pair_prob > 0.0:
        paired = PairedDataset(cfg.pair_roots, cfg.crop, exclude=cfg.pair_exclude, length=length, seed=seed + 1)
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
    left as it is; different settings rewrite it.
    """
    out = Path(out_dir)
    W, H = int(size[0]), int(size[1])
    if W < 16 or H < 16:
        raise DatasetError(f"validation size must be at least 16x16, got {W}x{H}")
    if count < 1:
        raise DatasetError(f"validation count must be >= 1, got {count}")
    cfg = dataclasses.replace(blur_cfg or BlurConfig(), length=[float(length[0]), float(length[1])], sharp_prob=0.0)
    cfg.validate()
    paths = list_images(root)
    if count > len(paths):
        raise DatasetError(f"asked for {count} validation images but {root} holds only {len(paths)}; lower the count")
    rng = np.random.default_rng([int(seed), 0x5A1])
    chosen = [paths[i] for i in sorted(rng.choice(len(paths), size=count, replace=False))]
    manifest = {
        "format": 1,
        "kind": "edge_deblur synthetic validation set",
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
        mpath.unlink()  # incomplete or other settings: rebuild
    blur_dir.mkdir(parents=True, exist_ok=True)
    sharp_dir.mkdir(parents=True, exist_ok=True)
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
    mpath.write_text(json.dumps(manifest, indent=2) + "\n")
    return out
