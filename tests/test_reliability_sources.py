"""Sources that fail and come back: a silent server is an error within the open timeout (not an
abort), live sources reconnect with backoff and give up with `source_lost`, a blocking Python
source honours read_timeout, frames already read are written after a source or sink error, and
credentials never appear in messages, logs or --json."""
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_deblur.cli import main
from edge_deblur.errors import SourceError, SourceLostError
from edge_deblur.io import StreamOptions, open_source
from edge_deblur.io.redact import redact
from edge_deblur.runtime.pipeline import Pipeline

from test_cli_stream import tiny_onnx  # noqa: F401  (fixture)
from video_helpers import numbered_frame

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-pw"


@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    for c in conns:
        c.close()
    srv.close()


def test_silent_stream_fails_cleanly_within_the_open_timeout(silent_server):
    """It used to abort with exit 134 (C++ terminate from an OpenCV thread abandoned at the timeout)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    url = f"http://viewer:{SECRET}@127.0.0.1:{silent_server}/live"
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "edge_deblur", "stream", "--source", url, "--open-timeout", "1",
                        "--read-timeout", "1", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "within 1 s" in p.stderr and "127.0.0.1" in p.stderr
    assert SECRET not in p.stderr + p.stdout
    assert time.time() - t0 < 30


@pytest.fixture
def mjpeg_server():
    """An MJPEG-over-HTTP camera on 127.0.0.1 (what many IP cameras serve): connections 1 and 2 get
    5 frames each and then hang with the socket open (a camera that freezes); later connections
    get 503 (a camera that stays down)."""
    import http.server
    import socketserver

    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        count = 0

        def do_GET(self):
            Handler.count += 1
            if Handler.count > 2:
                self.send_error(503)
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for i in range(5):
                jpg = cv2.imencode(".jpg", numbered_frame(i))[1].tobytes()
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                                 + jpg + b"\r\n")
                self.wfile.flush()
                time.sleep(0.02)
            release.wait(30)

        def log_message(self, *a):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    srv = Server(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    release.set()
    srv.shutdown()
    srv.server_close()


def test_real_http_camera_that_freezes_is_reconnected_then_lost(mjpeg_server):
    """Real FFmpeg over a real socket: the stall is seen after read_timeout, the stream reconnects,
    and gives up with source_lost when the camera stays down; every frame received is written."""
    url = f"http://viewer:{SECRET}@127.0.0.1:{mjpeg_server}/video.mjpg"
    opts = StreamOptions(read_timeout=0.5, open_timeout=5, reconnect=1, reconnect_delay=0.05, drop="never")
    written = []
    pipe = Pipeline(lambda f: f, open_source(url, opts), lambda f, m: written.append(m.index), opts, warmup=False)
    t0 = time.perf_counter()
    with pytest.raises(SourceLostError, match="1 reconnect attempt over") as e:
        pipe.run()
    assert SECRET not in str(e.value)
    s = pipe._result
    assert s["stopped_by"] == "source_lost" and written == list(range(10))
    assert (s["source"]["stalls"], s["source"]["reconnect_attempts"], s["source"]["reconnects"]) == (2, 2, 1)
    assert time.perf_counter() - t0 < 15


class FakeCapture:
    """Stands in for cv2.VideoCapture on a network URL. ``plan`` lists, per open, how many frames
    that connection delivers before it stalls (None: the open fails)."""

    plan: list = []
    opens: list = []

    def __init__(self, location, api=None, params=None):
        FakeCapture.opens.append((location, list(params or [])))
        n = FakeCapture.plan.pop(0) if FakeCapture.plan else None
        self.left = n
        self.ok = n is not None

    def isOpened(self):
        return self.ok

    def read(self):
        if self.ok and self.left:
            self.left -= 1
            FakeCapture.served += 1
            return True, numbered_frame(FakeCapture.served % 30)
        time.sleep(0.005)
        return False, None

    def get(self, prop):
        return 0.0

    def set(self, *a):
        return True

    def release(self):
        self.ok = False


@pytest.fixture
def fake_network(monkeypatch):
    def use(plan):
        FakeCapture.plan = list(plan)
        FakeCapture.opens = []
        FakeCapture.served = 0
        monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    return use


def test_reconnects_with_backoff_then_gives_up(fake_network, caplog):
    # 5 frames, stall; attempt 1 fails to open; attempt 2 delivers 4 frames, stall; attempt 3 fails
    fake_network([5, None, 4, None])
    opts = StreamOptions(read_timeout=0.2, reconnect=3, reconnect_delay=0.05, reconnect_max_delay=0.1, drop="never")
    url = f"rtsp://admin:{SECRET}@cam.local/stream1"
    written, restarts = [], []
    caplog.set_level(logging.WARNING)

    def sink(f, m):
        written.append(m.index)
        if m.restart:
            restarts.append(m.index)

    pipe = Pipeline(lambda f: f, open_source(url, opts), sink, opts, warmup=False)
    t0 = time.perf_counter()
    with pytest.raises(SourceLostError, match="3 reconnect attempts"):
        pipe.run()
    elapsed = time.perf_counter() - t0
    s = pipe._result
    assert s["stopped_by"] == "source_lost"
    assert written == list(range(9))  # every frame read was written
    assert restarts == [5]  # the first frame after the reconnect resets a recurrent model's state
    src = s["source"]
    assert (src["stalls"], src["reconnect_attempts"], src["reconnects"]) == (2, 2 + 3, 1)
    # backoff: 0.05, then 0.1 (doubled); read_timeout 0.2 per stall and per attempt that opens
    assert 0.5 < elapsed < 5
    # the read timeout handed to FFmpeg is the configured one (it used to be max(open, read))
    params = dict(zip(FakeCapture.opens[0][1][::2], FakeCapture.opens[0][1][1::2]))
    assert params[cv2.CAP_PROP_READ_TIMEOUT_MSEC] == 200
    # credentials: not in the stats, not in any log line
    text = json.dumps(s) + caplog.text
    assert SECRET not in text and "admin:***@cam.local" in text
    assert "reconnect attempt 1 failed" in caplog.text and "reconnected on attempt 2" in caplog.text


def test_stream_cli_source_lost_exit_and_json(fake_network, tiny_onnx, capsys, caplog):
    caplog.set_level(logging.INFO)
    fake_network([6])
    url = f"rtsp://admin:{SECRET}@cam.local/stream1"
    rc = main(["stream", "--source", url, "--model", str(tiny_onnx), "--json", "--read-timeout", "0.2",
               "--reconnect", "2", "--reconnect-delay", "0.01", "--drop", "never"])
    out, err = capsys.readouterr()
    assert rc == SourceLostError.exit_code, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["stopped_by"] == "source_lost" and stats["frames_out"] == 6
    assert stats["source"]["reconnect_attempts"] == 2
    assert SECRET not in out + err + caplog.text and "admin:***@" in stats["source"]["uri"]
    assert "reconnect" in err
    assert "stream: rtsp://admin:***@cam.local/stream1 ->" in caplog.text  # the CLI's log line


def test_no_reconnect_and_files_end_normally(fake_network, tmp_path):
    fake_network([3])
    opts = StreamOptions(read_timeout=0.1, reconnect=0)
    with pytest.raises(SourceLostError, match="reconnecting is off"):
        Pipeline(lambda f: f, open_source("rtsp://cam/x", opts), None, opts, warmup=False).run()


def test_blocking_python_source_honours_read_timeout():
    hang = threading.Event()

    def frames():
        for i in range(3):
            yield numbered_frame(i)
        hang.wait(30)  # a camera SDK call that never returns

    written = []
    opts = StreamOptions(read_timeout=0.3)
    pipe = Pipeline(lambda f: f, frames(), lambda f, m: written.append(m.index), opts, warmup=False)
    t0 = time.perf_counter()
    with pytest.raises(SourceLostError, match="no frame for 0.3 s"):
        pipe.run()
    assert time.perf_counter() - t0 < 5
    hang.set()
    assert written == [0, 1, 2] and pipe._result["stopped_by"] == "source_lost"


def test_frames_in_flight_are_written_after_a_source_error():
    class Gone(SourceError):
        pass

    def frames():
        for i in range(5):
            yield numbered_frame(i)
        raise Gone("camera unplugged")

    def slow(f):
        time.sleep(0.02)  # the source is ahead of the model: frames wait in the queues
        return f

    written = []
    pipe = Pipeline(slow, frames(), lambda f, m: written.append(m.index), StreamOptions(queue_size=4), warmup=False)
    with pytest.raises(Gone):
        pipe.run()
    assert written == [0, 1, 2, 3, 4]  # used to keep 1 of 5


def test_a_failing_sink_does_not_lose_frames_for_the_others():
    def bad(f, m):
        if m.index == 2:
            raise OSError(5, "Input/output error")

    good = []
    pipe = Pipeline(lambda f: f, [numbered_frame(i) for i in range(40)], [bad, lambda f, m: good.append(m.index)],
                    StreamOptions(queue_size=4), warmup=False)
    with pytest.raises(OSError):
        pipe.run()
    s = pipe._result
    assert good == list(range(s["frames_in"]))  # everything read was written to the good sink
    assert s["outputs"][0]["frames_written"] == 2 and s["stopped_by"] == "error"


@pytest.mark.parametrize("raw, clean", [
    ("rtsp://user:pw@host:554/a?x=1", "rtsp://user:***@host:554/a?x=1"),
    ("http://token@host/x", "http://***@host/x"),
    ("rtspsrc location=rtsp://a:b@cam/s ! decodebin ! appsink", "rtspsrc location=rtsp://a:***@cam/s ! decodebin ! appsink"),
    ("https://h/x.m3u8?token=abc&y=2", "https://h/x.m3u8?token=***&y=2"),
    ("camera://0", "camera://0"),
    ("/data/clip@2x.mp4", "/data/clip@2x.mp4"),
    ("rtsp://admin:p@ss@host/s", "rtsp://admin:***@host/s"),  # '@' in the password: FFmpeg splits at the last
    ("rtspsrc location=rtsp://h/s user-id=admin user-pw=S3cret ! decodebin", "rtspsrc location=rtsp://h/s user-id=admin user-pw=*** ! decodebin"),
    ("souphttpsrc location=http://h/x proxy-pw='a b' ! jpegdec", "souphttpsrc location=http://h/x proxy-pw=*** ! jpegdec"),
])
def test_redact(raw, clean):
    assert redact(raw) == clean
