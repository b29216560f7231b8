"""Review fixes for `edge-deblur eval`, `verify` and config loading: --make-synthetic never writes into
a folder that is not its own, output paths that are files/folders are clear errors, binary files
passed as configs, unknown --min-psnr precisions, a checkpoint of another architecture beside the
ONNX, negative counts/thresholds and huge synthetic sizes. Everything is tiny and on the CPU."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_deblur.cli import main
from edge_deblur.config.inherit import load_layers, read_mapping
from edge_deblur.errors import ConfigError, DatasetError, InputError, ModelError, SinkWriteError

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "checkpoints" / "edgenet_s"
MODEL = str(MODEL_DIR / "model.onnx")
SYN = ["--synthetic-count", "1", "--synthetic-size", "64x64", "--no-ssim"]


def sharp_dir(root: Path, n: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.random.default_rng(i).integers(0, 255, (80, 96, 3)).astype(np.uint8)
        cv2.imwrite(str(root / f"{i}.png"), img)
    return root


def real_pairs(root: Path) -> Path:
    for sub in ("blur", "sharp"):
        (root / "s1" / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "s1" / sub / "0000.png"), np.full((48, 64, 3), 100, np.uint8))
    return root


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- 1. --make-synthetic target


def test_make_synthetic_refuses_a_model_folder_and_a_real_set(tmp_path, capsys):
    model_copy = tmp_path / "model_copy"
    model_copy.mkdir()
    shutil.copy(MODEL_DIR / "manifest.json", model_copy / "manifest.json")
    real = real_pairs(tmp_path / "real")
    sharp = sharp_dir(tmp_path / "sharp")
    for folder in (model_copy, real):
        before = tree(folder)
        assert main(["eval", "-m", MODEL, "-d", str(folder), "--make-synthetic", str(sharp), *SYN]) == 2
        err = capsys.readouterr().err
        assert str(folder) in err and "new (or empty) folder" in err and len(err.strip().splitlines()) == 1
        assert tree(folder) == before  # nothing added, the manifest kept
    # the real set is still evaluated as a real set
    assert main(["eval", "-m", MODEL, "-d", str(real), "--json", "--no-ssim"]) == 0
    assert json.loads(capsys.readouterr().out)["sets"]["real"]["kind"] == "real"


def test_the_maker_itself_refuses_foreign_folders_and_files(tmp_path):
    pytest.importorskip("torch")
    from edge_deblur.data.datasets import make_synthetic_val_set

    sharp = sharp_dir(tmp_path / "sharp")
    real = real_pairs(tmp_path / "real")
    before = tree(real)
    with pytest.raises(DatasetError, match="pass a new or empty folder"):
        make_synthetic_val_set(sharp, real, count=1, size=(32, 32))
    assert tree(real) == before
    afile = tmp_path / "afile"
    afile.write_text("keep")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        make_synthetic_val_set(sharp, afile, count=1, size=(32, 32))
    with pytest.raises(DatasetError, match="pass a new folder"):
        make_synthetic_val_set(sharp, afile / "sub", count=1, size=(32, 32))
    assert afile.read_text() == "keep"


def test_an_interrupted_synthetic_set_is_marked_and_rebuilt(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from edge_deblur.data import datasets
    from edge_deblur.data.valsets import is_synthetic_folder

    sharp = sharp_dir(tmp_path / "sharp")
    out = tmp_path / "syn"
    calls = []

    def failing_imwrite(path, img):
        calls.append(path)
        return len(calls) < 2  # the second frame cannot be written

    monkeypatch.setattr(datasets.cv2, "imwrite", failing_imwrite)
    with pytest.raises(DatasetError, match="cannot write"):
        datasets.make_synthetic_val_set(sharp, out, count=1, size=(32, 32))
    monkeypatch.undo()
    # the half-made folder says it is a synthetic set (so it may be rebuilt) but not a complete one
    man = json.loads((out / "manifest.json").read_text())
    assert is_synthetic_folder(out) and "seed" not in man
    datasets.make_synthetic_val_set(sharp, out, count=1, size=(32, 32))
    man = json.loads((out / "manifest.json").read_text())
    assert man["size"] == [32, 32] and (out / "val" / "blur" / "000.png").is_file()
    assert not list(out.glob(".manifest.json.*"))  # written through a temporary file, nothing left over
    # other settings rewrite the set in place
    datasets.make_synthetic_val_set(sharp, out, count=1, size=(48, 32))
    assert json.loads((out / "manifest.json").read_text())["size"] == [48, 32]


# --------------------------------------------------------------------------- 2. output paths


def test_output_paths_that_are_files_or_folders_are_clear_errors(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    real = real_pairs(tmp_path / "real")
    sharp = sharp_dir(tmp_path / "sharp")
    for save in (afile, afile / "sub"):
        assert main(["eval", "-m", MODEL, "-d", str(real), "--no-ssim", "--save", str(save)]) == 2
        err = capsys.readouterr().err
        assert "--save" in err and "not a folder" in err and str(afile) in err
    assert main(["eval", "-m", MODEL, "-d", str(afile), "--make-synthetic", str(sharp), *SYN]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "pass a new folder" in err
    folder = tmp_path / "folder"
    folder.mkdir()
    assert main(["verify", MODEL, "--backends", "onnxruntime", "--frames", "1", "--size", "32x32",
                 "--json", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "--json" in err and "is a folder" in err
    assert afile.read_text() == "keep" and not any(folder.iterdir())


def test_evaluate_checks_the_save_folder_first_and_png_write_failures(tmp_path, monkeypatch):
    from edge_deblur.metrics import evaluate as E

    real = real_pairs(tmp_path / "real")
    pairs = [("s1", str(real / "s1/blur/0000.png"), str(real / "s1/sharp/0000.png"))]
    afile = tmp_path / "afile"
    afile.write_text("x")
    ran = []

    def fn(x):
        ran.append(1)
        return x

    with pytest.raises(InputError, match="is a file, not a folder"):
        E.evaluate_pairs(fn, pairs, save_dir=str(afile), with_ssim=False)
    assert not ran  # refused before any frame went through the model
    monkeypatch.setattr(E.cv2, "imencode", lambda ext, img: (False, None))
    with pytest.raises(SinkWriteError, match="cannot encode"):
        E.evaluate_pairs(fn, pairs, save_dir=str(tmp_path / "out"), with_ssim=False)


# --------------------------------------------------------------------------- 3. binary configs


def test_a_binary_file_as_config_is_a_config_error(tmp_path, capsys):
    png = tmp_path / "x.png"
    cv2.imwrite(str(png), np.zeros((8, 8, 3), np.uint8))
    nul = tmp_path / "zeros.yaml"
    nul.write_bytes(b"\x00" * 64)
    for f in (png, nul, MODEL_DIR / "model.safetensors"):
        with pytest.raises(ConfigError, match="not a text YAML file"):
            read_mapping(f)
        with pytest.raises(ConfigError, match="not a text YAML file"):
            load_layers(f)
    assert main(["eval", "-m", MODEL, "--suite", str(png)]) == 2
    err = capsys.readouterr().err
    assert str(png) in err and "not a text YAML file" in err


# --------------------------------------------------------------------------- 4./5. verify


def test_verify_rejects_unknown_min_psnr_precisions(capsys):
    from edge_deblur.cli.verify_cmd import _floors

    assert _floors("fp16=38, INT8=33") == {"fp16": 38.0, "int8": 33.0}
    with pytest.raises(InputError, match="unknown precision 'fp61'.*fp32, fp16"):
        _floors("fp61=3")
    assert main(["verify", MODEL, "--backends", "onnxruntime", "--frames", "1", "--size", "32x32",
                 "--min-psnr", "fp61=3"]) == 2
    err = capsys.readouterr().err
    assert "fp61" in err and "fp16" in err


def test_verify_says_a_sibling_checkpoint_is_for_another_architecture(tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("safetensors")
    mix = tmp_path / "mix"
    mix.mkdir()
    shutil.copy(MODEL_DIR / "model.onnx", mix / "model.onnx")
    shutil.copy(REPO / "checkpoints" / "edgenet_s_p50" / "model.safetensors", mix / "model.safetensors")
    assert main(["verify", str(mix / "model.onnx"), "--backends", "onnxruntime,torch", "--frames", "1",
                 "--size", "32x32"]) == 2
    err = capsys.readouterr().err
    assert "does not match the ONNX" in err and "widths" in err and "--checkpoint" in err
    from edge_deblur.cli.verify_cmd import check_architecture
    from edge_deblur.runtime.verify import find_artifacts

    # the shipped folder's checkpoint is the one its ONNX files were exported from
    for name in ("model.onnx", "model.fp16.onnx"):
        check_architecture(find_artifacts(MODEL_DIR / name))
    with pytest.raises(ModelError, match="different architectures"):
        check_architecture(find_artifacts(MODEL_DIR / "model.onnx",
                                          checkpoint=mix / "model.safetensors"))


# --------------------------------------------------------------------------- 6./7. eval arguments


@pytest.mark.parametrize("args, text", [
    (["--scene-cut", "-1"], "argument --scene-cut"),
    (["--scene-cut", "nan"], "argument --scene-cut"),
    (["--save-count", "-1"], "argument --save-count"),
])
def test_negative_scene_cut_and_save_count_are_argparse_errors(tmp_path, capsys, args, text):
    with pytest.raises(SystemExit) as e:
        main(["eval", "-m", MODEL, "-d", str(tmp_path), *args])
    assert e.value.code == 2 and text in capsys.readouterr().err


def test_synthetic_size_is_capped(tmp_path, capsys):
    # just over the cap (a 20000x20000 set would take minutes and many GB without the cap)
    sharp = sharp_dir(tmp_path / "sharp", 1)
    out = tmp_path / "syn"
    assert main(["eval", "-m", MODEL, "-d", str(out), "--make-synthetic", str(sharp), "--synthetic-count", "1",
                 "--synthetic-size", "4097x16", "--no-ssim"]) == 2
    err = capsys.readouterr().err
    assert "4097x16" in err and "at most 4096" in err and not out.exists()
    pytest.importorskip("torch")
    from edge_deblur.data.datasets import make_synthetic_val_set

    with pytest.raises(DatasetError, match="at most 4096 px per side"):
        make_synthetic_val_set(sharp, out, count=1, size=(16, 4097))
    assert not out.exists()
