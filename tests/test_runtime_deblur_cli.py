"""edge-deblur deblur: folders mirrored, files and globs, depth kept, atomic writes, clear errors."""
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("torch")

from runtime_helpers import exported  # noqa: E402

from edge_deblur.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return exported(tmp_path_factory)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "in"
    (d / "sub" / "deeper").mkdir(parents=True)
    cv2.imwrite(str(d / "a.png"), rng.integers(0, 256, (21, 35, 3), dtype=np.uint8))
    cv2.imwrite(str(d / "b.jpg"), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    cv2.imwrite(str(d / "sub" / "c16.png"), rng.integers(0, 65536, (19, 23), dtype=np.uint16))
    cv2.imwrite(str(d / "sub" / "deeper" / "frame_0002.png"), rng.integers(0, 256, (12, 20, 3), dtype=np.uint8))
    (d / "notes.txt").write_text("not an image")
    return d


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_folder_output_mirrors_input_names(tiny, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["deblur", str(images), "-o", str(out), "--model", str(tiny["onnx"])]) == 0
    assert _files(out) == ["a.png", "b.jpg", "sub/c16.png", "sub/deeper/frame_0002.png"]
    for rel in _files(out):
        a = cv2.imread(str(images / rel), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(out / rel), cv2.IMREAD_UNCHANGED)
        assert a.shape == b.shape and a.dtype == b.dtype
    assert cv2.imread(str(out / "sub/c16.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert not any(p.name.startswith(".") for p in out.rglob("*"))  # no temp files left
    assert "4 images" in capsys.readouterr().out


def test_files_globs_and_several_folders(tiny, images, tmp_path):
    m = ["--model", str(tiny["onnx"])]
    assert main(["deblur", str(images / "a.png"), "-o", str(tmp_path / "one.png")] + m) == 0
    assert cv2.imread(str(tmp_path / "one.png")).shape == (21, 35, 3)
    assert main(["deblur", str(images / "sub" / "*.png"), str(images / "a.png"), "-o", str(tmp_path / "g")] + m) == 0
    assert _files(tmp_path / "g") == ["a.png", "c16.png"]
    other = tmp_path / "in2"
    other.mkdir()
    cv2.imwrite(str(other / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert main(["deblur", str(images), str(other), "-o", str(tmp_path / "two")] + m) == 0
    assert "in/a.png" in _files(tmp_path / "two") and "in2/a.png" in _files(tmp_path / "two")


def test_errors_are_clear_and_fast(tiny, images, tmp_path, capsys):
    m = ["--model", str(tiny["onnx"])]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    t0 = time.monotonic()
    assert main(["deblur", str(images), "-o", str(blocker / "out")] + m) == 2
    assert "cannot create output folder" in capsys.readouterr().err
    assert main(["deblur", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o")] + m) == 2
    assert "missing.png" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert main(["deblur", str(bad), "-o", str(tmp_path / "o2")] + m) == 1  # the batch ran; one input failed
    assert "broken.png" in capsys.readouterr().err
    # two inputs with the same name into one folder
    dup = tmp_path / "dup"
    dup.mkdir()
    cv2.imwrite(str(dup / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert main(["deblur", str(images / "a.png"), str(dup / "a.png"), "-o", str(tmp_path / "o3")] + m) == 2
    assert "both be written" in capsys.readouterr().err
    assert main(["deblur", str(images / "a.png"), "-o", str(images / "a.png")] + m) == 2
    assert "is the input" in capsys.readouterr().err
    assert main(["deblur", str(images), "-o", str(tmp_path / "o4"), "--model", str(tmp_path / "nope.onnx")]) == 2
    assert "nope.onnx" in capsys.readouterr().err
    # several inputs, a folder or a pattern cannot go to one file name: no folder called 'x.png'
    for ins in ([str(images / "a.png"), str(images / "b.jpg")], [str(images)], [str(images / "*.png")]):
        for name in ("x.png", "x.mp4"):
            assert main(["deblur", *ins, "-o", str(tmp_path / name)] + m) == 2
            assert "name a folder" in capsys.readouterr().err and not (tmp_path / name).exists()
    assert main(["deblur", str(images / "a.png"), str(images / "b.jpg"), "-o", str(tmp_path / "x.png") + "/"] + m) == 0
    assert _files(tmp_path / "x.png") == ["a.png", "b.jpg"]   # a trailing '/' asks for the folder
    assert time.monotonic() - t0 < 30


def test_video_through_the_pipeline(tiny, tmp_path):
    pytest.importorskip("edge_deblur.runtime.pipeline")
    src = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 10, (36, 20))
    if not w.isOpened():
        pytest.skip("OpenCV cannot write mp4 here")
    for i in range(7):
        w.write(np.full((20, 36, 3), 30 * i, np.uint8))
    w.release()
    assert main(["deblur", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny["onnx"])]) == 0
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (20, 36, 3)
        n += 1
    assert n == 7


def test_an_input_folder_that_is_also_the_output_never_reads_back_its_outputs(tmp_path, monkeypatch):
    """`deblur d1 d2 -o d2` writes d2/d1 and d2/d2; the next run read them back as inputs (2, then
    4, then 6 images, and d2/d2/d2/... grew)."""
    import cv2
    import numpy as np

    from edge_deblur.cli.deblur_cmd import plan_jobs

    monkeypatch.chdir(tmp_path)
    for d, n in (("d1", "a.png"), ("d2", "b.png")):
        Path(d).mkdir()
        cv2.imwrite(f"{d}/{n}", np.zeros((16, 16, 3), np.uint8))
    for d, n in (("d2/d1", "a.png"), ("d2/d2", "b.png")):  # what the first run wrote
        Path(d).mkdir(parents=True)
        cv2.imwrite(f"{d}/{n}", np.zeros((16, 16, 3), np.uint8))
    jobs = plan_jobs(["d1", "d2"], "d2")
    assert sorted(str(src) for src, _, _ in jobs) == ["d1/a.png", "d2/b.png"]
