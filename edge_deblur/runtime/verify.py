"""``edge-deblur verify``: the same frames through several backends, compared by PSNR against an
FP32 reference (in the spirit of Polygraphy's ``run --onnxrt --trt``).

The reference is the FP32 checkpoint run by PyTorch on the CPU when a checkpoint and torch are
at hand, else the FP32 ONNX run by ONNX Runtime on the CPU. Each backend under test runs the
artifact of the precision being verified and must reach the PSNR floor of that precision
(:data:`THRESHOLDS`). Backends that cannot run here (no TensorRT, no GPU, no torch, no
checkpoint) are skipped with the reason; asking only for unavailable backends fails.

Frames are synthetic and deterministic (smooth shapes, edges, texture and motion blur), of any
size (padded to the stride like real frames). Outputs are compared as float images in [0, 1]
after cropping, before quantization to 8 bits.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BackendError, DependencyError, EdgeDeblurError, InputError, ModelError

log = logging.getLogger(__name__)

THRESHOLDS = {"fp32": 50.0, "fp16": 40.0, "bf16": 35.0, "int8": 35.0, "fp8": 35.0}
ALL_BACKENDS = ("onnxruntime", "tensorrt", "torch", "torch-cuda")


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def synthetic_frames(n: int, width: int, height: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` deterministic HxWx3 uint8 BGR frames that look like blurry camera frames: even ones
    smooth gradients with hard-edged shapes, odd ones the demo's street scene (text, windows,
    checkerboards: the dense high-contrast detail that pushes activations to the ends of their
    INT8 ranges, where an 8-bit-weight CPU file on a CPU without VNNI falls to about 31 dB from
    FP32 while its gradient frames stay at 45), each with motion blur along its own direction."""
    import cv2

    from .scene import make_scene

    rng = np.random.default_rng(seed)
    frames = []
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        if i % 2:
            img = make_scene(height, width, seed + i).astype(np.float32) / 255.0
            frames.append(_motion_blur(img, i))
            continue
        img = np.zeros((height, width, 3), np.float32)
        for c in range(3):  # smooth colour gradients
            a, b, ph = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0, 6.28)
            img[..., c] = 0.5 + 0.3 * np.sin(ph + (a * xx + b * yy) * (6.28 / max(width, height)))
        for _ in range(6):  # hard-edged shapes
            x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
            r = int(rng.integers(max(2, min(width, height) // 16), max(3, min(width, height) // 4)))
            col = tuple(float(v) for v in rng.uniform(0, 1, 3))
            if rng.random() < 0.5:
                cv2.circle(img, (x0, y0), r, col, -1)
            else:
                cv2.rectangle(img, (x0, y0), (x0 + r, y0 + r // 2), col, -1)
        img += rng.normal(0, 0.03, img.shape).astype(np.float32)  # texture
        frames.append(_motion_blur(img, i))
    return frames


def _motion_blur(img: np.ndarray, i: int) -> np.ndarray:
    """Float [0, 1] image -> uint8, blurred along a line of 3-9 px in a direction set by ``i``."""
    import cv2

    k = 3 + 2 * (i % 4)
    kernel = np.zeros((k, k), np.float32)
    cv2.line(kernel, (0, (i * 3) % k), (k - 1, k - 1 - (i * 3) % k), 1.0, 1)
    kernel /= max(kernel.sum(), 1e-6)
    img = cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def psnr_float(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


# --------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------


@dataclass
class Artifacts:
    onnx: Path | None = None          # the ONNX under test (any precision)
    onnx_fp32: Path | None = None     # the FP32 ONNX (reference when there is no checkpoint)
    checkpoint: Path | None = None
    engine: Path | None = None
    precision: str = "fp32"           # precision of the model under test
    stride: int = 1


def _onnx_precision(path: Path) -> str:
    from ..export.trt_build import export_info, onnx_metadata, onnx_precision

    return (export_info(path)[1].get("precision") or onnx_precision(path)
            or onnx_metadata(path).get("edge_deblur.precision") or "fp32")


def find_artifacts(model, checkpoint=None, onnx=None, engine=None) -> Artifacts:
    """Resolve MODEL (a .onnx, .safetensors or .engine file, or an exported model folder) and
    the explicit --checkpoint/--onnx/--engine into the artifacts each backend runs."""
    from .manifest import read_manifest

    a = Artifacts()
    p = Path(model)
    if not p.exists():
        raise ModelError(f"model not found: {str(p)!r}; pass an .onnx, .safetensors or .engine file or a model folder")
    folder = p if p.is_dir() else p.parent
    manifest = read_manifest(folder) if (folder / "manifest.json").is_file() else {}
    suffix = p.suffix.lower() if p.is_file() else ""
    if p.is_dir():
        name = manifest.get("onnx") or ("model.onnx" if (p / "model.onnx").is_file() else None)
        a.onnx = p / name if name else None
    elif suffix == ".onnx":
        a.onnx = p
    elif suffix == ".safetensors":
        a.checkpoint = p
    elif suffix in (".engine", ".plan"):
        a.engine = p
    else:
        raise InputError(f"cannot tell what {str(p)!r} is from its suffix; pass an .onnx, .safetensors or .engine "
                         "file or a model folder")
    if onnx:
        a.onnx = Path(onnx)
    if checkpoint:
        a.checkpoint = Path(checkpoint)
    if engine:
        a.engine = Path(engine)
    for what, f in (("ONNX", a.onnx), ("checkpoint", a.checkpoint), ("engine", a.engine)):
        if f is not None and not f.is_file():
            raise ModelError(f"{what} file not found: {str(f)!r}")
    # the FP32 ONNX of the folder, and the checkpoint it was exported from when it lies beside it
    fp32_name = manifest.get("onnx")
    if fp32_name and (folder / fp32_name).is_file():
        a.onnx_fp32 = folder / fp32_name
    if a.checkpoint is None:
        ck = (manifest.get("checkpoint") or {}).get("file")
        if ck and (folder / ck).is_file():
            a.checkpoint = folder / ck
        elif a.onnx is not None and a.onnx.with_suffix(".safetensors").is_file():
            a.checkpoint = a.onnx.with_suffix(".safetensors")
    if a.onnx is None and a.checkpoint is not None:
        sib = a.checkpoint.with_suffix(".onnx")
        if sib.is_file():
            a.onnx = sib
    if a.onnx is not None:
        a.precision = _onnx_precision(a.onnx)
        if a.precision == "fp32" and a.onnx_fp32 is None:
            a.onnx_fp32 = a.onnx
    elif a.engine is not None:
        from ..export.trt_build import read_manifest as read_engine_manifest

        a.precision = str((read_engine_manifest(a.engine) or {}).get("precision") or "fp32")
    a.stride = int(manifest.get("stride") or 0) or _stride_of(a)
    return a


def _stride_of(a: Artifacts) -> int:
    if a.onnx is not None:
        from ..export.trt_build import onnx_stride

        return onnx_stride(a.onnx, default=1)
    if a.engine is not None:
        from ..export.trt_build import read_manifest as read_engine_manifest

        return int((read_engine_manifest(a.engine) or {}).get("stride") or 1)
    return 0  # a checkpoint: the backend knows its stride


# --------------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------------


def unavailable_reason(name: str, a: Artifacts) -> str | None:
    """Why ``name`` cannot run here with these artifacts (None: it can)."""
    if name == "onnxruntime":
        return None if a.onnx is not None else "no ONNX file (pass MODEL.onnx or --onnx)"
    if name in ("torch", "torch-cuda"):
        if a.checkpoint is None:
            return "no checkpoint (pass --checkpoint CKPT.safetensors)"
        if importlib.util.find_spec("torch") is None:
            return "PyTorch is not installed (pip install 'edge-deblur[train]')"
        if name == "torch-cuda":
            import torch

            if not torch.cuda.is_available():
                return (f"no CUDA GPU visible to torch {torch.__version__}"
                        + (" (a CPU-only build)" if not getattr(torch.version, "cuda", None) else ""))
        return None
    if name == "tensorrt":
        if a.onnx is None and a.engine is None:
            return "no ONNX or engine file"
        if importlib.util.find_spec("tensorrt") is None:
            return "TensorRT is not installed (pip install 'edge-deblur[tensorrt]')"
        try:
            from . import cudart

            n, why = cudart.device_count()
        except DependencyError as e:
            return str(e)
        return None if n else (why if "NVIDIA driver" in why else f"no CUDA GPU ({why})")
    return f"unknown backend {name!r}"


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    status: str  # "pass" | "fail" | "skipped" | "error" | "reference"
    artifact: str = ""
    precision: str = ""
    threshold: float | None = None
    psnr_min: float | None = None
    psnr_mean: float | None = None
    max_abs_diff: float | None = None
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    reference: str = ""
    frames: int = 0
    size: tuple[int, int] = (0, 0)
    passed: bool = False
    reason: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        for r in d["rows"]:
            for k in ("psnr_min", "psnr_mean"):
                if r[k] is not None and math.isinf(r[k]):
                    r[k] = "inf"
        return d


def run_frames(backend, frames, stride: int | None = None) -> list[np.ndarray]:
    """Frames through ``backend`` (with the runtime's own pre-processing); recurrent models
    carry their state across the frames. Returns float32 HxWx3 RGB outputs clipped to [0, 1]."""
    from .preprocess import frame_to_tensor

    s = int(stride or getattr(backend, "stride", 1) or 1)
    recurrent = bool(getattr(backend, "state_specs", None))
    state, key, outs = None, None, []
    for f in frames:
        x, info = frame_to_tensor(f, s)
        if recurrent:
            k = (x.shape[0], x.shape[2], x.shape[3])
            if state is None or k != key:
                state, key = backend.zero_state(*k), k
            y, state = backend.infer_state(x, state)
        else:
            y = backend.infer(x)
        y = np.asarray(y, np.float32)[0, :, : info.height, : info.width].transpose(1, 2, 0)
        outs.append(np.clip(y, 0.0, 1.0))
    return outs


def _trt_opts(a: Artifacts, size, opts: dict) -> dict:
    """Engine options for verify: the default profile when it covers the frames (so the engine
    the runtime uses is the one checked), else a fixed profile at the padded frame size."""
    from ..export.trt_build import DEFAULT_SHAPES, parse_shapes

    opts = dict(opts)
    if a.engine is None and "shapes" not in opts:
        s = max(1, a.stride or 16)
        w, h = size
        shape = (1, 3, -(-h // s) * s, -(-w // s) * s)
        if not parse_shapes(DEFAULT_SHAPES, 1).covers(shape):
            opts["shapes"] = "x".join(map(str, shape))
    return opts


def _open(name: str, a: Artifacts, precision: str, device_opts: dict):
    from .backends import open_backend

    if name == "onnxruntime":
        return open_backend(a.onnx, "onnxruntime", device="cpu"), a.onnx, precision
    if name == "torch":
        return open_backend(a.checkpoint, "torch", device="cpu"), a.checkpoint, "fp32"
    if name == "torch-cuda":
        half = precision == "fp16"
        from .backends.torch_cuda import TorchCudaBackend

        return TorchCudaBackend(a.checkpoint, half=half), a.checkpoint, "fp16" if half else "fp32"
    if name == "tensorrt":
        from .backends.tensorrt import TensorRTBackend

        target = a.engine or a.onnx
        b = TensorRTBackend(target, **device_opts)
        return b, b.path, getattr(b, "precision", precision)
    raise BackendError(f"unknown backend {name!r}")


def _open_reference(a: Artifacts):
    """(backend, label): the FP32 checkpoint on the CPU with torch, else the FP32 ONNX on ONNX Runtime."""
    from .backends import open_backend

    notes = []
    if a.checkpoint is not None and importlib.util.find_spec("torch") is not None:
        return open_backend(a.checkpoint, "torch", device="cpu"), f"torch (cpu, fp32) {a.checkpoint.name}", "torch"
    if a.checkpoint is not None:
        notes.append("torch is not installed")
    if a.onnx_fp32 is not None:
        return (open_backend(a.onnx_fp32, "onnxruntime", device="cpu"),
                f"onnxruntime (cpu) {a.onnx_fp32.name}", "onnxruntime" if a.onnx_fp32 == a.onnx else None)
    raise ModelError(
        "no FP32 reference: pass the FP32 checkpoint (--checkpoint CKPT.safetensors, needs torch) or an FP32 "
        "ONNX (--onnx model.onnx)" + (f" ({'; '.join(notes)})" if notes else "")
    )


def verify(model, backends=None, frames: int = 4, size=(320, 240), checkpoint=None, onnx=None, engine=None,
           seed: int = 0, thresholds: dict | None = None, trt_opts: dict | None = None) -> Report:
    """Run the comparison; never raises for a backend that fails (its row says why), only for
    bad arguments and a missing reference."""
    if frames < 1:
        raise InputError(f"--frames must be >= 1, got {frames}")
    width, height = size
    if width < 1 or height < 1:
        raise InputError(f"--size must be positive, got {width}x{height}")
    explicit = backends is not None
    names = list(ALL_BACKENDS) if backends is None else _parse_backends(backends)
    thresholds = {**THRESHOLDS, **(thresholds or {})}
    a = find_artifacts(model, checkpoint=checkpoint, onnx=onnx, engine=engine)
    report = Report(frames=frames, size=(width, height))
    runnable = []
    for name in names:
        why = unavailable_reason(name, a)
        if why:
            report.rows.append(Row(name, "skipped", note=why))
        else:
            runnable.append(name)
    if not runnable:
        report.reason = ("none of the requested backends can run here" if explicit
                         else "no backend can run here")
        return report

    imgs = synthetic_frames(frames, width, height, seed)
    ref_backend, label, ref_name = _open_reference(a)
    with ref_backend:
        ref = run_frames(ref_backend, imgs, a.stride or None)
    report.reference = label
    compared = 0
    for name in runnable:
        if name == ref_name:
            report.rows.append(Row(name, "reference", note="is the reference"))
            continue
        row = Row(name, "error", precision=a.precision)
        try:
            b, artifact, prec = _open(name, a, a.precision, _trt_opts(a, (width, height), trt_opts or {}))
            row.artifact, row.precision = str(artifact), prec
            with b:
                outs = run_frames(b, imgs, a.stride or None)
        except (EdgeDeblurError, RuntimeError, OSError) as e:
            row.note = str(e)
            report.rows.append(row)
            compared += 1
            continue
        vals = [psnr_float(o, r) for o, r in zip(outs, ref)]
        row.psnr_min, row.psnr_mean = min(vals), float(np.mean([min(v, 200.0) for v in vals]))
        row.max_abs_diff = max(float(np.max(np.abs(o - r))) for o, r in zip(outs, ref))
        row.threshold = thresholds.get(row.precision, thresholds["int8"])
        row.status = "pass" if row.psnr_min >= row.threshold else "fail"
        if row.status == "fail":
            row.note = f"min PSNR {row.psnr_min:.2f} dB < {row.threshold:g} dB for {row.precision}"
            if name == "onnxruntime" and row.artifact:
                from .select import note_for_file

                why = note_for_file(row.artifact)  # e.g. an 8-bit-weight CPU file on a CPU without VNNI
                if why:
                    row.note += f" ({why})"
        report.rows.append(row)
        compared += 1
    if compared == 0:
        report.reason = "only the reference could run: nothing to compare it with"
        return report
    order = {n: i for i, n in enumerate(names)}
    report.rows.sort(key=lambda r: order.get(r.backend, len(order)))
    bad = [r for r in report.rows if r.status in ("fail", "error")]
    report.passed = not bad
    if bad:
        report.reason = "; ".join(f"{r.backend}: {r.note}" for r in bad)
    return report


def _parse_backends(spec) -> list[str]:
    from .backends import backend_name

    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        n = backend_name(item)
        if n not in names:
            names.append(n)
    if not names:
        raise InputError(f"--backends {spec!r} names no backend; use a comma-separated list of {', '.join(ALL_BACKENDS)}")
    return names


def format_report(r: Report) -> str:
    def db(v):
        return "-" if v is None else ("inf" if math.isinf(v) else f"{v:.2f}")

    lines = [f"reference: {r.reference or '-'}   frames: {r.frames} at {r.size[0]}x{r.size[1]}", ""]
    lines.append(f"{'backend':<12} {'status':<9} {'precision':<9} {'min dB':>8} {'mean dB':>8} {'floor':>6} "
                 f"{'max |d|':>9}  note")
    for row in r.rows:
        lines.append(
            f"{row.backend:<12} {row.status.upper():<9} {row.precision or '-':<9} {db(row.psnr_min):>8} "
            f"{db(row.psnr_mean):>8} {('-' if row.threshold is None else f'{row.threshold:g}'):>6} "
            f"{('-' if row.max_abs_diff is None else f'{row.max_abs_diff:.2e}'):>9}  {row.note}"
        )
    lines.append("")
    lines.append("PASSED" if r.passed else f"FAILED: {r.reason}")
    return "\n".join(lines)


def write_json(r: Report, path):
    Path(path).write_text(json.dumps(r.to_dict(), indent=2) + "\n")
