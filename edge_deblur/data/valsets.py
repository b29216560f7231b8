"""Validation sets from their configs (``config.validation.ValSetConfig``): the pairs to read, with
one clear error per bad set. numpy + OpenCV only (``edge-deblur eval`` runs without torch); making
a missing synthetic set needs the synthesis code in ``data.datasets`` (torch)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config.validation import ValSetConfig
from ..errors import DatasetError, DependencyError
from .pairs import find_pairs, select_scenes

SYNTHETIC_KIND = "edge_deblur synthetic validation set"  # the "kind" in a synthetic set's manifest.json


@dataclass
class ValSet:
    name: str
    kind: str            # real | synthetic
    path: str
    pairs: list          # (scene, blur_path, sharp_path), in order
    crop: Optional[tuple[int, int]] = None  # (width, height) centre crop, or None for full frames


def is_synthetic_folder(path) -> bool:
    """True for a folder written by ``make_synthetic_val_set`` (its manifest says so)."""
    m = Path(path) / "manifest.json"
    try:
        return m.is_file() and json.loads(m.read_text()).get("kind") == SYNTHETIC_KIND
    except (OSError, ValueError):
        return False


def _cached(cfg: ValSetConfig) -> bool:
    """A synthetic set already written with this config's count, size, seed and target alignment
    (a manifest without one was made with mid-exposure targets)."""
    m = Path(cfg.path) / "manifest.json"
    try:
        man = json.loads(m.read_text())
    except (OSError, ValueError):
        return False
    if man.get("kind") != SYNTHETIC_KIND or man.get("seed") != cfg.seed or man.get("count") != cfg.count \
            or list(man.get("size", [])) != list(cfg.size) \
            or (man.get("blur") or {}).get("align", "mid_time") != cfg.align:
        return False
    if not _same_blur_model(man.get("blur") or {}, cfg.align) or not _made_from(man.get("sources") or [], cfg.source):
        return False  # made from other photos, or with another blur model than the default now
    return all((Path(cfg.path) / "val" / d / f"{i:03d}.png").is_file() for d in ("blur", "sharp") for i in range(cfg.count))


def _same_blur_model(made: dict, align: str) -> bool:
    """The set's blur settings are today's default blur model (the maker's own length range and
    sharp_prob aside), so ``eval`` measures the frames the trainer would remake."""
    import dataclasses

    from ..config.schema import BlurConfig

    want = dataclasses.asdict(BlurConfig(align=align))
    return all(made.get(k) == v for k, v in want.items() if k not in ("length", "sharp_prob")) and \
        all(k in want for k in made)


def _made_from(sources: list, root) -> bool:
    if root is None or not sources:
        return True
    r = Path(str(root)).resolve()
    return all(Path(p).resolve().is_relative_to(r) for p in sources)


def make_synthetic(cfg: ValSetConfig, always: bool = False) -> None:
    """Write the synthetic set ``cfg`` describes from ``cfg.source`` unless it is already cached
    (``always``: let the maker check everything, the blur model included, and rewrite on change)."""
    if cfg.source is None or (not always and _cached(cfg)):
        return
    try:
        from ..config.schema import BlurConfig
        from .datasets import make_synthetic_val_set
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DependencyError(
            f"validation set {cfg.name!r}: {cfg.path!r} is not made yet and making it from {cfg.source!r} needs "
            f"torch ({e}); install it with: pip install 'edge-deblur[train]', or point the set at a made folder"
        ) from e
    # the fixed set uses the default blur model, not the training recipe's, so every stage and every
    # model is measured on the same frames; only where the targets sit is the set's own
    make_synthetic_val_set(cfg.source, cfg.path, count=cfg.count, size=tuple(cfg.size), seed=cfg.seed,
                           blur_cfg=BlurConfig(align=cfg.align))


def spread(pairs: list, n: int) -> list:
    """At most ``n`` pairs taken in turn from every scene (first frame of each scene, then the
    second, ...), in the original order: a cheaper set that still covers every scene."""
    if n <= 0 or n >= len(pairs):
        return list(pairs)
    by_scene: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        by_scene.setdefault(p[0], []).append(i)
    chosen: list[int] = []
    rank = 0
    while len(chosen) < n:
        for idx in by_scene.values():
            if rank < len(idx) and len(chosen) < n:
                chosen.append(idx[rank])
        rank += 1
    return [pairs[i] for i in sorted(chosen)]


def load_val_set(cfg: ValSetConfig, make_always: bool = False) -> ValSet:
    """The pairs of one validation set. A folder that is missing, empty, has unpaired frames or
    lacks a named scene is one DatasetError naming the set, the path and the way out."""
    if not cfg.name:
        cfg.validate()
    try:
        if cfg.kind == "synthetic":
            make_synthetic(cfg, always=make_always)
        pairs = select_scenes(find_pairs(cfg.path), cfg.scenes, cfg.path)
    except DatasetError as e:
        where = ""
        if not os.path.isabs(str(cfg.path)) and not os.path.exists(str(cfg.path)):
            # the suites' paths are written for the checkout's root (../shared/data beside it)
            where = f" (relative to the current folder {os.getcwd()}: run from the checkout's root)"
        raise DatasetError(f"validation set {cfg.name!r} ({cfg.path}){where}: {e}. Fix the folder, or remove the set "
                           "(data.val_sets / data.val_pairs in the config, --data for edge-deblur eval)") from e
    crop = (int(cfg.crop[0]), int(cfg.crop[1])) if cfg.crop else None
    return ValSet(cfg.name, cfg.kind, str(cfg.path), spread(pairs, cfg.max_pairs), crop)


def load_val_sets(cfgs, make_always: bool = False) -> list[ValSet]:
    return [load_val_set(c, make_always) for c in cfgs]
