"""Runtime profiles: deployment settings for one target (a Jetson module, a driving camera, a
satellite tile stream), as YAML under ``configs/runtime/`` (found from the package, from any
directory: the checkout's ``configs/runtime/``, or its copy inside an installed wheel, see
:mod:`edge_deblur.config.shipped`).

A profile says which artifact to run (model folder + precision), on which backend, how to build
its TensorRT engine (profile shapes, workspace, DLA), how to feed it (source, size, queue) and
how the pipeline runs (slots, GPU pre-processing, tiles). Load one by name or path::

    from edge_deblur.config.runtime import load_runtime_profile
    prof = load_runtime_profile("orin_nano", overrides=["engine.workspace_mb=512"])

Unknown keys are reported with the nearest valid one (``from_dict``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from ..errors import ConfigError
from .core import apply_overrides, from_dict, load_yaml, suggest
from .shipped import config_dir

RUNTIME_DIR = config_dir("runtime")  # checkout configs/runtime, else edge_deblur/_configs/runtime
PRECISION_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


@dataclass
class EngineSection:
    """TensorRT engine build (edge-deblur build / the engine cache)."""

    shapes: Optional[str] = None          # MIN:OPT:MAX, each NxCxHxW (H, W multiples of the stride)
    workspace_mb: Optional[int] = None    # builder workspace limit
    dla_core: Optional[int] = None        # AGX Orin / Orin NX: run on DLA core N (FP16/INT8 layers)
    gpu_fallback: bool = True             # with dla_core: layers DLA cannot run go to the GPU
    timing_cache: Optional[str] = None    # default: one per GPU + TensorRT version in the user cache
    opt_level: Optional[int] = None       # builder optimization level 0-5
    cache_dir: Optional[str] = None       # where built engines go (default: beside the ONNX, else user cache)

    def validate(self, where: str = "engine"):
        if self.shapes is not None:
            from ..errors import InputError
            from ..export.trt_build import parse_shapes

            try:
                parse_shapes(self.shapes, stride=1)
            except InputError as e:
                raise ConfigError(f"{where}.shapes: {e}") from e
        if self.workspace_mb is not None and self.workspace_mb <= 0:
            raise ConfigError(f"{where}.workspace_mb: must be > 0 MiB, got {self.workspace_mb}")
        if self.dla_core is not None and self.dla_core < 0:
            raise ConfigError(f"{where}.dla_core: must be >= 0 (or null for the GPU), got {self.dla_core}")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise ConfigError(f"{where}.opt_level: must be 0..5, got {self.opt_level}")

    def backend_options(self) -> dict:
        """The keywords ``TensorRTBackend`` (through ``Deblurrer.open``) builds an ONNX file's
        engine with: the values set here (None: the backend's default)."""
        opts = {"shapes": self.shapes, "workspace_mb": self.workspace_mb, "dla_core": self.dla_core,
                "timing_cache": self.timing_cache, "opt_level": self.opt_level, "cache_dir": self.cache_dir}
        opts = {k: v for k, v in opts.items() if v is not None}
        if self.dla_core is not None:
            opts["gpu_fallback"] = bool(self.gpu_fallback)
        return opts

    def validate_dla_shapes(self, where: str = "engine"):
        """DLA runs fixed shapes only: with dla_core set, shapes must be one NxCxHxW."""
        if self.dla_core is None or self.shapes is None:
            return
        from ..export.trt_build import parse_shapes

        profile = parse_shapes(self.shapes, stride=1)
        if not profile.static:
            raise ConfigError(
                f"{where}.dla_core is {self.dla_core} but {where}.shapes {self.shapes!r} is dynamic: DLA runs fixed "
                f"shapes only; set {where}.shapes to one NxCxHxW (e.g. {where}.shapes="
                f"{'x'.join(map(str, profile.opt))}) or drop dla_core"
            )


@dataclass
class StreamSection:
    """The input side (same meaning as edge_deblur.io.StreamOptions)."""

    source: Optional[str] = None          # csi://0, /dev/video0, rtsp://..., a file or folder
    width: Optional[int] = None           # requested capture size
    height: Optional[int] = None
    fps: Optional[float] = None
    queue_size: int = 2
    drop: Literal["auto", "oldest", "newest", "never"] = "auto"

    def validate(self, where: str = "stream"):
        if (self.width is None) != (self.height is None):
            raise ConfigError(f"{where}: give both width and height or neither")
        for name in ("width", "height", "queue_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{where}.{name}: must be >= 1, got {v}")
        if self.fps is not None and self.fps <= 0:
            raise ConfigError(f"{where}.fps: must be > 0, got {self.fps}")


@dataclass
class PipelineSection:
    slots: int = 2                        # in-flight frames (2: double buffering; 1: synchronous); the stream's
                                          # slots (io.options.DEFAULT_SLOTS) on the tensorrt/torch-cuda backends
    gpu_preprocess: bool = True           # upload uint8 frames, convert/normalize/pad on the GPU (where its kernels build; else on the CPU, with a warning)
    cuda_graphs: bool = False             # torch-cuda only, stateless models
    tile: Optional[int] = None            # split frames larger than this (pixels) into tiles
    overlap: int = 128                    # tile overlap in pixels
    scene_cut: Optional[float] = 0.16     # recurrent models: reset the state above this histogram distance (0/null: off)

    def validate(self, where: str = "pipeline"):
        if self.scene_cut is not None and not 0.0 <= self.scene_cut <= 1.0:
            raise ConfigError(f"{where}.scene_cut: must be in [0, 1] (a histogram distance; 0 or null: off), "
                              f"got {self.scene_cut}")
        if self.slots < 1:
            raise ConfigError(f"{where}.slots: must be >= 1, got {self.slots}")
        if self.tile is not None and self.tile < 16:
            raise ConfigError(f"{where}.tile: must be >= 16 pixels (or null), got {self.tile}")
        if self.overlap < 0:
            raise ConfigError(f"{where}.overlap: must be >= 0, got {self.overlap}")


@dataclass
class RasterSection:
    """Satellite/aerial rasters (edge-deblur deblur on a GeoTIFF): how bands and sample values
    reach a three-band model (see edge_deblur.runtime.bands) and how the output is stored."""

    normalize: Literal["auto", "bitdepth", "percentile"] = "auto"
    bit_depth: Optional[int] = None       # bitdepth: sensor bits (default: the NBITS tag, else the dtype)
    percentiles: list = field(default_factory=lambda: [0.5, 99.5])  # percentile: low, high per band
    rgb_bands: Optional[list] = None      # 1-based [R, G, B] band numbers (default: colour interpretation)
    others: Literal["single", "triples", "copy"] = "single"  # the remaining bands
    compress: Optional[str] = "same"      # output compression: same (as the input), none, deflate, lzw, zstd
    block: int = 256                      # output block size (pixels)

    def band_config(self):
        from ..runtime.bands import BandConfig

        return BandConfig(normalize=self.normalize, bit_depth=self.bit_depth, percentiles=tuple(self.percentiles),
                          rgb_bands=self.rgb_bands, others=self.others)

    def validate(self, where: str = "raster"):
        from ..errors import InputError

        try:
            self.band_config().validate(where)
        except InputError as e:
            raise ConfigError(str(e)) from e
        if self.block < 16 or self.block % 16:
            raise ConfigError(f"{where}.block: must be a multiple of 16 (a TIFF tile), got {self.block}")


@dataclass
class JetsonSection:
    """What the target is and how to set it up (applied by hand: nvpmodel needs root)."""

    module: Literal["orin-nano", "orin-nx", "agx-orin", "thor", "other"] = "other"
    memory_gb: Optional[int] = None
    jetpack: Optional[str] = None         # e.g. "6.2" (TensorRT 10) or "7.x" (TensorRT 11 from 11.4.1 on Orin)
    power_mode: Optional[str] = None      # nvpmodel mode name, e.g. "MAXN", "25W"; ids: grep POWER_MODEL /etc/nvpmodel.conf
    jetson_clocks: bool = False           # lock clocks at the mode's maximum before benchmarking
    dla_cores: int = 0                    # DLA engines on the module


@dataclass
class RuntimeProfile:
    name: str = ""
    description: str = ""
    model: Optional[str] = None           # model file or exported folder (default: the bundled model)
    precision: Literal["fp32", "fp16", "int8"] = "fp16"
    backend: Literal["auto", "tensorrt", "onnxruntime", "torch", "torch-cuda"] = "auto"
    device: Optional[str] = None          # cpu | cuda | cuda:N
    engine: EngineSection = field(default_factory=EngineSection)
    stream: StreamSection = field(default_factory=StreamSection)
    pipeline: PipelineSection = field(default_factory=PipelineSection)
    raster: RasterSection = field(default_factory=RasterSection)
    jetson: Optional[JetsonSection] = None

    def validate(self, where: str = ""):
        if self.engine.dla_core is not None and self.precision == "fp32":
            raise ConfigError(
                f"{where + '.' if where else ''}engine.dla_core is set but precision is fp32: DLA runs FP16 and INT8 "
                "only; use precision: fp16 or int8, or drop dla_core"
            )
        if self.jetson is not None and self.engine.dla_core is not None and self.engine.dla_core >= max(
                self.jetson.dla_cores, 0):
            raise ConfigError(
                f"engine.dla_core {self.engine.dla_core}: the {self.jetson.module} has {self.jetson.dla_cores} DLA "
                "core(s); drop dla_core or pick one it has"
            )
        self.engine.validate_dla_shapes(f"{where}.engine" if where else "engine")

    def model_file(self, folder=None) -> Optional[Path]:
        """The ONNX of this profile's precision inside the model folder (None: use the default model)."""
        base = folder if folder is not None else self.model
        if base is None:
            return None
        p = Path(base)
        return p / PRECISION_FILES[self.precision] if (p.is_dir() or not p.suffix) else p


def available_profiles() -> list[str]:
    return sorted(p.stem for p in RUNTIME_DIR.glob("*.yaml")) if RUNTIME_DIR.is_dir() else []


def load_runtime_profile(name_or_path, overrides=()) -> RuntimeProfile:
    """A profile by name (``orin_nano`` -> configs/runtime/orin_nano.yaml, from any directory) or
    YAML path (relative to the current directory)."""
    p = Path(str(name_or_path))
    if (p.suffix.lower() in (".yaml", ".yml") and not p.exists() and p.name == str(name_or_path)
            and (RUNTIME_DIR / f"{p.stem}.yaml").is_file()):
        p = RUNTIME_DIR / f"{p.stem}.yaml"     # orin_nano.yaml: the shipped profile, from any directory
    if not p.suffix and not p.exists():
        names = available_profiles()
        if str(name_or_path) not in names:
            where = (f"profiles live in {str(RUNTIME_DIR)!r}: {', '.join(names)}" if names else
                     f"no profiles found in {str(RUNTIME_DIR)!r} (a wheel built without configs/runtime; "
                     "reinstall edge-deblur, or pass a YAML file)")
            raise ConfigError(f"unknown runtime profile {str(name_or_path)!r}{suggest(str(name_or_path), names)}; "
                              f"{where}; or pass the path of a profile YAML")
        p = RUNTIME_DIR / f"{name_or_path}.yaml"
    data = load_yaml(p)
    data = apply_overrides(data, overrides, RuntimeProfile)
    data.setdefault("name", p.stem)
    return from_dict(RuntimeProfile, data)
