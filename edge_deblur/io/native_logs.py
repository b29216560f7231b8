"""Quiet the native libraries' own logging (OpenCV, the FFmpeg inside OpenCV, ONNX Runtime).

Left alone they write straight to the terminal from C++: V4L2 probing warnings when a camera
index is tried, one line per unknown TIFF tag, h264 decoder complaints on a damaged stream.
The runtime turns every failure that matters into a typed error, so by default only errors
reach the terminal (FFmpeg's decoder noise not even those); ``verbose=True`` (the CLI's ``-v``)
shows their warnings and information again. A level the user set in the environment
(``OPENCV_LOG_LEVEL``, ``OPENCV_FFMPEG_LOGLEVEL``) is left as it is.
"""
from __future__ import annotations

import os
import sys

# OpenCV: 0 silent, 1 fatal, 2 error, 3 warning, 4 info, 5 debug
_OPENCV = {False: ("ERROR", 2), True: ("INFO", 4)}
# FFmpeg av_log levels: -8 quiet, 16 error, 24 warning, 32 info
_FFMPEG = {False: "-8", True: "24"}
# ONNX Runtime default logger: 0 verbose, 1 info, 2 warning, 3 error
_ORT = {False: 3, True: 2}


def configure_native_logs(verbose: bool = False) -> dict:
    """Set the native libraries' log levels for this process; returns what was set. Call it
    before the first video is opened: OpenCV reads the FFmpeg level when it opens one."""
    verbose = bool(verbose)
    done = {}
    if "OPENCV_LOG_LEVEL" not in os.environ:
        name, level = _OPENCV[verbose]
        os.environ["OPENCV_LOG_LEVEL"] = name  # read by cv2 when it is first imported
        cv2 = sys.modules.get("cv2")
        if cv2 is not None:  # already imported: set it directly
            try:
                cv2.utils.logging.setLogLevel(level)
            except AttributeError:  # pragma: no cover - very old OpenCV
                pass
        done["opencv"] = name
    if "OPENCV_FFMPEG_LOGLEVEL" not in os.environ:
        os.environ["OPENCV_FFMPEG_LOGLEVEL"] = _FFMPEG[verbose]
        done["ffmpeg"] = _FFMPEG[verbose]
    ort = sys.modules.get("onnxruntime")
    if ort is None:
        try:
            import onnxruntime as ort  # a base dependency; sessions also set their own level
        except ImportError:  # pragma: no cover
            ort = None
    if ort is not None:
        ort.set_default_logger_severity(_ORT[verbose])
        done["onnxruntime"] = _ORT[verbose]
    return done
