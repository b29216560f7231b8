"""What the output encoder keeps of the model's frames, and what it costs.

    python benchmarks/video_encode.py --video ../shared/data/driving/udacity_lanelines/solidWhiteRight.mp4 --frames 30

Decodes ``--frames`` frames of a video, deblurs them with the bundled model (or ``--model``),
and writes the model's frames through every codec setting below with the project's own sink
(``edge_deblur.io.open_sink``); then decodes each file and reports PSNR (RGB, 8-bit, whole frame)
against the model's frames, bytes per frame, and the encoder's CPU time per frame (process CPU
time over all the writes and the final flush, all encoder threads included: on a loaded machine
wall time says more about the load than about the encoder), next to the model's own change
(model output vs input). Each setting runs once in the same process, so the CPU times compare as
ratios on the same machine.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import cv2
import numpy as np

from edge_deblur import Deblurrer
from edge_deblur.io import FrameMeta, StreamOptions, open_sink, video_writer

# (codec, quality, x264 preset or None for the project's default); 'opencv-mp4v' is the writer this
# project used before (cv2.VideoWriter, FourCC mp4v), for comparison
SETTINGS = [("h264", None, None), ("h264", None, "superfast"), ("h264", 10, None), ("h264", 2, None),
            ("h264-420", None, None), ("h264-420", 0, None), ("mpeg4", None, None), ("mjpeg", None, None),
            ("opencv-mp4v", None, None)]


def psnr(a, b) -> float:
    m = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255 ** 2 / m)) if m > 0 else float("inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", required=True)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import av

    cap = cv2.VideoCapture(args.video)
    inputs = []
    while len(inputs) < args.frames:
        ok, f = cap.read()
        if not ok:
            break
        inputs.append(f)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    with Deblurrer.open(args.model, threads=args.threads) as d:
        model = [d(f) for f in inputs]
    h, w = model[0].shape[:2]
    rows = {"video": os.path.basename(args.video), "size": f"{w}x{h}", "frames": len(model),
            "model_vs_input_db": round(float(np.mean([psnr(a, b) for a, b in zip(model, inputs)])), 2),
            "input_bytes_per_frame": None, "settings": []}
    with tempfile.TemporaryDirectory() as tmp:
        # the input's own bitrate, from its container
        with av.open(args.video) as c:
            sizes = [p.size for _, p in zip(range(len(model)), c.demux(video=0)) if p.size]
        rows["input_bytes_per_frame"] = int(np.mean(sizes))
        for codec, q, preset in SETTINGS:
            ext = ".avi" if codec == "mjpeg" else ".mp4"
            dst = os.path.join(tmp, f"out_{codec}_{q}_{preset}{ext}")
            c0 = time.process_time()
            if codec == "opencv-mp4v":
                wr = cv2.VideoWriter(dst, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                for f in model:
                    wr.write(f)
                wr.release()
                used_q = None
            else:
                default_preset = video_writer.X264_PRESET
                video_writer.X264_PRESET = preset or default_preset
                try:
                    with open_sink(dst, StreamOptions(codec=codec, quality=q), fps=fps) as sink:
                        for i, f in enumerate(model):
                            sink.write(f, FrameMeta(i))
                        used_q = sink.describe()["quality"]
                        sink._writer.finish()  # the flush counts; close() then only verifies and renames
                finally:
                    video_writer.X264_PRESET = default_preset
            cpu_ms = (time.process_time() - c0) * 1e3 / len(model)
            with av.open(dst) as c:
                dec = [fr.to_ndarray(format="bgr24") for fr in c.decode(video=0)]
            rows["settings"].append({
                "codec": codec, "quality": used_q, "preset": (preset or video_writer.X264_PRESET)
                if codec.startswith("h264") else None,
                "psnr_vs_model_db": round(float(np.mean([psnr(a, b) for a, b in zip(dec, model)])), 2),
                "bytes_per_frame": int(os.path.getsize(dst) / len(model)),
                "encode_cpu_ms_per_frame": round(cpu_ms, 2),
            })
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
