"""`edge-deblur demo` runs with no data and no camera: procedural scene, synthetic camera shake,
the real pipeline and backend, a side-by-side video, a PNG and PSNR numbers."""
import json

import cv2
import numpy as np
import pytest

from edge_deblur.cli import build_parser, main
from edge_deblur.cli.demo_cmd import build_sharp_image, make_scene

from test_cli_stream import tiny_onnx  # noqa: F401  (fixture)


def test_scene_is_deterministic_and_sharp():
    a, b = make_scene(120, 200, seed=3), make_scene(120, 200, seed=3)
    assert a.shape == (120, 200, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, make_scene(120, 200, seed=4))
    assert cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var() > 500  # plenty of edges


def test_sharp_image_sources(tmp_path, monkeypatch):
    img, desc = build_sharp_image("synthetic", 64, 48, 0)
    assert img.shape == (96, 128, 3) and "procedural" in desc
    # the default scene is the same whatever is installed: a package shipping a sample photo
    # (matplotlib's grace_hopper.jpg) must not change it, or a fresh install prints other figures
    fake = tmp_path / "site" / "matplotlib" / "mpl-data" / "sample_data"
    fake.mkdir(parents=True)
    (fake.parents[1] / "__init__.py").write_text("")
    cv2.imwrite(str(fake / "grace_hopper.jpg"), np.full((40, 30, 3), 200, np.uint8))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    default = build_parser().parse_args(["demo"]).image
    again, desc2 = build_sharp_image(default, 64, 48, 0)
    np.testing.assert_array_equal(again, make_scene(96, 128, 0))
    assert desc2 == desc
    cv2.imwrite(str(tmp_path / "mine.png"), np.full((10, 20, 3), 7, np.uint8))
    img, desc = build_sharp_image(str(tmp_path / "mine.png"), 64, 48, 0)
    assert img.shape[0] >= 48 and img.shape[1] >= 64 and "mine.png" in desc


def test_demo_end_to_end(tmp_path, tiny_onnx, capsys):  # noqa: F811
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--frames", "4", "--size", "96x64", "--model", str(tiny_onnx), "--json"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    r = json.loads(stdout.strip().splitlines()[-1])
    for k in ("psnr_blurry", "psnr_deblurred", "psnr_gain", "fps", "frames", "video", "png"):
        assert k in r
    assert r["frames"] == 4 and r["fps"] > 0
    # the tiny model is the identity: no gain, and the numbers say so
    assert abs(r["psnr_gain"]) < 0.05 and 5 < r["psnr_blurry"] < 60
    cap = cv2.VideoCapture(r["video"])
    n, size = 0, None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        n, size = n + 1, f.shape
    assert n == 4 and size[1] == 3 * 96  # blurry | deblurred | sharp
    assert cv2.imread(r["png"]).shape[1] == 3 * 96
    assert json.loads((out / "demo_stats.json").read_text())["pipeline"]["frames_out"] == 4


@pytest.mark.parametrize("args", [["--size", "abc"], ["--frames", "0"], ["--blur", "0"]])
def test_demo_bad_arguments(tmp_path, args, capsys):
    assert main(["demo", "--out", str(tmp_path), *args]) != 0
    assert "error" in capsys.readouterr().err


def test_demo_bad_image_says_why_and_leaves_no_folder(tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    for image, why in (("missing.jpg", "does not exist"), (str(tmp_path / "notes.png"), "not an image OpenCV can read")):
        out = tmp_path / "out" / "d"
        assert main(["demo", "--image", image, "--out", str(out)]) == 2
        assert why in capsys.readouterr().err
        assert not (tmp_path / "out").exists()        # the output folder is made only once the scene is


def test_an_interrupted_demo_keeps_the_previous_video(tmp_path, tiny_onnx, capsys, monkeypatch):  # noqa: F811
    from edge_deblur.cli import demo_cmd
    from video_helpers import count_frames

    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--frames", "6", "--size", "96x64", "--model", str(tiny_onnx)]
    assert main(args) == 0
    video = out / "demo_side_by_side.mp4"
    before = video.read_bytes()
    real, calls = demo_cmd.side_by_side, []

    def interrupted_at_the_fourth(*a):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(demo_cmd, "side_by_side", interrupted_at_the_fourth)
    assert main(args) == 130
    assert video.read_bytes() == before and count_frames(video) == 6  # not replaced by 3 frames
    capsys.readouterr()
