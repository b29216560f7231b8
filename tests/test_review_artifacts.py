"""Review of the artifact writers (pack, prune, average, export, build): an output never replaces
one of its inputs, an output folder gives a clear error, not a traceback, and bad arguments are
named before anything slow (or TensorRT) is touched."""
import json

import cv2
import numpy as np
import pytest

from edge_deblur.cli import main
from edge_deblur.errors import DatasetError, InputError, ModelError


def _digest(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _err(capsys) -> str:
    return capsys.readouterr().err


# -- pack -----------------------------------------------------------------------------------------


@pytest.fixture()
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(d / f"kodim0{i + 1}.png"), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    return d


def test_pack_refuses_to_write_over_or_into_its_sources(photos, tmp_path, capsys):
    src = photos / "kodim01.png"
    before = _digest(src)
    assert main(["pack", "--sharp", str(photos), "-o", str(src)]) == 2
    err = _err(capsys)
    assert "edge-deblur pack: error:" in err and "kodim01.png" in err and "source folder" in err
    assert _digest(src) == before  # the photo is untouched
    assert main(["pack", "--sharp", str(photos), "-o", str(photos / "sub" / "train.pack")]) == 2
    assert "source folder" in _err(capsys)
    assert not (photos / "sub").exists()
    assert sorted(p.name for p in photos.iterdir()) == ["kodim01.png", "kodim02.png"]  # no temp files left


def test_pack_to_an_existing_folder_is_a_clear_error(photos, tmp_path, capsys):
    from edge_deblur.data.pack import build_pack

    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(DatasetError, match="is a folder"):
        build_pack(folder, [str(photos)], limit_mib=5)
    assert main(["pack", "--sharp", str(photos), "-o", str(folder)]) == 2
    err = _err(capsys)
    assert "is a folder" in err and "Traceback" not in err
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob("*.tmp"))
    assert main(["pack", "--sharp", str(photos), "-o", str(folder / "train.pack")]) == 0  # the way out works
    capsys.readouterr()


# -- prune / average --------------------------------------------------------------------------------


@pytest.fixture()
def ckpts(tmp_path):
    from runtime_helpers import make_checkpoint

    return make_checkpoint(tmp_path / "a1.safetensors", seed=1), make_checkpoint(tmp_path / "a2.safetensors", seed=2)


def test_prune_and_average_refuse_to_overwrite_an_input(ckpts, capsys):
    a1, a2 = ckpts
    before = _digest(a1)
    assert main(["prune", str(a1), "--ratio", "0.5", "--finetune-iters", "0", "-o", str(a1)]) == 2
    err = _err(capsys)
    assert "would overwrite the input checkpoint" in err and "a1_p50.safetensors" in err
    assert main(["average", str(a1), str(a2), "-o", str(a1)]) == 2
    err = _err(capsys)
    assert "would overwrite the input checkpoint" in err and "a1.safetensors" in err
    assert _digest(a1) == before


def test_average_refuses_one_checkpoint_twice(ckpts, tmp_path, capsys):
    a1, a2 = ckpts
    out = tmp_path / "avg.safetensors"
    assert main(["average", str(a1), str(a1.parent / "a*.safetensors"), "-o", str(out)]) == 2  # a1 listed and globbed
    assert "is given twice" in _err(capsys) and not out.exists()


def test_average_glob_matching_its_output_is_refused(ckpts, capsys):
    a1, a2 = ckpts
    before = _digest(a2)
    assert main(["average", str(a1.parent / "a*.safetensors"), "-o", str(a2)]) == 2
    assert "would overwrite" in _err(capsys)
    assert _digest(a2) == before


def test_prune_and_average_to_a_folder_are_clear_errors(ckpts, tmp_path, capsys):
    from edge_deblur.compress.prune import prune_checkpoint
    from edge_deblur.models.checkpoint import average_checkpoints
    from edge_deblur.runtime.manifest import atomic_write_bytes

    a1, a2 = ckpts
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(InputError, match="is a folder"):
        prune_checkpoint(a1, folder, 0.5)
    with pytest.raises(InputError, match="is a folder"):
        average_checkpoints([a1, a2], folder)
    with pytest.raises(InputError, match="folder"):  # the shared writer too: no IsADirectoryError
        atomic_write_bytes(folder, b"x")
    for argv in (["prune", str(a1), "--ratio", "0.5", "--finetune-iters", "0", "-o", str(folder)],
                 ["average", str(a1), str(a2), "-o", str(folder)]):
        assert main(argv) == 2
        err = _err(capsys)
        assert "is a folder" in err and "Traceback" not in err
    assert list(folder.iterdir()) == []


def test_prune_checks_overrides_without_a_finetune(ckpts, tmp_path, capsys):
    a1, _ = ckpts
    out = tmp_path / "p.safetensors"
    assert main(["prune", str(a1), "--ratio", "0.5", "--finetune-iters", "0", "--set", "train.lrr=1",
                 "-o", str(out)]) == 2
    err = _err(capsys)
    assert "train.lrr" in err and "did you mean 'lr'" in err
    assert main(["prune", str(a1), "train.lr=abc", "--ratio", "0.5", "--finetune-iters", "0", "-o", str(out)]) == 2
    assert "train.lr" in _err(capsys)
    assert not out.exists()
    # overrides after the options: the error says where they go
    with pytest.raises(SystemExit) as e:
        main(["prune", str(a1), "--ratio", ".5", "-o", str(out), "train.lr=1"])
    assert e.value.code == 2
    err = _err(capsys)
    assert "unrecognized arguments: train.lr=1" in err and "right after CKPT" in err and "--set train.lr=1" in err
    # valid overrides pass (checked, unused) and the pruned checkpoint is written
    assert main(["prune", str(a1), "--ratio", "0.5", "--finetune-iters", "0", "--set", "train.lr=1e-4",
                 "-o", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()


# -- export ---------------------------------------------------------------------------------------


def _fake_export_folder(folder, ckpt, arch, onnx_name="model.onnx"):
    """A model folder as export leaves it (without running an export): its files and manifest."""
    from edge_deblur.runtime.manifest import sha256_file

    folder.mkdir(parents=True)
    for name in (onnx_name, "model.fp16.onnx", "model.int8.onnx"):
        (folder / name).write_bytes(name.encode())
    manifest = {"format": "edge_deblur.manifest.v1", "name": folder.name, "default": True, "arch": arch,
                "onnx": onnx_name, "onnx_sha256": sha256_file(folder / onnx_name),
                "checkpoint": {"file": ckpt.name, "sha256": sha256_file(ckpt)},
                "artifacts": {n: {"sha256": sha256_file(folder / n), "precision": p}
                              for n, p in ((onnx_name, "fp32"), ("model.fp16.onnx", "fp16"),
                                           ("model.int8.onnx", "int8"))}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def test_export_into_a_folder_of_another_model_is_refused(tmp_path, capsys):
    from runtime_helpers import TINY_SPEC, make_checkpoint

    from edge_deblur.export.onnx_export import export_onnx

    ckpt = make_checkpoint(tmp_path / "m.safetensors", seed=1)
    other = make_checkpoint(tmp_path / "other.safetensors", dict(TINY_SPEC, widths=[8, 24]), seed=2)
    folder = tmp_path / "models" / "m1"
    arch = dict(TINY_SPEC, rep=False)
    _fake_export_folder(folder, ckpt, arch)
    snapshot = {p.name: p.read_bytes() for p in folder.iterdir()}

    # another architecture (and checkpoint) into other.onnx: refused, the folder is untouched
    assert main(["export", str(other), "-o", str(folder / "other.onnx")]) == 2
    err = _err(capsys)
    assert "another architecture" in err and "widths [8, 16] -> [8, 24]" in err
    assert "new folder" in err and "--force" in err and "model.int8.onnx" in err
    # the same architecture from another checkpoint, into the folder's own model.onnx: refused too
    same_arch = make_checkpoint(tmp_path / "retrained.safetensors", seed=3)
    with pytest.raises(ModelError, match="made from checkpoint 'm.safetensors'"):
        export_onnx(same_arch, folder)
    # the same checkpoint under another file name would unlist model.onnx: refused
    with pytest.raises(ModelError, match="another main ONNX file"):
        export_onnx(ckpt, folder / "copy.onnx")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == snapshot


def test_export_bare_file_name_default_uses_the_folder_name(tmp_path, monkeypatch, capsys):
    from runtime_helpers import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "c.safetensors", seed=1)
    folder = tmp_path / "models" / "mine"
    folder.mkdir(parents=True)
    monkeypatch.chdir(folder)
    assert main(["export", str(ckpt), "-o", "m.onnx", "--default"]) == 0
    capsys.readouterr()
    assert (tmp_path / "models" / "DEFAULT").read_text().strip() == "mine"
    assert not (folder / "DEFAULT").exists()
    man = json.loads((folder / "manifest.json").read_text())
    assert man["name"] == "mine" and man["onnx"] == "m.onnx" and man["default"] is True
    # exporting the same model again into its own file updates it (no refusal)
    assert main(["export", str(ckpt), "-o", "m.onnx"]) == 0
    assert json.loads((folder / "manifest.json").read_text())["onnx_sha256"] == man["onnx_sha256"]
    capsys.readouterr()


# -- build ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags,words", [
    (["--dla", "-1"], "--dla -1"),
    (["--opt-level", "9"], "--opt-level 9"),
    (["--opt-level", "-1"], "0-5"),
    (["--device", "-1"], "--device -1"),
])
def test_build_names_bad_arguments_before_looking_for_tensorrt(tmp_path, capsys, flags, words):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not really onnx")
    for out in ([], ["-o", str(tmp_path / "m.engine")]):
        assert main(["build", str(onnx), "--stride", "4", *flags, *out]) == 2
        err = _err(capsys)
        assert words in err and "pip install" not in err


def test_build_refuses_to_replace_its_onnx(tmp_path, capsys):
    from edge_deblur.export.trt_build import build_engine

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not really onnx")
    assert main(["build", str(onnx), "--stride", "4", "-o", str(tmp_path / "." / "model.onnx")]) == 2
    err = _err(capsys)
    assert "would overwrite the ONNX model" in err and "pip install" not in err
    for kwargs in ({"dla_core": -1}, {"opt_level": 6}, {"device": -2}):
        with pytest.raises(InputError):
            build_engine(onnx, tmp_path / "m.engine", "1x3x16x16", stride=4, **kwargs)
    with pytest.raises(InputError, match="overwrite the ONNX"):
        build_engine(onnx, onnx, "1x3x16x16", stride=4)
    with pytest.raises(InputError, match="is a folder"):
        build_engine(onnx, tmp_path, "1x3x16x16", stride=4)
    assert onnx.read_bytes() == b"not really onnx"


def test_average_keeps_the_widest_float_dtype(ckpts, tmp_path):
    """A float16 export averaged with a float32 run checkpoint: the average is float32 (it was the
    first input's float16, rounding away the float32 input's precision)."""
    from edge_deblur.models.checkpoint import average_checkpoints, read_checkpoint, save_checkpoint

    a1, a2 = ckpts
    state, spec, config, meta = read_checkpoint(a1)
    half = tmp_path / "half.safetensors"
    save_checkpoint(half, {k: v.half() if v.is_floating_point() else v for k, v in state.items()}, spec, config, meta)
    out = tmp_path / "avg.safetensors"
    average_checkpoints([half, a2], out)
    avg, *_ = read_checkpoint(out)
    s2, *_ = read_checkpoint(a2)
    for k, v in avg.items():
        if s2[k].is_floating_point():
            assert v.dtype == s2[k].dtype, k
