"""Recurrent state in the runtime: shapes for odd frame sizes, resets (size change, scene cut,
source restart, by hand) counted by reason, the scene-cut detector on moving vs cut frames, the
same outputs through the Deblurrer, the streaming pipeline and `deblur` of a video, and clear
errors for a state of the wrong shape, unpaired state I/O and a manifest of the wrong kind."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from runtime_helpers import TINY_RNN_SPEC, TINY_SPEC, exported  # noqa: E402

from edge_deblur.errors import InputError, ModelError  # noqa: E402
from edge_deblur.runtime.deblurrer import Deblurrer  # noqa: E402
from edge_deblur.runtime.preprocess import frame_to_tensor  # noqa: E402
from edge_deblur.runtime.stream_state import DEFAULT_SCENE_CUT, SceneCutDetector  # noqa: E402


@pytest.fixture(scope="module")
def rnn(tmp_path_factory):
    return exported(tmp_path_factory, "tiny_rnn", TINY_RNN_SPEC, fp16=False)


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    return exported(tmp_path_factory, "tiny", TINY_SPEC)["onnx"]


@pytest.fixture(scope="module")
def texture():
    """A smooth random 'scene' larger than the frames, so that crops of it are camera motion."""
    rng = np.random.default_rng(7)
    big = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    return cv2.resize(big, (240, 180), interpolation=cv2.INTER_CUBIC)


def pan(texture, n, h=34, w=46, step=3):
    return [np.ascontiguousarray(texture[10 + i:10 + i + h, 5 + step * i:5 + step * i + w]) for i in range(n)]


def fresh_output(path, frame):
    """The model's output for ``frame`` from a zero state (a new Deblurrer)."""
    with Deblurrer.open(path, scene_cut=0) as d:
        return d(frame)


def test_state_shapes_for_odd_frame_sizes(rnn):
    with Deblurrer.open(rnn["onnx"]) as d:
        assert d.info["kind"] == "recurrent" and d.stride == 4
        for h, w in ((18, 22), (33, 47), (5, 3)):
            d(np.zeros((h, w, 3), np.uint8))
            (name, s), = d.state.items()
            assert name == "state_in"
            assert s.shape == (1, d.backend.state_specs[0]["channels"], -(-h // 4) * 4 // 4, -(-w // 4) * 4 // 4)


def test_size_change_resets_and_matches_a_fresh_state(rnn, texture):
    frames = pan(texture, 3)
    small = np.ascontiguousarray(frames[2][:21, :30])
    with Deblurrer.open(rnn["onnx"]) as d:
        for f in frames:
            d(f)
        out = d(small)
        st = d.state_stats()
    assert st["resets"]["size"] == 1 and st["resets"]["start"] == 1 and st["scene_cuts"] == 0
    assert np.array_equal(out, fresh_output(rnn["onnx"], small))


def test_forced_scene_cut_resets_the_state(rnn, texture):
    frames = pan(texture, 4)
    other = np.ascontiguousarray(frames[3][::-1, :, ::-1] // 3)  # another, darker picture of the same size
    with Deblurrer.open(rnn["onnx"]) as d:
        outs = [d(f) for f in frames]
        assert d.state_stats()["scene_cuts"] == 0  # camera motion is not a cut
        cut = d(other)
        st = d.state_stats()
    assert st["scene_cuts"] == 1 and st["resets"]["scene_cut"] == 1
    assert st["last_scene_score"] > DEFAULT_SCENE_CUT
    assert np.array_equal(cut, fresh_output(rnn["onnx"], other))
    # the carried state does change the output while there is no cut
    assert not np.array_equal(outs[3], fresh_output(rnn["onnx"], frames[3]))
    # with the detector off the state is carried across the cut
    with Deblurrer.open(rnn["onnx"], scene_cut=0) as d:
        for f in frames:
            d(f)
        carried = d(other)
        assert d.state_stats()["scene_cuts"] == 0 and d.scene_cut is None
    assert not np.array_equal(carried, cut)


def test_manual_reset_and_unrelated_images_through_the_single_image_api(rnn, texture):
    frames = pan(texture, 2)
    rng = np.random.default_rng(3)
    dark = (rng.random((34, 46, 3)) * 40).astype(np.uint8)
    with Deblurrer.open(rnn["onnx"]) as d:
        d(frames[0])
        d.reset()
        again = d(frames[1])
        after_cut = d(dark)  # an unrelated image: the detector sees it
        st = d.state_stats()
    assert st["resets"]["manual"] == 1 and st["scene_cuts"] == 1
    assert np.array_equal(again, fresh_output(rnn["onnx"], frames[1]))
    assert np.array_equal(after_cut, fresh_output(rnn["onnx"], dark))   # deblurred from a zero state


def test_scene_cut_detector_scores():
    det = SceneCutDetector(0.16)
    rng = np.random.default_rng(0)
    a = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (160, 120), interpolation=cv2.INTER_LINEAR)
    assert det.score(a) is None
    assert det.score(np.roll(a, 6, axis=1)) < 0.16          # a small pan
    assert det.score(np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)) < 0.16  # slight exposure change
    assert det(np.full_like(a, 20)) is True                   # a cut to a dark frame
    # an NCHW float tensor and the HxWx3 frame it came from score the same
    x = frame_to_tensor(a, 1, rgb=True)[0]
    assert np.abs(SceneCutDetector.features(x) - SceneCutDetector.features(a)).sum() < 0.1
    for bad in (-0.1, 1.5, "x"):
        with pytest.raises(InputError, match="scene_cut"):
            SceneCutDetector(bad)


def test_state_of_the_wrong_shape_is_refused(rnn, image_model, texture):
    f = pan(texture, 1)[0]
    with Deblurrer.open(rnn["onnx"]) as d:
        d(f)
        good = d.state
        wrong = {"state_in": np.zeros(good["state_in"].shape[:2] + (3, 3), np.float32)}
        d.set_state(wrong)
        with pytest.raises(InputError, match=r"state 'state_in'.*shape \(1, \d+, 3, 3\), expected"):
            d(f)
        d.set_state({"h": good["state_in"]})
        with pytest.raises(InputError, match="has tensors \\['h'\\], expected \\['state_in'\\]"):
            d(f)
        n, c, h, w = good["state_in"].shape
        d.set_state({"state_in": np.zeros((n, c + 1, h, w), np.float32)})   # one channel too many
        with pytest.raises(InputError, match=rf"shape \(1, {c + 1}, {h}, {w}\), expected \(1, {c}, {h}, {w}\)"):
            d(f)
        d.set_state({"state_in": good["state_in"].astype(np.float64)})
        with pytest.raises(InputError, match=r"is float64, expected float32.*astype\(np.float32\)"):
            d(f)
        d.set_state(good)
        d(f)  # the right state is taken
        x = frame_to_tensor(f, 4)[0]
        with pytest.raises(InputError, match="state 'state_in'"):
            d.backend.infer_state(x, wrong)
    with Deblurrer.open(image_model) as img:
        assert img.state is None and img.state_stats() == {"kind": "image"}
        with pytest.raises(InputError, match="image model"):
            img.set_state(good)


def _graph(path, outputs, kind=None, scale=True):
    """A hand-made ONNX graph: input + state_in -> Identity outputs named ``outputs``."""
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"]),
              helper.make_tensor_value_info("state_in", TensorProto.FLOAT, ["n", 4, "sh", "sw"])]
    outs, nodes = [], []
    for name in outputs:
        src = "input" if name == "output" else "state_in"
        shape = ["n", 3, "h", "w"] if name == "output" else ["n", 4, "sh", "sw"]
        nodes.append(helper.make_node("Identity", [src], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outs), opset_imports=[helper.make_opsetid("", 17)])
    meta = {"edge_deblur.state_scale.state_in": "1"} if scale else {}
    if kind:
        meta["edge_deblur.kind"] = kind
    for k, v in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, str(path))
    return path


def test_state_inputs_and_outputs_must_pair_up(tmp_path):
    from edge_deblur.runtime.backends.onnxruntime import OnnxRuntimeBackend

    ok = OnnxRuntimeBackend(_graph(tmp_path / "ok.onnx", ["output", "state_out"]), verify=False)
    assert ok.kind == "recurrent" and ok.state_specs[0]["output"] == "state_out"
    with pytest.raises(ModelError, match="state input 'state_in' has no matching output 'state_out'.*re-export"):
        OnnxRuntimeBackend(_graph(tmp_path / "a.onnx", ["output", "state_next"]), verify=False)
    with pytest.raises(ModelError, match=r"state output\(s\) \['state_out_b'\] have no matching input"):
        OnnxRuntimeBackend(_graph(tmp_path / "b.onnx", ["output", "state_out", "state_out_b"]), verify=False)
    with pytest.raises(ModelError, match="says a image model but the graph has state inputs"):
        OnnxRuntimeBackend(_graph(tmp_path / "c.onnx", ["output", "state_out"], kind="image"), verify=False)
    # no scale for the state anywhere: a zero state of a guessed size failed deep in the graph
    with pytest.raises(ModelError, match="state input 'state_in' has no scale.*re-export"):
        OnnxRuntimeBackend(_graph(tmp_path / "d.onnx", ["output", "state_out"], scale=False), verify=False)


def test_manifest_says_which_kind(rnn, tmp_path_factory):
    assert rnn["manifest"]["kind"] == "recurrent"
    assert exported(tmp_path_factory, "tiny", TINY_SPEC)["manifest"]["kind"] == "image"


@pytest.mark.parametrize("kind", ["image", "recurrent"])
def test_stream_video_and_deblurrer_agree(rnn, image_model, texture, tmp_path, kind):
    """The same frames through Deblurrer calls, the streaming pipeline (a callable sink) and
    `deblur` of a video give the same outputs, for both kinds; a looped file resets the state."""
    from edge_deblur.io.options import StreamOptions
    from edge_deblur.runtime.pipeline import Pipeline, deblur_video

    model = rnn["onnx"] if kind == "recurrent" else image_model
    frames = pan(texture, 5, h=32, w=48) + [pan(texture, 1, h=32, w=48)[0] // 3]
    folder = tmp_path / "in"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), f)
    with Deblurrer.open(model) as d:
        ref = [d(f) for f in frames]
        ref_stats = d.state_stats()
    got = []
    with Deblurrer.open(model) as d:
        stats = Pipeline(d, str(folder), lambda fr, meta: got.append(fr.copy()), StreamOptions(loop=1)).run()
    assert len(got) == 2 * len(frames)
    for a, b in zip(got, ref + ref):  # the second pass starts from a fresh state (restart)
        assert np.array_equal(a, b)
    assert stats["state"]["kind"] == kind
    if kind == "recurrent":
        assert stats["state"]["resets"] == {"start": 1, "size": 0, "restart": 1, "scene_cut": 2, "manual": 0,
                                            "bad_output": 0}
        assert ref_stats["scene_cuts"] == 1
    # deblur of a video (lossless frames in, an image folder out)
    out = tmp_path / "out"
    with Deblurrer.open(model) as d:
        d.reset()
        deblur_video(d, str(folder), str(out))
    for i, b in enumerate(ref):
        assert np.array_equal(cv2.imread(str(out / f"{i:03d}.png")), b)


def test_eval_reports_temporal_error_and_resets_per_scene(rnn, texture, tmp_path, capsys):
    from edge_deblur.cli import main

    root = tmp_path / "pairs"
    for s, shift in (("scene_a", 0), ("scene_b", 40)):
        sharp = pan(texture[shift:], 4, h=32, w=48)
        for i, f in enumerate(sharp):
            for sub, img in (("sharp", f), ("blur", cv2.blur(f, (5, 5)))):
                (root / s / sub).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / s / sub / f"{i:04d}.png"), img)
    assert main(["eval", "-m", str(rnn["onnx"]), "-d", str(root), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (r,) = rep["sets"].values()
    assert r["temporal_pairs"] == 6 and r["temporal_error"] > 0 and r["input_temporal_error"] > 0
    assert [len(s["frames"]) for s in r["scenes"].values()] == [4, 4]
    assert rep["state"]["resets"]["manual"] == 2 and rep["state"]["scene_cuts"] == 0
    assert main(["eval", "-m", str(rnn["onnx"]), "-d", str(root), "--per-frame"]) == 0
    text = capsys.readouterr().out
    assert "scene_a/0003.png" in text and "temporal error" in text and "recurrent state resets" in text
    # the ablation: a zero state at every frame gives the first frames the same figures, not the rest
    assert main(["eval", "-m", str(rnn["onnx"]), "-d", str(root), "--json", "--no-state"]) == 0
    rz = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (z,) = rz["sets"].values()
    assert rz["state"]["resets"]["manual"] == 8
    for s in ("scene_a", "scene_b"):
        fa, fz = r["scenes"][s]["frames"], z["scenes"][s]["frames"]
        assert fa[0]["psnr"] == fz[0]["psnr"] and any(a["psnr"] != b["psnr"] for a, b in zip(fa[1:], fz[1:]))
    assert main(["eval", "-m", str(rnn["onnx"]), "-d", str(root), "--json", "--no-temporal"]) == 0
    (nt,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sets"].values()
    assert "temporal_error" not in nt


def test_one_state_per_stream_over_a_shared_model(rnn, texture):
    """Two streams interleaved over one loaded model: each gets exactly what it gets alone."""
    a_frames = pan(texture, 4)
    b_frames = [np.ascontiguousarray(f[::-1]) for f in pan(texture[60:], 4)]
    with Deblurrer.open(rnn["onnx"]) as a:
        b = a.for_stream()
        assert b.backend is a.backend
        got_a, got_b = [], []
        for fa, fb in zip(a_frames, b_frames):
            got_a.append(a(fa))
            got_b.append(b(fb))
        b.close()  # leaves the shared model open
        a(a_frames[0])
    for frames, got in ((a_frames, got_a), (b_frames, got_b)):
        with Deblurrer.open(rnn["onnx"]) as solo:
            assert all(np.array_equal(solo(f), g) for f, g in zip(frames, got))


def test_a_given_state_survives_a_frame_that_differs_from_the_last_and_reset_clears_it(rnn, texture):
    """set_state() then a frame unlike the previous one: the given state is checked and used (it
    was silently replaced by zeros as a 'scene cut'); reset() shows no stale state."""
    f = pan(texture, 1)[0]
    dark = np.full_like(f, 5)
    with Deblurrer.open(rnn["onnx"]) as d:
        d(f)
        d(f)
        good = {k: v.copy() for k, v in d.state.items()}
        d(dark)  # a cut: the detector now remembers the dark frame
        assert d.state_stats()["scene_cuts"] == 1
        d.set_state({"state_in": np.zeros(good["state_in"].shape[:2] + (3, 3), np.float32)})
        with pytest.raises(InputError, match=r"shape \(1, \d+, 3, 3\), expected"):
            d(f)
        d.set_state({"state_in": good["state_in"].astype(np.float64)})
        with pytest.raises(InputError, match="float64, expected float32"):
            d(f)
        d.set_state(good)
        y = d(f)
        assert d.state_stats()["scene_cuts"] == 1  # the frame after set_state() is never a cut
        d.reset()
        assert d.state is None  # not the old state: zeros are what the next frame gets
    with Deblurrer.open(rnn["onnx"], scene_cut=0) as e:
        e.set_state(good)
        assert np.array_equal(y, e(f))
        assert not np.array_equal(y, fresh_output(rnn["onnx"], f))  # the state mattered


@pytest.mark.parametrize("line, want", [("scene_cut: 0.5", 0.5), ("scene_cut: null", None)])
def test_deblur_takes_the_scene_cut_from_a_runtime_profile(rnn, texture, tmp_path, capsys, line, want):
    from edge_deblur.cli import main

    cv2.imwrite(str(tmp_path / "a.png"), pan(texture, 1)[0])
    (tmp_path / "prof.yaml").write_text(f"pipeline:\n  {line}\n")
    rc = main(["deblur", str(tmp_path / "a.png"), "-o", str(tmp_path / "out.png"), "-m", str(rnn["onnx"]),
               "--profile", str(tmp_path / "prof.yaml"), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    assert json.loads(out.strip().splitlines()[-1])["state"]["scene_cut_threshold"] == want


def test_scene_cut_is_checked_for_image_models_too(image_model):
    with pytest.raises(InputError, match="scene_cut must be a number in \\[0, 1\\].*'abc'"):
        Deblurrer.open(image_model, scene_cut="abc")


def test_deblur_starts_each_input_folder_from_a_fresh_state(rnn, texture, tmp_path, capsys):
    """Two folders in one `deblur`: the second's first image ran with the first folder's last state
    (up to 253 levels off); only videos were reset."""
    from edge_deblur.cli import main

    for name, start in (("a", 0), ("b", 40)):
        (tmp_path / name).mkdir()
        for i, f in enumerate(pan(texture, 3, h=32, w=48)):
            cv2.imwrite(str(tmp_path / name / f"{i:03d}.png"), np.roll(f, start, axis=1))
    args = ["-m", str(rnn["onnx"]), "--scene-cut", "0", "--json"]
    assert main(["deblur", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "both"), *args]) == 0
    assert main(["deblur", str(tmp_path / "b"), "-o", str(tmp_path / "alone"), *args]) == 0
    capsys.readouterr()
    for i in range(3):
        assert np.array_equal(cv2.imread(str(tmp_path / "both" / "b" / f"{i:03d}.png")),
                              cv2.imread(str(tmp_path / "alone" / f"{i:03d}.png")))
