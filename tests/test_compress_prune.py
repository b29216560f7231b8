"""Structured pruning: PixelShuffle coupling, own arch spec, export, fine-tune through the train loop."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from edge_deblur.compress.prune import check_ratio, kept_channels, prune_checkpoint, prune_edgenet  # noqa: E402
from edge_deblur.errors import InputError  # noqa: E402
from edge_deblur.models import build_model, to_deploy  # noqa: E402
from edge_deblur.models.checkpoint import load_model, read_checkpoint, save_checkpoint  # noqa: E402
from edge_deblur.models.profile import count_macs  # noqa: E402

@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one torch thread is much faster than two on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY = {"type": "edgenet", "widths": [16, 32, 48], "enc_blocks": [1, 2], "mid_blocks": 1, "dec_blocks": [2, 1]}


def _random_model(spec=TINY, seed=0, scale=0.2):
    torch.manual_seed(seed)
    m = build_model(spec)
    for p in m.parameters():
        p.data.uniform_(-scale, scale)
    return m


def _with_dead_channels(model, seed=0):
    """Zero half of every channel group (level widths and block middles) so that removing exactly
    those channels leaves the function unchanged; the up path's dead post-shuffle channel c is made
    of conv channels 4c..4c+3."""
    g = torch.Generator().manual_seed(seed)
    m = to_deploy(model)
    widths = [m.head.out_channels] + [d.out_channels for d in m.down]
    dead = {i: torch.randperm(w, generator=g)[: w // 2] for i, w in enumerate(widths)}

    def kill_out(conv, idx, r=1):
        ci = torch.cat([idx * r * r + k for k in range(r * r)]) if r > 1 else idx
        conv.weight.data[ci] = 0
        conv.bias.data[ci] = 0

    def kill_in(conv, idx):
        conv.weight.data[:, idx] = 0

    with torch.no_grad():
        kill_out(m.head, dead[0])
        for i, d in enumerate(m.down):
            kill_out(d, dead[i + 1])
            kill_in(d, dead[i])
        for i, u in enumerate(m.up):
            kill_out(u[0], dead[i], 2)
            kill_in(u[0], dead[i + 1])
        kill_in(m.tail, dead[0])
        levels = [(s, i) for i, s in enumerate(m.enc)] + [(m.mid, len(widths) - 1)] + [(s, i) for i, s in enumerate(m.dec)]
        for seq, i in levels:
            for b in seq:
                kill_out(b.conv2, dead[i])
                kill_in(b.conv1, dead[i])
                md = torch.randperm(b.conv1.out_channels, generator=g)[: b.conv1.out_channels // 2]
                kill_out(b.conv1, md)
                kill_in(b.conv2, md)
    return m


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.2, "half", None])
def test_ratio_outside_open_interval_is_rejected(bad):
    with pytest.raises(InputError, match="ratio"):
        check_ratio(bad)


def test_other_architectures_are_refused():
    from edge_deblur.errors import ModelError

    rnn = build_model({"type": "edgenet_rnn", "widths": [16, 32], "enc_blocks": [1], "mid_blocks": 1, "dec_blocks": [1]})
    with pytest.raises(ModelError, match="feed-forward edgenet"):
        prune_edgenet(rnn, 0.5)
    with pytest.raises(ModelError, match="edgenet"):
        prune_edgenet(torch.nn.Conv2d(3, 3, 1), 0.5)


def test_kept_channels_rounds_to_multiples_of_8():
    assert kept_channels(16, 0.5) == 8
    assert kept_channels(128, 0.5) == 64
    assert kept_channels(48, 0.5) == 24
    assert kept_channels(16, 0.9) == 8  # never below round_to
    assert kept_channels(8, 0.5) == 8   # groups at round_to stay
    assert kept_channels(64, 0.3) == 48  # 44.8 -> 48


def test_pruning_removes_exactly_the_dead_channels_through_pixelshuffle():
    """If the up path's conv1x1 -> PixelShuffle coupling were wrong (channel i <-> i instead of
    c <-> 4c..4c+3), other channels would be removed and the output would change."""
    dense = _with_dead_channels(_random_model())
    pruned = prune_edgenet(dense, 0.5)
    assert pruned.spec["widths"] == [8, 16, 24]
    assert pruned.head.in_channels == 12 and pruned.tail.out_channels == 12
    for i, u in enumerate(pruned.up):
        assert u[0].out_channels == 4 * pruned.spec["widths"][i]
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        y, want = pruned(x), dense(x)
    scale = float(want.abs().max())
    assert scale > 1.0  # a live network, not a near-zero one
    assert float((y - want).abs().max()) <= 1e-5 * scale  # equal up to float summation order


def test_pruned_model_matches_model_rebuilt_from_its_spec():
    dense = _random_model()
    pruned = prune_edgenet(dense, 0.5)
    rebuilt = build_model(pruned.spec)
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), pruned(x))
    assert count_macs(pruned) < 0.6 * count_macs(dense)


def test_block_middles_are_described_by_block_mid():
    spec = dict(TINY, block_mid={"enc.0.0": 32, "mid.0": 64})
    pruned = prune_edgenet(_random_model(spec), 0.5)
    assert pruned.spec["widths"] == [8, 16, 24]
    assert pruned.spec["block_mid"] == {"enc.0.0": 16, "mid.0": 32}
    assert pruned.enc[0][0].conv1.out_channels == 16 and pruned.mid[0].conv1.out_channels == 32


def test_strip_blocks_are_pruned_with_their_level():
    spec = dict(TINY, strip_levels=[0, 1], strip_kernel=5, block_mid={"enc_strip.1": 64})
    dense = _random_model(spec)
    pruned = prune_edgenet(dense, 0.5)
    assert pruned.spec["strip_levels"] == [0, 1] and pruned.spec["strip_kernel"] == 5
    assert pruned.enc_strip["0"].pw1.in_channels == pruned.spec["widths"][0] == 8
    assert pruned.enc_strip["0"].dw_h.groups == pruned.enc_strip["0"].pw1.out_channels == 8
    assert pruned.spec["block_mid"]["enc_strip.1"] == 32
    rebuilt = build_model(pruned.spec)
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), pruned(x))


def test_pruned_checkpoint_loads_from_its_own_spec_and_exports(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from edge_deblur.export.onnx_export import export_onnx

    src = tmp_path / "dense.safetensors"
    m = _random_model(scale=0.05)
    save_checkpoint(src, m.state_dict(), m.spec, {"name": "t"}, {"iters": 5})
    dst = tmp_path / "pruned.safetensors"
    report = prune_checkpoint(src, dst, 0.5, finetune=None)
    assert report["after"]["gmacs_1280x720"] < 0.6 * report["before"]["gmacs_1280x720"]

    _, spec, _, meta = read_checkpoint(dst)
    # the stored spec is complete: no 'size', every constructor argument explicit
    assert "size" not in spec
    assert spec["widths"] == [8, 16, 24] and spec["rep"] is False
    assert {"enc_blocks", "mid_blocks", "dec_blocks", "block_mid", "in_ch"} <= set(spec)
    assert meta["pruned"]["ratio"] == 0.5 and meta["pruned"]["before"]["params"] > meta["params"]

    model = load_model(dst)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        ref = prune_edgenet(load_model(src, deploy=True), 0.5)(x)
        torch.testing.assert_close(model(x), ref, atol=1e-6, rtol=0)

    man = export_onnx(dst, tmp_path / "exp")  # raises unless ONNX matches PyTorch
    assert man["arch"]["widths"] == [8, 16, 24]
    sess = ort.InferenceSession(str(tmp_path / "exp" / "model.onnx"), providers=["CPUExecutionProvider"])
    xi = np.random.default_rng(0).random((1, 3, 48, 64), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(xi)).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: xi})[0]
    assert np.max(np.abs(got - want)) < 1e-4


def test_prune_cli_with_finetune_through_the_training_loop(tmp_path, capsys):
    from edge_deblur.cli import main

    sharp = tmp_path / "sharp"
    sharp.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        img = cv2.GaussianBlur(rng.integers(0, 256, (72, 72, 3), dtype=np.uint8), (0, 0), 2)
        cv2.imwrite(str(sharp / f"{i}.png"), img)
    spec = {"type": "edgenet", "widths": [16, 32], "enc_blocks": [1], "mid_blocks": 1, "dec_blocks": [1]}
    m = _random_model(spec, scale=0.05)
    src = tmp_path / "dense.safetensors"
    cfg = {"name": "t", "model": spec, "out_dir": str(tmp_path / "run"),
           "data": {"sharp_roots": [str(sharp)], "crop": 32, "workers": 0},
           "train": {"iters": 100, "batch_size": 2, "warmup_iters": 1, "val_every": 100, "ckpt_every": 100,
                     "log_every": 1, "channels_last": False}}
    save_checkpoint(src, m.state_dict(), spec, cfg, {"iters": 100})
    dst = tmp_path / "pruned.safetensors"
    rc = main(["prune", str(src), "--ratio", "0.5", "-o", str(dst), "--finetune-iters", "3", "--no-progress", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["finetune"]["iters"] == 3
    state, spec2, config, meta = read_checkpoint(dst)
    assert spec2["widths"] == [8, 16]
    assert config["train"]["iters"] == 3 and config["model"]["widths"] == [8, 16]
    assert meta["finetune"]["iters"] == 3
    unfinetuned = prune_edgenet(load_model(src, deploy=True), 0.5).state_dict()
    assert any(not torch.equal(state[k], unfinetuned[k]) for k in unfinetuned)  # the fine-tune changed weights
    load_model(dst)

    rc = main(["prune", str(src), "--ratio", "1.2", "-o", str(tmp_path / "x.safetensors"), "--finetune-iters", "0"])
    assert rc == 2
    assert "outside (0, 1)" in capsys.readouterr().err

    # another dense checkpoint into the same output: its fine-tune folder holds the first prune's
    # run, which used to be resumed and returned as this prune's weights
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, _random_model(spec, scale=0.07).state_dict(), spec, cfg, {"iters": 100})
    rc = main(["prune", str(other), "--ratio", "0.5", "-o", str(dst), "--finetune-iters", "3", "--no-progress"])
    assert rc == 2
    assert "holds a run of another prune" in capsys.readouterr().err
    assert read_checkpoint(dst)[3]["pruned"]["from"] == str(src)  # the first prune's output untouched
