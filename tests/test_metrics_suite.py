"""Tone-aligned gain on cases with a known answer, the multi-set report, validation-set configs
and their bad inputs, and `edge-deblur eval` over several sets (numpy / ONNX Runtime only)."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_deblur.cli import main
from edge_deblur.config.validation import ValSetConfig, load_suite
from edge_deblur.data.valsets import ValSet, load_val_set, spread
from edge_deblur.errors import ConfigError, DatasetError
from edge_deblur.metrics import psnr, tone_align, tone_aligned_psnr, tone_fit
from edge_deblur.metrics.suite import evaluate_sets, format_report

REPO = Path(__file__).resolve().parents[1]


def scene_image(seed: int, w: int = 64, h: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 60, np.uint8)
    for _ in range(10):
        x, y = (int(v) for v in rng.integers(0, w - 8, 2))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(4, 24)), y + int(rng.integers(4, 20))),
                      tuple(int(c) for c in rng.integers(20, 235, 3)), -1)
    return img


def blurred(img: np.ndarray) -> np.ndarray:
    k = np.zeros((9, 9), np.float32)
    k[4, :] = 1 / 9  # 9 px horizontal motion blur
    return cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT)


def make_pairs(root: Path, scenes: dict) -> Path:
    """GoPro layout: ``{scene: frame count}``; returns the root."""
    seed = 0
    for scene, n in scenes.items():
        for i in range(n):
            sharp = scene_image(seed)
            seed += 1
            for sub, im in (("sharp", sharp), ("blur", blurred(sharp))):
                (root / scene / sub).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / scene / sub / f"{i:04d}.png"), im)
    return root


# --------------------------------------------------------------------------- tone-aligned PSNR


def test_tone_fit_recovers_a_known_gain_and_offset():
    x = np.random.default_rng(0).random((32, 40, 3))
    gain, offset = np.array([0.7, 1.2, 0.9]), np.array([0.1, -0.05, 0.2])
    g, o = tone_fit(x * gain + offset, x)  # the map back: 1/gain, -offset/gain
    assert np.allclose(g, 1 / gain) and np.allclose(o, -offset / gain)
    assert tone_aligned_psnr(x * gain + offset, x) > 200  # exact up to rounding
    assert np.allclose(tone_align(np.full((4, 4, 3), 0.3), x[:4, :4]), x[:4, :4].mean((0, 1)))  # flat: the mean


def test_pure_gain_offset_change_of_the_input_gives_zero_tone_aligned_gain():
    sharp = scene_image(1).astype(np.float64) / 255
    blur = blurred(scene_image(1)).astype(np.float64) / 255
    # a "model" that only changes brightness, contrast and colour balance
    out = blur * np.array([0.8, 1.1, 0.95]) + np.array([0.08, -0.02, 0.03])
    plain_gain = psnr(out, sharp) - psnr(blur, sharp)
    tone_gain = tone_aligned_psnr(out, sharp) - tone_aligned_psnr(blur, sharp)
    assert abs(plain_gain) > 0.5  # the plain gain sees the tone change
    assert tone_gain == pytest.approx(0.0, abs=1e-9)
    # in 8 bits, rounding leaves a trace only
    out8 = np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
    blur8 = (blur * 255).round().astype(np.uint8)
    sharp8 = (sharp * 255).round().astype(np.uint8)
    assert abs(tone_aligned_psnr(out8, sharp8) - tone_aligned_psnr(blur8, sharp8)) < 0.05
    # real deblurring keeps its gain after alignment
    assert tone_aligned_psnr(sharp * 0.9 + 0.05, sharp) - tone_aligned_psnr(blur, sharp) > 20


# --------------------------------------------------------------------------- multi-set report


def test_report_per_set_means_of_gains_and_the_real_scene_flag(tmp_path):
    real = make_pairs(tmp_path / "real", {"good": 2, "bad": 1})
    synth = make_pairs(tmp_path / "synth", {"val": 2})
    sharp_of = {}
    for root in (real, synth):
        for bp in root.glob("*/blur/*.png"):
            sharp_of[cv2.imread(str(bp)).tobytes()] = cv2.imread(str(bp.parent.parent / "sharp" / bp.name))

    def fn(frame):  # restores scenes 'good' and 'val' perfectly up to a little noise, darkens 'bad'
        sharp = sharp_of[frame.tobytes()]
        if frame.shape == sharp.shape and np.array_equal(frame, cv2.imread(str(real / "bad/blur/0000.png"))):
            return (frame * 0.7).astype(np.uint8)
        noise = np.random.default_rng(0).integers(-2, 3, sharp.shape)
        return np.clip(sharp.astype(int) + noise, 0, 255).astype(np.uint8)

    sets = [load_val_set(ValSetConfig(path=str(real), name="cam", kind="real")),
            load_val_set(ValSetConfig(path=str(synth), name="syn", kind="synthetic"))]
    r = evaluate_sets(fn, sets)
    cam, syn = r["sets"]["cam"], r["sets"]["syn"]
    assert cam["pairs"] == 3 and syn["pairs"] == 2 and cam["kind"] == "real"
    assert cam["scenes"]["bad"]["psnr_gain"] < 0 < cam["scenes"]["good"]["psnr_gain"]
    assert cam["worst_scene"] == "bad" and cam["worst_scene_gain"] == cam["scenes"]["bad"]["psnr_gain"]
    assert syn["psnr_gain"] > 10 and syn["tone_gain"] > 10 and syn["ssim_gain"] > 0
    # the mean of the per-set gains, not of the pooled pairs
    assert r["mean_gain"] == pytest.approx((cam["psnr_gain"] + syn["psnr_gain"]) / 2)
    assert r["mean_tone_gain"] == pytest.approx((cam["tone_gain"] + syn["tone_gain"]) / 2)
    assert r["real_below_input"] == ["cam/bad"]
    text = format_report(r)
    assert "cam/bad" in text and "do not ship" in text and "mean of the per-set gains" in text
    # a long set name (a cropped synthetic set's) keeps the columns in line
    r["sets"]["synthetic_centroid_1280x720"] = dict(r["sets"].pop("syn"), crop=[320, 180])
    rows = [ln for ln in format_report(r).splitlines() if " real " in ln or " synthetic " in ln]
    assert len(rows) == 2 and len({ln.index(" real ") + 5 if " real " in ln else ln.index(" synthetic ") + 10
                                   for ln in rows}) == 1
    # a darkened synthetic scene is not a real scene: no flag
    r2 = evaluate_sets(lambda f: (f * 0.7).astype(np.uint8), sets[1:])
    assert r2["sets"]["syn"]["psnr_gain"] < 0 and r2["real_below_input"] == []


def test_state_is_reset_where_frames_are_not_consecutive(tmp_path):
    """A recurrent model's state (``reset``) and the temporal pairs never span unrelated frames:
    a new scene, a gap in a scene's frame numbers (GoPro's picked test frames) or any two frames
    of a synthetic set."""
    real = make_pairs(tmp_path / "real", {"a": 3, "b": 2})
    (real / "a" / "blur" / "0002.png").rename(real / "a" / "blur" / "0007.png")  # 0000, 0001, gap, 0007
    (real / "a" / "sharp" / "0002.png").rename(real / "a" / "sharp" / "0007.png")
    synth = make_pairs(tmp_path / "synth", {"val": 3})
    log = []

    def fn(frame):
        log.append("frame")
        return frame

    sets = [load_val_set(ValSetConfig(path=str(real), name="cam", kind="real")),
            load_val_set(ValSetConfig(path=str(synth), name="syn", kind="synthetic"))]
    r = evaluate_sets(fn, sets, reset=lambda: log.append("reset"))
    # real: reset at a, none between 0000 and 0001, reset at the gap, reset at b; synthetic: every frame
    assert log == ["reset", "frame", "frame", "reset", "frame", "reset", "frame", "frame"] + ["reset", "frame"] * 3
    assert r["sets"]["cam"]["scenes"]["a"]["temporal_pairs"] == 1  # 0000 -> 0001 only
    assert r["sets"]["cam"]["scenes"]["b"]["temporal_pairs"] == 1


def test_subset_and_centre_crop_make_validation_cheaper(tmp_path):
    root = make_pairs(tmp_path / "p", {"a": 4, "b": 2, "c": 1})
    vs = load_val_set(ValSetConfig(path=str(root), name="p", max_pairs=4, crop=[32, 16]))
    assert [(s, b.name) for s, b, _ in vs.pairs] == [("a", "0000.png"), ("a", "0001.png"), ("b", "0000.png"),
                                                     ("c", "0000.png")]  # every scene kept
    assert spread(vs.pairs, 0) == vs.pairs
    seen = []
    r = evaluate_sets(lambda f: seen.append(f.shape) or f, [vs])
    assert seen == [(16, 32, 3)] * 4 and r["sets"]["p"]["crop"] == [32, 16]
    too_big = ValSet("p", "real", str(root), vs.pairs, crop=(128, 16))
    with pytest.raises(DatasetError, match=r"crop 128x16 is larger than the frame .* \(64x48\); use a crop of at most 64x48"):
        evaluate_sets(lambda f: f, [too_big])


def test_bad_validation_sets_are_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match=r"validation set 'gone' \(.*nope\).*does not exist.*remove the set"):
        load_val_set(ValSetConfig(path=str(tmp_path / "nope"), name="gone"))
    monkeypatch.chdir(tmp_path)   # a suite's relative path from another folder: says which folder it is relative to
    with pytest.raises(DatasetError, match=r"relative to the current folder .*run from the checkout's root"):
        load_val_set(ValSetConfig(path="../shared/data/pairs/REDS_320x180", name="reds"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"validation set 'empty' .*no blur/sharp pairs found"):
        load_val_set(ValSetConfig(path=str(tmp_path / "empty")))  # name from the folder
    root = make_pairs(tmp_path / "unpaired", {"s": 2})
    (root / "s" / "sharp" / "0001.png").unlink()
    with pytest.raises(DatasetError, match=r"validation set 'unpaired'.*0001.png.* has no sharp partner.*add the missing"):
        load_val_set(ValSetConfig(path=str(root)))
    with pytest.raises(DatasetError, match=r"scenes \['x'\] not in"):
        load_val_set(ValSetConfig(path=str(make_pairs(tmp_path / "ok", {"s": 1})), scenes=["x"]))


def test_val_sets_in_a_config_legacy_keys_and_errors_at_their_line(tmp_path):
    from edge_deblur.config import load_train_config

    p = tmp_path / "c.yaml"
    p.write_text("data:\n  sharp_roots: [x]\n  val_pairs: reds\n  val_scenes: [test_001]\n  val_sets:\n"
                 "    - {path: pairs/GoPro_1280x720, crop: [640, 360]}\n"
                 "    - {name: syn, kind: synthetic, path: runs/s, source: photos, count: 2}\n")
    sets = load_train_config(p).data.validation_sets()
    assert [(s.name, s.kind, s.path) for s in sets] == [("real", "real", "reds"), ("GoPro_1280x720", "real",
                                                         "pairs/GoPro_1280x720"), ("syn", "synthetic", "runs/s")]
    assert sets[0].scenes == ["test_001"] and sets[1].crop == [640, 360] and sets[2].count == 2
    assert [s.name for s in load_suite(str(p))] == ["real", "GoPro_1280x720", "syn"]
    p.write_text("data:\n  sharp_roots: [x]\n  val_sets:\n    - path: a\n    - path: b\n      scnes: [s]\n")
    with pytest.raises(ConfigError, match=rf"{p} line 6: unknown config key 'data.val_sets\[1\].scnes' \(did you mean 'scenes'"):
        load_train_config(p)
    p.write_text("data:\n  sharp_roots: [x]\n  val_sets: [{path: a/pairs}, {path: b/pairs}]\n")
    with pytest.raises(ConfigError, match="two validation sets are named 'pairs'"):
        load_train_config(p)
    p.write_text("data:\n  sharp_roots: [x]\n  val_sets: [{path: a, kind: fake}]\n")
    with pytest.raises(ConfigError, match="kind: 'fake' is not one of real, synthetic"):
        load_train_config(p)
    with pytest.raises(ConfigError, match="names no validation sets"):
        load_suite(str(REPO / "configs" / "train" / "smoke.yaml"))
    with pytest.raises(ConfigError, match="validation suite 'nope' not found"):
        load_suite("nope")


def test_synthetic_set_targets_sit_where_the_config_says_and_a_change_remakes_it(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"{i}.png"), scene_image(i, 96, 72))
    cfg = ValSetConfig(path=str(tmp_path / "syn"), name="syn", kind="synthetic", source=str(src), count=2,
                       size=[64, 48], seed=3)
    assert cfg.align == "centroid"  # a new set's targets sit at the blur's centre of mass
    load_val_set(cfg)
    manifest = tmp_path / "syn" / "manifest.json"
    assert json.loads(manifest.read_text())["blur"]["align"] == "centroid"
    stamp = manifest.stat().st_mtime_ns
    load_val_set(cfg)
    assert manifest.stat().st_mtime_ns == stamp  # cached: the same settings leave it alone
    cfg.align = "mid_time"
    load_val_set(cfg)
    assert json.loads(manifest.read_text())["blur"]["align"] == "mid_time"  # another alignment: remade
    # the older val_synthetic keys keep the mid-exposure targets their sets were made with
    from edge_deblur.config.schema import DataConfig
    legacy = DataConfig(sharp_roots=["x"], val_synthetic="photos").validation_sets()
    assert [(s.name, s.align) for s in legacy] == [("synthetic_fullres", "mid_time")]
    with pytest.raises(ConfigError, match=r"val_set.align: 'middle' is not one of centroid, mid_time"):
        ValSetConfig(path="p", align="middle").validate()


def test_shipped_suite_names_the_three_sets():
    sets = load_suite(str(REPO / "configs" / "val" / "multi_camera.yaml"))
    assert [(s.name, s.kind) for s in sets] == [("reds_test_001", "real"), ("gopro", "real"),
                                                ("synthetic_centroid_1280x720", "synthetic")]
    assert sets[0].scenes == ["test_001"] and sets[1].path.endswith("GoPro_1280x720") and not sets[1].crop
    assert sets[2].align == "centroid"


# --------------------------------------------------------------------------- edge-deblur eval


def test_eval_cli_takes_several_sets_each_with_its_scenes(tmp_path, capsys):
    a = make_pairs(tmp_path / "camA", {"s1": 1, "s2": 1})
    b = make_pairs(tmp_path / "camB", {"t": 1})
    model = str(REPO / "checkpoints" / "edgenet_s" / "model.onnx")
    assert main(["eval", "-m", model, "-d", str(a), "--scenes", "s2", "-d", str(b), "--json", "--no-ssim"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert list(r["sets"]) == ["camA", "camB"] and list(r["sets"]["camA"]["scenes"]) == ["s2"]
    assert r["backend"] == "onnxruntime" and r["sets"]["camB"]["kind"] == "real"
    assert r["mean_gain"] == pytest.approx((r["sets"]["camA"]["psnr_gain"] + r["sets"]["camB"]["psnr_gain"]) / 2)
    # a suite file, the table, and the bad inputs
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"data:\n  val_sets:\n    - {{name: a, path: {a}}}\n")
    assert main(["eval", "-m", model, "--suite", str(suite), "--no-ssim", "--max-pairs", "1"]) == 0
    out = capsys.readouterr().out
    assert "mean of the per-set gains" in out and out.count("\n") >= 5
    assert main(["eval", "-m", model, "-d", str(tmp_path / "missing")]) == 2
    assert "validation set 'missing'" in capsys.readouterr().err
    assert main(["eval", "-m", model]) == 2
    assert "no validation set given" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "-m", model, "--scenes", "s1", "-d", str(a)])
    assert "give --data DIR before --scenes" in capsys.readouterr().err


def test_eval_over_sets_runs_without_torch(tmp_path):
    import subprocess
    import sys

    a = make_pairs(tmp_path / "camA", {"s1": 1})
    code = ("import sys; sys.modules['torch'] = None\n"  # any import of torch fails
            "from edge_deblur.cli import main\n"
            f"sys.exit(main(['eval', '-m', {str(REPO / 'checkpoints/edgenet_s/model.onnx')!r}, '-d', {str(a)!r}, "
            "'--no-ssim', '--json']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert list(json.loads(r.stdout)["sets"]) == ["camA"]


def test_frames_in_number_order_every_scenes_unpaired_frames_and_a_perfect_input(tmp_path):
    from edge_deblur.data.pairs import find_pairs
    from edge_deblur.metrics.evaluate import evaluate_pairs

    root = tmp_path / "unpadded"
    for i in (8, 9, 10, 11):  # text order would be 10, 11, 8, 9
        for sub in ("blur", "sharp"):
            (root / "s" / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "s" / sub / f"{i}.png"), scene_image(i))
    assert [p[1].name for p in find_pairs(root)] == ["8.png", "9.png", "10.png", "11.png"]
    # unpaired frames in two scenes: both named in one error
    two = make_pairs(tmp_path / "two", {"a": 2, "b": 2})
    (two / "a" / "sharp" / "0001.png").unlink()
    (two / "b" / "blur" / "0000.png").unlink()
    with pytest.raises(DatasetError, match=r"2 unpaired frames: .*a/blur/0001.png.*b/sharp/0000.png"):
        find_pairs(two)
    # an input equal to its sharp frame: capped at 100 dB instead of making every gain -inf
    same = make_pairs(tmp_path / "same", {"s": 2})
    (same / "s" / "blur" / "0000.png").write_bytes((same / "s" / "sharp" / "0000.png").read_bytes())
    r = evaluate_pairs(lambda f: f, find_pairs(same), with_ssim=False)
    assert np.isfinite(r["input_psnr"]) and np.isfinite(r["psnr_gain"]) and r["psnr_gain"] == 0.0


def test_a_cached_synthetic_set_from_other_photos_is_remade(tmp_path):
    from edge_deblur.data.valsets import _cached

    src_a, src_b = tmp_path / "a", tmp_path / "b"
    for d in (src_a, src_b):
        d.mkdir()
        cv2.imwrite(str(d / "img.png"), scene_image(3, 200, 160))
    cfg = ValSetConfig(path=str(tmp_path / "syn"), name="syn", kind="synthetic", source=str(src_a), count=1,
                       size=[96, 64], seed=1, align="centroid")
    from edge_deblur.data.valsets import make_synthetic

    make_synthetic(cfg)
    assert _cached(cfg)
    other = ValSetConfig(**{**cfg.__dict__, "source": str(src_b)})
    assert not _cached(other)  # it was taken as made: the set of photos A measured as B's
