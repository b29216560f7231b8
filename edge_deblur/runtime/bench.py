"""Benchmarks: a model's latency and throughput next to the machine's measured 3x3-conv peak.

The peak is measured in the same run with ONNX Runtime on small ONNX graphs built with
``onnx.helper`` (no torch): stacks of 3x3 conv + ReLU at the channel widths and feature-map
sizes the model runs at (edgenet: the frame at half resolution and width w0, a quarter and
w1, ...). The best of those configurations is the peak; ``efficiency`` = the model's achieved
GMAC/s (its MACs per frame over its median inference time) / the peak.
"""
from __future__ import annotations

import os
import platform
import re
import time

import numpy as np

from ..errors import InputError

DEFAULT_WIDTHS = (16, 32, 64, 128)


def parse_size(text) -> tuple[int, int]:
    """'1280x720' -> (1280, 720) = (width, height)."""
    if isinstance(text, (tuple, list)) and len(text) == 2:
        w, h = int(text[0]), int(text[1])
    else:
        m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", str(text))
        if not m:
            raise InputError(f"size {text!r} is not WIDTHxHEIGHT (e.g. 1280x720)")
        w, h = int(m.group(1)), int(m.group(2))
    if w < 1 or h < 1 or w * h > 1 << 28:
        raise InputError(f"size {w}x{h} is out of range: width and height at least 1, at most {1 << 28} pixels "
                         "in all (e.g. 1280x720)")
    return w, h


def machine_info() -> dict:
    """The machine a result was measured on: CPU model, the instruction-set features that decide
    speed on ONNX Runtime's CPU kernels (``runtime.cpu_features``), cores, load, versions."""
    from .cpu_features import cpu_features

    import onnxruntime

    f = cpu_features()
    try:
        load = [round(v, 2) for v in os.getloadavg()]  # other work on the machine skews timings
    except (AttributeError, OSError):
        load = None
    return {"cpu": f.model, "cores": f.cores, "isa": f.isa, "int8_dot_product": f.int8_dot,
            "cpu_features": sorted(f.relevant), "platform": platform.platform(), "onnxruntime": onnxruntime.__version__,
            "load_avg_1_5_15min": load}


def conv_stack_onnx(channels: int, depth: int = 4, seed: int = 0) -> bytes:
    """ONNX bytes of ``depth`` x (3x3 conv channels->channels, pad 1, bias, ReLU), dynamic H/W."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "input"
    for i in range(depth):
        w = (rng.standard_normal((channels, channels, 3, 3)) * (1.0 / np.sqrt(9 * channels))).astype(np.float32)
        b = np.zeros(channels, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]))
        out = "output" if i == depth - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [out]))
        prev = out
    shape = [1, channels, "height", "width"]
    graph = helper.make_graph(
        nodes, "conv_peak",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-deblur bench")
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _timed(fn, runs: int, warmup: int) -> np.ndarray:
    for _ in range(max(0, warmup)):
        fn()
    ms = np.empty(max(1, runs), np.float64)
    for i in range(ms.size):
        t0 = time.perf_counter()
        fn()
        ms[i] = (time.perf_counter() - t0) * 1e3
    return ms


def peak_configs(size: tuple[int, int], widths=DEFAULT_WIDTHS) -> list[tuple[int, int, int]]:
    """(channels, height, width) of the feature maps of an edgenet-like model at frame ``size``."""
    w, h = size
    out = []
    for i, c in enumerate(widths):
        f = 2 * 2 ** i
        out.append((int(c), max(1, -(-h // f)), max(1, -(-w // f))))
    return out


def measure_conv_peak(size=(1280, 720), widths=DEFAULT_WIDTHS, threads: int | None = None, depth: int = 4,
                      runs: int = 10, warmup: int = 2, providers=None) -> dict:
    """Best GMAC/s of 3x3-conv stacks run by ONNX Runtime at the model's widths and map sizes."""
    import onnxruntime as ort

    from .backends.onnxruntime import cpu_cores, session_options

    threads = int(threads or cpu_cores())
    rng = np.random.default_rng(0)
    configs = []
    for c, h, w in peak_configs(size, widths):
        sess = ort.InferenceSession(conv_stack_onnx(c, depth), session_options(threads),
                                    providers=providers or ["CPUExecutionProvider"])
        x = rng.random((1, c, h, w), dtype=np.float32)
        ms = _timed(lambda: sess.run(None, {"input": x}), runs, warmup)
        macs = depth * h * w * c * c * 9
        p50 = float(np.median(ms))
        configs.append({"channels": c, "height": h, "width": w, "depth": depth, "gmacs": macs / 1e9,
                        "ms_p50": p50, "gmacs_per_s": macs / 1e9 / (p50 / 1e3)})
    best = max(configs, key=lambda r: r["gmacs_per_s"])
    return {"peak_gmacs_per_s": best["gmacs_per_s"], "best": best, "configs": configs, "threads": threads,
            "engine": "onnxruntime " + ",".join(providers or ["CPUExecutionProvider"])}


def bench(model=None, size=(1280, 720), backend: str | None = None, runs: int = 50, warmup: int = 5,
          batch: int = 1, threads: int | None = None, device: str | None = None, tile=None, overlap: int = 128,
          peak: bool = True, peak_runs: int = 10, seed: int = 0, select: str | None = None) -> dict:
    """Time ``model`` on random ``size`` = (width, height) frames through the ``Deblurrer``.

    ``latency_ms_*``: one call end to end (preprocess + model + postprocess, ``batch`` frames);
    ``infer_ms_*``: the model alone; ``fps`` = frames / wall time of the timed loop;
    ``gmacs`` per frame = the manifest's MACs per pixel x the padded pixels; ``gmacs_per_s`` =
    gmacs x batch / median model time."""
    from .deblurrer import Deblurrer

    w, h = parse_size(size)
    if runs < 1 or warmup < 0 or batch < 1:
        raise InputError(f"runs must be >= 1, warmup >= 0 and batch >= 1 (got {runs}, {warmup}, {batch})")
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)]
    with Deblurrer.open(model, backend=backend, device=device, threads=threads, tile=tile, overlap=overlap,
                        select=select) as d:
        info = d.info
        max_batch = getattr(d.backend, "max_batch", None)
        if max_batch is not None and batch > max_batch:
            where = ("its TensorRT optimization profile's largest batch: rebuild with a wider --shapes"
                     if info.get("backend") == "tensorrt" else "its ONNX input's first dimension")
            raise InputError(f"--batch {batch}: {os.path.basename(str(info.get('model') or model))} takes at most "
                             f"a batch of {max_batch} ({where}); use --batch {max_batch}")
        x0, _ = d.preprocess(frames[0])
        hp, wp = x0.shape[2], x0.shape[3]
        pre_ms, inf_ms, post_ms, tot_ms = [], [], [], []

        def one(record: bool):
            t0 = time.perf_counter()
            prepared = [d.preprocess(f) for f in frames]
            x = np.concatenate([p[0] for p in prepared], axis=0) if batch > 1 else prepared[0][0]
            t1 = time.perf_counter()
            y = d.infer_tensor(x)
            t2 = time.perf_counter()
            for j, (_, inf) in enumerate(prepared):
                d.postprocess(y[j:j + 1], inf)
            t3 = time.perf_counter()
            if record:
                pre_ms.append((t1 - t0) * 1e3)
                inf_ms.append((t2 - t1) * 1e3)
                post_ms.append((t3 - t2) * 1e3)
                tot_ms.append((t3 - t0) * 1e3)

        for _ in range(warmup):
            one(False)
        t_start = time.perf_counter()
        for _ in range(runs):
            one(True)
        wall = time.perf_counter() - t_start
        threads_used = info.get("threads")
        arch = info.get("arch") or {}

    tot, inf = np.asarray(tot_ms), np.asarray(inf_ms)
    mpp = info.get("macs_per_pixel")
    gmacs = mpp * hp * wp / 1e9 if mpp else None
    infer_p50 = float(np.median(inf))
    result = {
        "model": info.get("model"),
        "backend": info.get("backend"),
        "precision": info.get("precision"),
        "selection": info.get("selection"),
        "providers": info.get("providers"),
        "size": f"{w}x{h}",
        "padded_size": f"{wp}x{hp}",
        "batch": batch,
        "tile": tile,
        "threads": threads_used,
        "runs": runs,
        "warmup": warmup,
        "fps": runs * batch / wall,
        "latency_ms_p50": float(np.median(tot)),
        "latency_ms_p99": float(np.percentile(tot, 99)),
        "latency_ms_mean": float(tot.mean()),
        "infer_ms_p50": infer_p50,
        "infer_ms_p99": float(np.percentile(inf, 99)),
        "preprocess_ms_p50": float(np.median(pre_ms)),
        "postprocess_ms_p50": float(np.median(post_ms)),
        "gmacs": gmacs,
        "gmacs_per_s": gmacs * batch / (infer_p50 / 1e3) if gmacs else None,
        "peak_gmacs_per_s": None,
        "efficiency": None,
        "machine": machine_info(),
    }
    if peak:
        widths = tuple(arch.get("widths") or DEFAULT_WIDTHS)
        providers = info.get("providers") if info.get("backend") == "onnxruntime" else None
        pk = measure_conv_peak((wp, hp), widths, threads=threads_used if info.get("backend") == "onnxruntime" else threads,
                               runs=peak_runs, warmup=2, providers=providers)
        result["peak_gmacs_per_s"] = pk["peak_gmacs_per_s"]
        result["peak"] = pk
        if result["gmacs_per_s"]:
            result["efficiency"] = result["gmacs_per_s"] / pk["peak_gmacs_per_s"]
    return result


def format_bench(r: dict) -> str:
    lines = [
        f"model      {r['model']}  ({r['backend']}, {r['precision']}, {r['threads']} threads)",
        f"size       {r['size']} (padded {r['padded_size']}), batch {r['batch']}, {r['runs']} runs after {r['warmup']} warm-up",
        f"latency    p50 {r['latency_ms_p50']:.2f} ms  p99 {r['latency_ms_p99']:.2f} ms  (model alone p50 {r['infer_ms_p50']:.2f} ms)",
        f"throughput {r['fps']:.2f} FPS",
    ]
    if r["gmacs"] is not None:
        lines.append(f"compute    {r['gmacs']:.3f} GMACs/frame, {r['gmacs_per_s']:.1f} GMAC/s")
    else:
        lines.append("compute    MACs unknown (no manifest or metadata with macs_per_pixel)")
    if r["peak_gmacs_per_s"] is not None:
        b = r["peak"]["best"]
        lines.append(
            f"conv peak  {r['peak_gmacs_per_s']:.1f} GMAC/s (3x3 conv, {b['channels']} ch at {b['width']}x{b['height']}, "
            f"measured now with {r['peak']['engine']})"
        )
        if r["efficiency"] is not None:
            lines.append(f"efficiency {r['efficiency'] * 100:.0f}% of the measured peak")
    m = r["machine"]
    load = f", load average {m['load_avg_1_5_15min'][0]:.2f}" if m.get("load_avg_1_5_15min") else ""
    lines.append(f"machine    {m['cpu']} ({m['cores']} cores{load}), {m['platform']}, onnxruntime {m['onnxruntime']}")
    lines.append(f"cpu isa    {m.get('isa')}: {' '.join(m.get('cpu_features') or []) or 'unknown'}")
    sel = r.get("selection")
    if sel:
        lines.insert(1, f"file       {sel['file']} ({sel['method']}: {sel['reason']})")
    return "\n".join(lines)
