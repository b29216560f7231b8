"""A procedural street scene: the demo's sharp image and one of ``verify``'s frames.

Hard edges, text of several sizes, checkerboards, thin lines, discs and fine texture: the
structures deblurring is judged on, and the dense high-contrast detail that drives a network's
activations to the ends of their INT8 ranges (where an 8-bit-weight CPU file saturates ONNX
Runtime's 16-bit pair sums on CPUs without VNNI: ``compress/qdq_graph.py``). numpy and OpenCV only.
"""
from __future__ import annotations

import cv2
import numpy as np


def make_scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic sharp BGR uint8 scene with the structures deblurring is judged on: hard
    edges, text of several sizes, checkerboards, thin lines, discs and fine texture."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    top, bottom = np.array([205, 175, 125], np.float32), np.array([70, 80, 92], np.float32)
    img = np.ascontiguousarray(np.broadcast_to(top * (1 - y) + bottom * y, (h, w, 3)).astype(np.uint8))
    x = 0
    while x < w:  # blocks of buildings with windows
        bw, bh = int(rng.integers(60, 180)), int(rng.integers(h // 4, max(h // 4 + 1, int(h * 0.8))))  # 1 px high: 0
        cv2.rectangle(img, (x, h - bh), (x + bw, h), tuple(int(c) for c in rng.integers(40, 220, 3)), -1)
        for wy in range(h - bh + 10, h - 20, 22):
            for wx in range(x + 8, x + bw - 14, 18):
                if rng.random() < 0.7:
                    c = (230, 240, 250) if rng.random() < 0.4 else (30, 30, 40)
                    cv2.rectangle(img, (wx, wy), (wx + 9, wy + 12), c, -1)
        x += bw + int(rng.integers(0, 20))
    for _ in range(max(2, h * w // 200000)):  # checkerboards
        s = int(rng.integers(6, 14))
        n = 120 // s
        cx, cy = int(rng.integers(0, max(1, w - 120))), int(rng.integers(0, max(1, h - 120)))
        for i in range(n):
            for j in range(n):
                c = (250, 250, 250) if (i + j) % 2 == 0 else (15, 15, 15)
                cv2.rectangle(img, (cx + i * s, cy + j * s), (cx + (i + 1) * s - 1, cy + (j + 1) * s - 1), c, -1)
    fonts = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX]
    words = ["EDGE-DEBLUR", "SPEED LIMIT 50", "STOP", "B-4271-XK", "EXIT 12", "NO PARKING", "0123456789", "ONE WAY"]
    for k in range(max(6, h * w // 60000)):  # signs with text
        txt, font = words[k % len(words)], fonts[k % len(fonts)]
        scale, th = float(rng.uniform(0.6, 1.6)), int(rng.integers(1, 4))
        (tw, tht), base = cv2.getTextSize(txt, font, scale, th)
        px, py = int(rng.integers(0, max(1, w - tw - 20))), int(rng.integers(tht + 10, max(tht + 11, h - 10)))
        cv2.rectangle(img, (px - 8, py - tht - 8), (px + tw + 8, py + base + 6), (255, 255, 255) if k % 2 else (20, 90, 20), -1)
        cv2.putText(img, txt, (px, py), font, scale, (0, 0, 0) if k % 2 else (255, 255, 255), th, cv2.LINE_AA)
    for _ in range(h * w // 40000):  # discs, rings and thin lines
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            cv2.circle(img, p0, int(rng.integers(5, 40)), c, int(rng.choice([-1, 2])), cv2.LINE_AA)
        else:
            cv2.line(img, p0, (int(rng.integers(0, w)), int(rng.integers(0, h))), c, 1, cv2.LINE_AA)
    texture = rng.normal(0.0, 5.0, (h, w, 1)).astype(np.float32)
    return np.clip(img.astype(np.float32) + texture, 0, 255).astype(np.uint8)
