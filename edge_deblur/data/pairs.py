"""Blur/sharp pair discovery (GoPro and REDS layouts) and image reading, with clear errors.
numpy + OpenCV only (no torch): evaluation of ONNX/TensorRT models uses it too."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from ..errors import DatasetError
from ..io.uri import natural_key

__all__ = ["IMAGE_EXTS", "read_image", "to_float", "list_images", "find_pairs", "load_pair"]

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


# --------------------------------------------------------------------------- pairing


def _images_in(d: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(d.iterdir()) if _is_image(p)}


def _unpaired_error(missing: list) -> DatasetError:
    more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
    return DatasetError(
        f"{len(missing)} unpaired frame{'s' * (len(missing) != 1)}: " + "; ".join(missing[:3]) + more
        + ". Every frame needs the same file name in blur/ and sharp/: add the missing partner or remove the frame"
    )


def _pair_dir(scene: str, blur_dir: Path, sharp_dir: Path, unpaired: Optional[list] = None) -> list[tuple[str, Path, Path]]:
    """The pairs of one scene folder; unpaired frames raise, or go into ``unpaired`` when given (so
    that a whole dataset's are reported at once)."""
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
        if unpaired is None:
            raise _unpaired_error(missing)
        unpaired.extend(missing)
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
    unpaired: list[str] = []  # every scene's, reported together

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
            pairs.extend(_pair_dir(rel(d), subs["blur"], subs["sharp"], unpaired))
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
                    pairs.extend(_pair_dir(prefix + split, sub, partner, unpaired))
                for sc in scenes:
                    sp = partner / sc.name
                    if not sp.is_dir():
                        raise DatasetError(f"scene folder {str(sc)!r} has no partner {str(sp)!r}; add it or remove the scene")
                    pairs.extend(_pair_dir(f"{prefix}{split}_{sc.name}", sc, sp, unpaired))
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
    if unpaired:
        raise _unpaired_error(unpaired)
    if not pairs:
        raise DatasetError(f"no blur/sharp pairs found under {str(root)!r}; {_LAYOUT_HELP}")
    pairs.sort(key=lambda t: (t[0], natural_key(t[1].name)))  # frame 8 before frame 10, padded or not
    if check:
        for _, bp, sp in pairs:
            load_pair(bp, sp)
    return pairs


def load_pair(bp: Path, sp: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode a pair and check that both frames have the same size (DatasetError otherwise)."""
    b, s = read_image(bp), read_image(sp)
    if b.shape != s.shape:
        raise DatasetError(
            f"size mismatch: {str(bp)!r} is {b.shape[1]}x{b.shape[0]} but its partner {str(sp)!r} is "
            f"{s.shape[1]}x{s.shape[0]}; blurred and sharp frames must have the same size (re-export one of them)"
        )
    if b.dtype != s.dtype:
        b, s = _to_uint8(b), _to_uint8(s)
    return b, s


def select_scenes(pairs, scenes, root=""):
    """Keep the pairs of ``scenes`` (all when empty); DatasetError naming unknown scenes."""
    if not scenes:
        return list(pairs)
    known = sorted({p[0] for p in pairs})
    missing = [s for s in scenes if s not in known]
    if missing:
        raise DatasetError(f"scenes {missing} not in {str(root)!r}; scenes there: {known}")
    return [p for p in pairs if p[0] in scenes]
