"""edge-deblur batch on a local 2-CPU Ray instance: outputs identical to `deblur`, a failed item
reported while the rest finish, a re-run that skips finished items; an unreachable address fails
in seconds naming it. One Ray session for the module (starting Ray takes seconds)."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_deblur.cli import main
from edge_deblur.errors import ClusterError
from edge_deblur.runtime.ray_batch import check_reachable

from video_helpers import make_video, read_frames

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "checkpoints" / "edgenet_s" / "model.onnx"


def test_unreachable_address_fails_fast_and_names_it():
    t0 = time.perf_counter()
    with pytest.raises(ClusterError, match=r"127\.0\.0\.1:9"):
        check_reachable("ray://127.0.0.1:9", timeout=3)
    with pytest.raises(ClusterError, match="not host:port"):
        check_reachable("head-node:notaport")
    assert time.perf_counter() - t0 < 10
    assert main(["batch", "x", "-o", "y", "--ray", "127.0.0.1:9", "--connect-timeout", "2"]) == 2
    assert main(["deblur", "x", "-o", "y", "--ray", "127.0.0.1:9"]) == 2   # deblur --ray is batch


def test_a_port_that_is_not_ray_fails_fast_and_says_so():
    """A listener that accepts TCP but is no Ray server (a wrong port, the dashboard): ray.init
    used to retry it for 85 s; an HTTP/2 server's SETTINGS reply passes the probe."""
    import socket
    import threading

    from edge_deblur.runtime.ray_batch import _answers_grpc

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []
    threading.Thread(target=lambda: [held.append(srv.accept()) for _ in range(2)], daemon=True).start()
    t0 = time.perf_counter()
    with pytest.raises(ClusterError, match="accepts connections but does not answer as a Ray cluster"):
        check_reachable(f"127.0.0.1:{srv.getsockname()[1]}", timeout=1)
    assert time.perf_counter() - t0 < 5
    a, b = socket.socketpair()
    b.sendall(b"\x00\x00\x18\x04\x00\x00\x00\x00\x00")  # what Ray's GCS sends first: a SETTINGS frame
    assert _answers_grpc(a, 1) is True
    a.close(), b.close()
    a, b = socket.socketpair()
    b.sendall(b"HTTP/1.1 400 Bad Request\r\n")  # an HTTP/1 server
    assert _answers_grpc(a, 1) is False
    a.close(), b.close()
    srv.close()


def _frame(ftype, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def _http2_server(answer: bool):
    """A gRPC-looking server that is not Ray: it sends HTTP/2 SETTINGS (so the preface probe
    passes, as a proxy or another gRPC service would) and answers every request with HTTP 404
    (``answer``) or never."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def serve(conn):
        buf = b""
        try:
            while len(buf) < 24:                     # the client's connection preface
                buf += conn.recv(65536) or b"!" * 24
            buf = buf[24:]
            conn.sendall(_frame(4, 0, 0))            # SETTINGS
            while True:
                while len(buf) < 9:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                n, ftype, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
                sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                while len(buf) < 9 + n:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                buf = buf[9 + n:]
                if ftype == 4 and not flags & 1:
                    conn.sendall(_frame(4, 1, 0))        # SETTINGS ack
                elif ftype == 1 and answer:
                    conn.sendall(_frame(1, 0x5, sid, b"\x8d"))   # HEADERS ":status 404", END_STREAM
        except OSError:
            pass
        finally:
            conn.close()

    def accept():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv


@pytest.mark.parametrize("answer", [True, False], ids=["404", "silent"])
def test_a_grpc_server_that_is_not_ray_fails_in_seconds(answer, capfd):
    """An HTTP/2 server that is no Ray GCS (an egress proxy answered so for any outside address:
    ray.init then retried for 25 s, a warning line a second): Ray's own GCS client asks it for the
    cluster ID, bounded by --connect-timeout, with its log lines kept off the terminal."""
    pytest.importorskip("ray")
    srv = _http2_server(answer)
    addr = f"127.0.0.1:{srv.getsockname()[1]}"
    try:
        t0 = time.perf_counter()
        with pytest.raises(ClusterError, match=re.escape(addr) + r".*answers gRPC but not as a Ray cluster's GCS"):
            check_reachable(addr, timeout=2)
        assert time.perf_counter() - t0 < 6
        capfd.readouterr()
        assert main(["batch", "x", "-o", "y", "--ray", addr, "--connect-timeout", "2"]) == 2
        err = capfd.readouterr().err
        assert addr in err and "not as a Ray cluster" in err
        assert "gcs_client" not in err                 # Ray's C++ warnings stay off the terminal
    finally:
        srv.close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    ray = pytest.importorskip("ray", reason="ray is an optional extra: pip install 'edge-deblur[ray]'")
    pytest.importorskip("ray.data")
    rasterio = pytest.importorskip("rasterio")
    from test_io_raster import smooth_image, write_raster

    root = tmp_path_factory.mktemp("archive")
    inp = root / "in"
    (inp / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        img = cv2.GaussianBlur((rng.random((48, 64, 3)) * 255).astype(np.uint8), (0, 0), 1.5)
        cv2.imwrite(str(inp / "imgs" / f"f{i}.png"), img)
    make_video(inp / "clip.avi", n=5, w=64, h=48)
    write_raster(inp / "scene.tif", smooth_image(4, 160, 80, 4095).astype(np.uint16), nodata=0)
    common = ["--model", str(MODEL), "--tile", "64", "--overlap", "32"]
    ok = root / "ok"
    for p in (inp / "imgs", inp / "clip.avi", inp / "scene.tif"):  # the reference: plain deblur
        assert main(["deblur", str(p), "-o", str(root / "ref" / (p.name if p.is_file() else "imgs")), "--threads", "1"]
                    + common) == 0
    (inp / "imgs" / "broken.png").write_bytes(b"not a png")
    batch = ["batch", str(inp / "imgs"), str(inp / "clip.avi"), str(inp / "scene.tif"), "-o", str(ok),
             "--num-cpus", "2", "--rows-per-task", "64", "--json"] + common
    ray.shutdown()
    try:
        first = main(batch)
        yield {"root": root, "ok": ok, "first": first, "batch": batch, "rasterio": rasterio}
    finally:
        ray.shutdown()


def read_table(out):
    import csv

    with open(out / ".edge-deblur" / "results.csv") as f:
        return {Path(r["input"]).name: r for r in csv.DictReader(f)}


def test_outputs_identical_to_deblur_and_failure_reported(archive):
    root, ok = archive["root"], archive["ok"]
    assert archive["first"] == 1                          # one item failed
    table = read_table(ok)
    assert table["broken.png"]["status"] == "failed" and "cannot read image" in table["broken.png"]["error"]
    assert all(table[n]["status"] == "ok" for n in ("f0.png", "f1.png", "f2.png", "f3.png", "clip.avi", "scene.tif"))
    assert table["scene.tif"]["tasks"] == "3"              # split into row windows
    for i in range(4):
        # one folder among the inputs: its files land in OUT/<name>, as with `deblur`
        assert np.array_equal(cv2.imread(str(ok / f"f{i}.png")), cv2.imread(str(root / "ref" / "imgs" / f"f{i}.png")))
    rio = archive["rasterio"]
    with rio.open(ok / "scene.tif") as a, rio.open(root / "ref" / "scene.tif") as b:
        assert np.array_equal(a.read(), b.read()) and a.crs == b.crs and a.transform == b.transform

    fa, fb = read_frames(ok / "clip.avi"), read_frames(root / "ref" / "clip.avi")
    assert len(fa) == len(fb) == 5 and all(np.array_equal(x, y) for x, y in zip(fa, fb))


def test_rerun_skips_finished_items(archive):
    ok = archive["ok"]
    (archive["root"] / "in" / "imgs" / "broken.png").unlink()   # the bad file is gone: nothing left to run
    mtime = (ok / "f0.png").stat().st_mtime_ns
    assert main(archive["batch"]) == 0
    table = read_table(ok)
    assert {r["status"] for r in table.values()} == {"skipped"} and len(table) == 6
    assert (ok / "f0.png").stat().st_mtime_ns == mtime


def test_group_tasks_batches_images_and_keeps_long_tasks_alone():
    from edge_deblur.runtime.ray_batch import group_tasks

    imgs = [{"task": f"{i}:0", "kind": "image"} for i in range(150)]
    heavy = [{"task": "150:0", "kind": "video"}, {"task": "151:0", "kind": "raster"}, {"task": "151:1", "kind": "raster"}]
    groups = group_tasks(imgs[:70] + heavy + imgs[70:], n_actors=2)
    assert [g[0]["kind"] for g in groups[:3]] == ["video", "raster", "raster"] and all(len(g) == 1 for g in groups[:3])
    assert [t["task"] for g in groups[3:] for t in g] == [t["task"] for t in imgs]   # every image once, in order
    assert max(len(g) for g in groups) == 16 and len(groups) - 3 >= 2 * 4          # calls enough to balance 2 actors
    assert [len(g) for g in group_tasks(imgs[:5], n_actors=2)] == [1] * 5            # few images: one per call


def test_local_instance_environment_is_set_for_ray_only(monkeypatch):
    from edge_deblur.runtime import ray_batch

    monkeypatch.setenv("RAY_worker_niceness", "5")
    monkeypatch.delenv("RAY_preload_python_modules", raising=False)
    with ray_batch._environ({"RAY_worker_niceness": "0", "RAY_preload_python_modules": ray_batch.PRELOAD}):
        assert os.environ["RAY_worker_niceness"] == "0" and "onnxruntime" in os.environ["RAY_preload_python_modules"]
    assert os.environ["RAY_worker_niceness"] == "5" and "RAY_preload_python_modules" not in os.environ


def test_batch_checks_scene_cut_and_max_bad_frames_before_ray(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    for flag, match in ((["--scene-cut", "5"], "scene_cut must be"), (["--max-bad-frames", "-3"], "max_bad_frames must be")):
        rc = main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--num-cpus", "1", *flag])
        assert rc == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "out" / "a.png").exists()
