"""Engine cache: one TensorRT engine per (ONNX, GPU model, TensorRT version, profile, DLA core,
build options).

An engine only runs on the GPU model and the exact TensorRT version that built it, so the cache
key holds both, and every engine has a manifest (see trt_build) that says what it was built from.
The GPU model is its name and compute capability plus its SM count, memory (GiB) and, on Jetson,
board model: every Orin module reports 'Orin', sm 8.7. The build options that change the engine
(workspace limit, builder optimization level, GPU fallback of a DLA build, the model stride the
state profiles derive from) are part of the key as well; the precision comes from the ONNX file
(strongly typed network), which its checksum covers.
:func:`ensure_engine` builds once and reuses the engine while its manifest matches; an engine
built from another ONNX, for another GPU or by another TensorRT is rebuilt, or with
``rebuild=False`` refused with a message naming the field that differs and what to do.

Where engines go: beside the ONNX as ``<stem>.<gpu-slug>.trt<version>.engine`` when that folder
is writable (the ``export/`` artifacts of a checkout), else in the user cache
(``$EDGE_DEBLUR_CACHE`` or ``~/.cache/edge-deblur/engines``) with the ONNX checksum in the name.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import BackendError, ModelError
from .trt_build import (
    DEFAULT_SHAPES,
    ShapeProfile,
    device_properties,
    dla_profile,
    gpu_slug,
    manifest_path,
    onnx_stride,
    parse_shapes,
    read_manifest,
    sha256_file,
    shapes_given,
)

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    env = os.environ.get("EDGE_DEBLUR_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "edge-deblur"


@dataclass(frozen=True)
class BuildEnv:
    """What an engine is tied to: the GPU model and the exact TensorRT version."""

    gpu_name: str
    compute_capability: str
    trt_version: str
    multiprocessors: int = 0  # 0 / "": unknown (not checked)
    memory_gib: int = 0
    board: str = ""

    @classmethod
    def from_gpu(cls, gpu, trt_version: str) -> "BuildEnv":
        """From ``cudart.gpu_info``: the same properties the builder records in the manifest."""
        return cls(gpu.name, gpu.compute_capability, trt_version, **device_properties(gpu))

    @property
    def device(self) -> dict:
        """The known device properties beyond name and compute capability (trt_build.device_properties)."""
        return {k: v for k, v in (("multiprocessors", self.multiprocessors), ("memory_gib", self.memory_gib),
                                  ("board", self.board)) if v}

    @property
    def slug(self) -> str:
        """'orin-sm87-16sm-61gb-1a2b3c' (SM count, memory and a hash of the board where known)."""
        s = gpu_slug(self.gpu_name, self.compute_capability)
        if self.multiprocessors:
            s += f"-{self.multiprocessors}sm"
        if self.memory_gib:
            s += f"-{self.memory_gib}gb"
        if self.board:
            s += "-" + hashlib.sha256(self.board.encode()).hexdigest()[:6]
        return s


@dataclass(frozen=True)
class BuildOptions:
    """The builder settings that change the engine (all default: TensorRT's defaults)."""

    workspace_mb: int | None = None
    opt_level: int | None = None
    gpu_fallback: bool | None = None  # only for a DLA build (True: TensorRT's layers DLA cannot run go to the GPU)

    @classmethod
    def make(cls, workspace_mb=None, opt_level=None, gpu_fallback=True, dla_core=None) -> "BuildOptions":
        return cls(int(workspace_mb) if workspace_mb else None, None if opt_level is None else int(opt_level),
                   bool(gpu_fallback) if dla_core is not None else None)

    def key(self) -> dict:
        """The non-default settings (the path tag hashes these)."""
        d = {"workspace_mb": self.workspace_mb, "opt_level": self.opt_level}
        if self.gpu_fallback is False:
            d["gpu_fallback"] = False
        return {k: v for k, v in d.items() if v is not None}


def current_env(device: int = 0) -> BuildEnv:
    """This machine's GPU and TensorRT version (DependencyError/BackendError when absent)."""
    from ..runtime import cudart
    from .trt_build import import_tensorrt, trt_version

    trt = import_tensorrt()
    gpu = cudart.gpu_info(device)
    return BuildEnv.from_gpu(gpu, trt_version(trt))


def _profile_tag(profile: ShapeProfile, dla_core: int | None, options: BuildOptions | None = None) -> str:
    """'' for the default profile on the GPU with default build options, else a short hash so
    engines do not collide."""
    opts = (options or BuildOptions()).key()
    if str(profile) == DEFAULT_SHAPES and dla_core is None and not opts:
        return ""
    key = {"profile": profile.to_dict(), "dla": dla_core}
    if opts:
        key["build"] = opts
    return "." + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def engine_path_for(onnx, env: BuildEnv, profile: ShapeProfile | None = None, *, dla_core: int | None = None,
                    cache_dir=None, onnx_sha256: str | None = None, options: BuildOptions | None = None) -> Path:
    """Where the engine for this ONNX/GPU/TensorRT/profile/build options lives (whether or not it exists)."""
    onnx = Path(onnx)
    profile = profile or parse_shapes(DEFAULT_SHAPES)
    tag = _profile_tag(profile, dla_core, options)
    dla = f".dla{dla_core}" if dla_core is not None else ""
    name = f"{onnx.stem}.{env.slug}.trt{env.trt_version}{dla}{tag}.engine"
    if cache_dir is None and _writable(onnx.parent.resolve()):
        return onnx.parent / name
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "engines"
    sha = onnx_sha256 or sha256_file(onnx)
    return folder / f"{onnx.stem}-{sha[:12]}.{env.slug}.trt{env.trt_version}{dla}{tag}.engine"


@dataclass(frozen=True)
class Mismatch:
    field: str
    engine: str
    wanted: str

    def __str__(self):
        return f"{self.field}: engine has {self.engine}, wanted {self.wanted}"


DEVICE_FIELDS = {"multiprocessors": "SM count", "memory_gib": "GPU memory (GiB)", "board": "board"}
BUILD_FIELDS = {"workspace_mb": ("workspace_mb", "workspace (MiB)"),
                "opt_level": ("builder_optimization_level", "builder optimization level"),
                "gpu_fallback": ("gpu_fallback", "DLA GPU fallback")}


def _device_mismatches(gpu: dict, env: BuildEnv, strict: bool) -> list[Mismatch]:
    """The device properties ``env`` knows that the manifest records otherwise (or, ``strict``,
    does not record: an engine from before they were recorded)."""
    out = []
    for key, wanted in env.device.items():
        have = gpu.get(key)
        if have is None and not strict:
            continue
        if have != wanted:
            out.append(Mismatch(DEVICE_FIELDS[key], "not recorded" if have is None else repr(have), repr(wanted)))
    return out


def _build_mismatches(manifest: dict, options: BuildOptions, stride: int | None) -> list[Mismatch]:
    build = manifest.get("build") or {}
    out = []
    for attr, (key, label) in BUILD_FIELDS.items():
        have, wanted = build.get(key), getattr(options, attr)
        if have != wanted:
            out.append(Mismatch(label, str(have), str(wanted)))
    if stride is not None and manifest.get("stride") is not None and int(manifest["stride"]) != int(stride):
        out.append(Mismatch("stride", str(manifest["stride"]), str(stride)))
    return out


def compare_manifest(manifest: dict, *, env: BuildEnv | None = None, onnx_sha256: str | None = None,
                     profile: ShapeProfile | None = None, dla_core: int | None | str = "any",
                     options: BuildOptions | None = None, stride: int | None = None,
                     strict: bool = False) -> list[Mismatch]:
    """Fields in which an engine's manifest differs from what is wanted (empty: it fits).

    ``env``/``onnx_sha256``/``profile``/``options``/``stride`` None and ``dla_core='any'`` mean 'do
    not check'. A profile fits when the engine's profile contains the wanted one. Device
    properties the manifest does not record are skipped, or with ``strict`` (the engine cache)
    count as a mismatch."""
    out: list[Mismatch] = []
    gpu = manifest.get("gpu") or {}
    if env is not None:
        if gpu.get("name") != env.gpu_name:
            out.append(Mismatch("GPU", repr(gpu.get("name")), repr(env.gpu_name)))
        if str(gpu.get("compute_capability")) != env.compute_capability:
            out.append(Mismatch("compute capability", f"sm {gpu.get('compute_capability')}",
                                f"sm {env.compute_capability}"))
        out += _device_mismatches(gpu, env, strict)
        if manifest.get("tensorrt") != env.trt_version:
            out.append(Mismatch("TensorRT version", str(manifest.get("tensorrt")), env.trt_version))
    if onnx_sha256 is not None:
        have = (manifest.get("onnx") or {}).get("sha256")
        if have != onnx_sha256:
            out.append(Mismatch("ONNX checksum", f"sha256 {str(have)[:12]}", f"sha256 {onnx_sha256[:12]}"))
    if profile is not None:
        try:
            have_p = ShapeProfile.from_dict(manifest.get("profile") or {})
        except ModelError:
            have_p = None
        if have_p is None or not have_p.contains(profile):
            out.append(Mismatch("profile", str(have_p) if have_p else "none", f"{profile} (or wider)"))
    if dla_core != "any":
        have_dla = (manifest.get("build") or {}).get("dla_core")
        if have_dla != dla_core:
            out.append(Mismatch("DLA core", str(have_dla), str(dla_core)))
    if options is not None:
        out += _build_mismatches(manifest, options, stride)
    return out


def explain_mismatch(engine_path, mismatches: list[Mismatch], onnx=None) -> str:
    fields = ", ".join(m.field for m in mismatches)
    how = (f"rebuild it with: edge-deblur build {onnx} -o {engine_path}" if onnx
           else "rebuild it from its ONNX with: edge-deblur build MODEL.onnx -o ENGINE")
    return (f"TensorRT engine {str(engine_path)!r} does not fit ({fields}): "
            + "; ".join(str(m) for m in mismatches)
            + f". Engines only run on the GPU model and TensorRT version that built them: {how}, "
            "let the engine cache rebuild it (rebuild=True), or use --backend onnxruntime")


def check_engine(engine_path, env: BuildEnv) -> dict | None:
    """Before deserializing an engine given directly: refuse one built for another GPU or
    TensorRT, naming which. Returns its manifest (None when it has none)."""
    manifest = read_manifest(engine_path)
    if manifest is None:
        log.warning("engine %s has no manifest (%s); cannot check it was built for this GPU and TensorRT",
                    engine_path, manifest_path(engine_path).name)
        return None
    bad = compare_manifest(manifest, env=env)
    if bad:
        onnx = (manifest.get("onnx") or {}).get("path")
        raise BackendError(explain_mismatch(engine_path, bad, onnx))
    return manifest


BuildFn = Callable[..., dict]


def ensure_engine(onnx, *, shapes: str | ShapeProfile | None = None, stride: int | None = None, cache_dir=None,
                  rebuild: bool = True, workspace_mb: int | None = None, dla_core: int | None = None,
                  timing_cache=None, env: BuildEnv | None = None, build_fn: BuildFn | None = None,
                  device: int = 0, opt_level: int | None = None, gpu_fallback: bool = True) -> Path:
    """Path of an engine for ``onnx`` on this machine, built now if missing or stale.

    ``env`` and ``build_fn`` default to this machine's GPU/TensorRT and
    :func:`trt_build.build_engine`; tests pass their own."""
    onnx = Path(onnx)
    if not onnx.is_file():
        raise ModelError(f"ONNX file not found: {str(onnx)!r}; export one with: edge-deblur export CHECKPOINT")
    env = env or current_env(device)
    stride = stride or onnx_stride(onnx)
    profile = shapes if isinstance(shapes, ShapeProfile) else parse_shapes(shapes, stride)
    profile = dla_profile(profile, explicit=shapes_given(shapes), dla_core=dla_core)  # DLA: fixed shapes only
    sha = sha256_file(onnx)
    options = BuildOptions.make(workspace_mb, opt_level, gpu_fallback, dla_core)
    path = engine_path_for(onnx, env, profile, dla_core=dla_core, cache_dir=cache_dir, onnx_sha256=sha,
                           options=options)
    if path.is_file():
        manifest = read_manifest(path)
        if manifest is None:
            bad = [Mismatch("manifest", "missing", manifest_path(path).name)]
        else:
            bad = compare_manifest(manifest, env=env, onnx_sha256=sha, profile=profile, dla_core=dla_core,
                                   options=options, stride=stride, strict=True)
        if not bad:
            log.info("reusing TensorRT engine %s", path)
            return path
        if not rebuild:
            raise BackendError(explain_mismatch(path, bad, onnx))
        log.warning("rebuilding TensorRT engine %s: %s", path, "; ".join(map(str, bad)))
    else:
        log.info("building TensorRT engine %s (first use of %s on %s, TensorRT %s)", path, onnx.name,
                 env.gpu_name, env.trt_version)
    if build_fn is None:
        from .trt_build import build_engine as build_fn
    build_fn(onnx, path, profile, workspace_mb=workspace_mb, dla_core=dla_core, timing_cache=timing_cache,
             stride=stride, device=device, opt_level=opt_level, gpu_fallback=gpu_fallback)
    return path
