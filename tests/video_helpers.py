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


def make_timed_video(path, times_s, rate=10, options=None, w=64, h=48):
    """An H.264 video with B-frames written by PyAV whose frame i is
    shown at ``times_s[i]`` seconds: uneven times make a variable frame rate video; ``options``
    are the muxer's (``{"movflags": "frag_keyframe+empty_moov"}``: a fragmented MP4)."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w", options=options or {}) as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv444p"
        # near lossless (frame_index reads every frame back; lossless would turn B-frames off), with
        # B-frames as x264 makes them by default
        s.options = {"crf": "1", "x264-params": "bframes=2:b-adapt=0"}
        s.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_s):
            f = av.VideoFrame.from_ndarray(numbered_frame(i, w, h), format="bgr24")
            f.pts = round(t * 1000)
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


def frame_times(path):
    """``[(frame index read from its level, presentation time in s)]`` of every frame, decoded by
    PyAV (frame.pts x time_base), and the container's duration in s."""
    import av

    with av.open(str(path)) as c:
        out = [(frame_index(f.to_ndarray(format="bgr24")), float(f.pts * f.time_base)) for f in c.decode(video=0)]
        return out, c.duration / 1e6
