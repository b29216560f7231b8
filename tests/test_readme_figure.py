"""benchmarks/readme_figure.py: blurry | deblurred | sharp from a sharp frame, PSNR printed and
drawn, a size limit on the PNG, the PNG written whole."""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_deblur.cli.demo_cmd import make_scene

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fig_mod():
    spec = importlib.util.spec_from_file_location("readme_figure", REPO / "benchmarks" / "readme_figure.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_figure_from_a_frame(fig_mod, tmp_path, capsys):
    pytest.importorskip("onnx")
    from test_cli_newcomer import _identity_onnx

    model = _identity_onnx(tmp_path)
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), make_scene(96, 160, seed=1))
    out = tmp_path / "docs" / "figure.png"
    rc = fig_mod.main(["--image", str(frame), "-m", str(model), "--crop", "16,16,64,48", "--blur", "4", "6",
                       "--out", str(out), "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    fig = cv2.imread(str(out))
    assert fig.shape == (48 + 26, 3 * 64, 3)  # three labelled 64x48 crops side by side
    # an identity model: the deblurred frame is the blurry one, so the gain is zero
    assert r["psnr_gain"] == 0 and r["psnr_blurry"] < 40 and r["png_kb"] < 300
    assert np.array_equal(fig[26:, :64], fig[26:, 64:128])
    assert not np.array_equal(fig[26:, :64], fig[26:, 128:])  # the sharp crop differs: it was blurred

    rc = fig_mod.main(["--image", str(frame), "-m", str(model), "--crop", "16,16,64,48", "--out",
                       str(tmp_path / "big.png"), "--max-kb", "0.5"])
    assert rc == 2 and "over --max-kb" in capsys.readouterr().err and not (tmp_path / "big.png").exists()
    rc = fig_mod.main(["--image", str(frame), "-m", str(model), "--crop", "150,16,64,48", "--out", str(tmp_path / "x.png")])
    assert rc == 2 and "does not fit" in capsys.readouterr().err
