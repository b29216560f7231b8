"""Sources and sinks chosen by URI (no torch): cameras, V4L2, CSI/GStreamer, RTSP/HTTP, video
files, images, folders and globs in; display, video files, image folders, null and Python
callbacks out. One option set, ``StreamOptions``, serves the CLI and the API.

>>> from edge_deblur.io import open_source, open_sink, StreamOptions
>>> opts = StreamOptions(width=1280, height=720)
>>> with open_source("camera://0", opts) as src, open_sink("out.mp4", opts, fps=src.fps) as dst:
...     for frame, meta in src:
...         dst.write(frame, meta)
"""
from .options import DROP_POLICIES, StreamOptions
from .sinks import (CallbackSink, DisplaySink, GStreamerSink, ImageFileSink, ImageFolderSink, NullSink, Sink,
                    VideoSink, display_available, open_sink)
from .sources import (CaptureSource, FrameMeta, ImageSource, IterableSource, Source, csi_pipeline, list_cameras,
                      open_source)
from .uri import IMAGE_EXTS, SINK_SCHEMES, SOURCE_SCHEMES, VIDEO_EXTS, Target, parse_sink, parse_source

__all__ = [
    "StreamOptions", "DROP_POLICIES", "open_source", "open_sink", "parse_source", "parse_sink", "Target",
    "Source", "CaptureSource", "ImageSource", "IterableSource", "FrameMeta", "Sink", "NullSink", "CallbackSink",
    "DisplaySink", "VideoSink", "ImageFolderSink", "ImageFileSink", "GStreamerSink", "csi_pipeline",
    "list_cameras", "display_available", "SOURCE_SCHEMES", "SINK_SCHEMES", "VIDEO_EXTS", "IMAGE_EXTS",
]
