"""INT8 post-training quantization of an FP32 ONNX model into an explicit Q/DQ graph.

The graph is made with ONNX Runtime's ``quantize_static`` in QDQ format, in the form TensorRT's
explicit quantization needs and ONNX Runtime's CPU kernels also run:

* signed INT8 everywhere, symmetric: every zero point is 0 (TensorRT supports nothing else);
* weights per channel (Conv: axis 0, one scale per output channel), activations per tensor;
* Q/DQ pairs on the inputs of the residual Adds and of Concats (ORT quantizes Add/Concat inputs
  in QDQ mode), so TensorRT can keep the skip connections in INT8 instead of falling back;
* ReLUs are kept in the graph (with symmetric activations ORT cannot fold them away anyway);
* biases stay float (``QuantizeBias: False``): TensorRT fuses them into the INT8 convolution and
  does not take INT32 DequantizeLinear inputs;
* the graph input and output stay float32. By default two small parts stay float too:
  - the first conv, which reads the image (after PixelUnshuffle's layout ops): it learns
    near-zero-sum (high-pass) filters applied to the full image intensity, and INT8 rounding of
    those weights leaks the image's DC level into every feature. Measured on an edgenet S
    (REDS test_001): INT8-vs-FP32 output PSNR 43.0 dB with it quantized, 59.4 dB without; PSNR
    against ground truth -0.13 dB vs 0.00 dB. It is ~4% of the MACs (12 -> 16 channels);
  - the final global-residual Add (network output + input image): quantizing it would round
    the output image to 1/127 steps (~49 dB) for one cheap element-wise op.
  Both are options (``keep_input_conv_fp``, ``keep_output_add_fp``); the recipe lists the float nodes.

Calibration frames come from a folder of images, a video or synthetic blur over sharp images
(``synthetic:FOLDER``), are cut (or resized, when smaller) to the deploy tile size, and go through
``edge_deblur.runtime.preprocess.frame_to_tensor``: the runtime's own preprocessing.

The per-tensor ranges are written to ``calibration/<model>/table.json`` and the recipe that made
them (method, samples, source, tile, seed, tool versions, ONNX sha256) to ``recipe.json``; a table
re-quantizes the same model to the same graph without calibrating (``table=``).

numpy, OpenCV, onnx and onnxruntime only: no torch.
"""
from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from ..errors import DatasetError, InputError, ModelError
from ..runtime import preprocess
from ..runtime.manifest import tool_versions

log = logging.getLogger("edge_deblur.compress.quantize")

TABLE_FORMAT = "edge_deblur.calibration.v1"
METHODS = ("minmax", "percentile", "entropy")
MIN_SAMPLES = 8
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


# --------------------------------------------------------------------------------------------
# small helpers


def parse_tile(text) -> tuple[int, int]:
    """'256x256' or (w, h) -> (width, height)."""
    if isinstance(text, (tuple, list)):
        vals = list(text)
    else:
        try:
            vals = [int(v) for v in str(text).lower().split("x")]
        except ValueError:
            vals = []
    if len(vals) != 2 or any((not isinstance(v, (int, np.integer))) or v <= 0 for v in vals):
        raise InputError(f"tile {text!r} must look like WIDTHxHEIGHT with positive sizes, e.g. 256x256")
    return int(vals[0]), int(vals[1])


def sha256_file(path) -> str:
    from ..runtime.manifest import sha256_file as _sha

    return _sha(path)


class _DropORTHints(logging.Filter):
    """ONNX Runtime's quantizer logs a 'consider pre-processing' hint to the root logger on
    every call; it does not apply to these conv-only graphs (shapes are static per op)."""

    def filter(self, record):
        return "pre-process" not in record.getMessage()


class _quiet:
    """Drop ORT's pre-processing hint and send the calibrators' print() output to the log, so
    stdout stays clean for --json."""

    def __enter__(self):
        import contextlib
        import io

        self.f = _DropORTHints()
        logging.getLogger().addFilter(self.f)
        self.buf = io.StringIO()
        self.redirect = contextlib.redirect_stdout(self.buf)
        self.redirect.__enter__()

    def __exit__(self, *exc):
        self.redirect.__exit__(*exc)
        logging.getLogger().removeFilter(self.f)
        for line in self.buf.getvalue().splitlines():
            log.debug("onnxruntime: %s", line)
        return False


def _ort_session(model, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    src = model if isinstance(model, (bytes, str)) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------
# the FP32 model


@dataclass
class ModelInfo:
    path: Path
    sha256: str
    input_name: str
    output_name: str
    stride: int
    height: int | None  # fixed input dims, None when dynamic
    width: int | None
    metadata: dict
    # recurrent models: [{"name": "state_in", "output": "state_out", "channels": C, "scale": s}]
    state_inputs: tuple = ()


def inspect_float_model(path, stride: int | None = None) -> ModelInfo:
    """Check that ``path`` is an FP32 image model we can quantize (not already quantized, one
    NCHW 3-channel input) and read its stride (argument, ONNX metadata or manifest)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"ONNX model not found: {str(p)!r}; export one with 'edge-deblur export CKPT -o FOLDER'")
    try:
        m = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises several types
        raise ModelError(f"{str(p)!r} is not a readable ONNX file ({e})") from e
    qnodes = [n.name or n.op_type for n in m.graph.node if n.op_type in QDQ_OPS + ("QLinearConv", "ConvInteger", "MatMulInteger")]
    if qnodes:
        raise ModelError(
            f"{str(p)!r} is already quantized ({len(qnodes)} quantization nodes, e.g. {qnodes[0]!r}); "
            "quantize the FP32 model (model.onnx) instead"
        )
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    md = {e.key: e.value for e in m.metadata_props}
    outputs = [o.name for o in m.graph.output]
    states = []
    for i in inputs:
        if not i.name.startswith("state_in"):
            continue
        out_name = "state_out" + i.name[len("state_in"):]
        dims = [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
        if out_name not in outputs or len(dims) != 4 or not dims[1]:
            raise ModelError(
                f"{str(p)!r}: state input {i.name!r} (shape {dims}) needs a matching output {out_name!r} and a fixed "
                "channel count; re-export the recurrent model with edge-deblur export"
            )
        states.append({"name": i.name, "output": out_name, "channels": int(dims[1]),
                       "scale": int(md.get(f"edge_deblur.state_scale.{i.name}", 1))})
    images = [i for i in inputs if not i.name.startswith("state_in")]
    if len(images) != 1:
        raise ModelError(
            f"{str(p)!r} has inputs {[i.name for i in inputs]}; INT8 calibration needs one image input "
            "(plus state_in* inputs for a recurrent model)"
        )
    inp = images[0]
    tt = inp.type.tensor_type
    if tt.elem_type != onnx.TensorProto.FLOAT:
        raise ModelError(f"{str(p)!r}: input {inp.name!r} is {onnx.TensorProto.DataType.Name(tt.elem_type)}, expected float32")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if len(dims) != 4 or dims[1] not in (3, None):
        raise ModelError(f"{str(p)!r}: input {inp.name!r} has shape {dims}, expected N x 3 x H x W")
    if stride is None:
        if "edge_deblur.stride" in md:
            stride = int(md["edge_deblur.stride"])
        else:
            from ..runtime.manifest import read_manifest

            stride = int(read_manifest(p.parent).get("stride", 0)) or None
    if stride is None:
        raise ModelError(
            f"{str(p)!r} does not record its stride (no edge_deblur.stride metadata, no manifest.json beside it); "
            "pass --stride (16 for edgenet)"
        )
    image_out = next((o for o in outputs if not o.startswith("state_out")), outputs[0])
    return ModelInfo(p, sha256_file(p), inp.name, image_out, int(stride), dims[2], dims[3], md, tuple(states))


def model_feeds(info: ModelInfo, tensors: Sequence[np.ndarray], threads: int = 0) -> list:
    """ONNX Runtime feeds for calibration and comparison: ``{input: x}`` per tensor for an image
    model. A recurrent model's state is an input too, and its range in a stream is the range of
    states the model itself makes: each tensor is fed twice, with the zero state (a stream's first
    frame) and with the state the FP32 model left after that frame (a frame in the middle of a
    stream of similar frames)."""
    if not info.state_inputs:
        return [{info.input_name: t} for t in tensors]
    sess = _ort_session(info.path, threads)
    names = [info.output_name] + [s["output"] for s in info.state_inputs]
    feeds = []
    for t in tensors:
        n, _, h, w = t.shape
        zero = {s["name"]: np.zeros((n, s["channels"], h // s["scale"], w // s["scale"]), np.float32)
                for s in info.state_inputs}
        first = {info.input_name: t, **zero}
        outs = sess.run(names, first)
        feeds.append(first)
        feeds.append({info.input_name: t, **{s["name"]: o for s, o in zip(info.state_inputs, outs[1:])}})
    return feeds


# --------------------------------------------------------------------------------------------
# calibration frames


def _list_images(root: Path) -> list[Path]:
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
    # a pairs folder (scene/blur, scene/sharp): the blurry inputs are what the model sees
    blur = [f for f in files if "blur" in f.parent.name.lower()]
    return blur or files


def describe_source(source) -> tuple[str, Path]:
    """-> (kind, path): kind is 'images', 'video' or 'synthetic'."""
    text = str(source)
    kind = None
    if text.startswith("synthetic:"):
        kind, text = "synthetic", text[len("synthetic:"):]
    p = Path(text)
    if not p.exists():
        raise DatasetError(
            f"calibration source {str(source)!r} not found; pass a folder of images, a video file, "
            "or synthetic:FOLDER (synthetic blur over the sharp images in FOLDER)"
        )
    if kind is None:
        if p.is_dir():
            kind = "images"
        elif p.suffix.lower() in VIDEO_EXTS:
            kind = "video"
        elif p.suffix.lower() in IMAGE_EXTS:
            kind = "images"
        else:
            raise DatasetError(f"calibration source {str(p)!r} is neither a folder, an image nor a video ({sorted(VIDEO_EXTS)})")
    elif not p.is_dir():
        raise DatasetError(f"synthetic calibration needs a folder of sharp images, got {str(p)!r}")
    return kind, p


def _read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot read calibration image {str(path)!r}; remove it or convert it to PNG/JPEG")
    return img


def _video_frames(path: Path, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DatasetError(f"cannot open calibration video {str(path)!r} (OpenCV/FFmpeg cannot decode it)")
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        frames = []
        if total > 0:
            want = sorted(set(np.linspace(0, total - 1, num=min(count, total)).round().astype(int).tolist()))
            for idx in want:
                cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
                ok, f = cap.read()
                if ok and f is not None:
                    frames.append(f)
        if not frames:  # no frame count or no seeking: read sequentially
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            while len(frames) < count:
                ok, f = cap.read()
                if not ok:
                    break
                frames.append(f)
    finally:
        cap.release()
    if not frames:
        raise DatasetError(f"calibration video {str(path)!r} yielded no frames")
    return frames


def fit_to_tile(frame: np.ndarray, tile: tuple[int, int], rng: np.random.Generator, max_upscale: float = 2.0) -> np.ndarray:
    """Random crop of ``frame`` at ``tile`` = (w, h); a frame smaller than the tile is resized up
    (keeping its aspect) when that takes at most ``max_upscale``x, else InputError."""
    tw, th = tile
    if frame.ndim == 3 and frame.shape[2] not in (1, 3, 4):
        raise InputError(
            f"calibration frame has {frame.shape[2]} channels (shape {frame.shape}); pass 3-channel colour "
            "(or grayscale / BGRA) frames"
        )
    h, w = frame.shape[:2]
    if h < th or w < tw:
        s = max(th / h, tw / w)
        if s > max_upscale:
            raise InputError(
                f"calibration frame of {w}x{h} is far smaller than the tile {tw}x{th} (needs {s:.1f}x upscaling); "
                "pass larger frames or a smaller --tile"
            )
        nw, nh = max(tw, int(math.ceil(w * s))), max(th, int(math.ceil(h * s)))
        frame = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_CUBIC)
        h, w = nh, nw
    y = int(rng.integers(0, h - th + 1))
    x = int(rng.integers(0, w - tw + 1))
    return np.ascontiguousarray(frame[y:y + th, x:x + tw])


def calibration_frames(source, count: int, tile: tuple[int, int], seed: int = 0, blur_cfg=None) -> tuple[list[np.ndarray], bool, dict]:
    """``count`` frames of exactly ``tile`` size from ``source``. Returns (frames, rgb, info):
    ``rgb`` tells the colour order (image files and videos are BGR; synthetic frames RGB)."""
    kind, path = describe_source(source)
    rng = np.random.default_rng(seed)
    info = {"kind": kind, "path": str(path)}
    if kind == "video":
        frames = _video_frames(path, count)
        info["distinct_frames"] = len(frames)
        return [fit_to_tile(frames[i % len(frames)], tile, rng) for i in range(count)], False, info
    files = [path] if path.is_file() else _list_images(path)
    if not files:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) under {str(path)!r} for calibration")
    order = rng.permutation(len(files))
    picks = [files[order[i % len(files)]] for i in range(count)]
    info["distinct_frames"] = min(count, len(files))
    if kind == "images":
        return [fit_to_tile(_read_image(f), tile, rng) for f in picks], False, info
    # synthetic blur over sharp images
    from ..data.blur import synthesize

    tw, th = tile
    out = []
    for f in picks:
        img = _read_image(f)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        img = np.ascontiguousarray(img[..., 2::-1])  # BGR(A) -> RGB
        h, w = img.shape[:2]
        # leave room for the blur's margin; upscale small photos first
        need = 1.25
        if h < th * need or w < tw * need:
            s = max(th * need / h, tw * need / w)
            if s > 2.5:
                raise InputError(f"sharp image {str(f)!r} ({w}x{h}) is too small for tile {tw}x{th}; use a smaller --tile")
            img = cv2.resize(img, (int(math.ceil(w * s)), int(math.ceil(h * s))), interpolation=cv2.INTER_CUBIC)
        blurred, _ = synthesize(img, rng, blur_cfg, crop=(th, tw))
        out.append(blurred)
    return out, True, info


def frames_to_tensors(frames: Iterable[np.ndarray], stride: int, tile: tuple[int, int] | None = None, rgb: bool = False) -> list[np.ndarray]:
    """Frames -> (1, 3, H, W) float32 model inputs through the runtime's own preprocessing
    (``runtime.preprocess.frame_to_tensor``). With ``tile``, every frame must be exactly that
    size (no padding happens at calibration time)."""
    out = []
    for i, f in enumerate(frames):
        if not isinstance(f, np.ndarray):
            raise InputError(f"calibration frame {i} is a {type(f).__name__}, not a numpy array")
        if f.ndim == 3 and f.shape[2] not in (1, 3, 4):
            raise InputError(f"calibration frame {i} has {f.shape[2]} channels (shape {f.shape}); pass 3-channel frames")
        if tile is not None and (f.shape[1], f.shape[0]) != tuple(tile):
            raise InputError(
                f"calibration frame {i} is {f.shape[1]}x{f.shape[0]}, not the tile size {tile[0]}x{tile[1]}; "
                "cut frames to the tile (calibration_frames does) or pass a matching --tile"
            )
        t, _ = preprocess.frame_to_tensor(f, stride, rgb)
        if t.ndim != 4 or t.shape[:2] != (1, 3):
            raise InputError(f"calibration frame {i} gave a tensor of shape {t.shape}, expected (1, 3, H, W)")
        out.append(t)
    return out


class TensorReader:
    """ONNX Runtime CalibrationDataReader over preprocessed tensors, or over whole feed dicts (a
    recurrent model's image and state), with strided collection."""

    def __init__(self, input_name: str, tensors: Sequence):
        self.input_name = input_name
        self.tensors = list(tensors)
        self.set_range(0, len(self.tensors))

    def set_range(self, start_index: int, end_index: int):
        self._items = iter(self.tensors[start_index:end_index])

    def __len__(self):
        return len(self.tensors)

    def get_next(self):
        t = next(self._items, None)
        if t is None:
            return None
        return t if isinstance(t, dict) else {self.input_name: t}

    def __iter__(self):
        return self

    def __next__(self):
        r = self.get_next()
        if r is None:
            raise StopIteration
        return r


# --------------------------------------------------------------------------------------------
# calibration tables


def save_table(path, ranges: dict[str, tuple[float, float]], method: str, onnx_sha256: str) -> dict:
    from ..runtime.manifest import atomic_write_json

    table = {
        "format": TABLE_FORMAT,
        "method": method,
        "onnx_sha256": onnx_sha256,
        "symmetric_int8_scale": "max(|min|, |max|) / 127",
        "tensors": {k: {"min": float(lo), "max": float(hi)} for k, (lo, hi) in sorted(ranges.items())},
    }
    atomic_write_json(path, table)
    return table


def load_table(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"calibration table {str(p)!r} not found; run 'edge-deblur quantize' with --calib to make one")
    try:
        t = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{str(p)!r} is not a readable calibration table ({e})") from e
    if not isinstance(t, dict) or t.get("format") != TABLE_FORMAT or not isinstance(t.get("tensors"), dict):
        raise InputError(f"{str(p)!r} is not an edge-deblur calibration table (format {TABLE_FORMAT})")
    if t.get("method") not in METHODS:
        raise InputError(f"{str(p)!r}: unknown calibration method {t.get('method')!r}")
    for k, v in t["tensors"].items():
        if not (isinstance(v, dict) and all(isinstance(v.get(x), (int, float)) for x in ("min", "max")) and v["min"] <= v["max"]):
            raise InputError(f"{str(p)!r}: bad range for tensor {k!r}: {v!r}")
    return t


def _to_tensors_data(ranges: dict[str, tuple[float, float]], method: str):
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    cm = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
          "entropy": CalibrationMethod.Entropy}[method]
    return TensorsData(cm, {k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in ranges.items()})


def _from_tensors_data(td) -> dict[str, tuple[float, float]]:
    out = {}
    for k in td.data:
        lo, hi = td.data[k].range_value
        out[k] = (float(np.asarray(lo, np.float32).reshape(-1)[0]), float(np.asarray(hi, np.float32).reshape(-1)[0]))
    return out


# --------------------------------------------------------------------------------------------
# quantization


def _method_enum(method: str):
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise InputError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")
    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[method]


def output_residual_adds(model_path) -> list[str]:
    """Names of Add nodes that produce a graph output and take the graph input directly (the
    global residual ``network(x) + x``)."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    ins = {i.name for i in m.graph.input if i.name not in inits}
    outs = {o.name for o in m.graph.output}
    return [n.name for n in m.graph.node if n.op_type == "Add" and set(n.output) & outs and set(n.input) & ins]


LAYOUT_OPS = {"Unsqueeze", "Squeeze", "Reshape", "Transpose", "SpaceToDepth", "DepthToSpace", "Identity"}


def input_path_nodes(model_path) -> list[str]:
    """The nodes from the graph input through pure layout ops (PixelUnshuffle's Reshape/Transpose)
    up to and including the first Conv(s): the layer that reads the image itself."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    consumers: dict = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    frontier = [i.name for i in m.graph.input if i.name not in inits]
    out, seen = [], set()
    while frontier:
        nxt = []
        for t in frontier:
            for n in consumers.get(t, []):
                if n.name in seen:
                    continue
                if n.op_type in LAYOUT_OPS:
                    seen.add(n.name)
                    out.append(n.name)
                    nxt.extend(n.output)
                elif n.op_type == "Conv":
                    seen.add(n.name)
                    out.append(n.name)
        frontier = nxt
    convs = [n.name for n in m.graph.node if n.op_type == "Conv" and n.name in seen]
    return out if convs else []  # no conv behind layout ops: nothing worth keeping float


def _name_nodes(model_path, dst) -> Path:
    """Copy of the model with every node named (ORT needs names for nodes_to_exclude)."""
    import onnx

    m = onnx.load(str(model_path))
    seen = set()
    for i, n in enumerate(m.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)
    onnx.save(m, str(dst))
    return Path(dst)


def extra_options(method: str = "minmax", percentile: float = 99.999) -> dict:
    opts = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QDQKeepRemovableActivations": True,
        "QuantizeBias": False,
        "ForceQuantizeNoInputCheck": True,
        "DedicatedQDQPair": False,
    }
    return opts


def _quantize_with_ranges(src: Path, dst: Path, ranges: dict, method: str, exclude: list[str], percentile: float):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    with tempfile.TemporaryDirectory(prefix="edge_deblur_q.") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(_to_tensors_data(ranges, method), cache)
        with _quiet():
            quantize_static(
                str(src), str(dst), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                per_channel=True, reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude), calibrate_method=_method_enum(method),
                extra_options=extra_options(method, percentile), calibration_cache_path=str(cache),
            )


ENTROPY_BINS = 512  # histogram bins for entropy calibration (KL over 128 quantized bins, as TensorRT)


def collect_ranges(src: Path, tensors: Sequence[np.ndarray], input_name: str, method: str, percentile: float) -> dict:
    """Run ONNX Runtime's calibrator over ``tensors``; -> {tensor name: (min, max)}.

    The calibrator is driven directly (not through quantize_static, which cannot set the number
    of histogram bins: its entropy calibration would use 128 bins for 128 quantized levels, i.e.
    plain min/max), in chunks of at most 8 tiles to bound memory."""
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    calib_opts: dict = {}
    if method == "percentile":
        calib_opts = {"percentile": float(percentile), "symmetric": True, "num_bins": 2048}
    elif method == "entropy":
        calib_opts = {"num_bins": ENTROPY_BINS, "num_quantized_bins": 128, "symmetric": True}
    n = len(tensors)
    chunk = min(8, n)
    reader = TensorReader(input_name, tensors)
    with tempfile.TemporaryDirectory(prefix="edge_deblur_cal.") as tmp, _quiet():
        cal = create_calibrator(Path(src), ops, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                calibrate_method=_method_enum(method), extra_options=calib_opts)
        for start in range(0, n, chunk):
            reader.set_range(start, min(n, start + chunk))
            cal.collect_data(reader)
        td = cal.compute_data()
        del cal
    return _from_tensors_data(td)


def _finish_graph(dst: Path, metadata: dict, recipe_path: str | None):
    """Set edge-deblur metadata on the quantized graph and run onnx.checker."""
    import onnx

    m = onnx.load(str(dst))
    md = dict(metadata)
    md["edge_deblur.precision"] = "int8"
    md["edge_deblur.quantization"] = "qdq-int8-symmetric;weights=per-channel;activations=per-tensor"
    if recipe_path:
        md["edge_deblur.calibration"] = recipe_path
    del m.metadata_props[:]
    for k, v in sorted(md.items()):
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(m)
    from ..runtime.manifest import atomic_write_bytes

    atomic_write_bytes(dst, m.SerializeToString())


# --------------------------------------------------------------------------------------------
# checks of the result


def qdq_report(path) -> dict:
    """Facts about a Q/DQ graph: counts, zero points, per-channel weight scales."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    bad_zp, dtypes = [], set()
    for n in m.graph.node:
        if n.op_type in QDQ_OPS and len(n.input) > 2:
            zp = inits.get(n.input[2])
            if zp is None:
                bad_zp.append((n.name, "not an initializer"))
                continue
            dtypes.add(str(zp.dtype))
            if np.any(zp != 0):
                bad_zp.append((n.name, zp.tolist()))
    convs = []
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        dq = producers.get(n.input[1])
        w_info = {"conv": n.name, "per_channel": False}
        if dq is not None and dq.op_type == "DequantizeLinear":
            w = inits.get(dq.input[0])
            s = inits.get(dq.input[1])
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            w_info.update(
                weight_dtype=str(w.dtype) if w is not None else None,
                out_channels=int(w.shape[0]) if w is not None else None,
                scale_len=int(s.size) if s is not None else None,
                axis=int(axis),
                per_channel=bool(s is not None and w is not None and s.ndim == 1 and s.size == w.shape[0] and axis == 0),
            )
        in_dq = producers.get(n.input[0])
        w_info["input_quantized"] = bool(in_dq is not None and in_dq.op_type == "DequantizeLinear")
        convs.append(w_info)
    adds = []
    for n in m.graph.node:
        if n.op_type in ("Add", "Concat"):
            q = [bool(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear") for i in n.input]
            adds.append({"node": n.name, "op": n.op_type, "inputs_quantized": q})
    io = {vi.name: onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type) for vi in list(m.graph.input) + list(m.graph.output)}
    return {
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in m.graph.node),
        "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in m.graph.node),
        "zero_point_dtypes": sorted(dtypes),
        "nonzero_zero_points": bad_zp,
        "convs": convs,
        "adds": adds,
        "io_dtypes": io,
    }


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def compare_outputs(fp32_path, int8_path, tensors: Sequence, threads: int = 0) -> dict:
    """INT8 vs FP32 image outputs (clipped to [0, 1], as frames are) on model inputs (tensors, or
    feed dicts with a recurrent model's state): PSNR over all."""
    a_s, b_s = _ort_session(fp32_path, threads), _ort_session(int8_path, threads)
    name = next(i.name for i in a_s.get_inputs() if not i.name.startswith("state_in"))
    out = next(o.name for o in a_s.get_outputs() if not o.name.startswith("state_out"))
    se, n, worst = 0.0, 0, 0.0
    for t in tensors:
        feed = t if isinstance(t, dict) else {name: t}
        a = np.clip(a_s.run([out], feed)[0], 0, 1).astype(np.float64)
        b = np.clip(b_s.run([out], feed)[0], 0, 1).astype(np.float64)
        se += float(np.sum((a - b) ** 2))
        n += a.size
        worst = max(worst, float(np.max(np.abs(a - b))))
    mse = se / max(1, n)
    return {"psnr_int8_vs_fp32": float("inf") if mse == 0 else 10 * math.log10(1.0 / mse),
            "max_abs_diff": worst, "inputs": len(tensors)}


def find_pairs(root, scenes: Sequence[str] | None = None) -> list[tuple[str, str, str]]:
    """(scene, blur, sharp) under ``root/<scene>/{blur,sharp}/`` (GoPro/REDS layout), numpy-free."""
    r = Path(root)
    if not r.is_dir():
        raise DatasetError(f"pairs folder {str(r)!r} not found; pass a folder with <scene>/blur and <scene>/sharp")
    out = []
    for scene in sorted(d for d in r.iterdir() if d.is_dir()):
        if scenes and scene.name not in scenes:
            continue
        b, s = scene / "blur", scene / "sharp"
        if not (b.is_dir() and s.is_dir()):
            continue
        for f in sorted(b.iterdir()):
            if f.suffix.lower() in IMAGE_EXTS and (s / f.name).is_file():
                out.append((scene.name, str(f), str(s / f.name)))
    if not out:
        raise DatasetError(f"no blur/sharp pairs under {str(r)!r}" + (f" for scenes {list(scenes)}" if scenes else ""))
    return out


def evaluate_onnx_on_pairs(model_path, pairs, with_ssim: bool = True, threads: int = 0, stride: int | None = None) -> dict:
    """PSNR/SSIM of an ONNX model on (scene, blur, sharp) pairs, through the runtime's
    preprocessing (pad to stride, crop back, clip, 8-bit)."""
    from ..metrics.evaluate import evaluate_pairs

    if stride is None:
        stride = inspect_float_model_stride(model_path)
    sess = _ort_session(model_path, threads)
    ins = sess.get_inputs()
    name = next(i.name for i in ins if not i.name.startswith("state_in"))
    states = [i for i in ins if i.name.startswith("state_in")]
    meta = dict(sess.get_modelmeta().custom_metadata_map or {})
    scale = {i.name: int(meta.get(f"edge_deblur.state_scale.{i.name}", 1)) for i in states}
    outs = [next(o.name for o in sess.get_outputs() if not o.name.startswith("state_out"))]
    outs += ["state_out" + i.name[len("state_in"):] for i in states]
    carried: dict = {}

    def fn(frame):  # a recurrent model's state is carried through a scene, from zeros
        t, info = preprocess.frame_to_tensor(frame, stride)
        feed = {name: t}
        for i in states:
            v = carried.get(i.name)
            n, _, h, w = t.shape
            shape = (n, i.shape[1], h // scale[i.name], w // scale[i.name])
            feed[i.name] = v if v is not None and v.shape == shape else np.zeros(shape, np.float32)
        res = sess.run(outs, feed)
        carried.update({i.name: o for i, o in zip(states, res[1:])})
        return preprocess.tensor_to_frame(res[0], info)

    return evaluate_pairs(fn, pairs, with_ssim=with_ssim, reset=carried.clear)


def inspect_float_model_stride(path) -> int:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    md = {e.key: e.value for e in m.metadata_props}
    if "edge_deblur.stride" in md:
        return int(md["edge_deblur.stride"])
    from ..runtime.manifest import read_manifest

    s = read_manifest(Path(path).parent).get("stride")
    if not s:
        raise ModelError(f"{str(path)!r} does not record its stride; pass stride=")
    return int(s)


# --------------------------------------------------------------------------------------------
# the whole stage


@dataclass
class QuantizeOptions:
    method: str = "minmax"
    samples: int = 64
    tile: tuple[int, int] = (256, 256)  # (width, height)
    seed: int = 0
    percentile: float = 99.999
    keep_output_add_fp: bool = True      # leave the global residual Add (output = f(x) + x) in float
    keep_input_conv_fp: bool = True      # leave the first conv (and the unshuffle before it) in float
    eval_samples: int = 8                # held-out tiles (same source, another seed) for INT8 vs FP32
    min_samples: int = MIN_SAMPLES

    def validate(self):
        if self.method not in METHODS:
            raise InputError(f"--method {self.method!r} is not one of {', '.join(METHODS)}")
        if not isinstance(self.samples, int) or self.samples < self.min_samples:
            raise InputError(
                f"{self.samples} calibration samples are too few; use at least {self.min_samples} "
                "(64 or more is typical: --samples 64)"
            )
        self.tile = parse_tile(self.tile)
        if not 90.0 < self.percentile <= 100.0:
            raise InputError(f"percentile {self.percentile} must be in (90, 100]")


def default_model_name(onnx_path) -> str:
    p = Path(onnx_path).resolve()
    return p.parent.name if p.name == "model.onnx" else p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.stem


def quantize_model(
    onnx_path,
    output,
    calib=None,
    options: QuantizeOptions | None = None,
    table=None,
    calib_dir="calibration",
    name: str | None = None,
    pairs=None,
    pair_scenes: Sequence[str] | None = None,
    stride: int | None = None,
    frames: Sequence[np.ndarray] | None = None,
    frames_rgb: bool = False,
    update_manifest: bool = True,
    threads: int = 0,
) -> dict:
    """FP32 ONNX -> INT8 Q/DQ ONNX. Calibrates on ``calib`` (a source: folder, video,
    synthetic:FOLDER) or on ``frames`` (already tile-sized numpy frames), or re-uses ``table`` (a
    saved calibration table) without calibrating. Writes the table and recipe to
    ``calib_dir/<name>/`` and returns the recipe (with the accuracy report)."""
    opts = options or QuantizeOptions()
    opts.validate()
    info = inspect_float_model(onnx_path, stride)
    out = Path(output)
    if out.resolve() == info.path.resolve():
        raise InputError(f"output {str(out)!r} would overwrite the FP32 model; pass another -o (e.g. model.int8.onnx)")
    tw, th = opts.tile
    if tw % info.stride or th % info.stride:
        raise InputError(f"tile {tw}x{th} is not a multiple of the model's stride {info.stride}; use e.g. "
                         f"{(tw // info.stride or 1) * info.stride}x{(th // info.stride or 1) * info.stride}")
    if (info.height and info.height != th) or (info.width and info.width != tw):
        raise InputError(f"the model's input is fixed at {info.width}x{info.height}; pass --tile {info.width}x{info.height}")
    name = name or default_model_name(info.path)
    cdir = Path(calib_dir) / name
    t0 = time.time()
    source_info: dict = {}
    recipe_src: dict = {}
    eval_tensors: list[np.ndarray] = []

    with tempfile.TemporaryDirectory(prefix="edge_deblur_q.") as tmp:
        named = _name_nodes(info.path, Path(tmp) / "named.onnx")
        exclude = output_residual_adds(named) if opts.keep_output_add_fp else []
        if opts.keep_input_conv_fp:
            exclude += input_path_nodes(named)
        if table is not None:
            t = load_table(table)
            if t.get("onnx_sha256") != info.sha256:
                raise InputError(
                    f"calibration table {str(table)!r} was computed for an ONNX model with sha256 "
                    f"{str(t.get('onnx_sha256'))[:12]}..., not {str(info.path)!r} ({info.sha256[:12]}...); "
                    "recalibrate with --calib"
                )
            if t["method"] != opts.method:
                log.info("using the table's calibration method %s", t["method"])
                opts.method = t["method"]
            ranges = {k: (v["min"], v["max"]) for k, v in t["tensors"].items()}
            old = Path(table).parent / "recipe.json"  # the recipe saved beside the table
            try:
                recipe_src = json.loads(old.read_text()) if old.is_file() else {}
            except (OSError, json.JSONDecodeError):
                recipe_src = {}
            if recipe_src.get("onnx_sha256") != info.sha256:
                recipe_src = {}
            source_info = recipe_src.get("source", {"from_table": str(table)})
            if calib is not None or frames is not None:
                cal_frames, rgb = _eval_frames(calib, frames, frames_rgb, opts, info, source_info)
                eval_tensors = cal_frames
        else:
            if frames is not None:
                frame_list = list(frames)
                if len(frame_list) < opts.min_samples:
                    raise InputError(f"{len(frame_list)} calibration frames are too few; pass at least {opts.min_samples}")
                tensors = frames_to_tensors(frame_list, info.stride, opts.tile, frames_rgb)
                source_info = {"kind": "frames", "count": len(frame_list)}
                eval_tensors = tensors[: opts.eval_samples]
            elif calib is not None:
                cal, rgb, source_info = calibration_frames(calib, opts.samples, opts.tile, opts.seed)
                tensors = frames_to_tensors(cal, info.stride, opts.tile, rgb)
                ev, rgb2, _ = calibration_frames(calib, opts.eval_samples, opts.tile, opts.seed + 7919)
                eval_tensors = frames_to_tensors(ev, info.stride, opts.tile, rgb2)
            else:
                raise InputError("pass a calibration source (--calib FOLDER|VIDEO|synthetic:FOLDER) or a saved --table")
            log.info("calibrating %s on %d tiles of %dx%d (%s)", info.path.name, len(tensors), tw, th, opts.method)
            ranges = collect_ranges(named, model_feeds(info, tensors, threads), info.input_name, opts.method,
                                    opts.percentile)
            save_table(cdir / "table.json", ranges, opts.method, info.sha256)
        _quantize_with_ranges(named, out, ranges, opts.method, exclude, opts.percentile)
    recipe_rel = str(cdir / "recipe.json")
    _finish_graph(out, info.metadata, recipe_rel)
    rep = qdq_report(out)
    if rep["nonzero_zero_points"]:
        raise ModelError(f"quantized graph has non-zero zero points: {rep['nonzero_zero_points'][:3]}; this is a bug")

    recipe = {
        "format": TABLE_FORMAT,
        "model": name,
        "onnx": str(info.path),
        "onnx_sha256": info.sha256,
        "output": str(out),
        "output_sha256": sha256_file(out),
        "method": opts.method,
        "percentile": opts.percentile if opts.method == "percentile" else None,
        "samples": opts.samples if frames is None else source_info.get("count"),
        "tile": [tw, th],
        "seed": opts.seed,
        "from_table": str(table) if table is not None else None,
        "stride": info.stride,
        "source": source_info,
        "preprocess": "edge_deblur.runtime.preprocess.frame_to_tensor",
        "table": str(cdir / "table.json"),
        "quantization": {
            "format": "QDQ",
            "activations": "int8 symmetric per-tensor (zero point 0)",
            "weights": "int8 symmetric per-channel (Conv axis 0)",
            "bias": "float",
            "float_nodes": exclude,
            "extra_options": extra_options(opts.method, opts.percentile),
        },
        "tools": tool_versions(opencv="cv2"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - t0, 2),
        "graph": {k: rep[k] for k in ("quantize_linear", "dequantize_linear", "zero_point_dtypes", "io_dtypes")},
        "accuracy": {},
    }
    if info.state_inputs:
        recipe["state_inputs"] = [s["name"] for s in info.state_inputs]
        recipe["state_calibration"] = "each tile with the zero state and with the state the FP32 model left after it"
    if eval_tensors:
        recipe["accuracy"]["held_out_tiles"] = compare_outputs(info.path, out, model_feeds(info, eval_tensors, threads),
                                                               threads)
    if pairs is not None:
        pl = find_pairs(pairs, pair_scenes)
        f32 = evaluate_onnx_on_pairs(info.path, pl, threads=threads, stride=info.stride)
        i8 = evaluate_onnx_on_pairs(out, pl, threads=threads, stride=info.stride)
        recipe["accuracy"]["pairs"] = {
            "root": str(pairs), "scenes": list(pair_scenes or []), "count": len(pl),
            "fp32": {k: f32[k] for k in ("psnr", "ssim", "input_psnr")},
            "int8": {k: i8[k] for k in ("psnr", "ssim", "input_psnr")},
            "delta_psnr": i8["psnr"] - f32["psnr"],
            "psnr_int8_vs_fp32": _pairs_int8_vs_fp32(info.path, out, pl, info.stride, threads),
        }
    if table is not None and recipe_src:
        # re-built from a saved table: the calibration facts are those of the run that made it
        for k in ("percentile", "samples", "tile", "seed"):
            recipe[k] = recipe_src.get(k, recipe[k])
    from ..runtime.manifest import atomic_write_json

    atomic_write_json(cdir / "recipe.json", recipe)
    if update_manifest:
        _add_to_manifest(out, info, recipe)
    return recipe


def _eval_frames(calib, frames, frames_rgb, opts, info, source_info):
    if frames is not None:
        fl = list(frames)[: opts.eval_samples]
        return frames_to_tensors(fl, info.stride, opts.tile, frames_rgb), frames_rgb
    ev, rgb, _ = calibration_frames(calib, opts.eval_samples, opts.tile, opts.seed + 7919)
    return frames_to_tensors(ev, info.stride, opts.tile, rgb), rgb


def _pairs_int8_vs_fp32(fp32_path, int8_path, pairs, stride, threads) -> float:
    from ..metrics.evaluate import read_image

    tensors = [preprocess.frame_to_tensor(read_image(b), stride)[0] for _, b, _ in pairs]
    feeds = model_feeds(inspect_float_model(fp32_path, stride), tensors, threads)
    return compare_outputs(fp32_path, int8_path, feeds, threads)["psnr_int8_vs_fp32"]


def _add_to_manifest(out: Path, info: ModelInfo, recipe: dict):
    from ..runtime.manifest import add_artifact, read_manifest

    folder = out.parent
    man = read_manifest(folder)
    if not man or folder.resolve() != info.path.parent.resolve():
        log.info("no manifest.json beside both models in %s; not listing %s", folder, out.name)
        return
    entry = {
        "precision": "int8",
        "io_dtype": "float32",
        "quantization": "qdq",
        "source": info.path.name,
        "source_sha256": info.sha256,
        "calibration": {k: recipe[k] for k in ("method", "samples", "tile", "seed", "table")} | {"recipe": recipe["table"].replace("table.json", "recipe.json")},
        "accuracy": recipe["accuracy"],
    }
    add_artifact(folder, out.name, entry)
