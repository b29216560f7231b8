"""An MJPEG-over-HTTP "IP camera" on 127.0.0.1 that freezes, for trying reconnects by hand.

    python benchmarks/fake_mjpeg_camera.py --frames 20      # prints the port
    edge-deblur stream --source http://cam:pw@127.0.0.1:PORT/live --read-timeout 1 --reconnect 2 --json

Each connection gets ``--frames`` frames at ``--fps``, then the server keeps the socket open and
sends nothing (a camera that hangs); the next connection works again. Loopback only.
"""
from __future__ import annotations

import argparse
import http.server
import socketserver
import time

import cv2
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20, help="frames per connection before freezing")
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        count = 0

        def do_GET(self):
            Handler.count += 1
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for i in range(args.frames):
                img = np.full((48, 64, 3), (Handler.count * 40 + i * 8) % 256, np.uint8)
                jpg = cv2.imencode(".jpg", img)[1].tobytes()
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                                 + jpg + b"\r\n")
                self.wfile.flush()
                time.sleep(1.0 / args.fps)
            time.sleep(3600)  # frozen

        def log_message(self, *a):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    srv = Server(("127.0.0.1", args.port), Handler)
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
