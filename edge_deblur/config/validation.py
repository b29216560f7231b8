"""Validation sets: which blur/sharp pair folders a model is judged on (``data.val_sets``).

Each set is real (camera blur: REDS, GoPro) or synthetic (the fixed full-resolution set the
trainer makes from sharp photos with the default blur model). Reports give per-set PSNR/SSIM
gains and tone-aligned gains, and rank models by the mean of the per-set gains.

The older keys ``data.val_pairs``/``val_scenes`` (a real set named ``real``) and
``data.val_synthetic*`` (a synthetic set named ``synthetic_fullres``) still work: they come first,
then the sets listed in ``data.val_sets``.

Suites by name (``edge-deblur eval --suite multi_camera``) are the YAML files of ``configs/val/``,
found from the package from any directory (the checkout's ``configs/val/``, or its copy inside an
installed wheel: :mod:`edge_deblur.config.shipped`). The folders a suite names (``path``,
``source``) are used as written: a relative one is read from the current directory, as with
``--data`` (the shipped suites name ``../shared/data/...``: run from the checkout, or pass your
own suite YAML with absolute paths).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import ConfigError
from .shipped import config_dir

KINDS = ("real", "synthetic")
ALIGNS = ("centroid", "mid_time")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def default_set_name(path: str) -> str:
    """A set's label from its folder: ``../shared/data/pairs/GoPro_1280x720`` -> ``GoPro_1280x720``."""
    return re.sub(r"\W+", "_", Path(str(path).rstrip("/\\")).name).strip("_") or "val"


@dataclass
class ValSetConfig:
    path: str = ""                   # blur/sharp pairs (GoPro or REDS layout); synthetic: where the set is cached
    name: str = ""                   # label in reports and log.csv columns (default: the folder's name)
    kind: str = "real"               # real (camera blur) | synthetic
    scenes: list[str] = field(default_factory=list)  # only these scenes (empty: all)
    source: Optional[str] = None     # synthetic: sharp images to make the set from when it is not cached yet
    count: int = 4                   # synthetic: images in the set
    size: list[int] = field(default_factory=lambda: [1280, 720])  # synthetic: [width, height]
    seed: int = 1234                 # synthetic: the draw of images and blurs
    crop: list[int] = field(default_factory=list)  # [width, height]: centre-crop every frame (cheaper); empty: full frames
    max_pairs: int = 0               # > 0: at most this many pairs, taken in turn from every scene (cheaper)
    # synthetic: where a warped image's sharp target sits: 'centroid', the blur's centre of mass (what
    # the blurred image shows, and where real pairs' targets sit), or 'mid_time', the camera at
    # mid-exposure (the sets made before session 13: up to 19 px from what the blur shows)
    align: str = "centroid"

    def validate(self, where: str = "val_set"):
        if not self.path:
            raise ConfigError(f"{where}.path: give the folder of blur/sharp pairs (GoPro or REDS layout)")
        if not self.name:
            self.name = default_set_name(self.path)
        if not _NAME.match(self.name):
            raise ConfigError(f"{where}.name: {self.name!r} may hold only letters, digits and '_' "
                              "(it names log.csv columns); rename it")
        if self.kind not in KINDS:
            raise ConfigError(f"{where}.kind: {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.source is not None and self.kind != "synthetic":
            raise ConfigError(f"{where}.source: only a synthetic set is made from sharp images; set kind: synthetic "
                              "or remove source")
        if self.count < 1:
            raise ConfigError(f"{where}.count: must be >= 1, got {self.count}")
        if len(self.size) != 2 or min(self.size) < 16:
            raise ConfigError(f"{where}.size: expected [width, height], each >= 16, got {list(self.size)}")
        if self.crop and (len(self.crop) != 2 or min(self.crop) < 16):
            raise ConfigError(f"{where}.crop: expected [width, height], each >= 16 (or [] for full frames), "
                              f"got {list(self.crop)}")
        if self.max_pairs < 0:
            raise ConfigError(f"{where}.max_pairs: must be >= 0 (0: all pairs), got {self.max_pairs}")
        if self.align not in ALIGNS:
            raise ConfigError(f"{where}.align: {self.align!r} is not one of {', '.join(ALIGNS)}")


def check_unique(sets: list[ValSetConfig], where: str = "data.val_sets"):
    seen: dict[str, str] = {}
    for s in sets:
        if s.name in seen:
            raise ConfigError(f"{where}: two validation sets are named {s.name!r} ({seen[s.name]} and {s.path}); "
                              "give one of them another name (name: ...)")
        seen[s.name] = s.path


def suite_dir() -> Path:
    """The folder of the shipped suites: the checkout's ``configs/val/``, else the package's copy."""
    return config_dir("val")


def available_suites(root=None) -> list[str]:
    root = Path(root) if root is not None else suite_dir()
    return sorted(q.stem for q in root.glob("*.yaml")) if root.is_dir() else []


def find_suite(name_or_path: str, root=None) -> str:
    """A suite file: an existing YAML path (relative to the current directory), or the name of
    one under ``configs/val/`` (``multi_camera`` or ``multi_camera.yaml``), looked up from the
    package, so from any directory. ``root`` overrides the folder of named suites."""
    root = Path(root) if root is not None else suite_dir()
    p = Path(name_or_path)
    if p.is_file():
        return str(p)
    stem = p.stem if p.suffix.lower() in (".yaml", ".yml") and p.name == str(name_or_path) else str(name_or_path)
    named = root / f"{stem}.yaml"
    if p.name == str(name_or_path) and named.is_file():
        return str(named)
    known = available_suites(root)
    raise ConfigError(f"validation suite {name_or_path!r} not found: neither a file (from {str(Path.cwd())!r}) "
                      f"nor a shipped suite {str(named)!r}; pass a YAML file with data.val_sets (a training config "
                      "works too)" + (f" or one of: {', '.join(known)}" if known else
                                      f" (no suites in {str(root)!r}: reinstall edge-deblur)"))


def load_suite(name_or_path: str) -> list[ValSetConfig]:
    """The validation sets named by a YAML file (a training config, or a file holding only
    ``data.val_sets`` / ``data.val_pairs`` ...), after its ``base:`` chain."""
    from .core import error_key, from_dict
    from .inherit import load_layers
    from .schema import DataConfig

    path = find_suite(name_or_path)
    data, origins = load_layers(path)
    d = data.get("data") or {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: 'data' must be a mapping, got {d!r}")
    vals = {k: v for k, v in d.items() if k.startswith("val_")}
    if not vals.get("val_sets") and not vals.get("val_pairs") and not vals.get("val_synthetic"):
        raise ConfigError(f"{path}: names no validation sets; add data.val_sets (a list of {{path, scenes, kind}}) "
                          "or data.val_pairs / data.val_synthetic")
    try:
        # only the validation keys are read; a placeholder training source satisfies DataConfig's check
        cfg = from_dict(DataConfig, vals | {"sharp_roots": ["(validation suite)"]}, "data")
    except ConfigError as e:
        where = origins.of(error_key(e))
        if where is None:
            raise
        raise ConfigError(f"{where}: {e}") from e
    return cfg.validation_sets()
