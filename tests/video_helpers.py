"""Small generated videos for the io, pipeline and stream tests: frame i has mean level 8*i, so
its index can be read back after lossy coding."""
import cv2
import numpy as np


def numbered_frame(i, w=64, h=48):
    return np.full((h, w, 3), (8 * i) % 256, np.uint8)


def frame_index(frame):
    return int(round(float(frame.mean()) / 8.0))


def make_video(path, n=12, w=64, h=48, fourcc="MJPG", fps=10.0):
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert wr.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for i in range(n):
        wr.write(numbered_frame(i, w, h))
    wr.release()
    return path


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def read_frames(path):
    """Every frame of a video, decoded by OpenCV."""
    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        out.append(f)
