"""edge-deblur demo [--out demo_out/] [--frames 48] [--size 640x360] [--model M] [--json]

Works on a fresh machine with no data and no camera: builds a sharp scene (procedural: buildings,
signs with text, checkerboards, thin lines, circles, fine texture; the same on every machine,
whatever else is installed, so the figures it prints are reproducible; ``--image`` uses your own
photo instead), shakes a virtual camera over it
along ONE trajectory (``edge_deblur.data.blur.synthesize_clip``: sub-frame warps averaged in
linear light, noise), runs the blurry clip through the real streaming pipeline with the bundled
model, and writes a side-by-side video (blurry | deblurred | sharp) and a PNG of one frame. Prints
the PSNR of the blurry and the deblurred frames against the sharp ones, the gain, and the FPS.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from ..runtime.scene import make_scene

log = logging.getLogger("edge_deblur.demo")


def add_arguments(p):
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out/)")
    p.add_argument("--frames", type=int, default=48, help="clip length (default 48)")
    p.add_argument("--size", default="640x360", help="frame size WxH (default 640x360)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scene and the camera shake")
    p.add_argument("--blur", type=float, default=5.0, metavar="PX", help="typical blur extent per frame in pixels (default 5)")
    p.add_argument("--image", default="synthetic",
                   help="synthetic (the procedural scene, default) or a path to your own sharp image")
    p.add_argument("--model", "-m", default=None, help="model file or folder (default: the bundled model)")
    p.add_argument("--backend", default=None, help="onnxruntime | torch | tensorrt (default: from the file)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores this process may use)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _parse_size(s: str) -> tuple[int, int]:
    from ..errors import InputError

    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must look like 640x360, got {s!r}") from None
    if w < 16 or h < 16:
        raise InputError(f"--size must be at least 16x16, got {s!r}")
    return w, h


def build_sharp_image(image: str, w: int, h: int, seed: int) -> tuple[np.ndarray, str]:
    """(BGR uint8 image about twice the clip size, description)."""
    from ..errors import InputError
    from ..io.sources import imread

    H, W = 2 * h, 2 * w  # room for the camera to wander; the blur reads real pixels around each frame
    if image != "synthetic":
        if not Path(image).is_file():
            raise InputError(f"--image {image!r} does not exist; give an image file, or leave --image out "
                             "for the built-in street scene")
        img = imread(image)
        if img is None:
            raise InputError(f"--image {image!r} is not an image OpenCV can read")
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        img = img[..., :3]
        if img.dtype != np.uint8:
            img = (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else np.clip(img, 0, 255).astype(np.uint8)
        scale = max(h / img.shape[0], w / img.shape[1])
        if scale > 1:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        return img, f"image {image}"
    return make_scene(H, W, seed), f"procedural scene ({W}x{H}, seed {seed})"


def _label(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((28, img.shape[1], 3), 24, np.uint8)
    cv2.putText(bar, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


def side_by_side(blurry, deblurred, sharp, p_blur: float, p_deb: float) -> np.ndarray:
    return np.concatenate([
        _label(blurry, f"blurry input  {p_blur:.2f} dB"),
        _label(deblurred, f"deblurred  {p_deb:.2f} dB ({p_deb - p_blur:+.2f})"),
        _label(sharp, "sharp (ground truth)"),
    ], axis=1)


def run(args) -> int:
    from ..config.schema import BlurConfig
    from ..data.blur import synthesize_clip
    from ..errors import InputError
    from ..io.options import StreamOptions
    from ..io.sources import FrameMeta
    from ..io.sinks import atomic_imwrite, atomic_write_bytes, ensure_writable_dir, open_sink
    from ..metrics import psnr
    from ..runtime.pipeline import Pipeline, open_processor

    w, h = _parse_size(args.size)
    if args.frames < 1:
        raise InputError(f"--frames must be >= 1, got {args.frames}")
    if not args.blur > 0:
        raise InputError(f"--blur must be > 0 pixels, got {args.blur}")
    out = Path(args.out)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))

    # 1. a sharp scene and a clip of camera shake along one trajectory (a bad --image fails before
    # the output folder is made)
    sharp_img, scene_desc = build_sharp_image(args.image, w, h, args.seed)
    ensure_writable_dir(out, "the demo")
    say(f"scene: {scene_desc}")
    cfg = BlurConfig(length=[args.blur * 0.8, args.blur * 1.2], rotation_deg=0.05, zoom=0.001,
                     defocus_prob=0.0, jpeg_prob=0.0)
    rng = np.random.default_rng(args.seed)
    say(f"synthesizing {args.frames} frames of camera shake at {w}x{h} ...")
    blurred, sharp = synthesize_clip(cv2.cvtColor(sharp_img, cv2.COLOR_BGR2RGB), rng, cfg, frames=args.frames,
                                     crop=(h, w), duty=(0.5, 0.7))

    def to_bgr8(x):
        return cv2.cvtColor(np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)

    blurry_frames = [to_bgr8(f) for f in blurred]
    sharp_frames = [to_bgr8(f) for f in sharp]

    # 2. the real pipeline with the bundled model
    kwargs = {"threads": args.threads} if args.threads is not None else {}
    deblurrer = open_processor(args.model, args.backend, False, **kwargs)
    info = getattr(deblurrer, "info", {}) or {}
    say(f"model: {info.get('name') or info.get('model')} ({info.get('backend')}, {info.get('precision')})")
    outputs: list = [None] * len(blurry_frames)

    def collect(frame, meta):
        outputs[meta.index] = frame

    try:
        stats = Pipeline(deblurrer, blurry_frames, collect, StreamOptions(fps=30.0)).run()
    finally:
        deblurrer.close()

    # 3. quality, side-by-side video and PNG
    p_blur = [psnr(b, s) for b, s in zip(blurry_frames, sharp_frames)]
    p_deb = [psnr(d, s) for d, s in zip(outputs, sharp_frames)]
    video_path = out / "demo_side_by_side.mp4"
    png_path = out / "demo_frame.png"
    opts = StreamOptions(fps=30.0)
    sink = open_sink(str(video_path), opts)
    mid = len(outputs) // 2
    try:
        for i, (b, d, s) in enumerate(zip(blurry_frames, outputs, sharp_frames)):
            frame = side_by_side(b, d, s, p_blur[i], p_deb[i])
            sink.write(frame, FrameMeta(index=i))
            if i == mid:
                atomic_imwrite(png_path, frame)
    except BaseException:
        # interrupted or failed: an incomplete video must not replace a previous run's whole one
        abandon = getattr(sink, "abandon", None)
        (abandon("the demo was interrupted") if abandon is not None else sink.close())
        raise
    sink.close()
    result = {
        "psnr_blurry": round(float(np.mean(p_blur)), 3),
        "psnr_deblurred": round(float(np.mean(p_deb)), 3),
        "psnr_gain": round(float(np.mean(p_deb) - np.mean(p_blur)), 3),
        "fps": stats["fps"],
        # the model's own time (on the slot pipeline: the executor's compute_ms, CUDA events on TensorRT and
        # torch-cuda); None where an executor cannot measure it: then only each frame's time in flight
        # (submit to collect, ~slots model times) is known
        "infer_ms_p50": stats["stages"].get("infer", {}).get("p50"),
        "in_flight_ms_p50": stats["stages"].get("in_flight", {}).get("p50"),
        "latency_ms_p50": stats["latency_ms_p50"],
        "frames": len(outputs),
        "size": f"{w}x{h}",
        "scene": scene_desc,
        "model": info.get("name") or info.get("model"),
        "backend": info.get("backend"),
        "file": Path(str(info.get("model"))).name,  # which file of the model folder ran (runtime.select)
        "threads": info.get("threads"),
        "video": str(video_path),
        "png": str(png_path),
    }
    # atomic (temp file, fsync, rename): an interrupted run leaves the previous stats, never half a file
    atomic_write_bytes(out / "demo_stats.json", (json.dumps(result | {"pipeline": stats}, indent=2) + "\n").encode())
    if args.json:
        print(json.dumps(result), flush=True)
        return 0
    print(f"PSNR blurry vs sharp:     {result['psnr_blurry']:.2f} dB")
    print(f"PSNR deblurred vs sharp:  {result['psnr_deblurred']:.2f} dB  (gain {result['psnr_gain']:+.2f} dB)")
    if result["infer_ms_p50"] is not None:
        model_txt = f"model p50 {result['infer_ms_p50']:.1f} ms/frame"
    elif result["in_flight_ms_p50"] is not None:
        model_txt = (f"model time not measured on the slot pipeline; p50 {result['in_flight_ms_p50']:.1f} ms/frame "
                     f"in flight over {stats.get('slots')} slots")
    else:
        model_txt = "model time not measured"
    print(f"speed: {result['fps']:.1f} FPS through the pipeline at {w}x{h} "
          f"({model_txt}, {info.get('backend')}, {info.get('threads')} threads)")
    print(f"wrote {video_path} (blurry | deblurred | sharp), {png_path}, {out / 'demo_stats.json'}")
    return 0
