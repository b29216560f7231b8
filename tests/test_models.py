import pytest
import torch

from edge_deblur.models import build_model, to_deploy
from edge_deblur.models.blocks import RepConv3x3
from edge_deblur.models.checkpoint import load_model, save_checkpoint
from edge_deblur.models.profile import count_macs, count_params
from edge_deblur.errors import ConfigError, ModelError

TINY = {"type": "edgenet", "widths": [8, 16, 16], "enc_blocks": [1, 1], "mid_blocks": 1, "dec_blocks": [1, 1]}


def randomize(model, std=0.05):
    g = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g) * std
    return model


@pytest.mark.parametrize("spec", [TINY, {**TINY, "type": "nafnet"}])
@pytest.mark.parametrize("hw", [(37, 53), (16, 16), (71, 29)])
def test_any_size_via_padding(spec, hw):
    from edge_deblur.runtime.preprocess import frame_to_tensor, tensor_to_frame
    import numpy as np

    m = randomize(build_model({k: v for k, v in spec.items() if not (spec["type"] == "nafnet" and k == "rep")})).eval()
    frame = (np.random.default_rng(0).random((*hw, 3)) * 255).astype(np.uint8)
    t, info = frame_to_tensor(frame, m.stride)
    assert t.shape[2] % m.stride == 0 and t.shape[3] % m.stride == 0
    with torch.no_grad():
        y = m(torch.from_numpy(t)).numpy()
    assert y.shape == t.shape
    out = tensor_to_frame(y, info)
    assert out.shape == frame.shape and out.dtype == frame.dtype


def test_untrained_edgenet_is_identity():
    m = build_model(TINY).eval()
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.allclose(m(x), x)


def test_reparameterization_matches_train_time_branches():
    m = randomize(build_model(TINY)).eval()
    for mod in m.modules():
        if isinstance(mod, RepConv3x3):
            mod.online = False  # run the branches separately
    d = to_deploy(m)
    assert not any(isinstance(mod, RepConv3x3) for mod in d.modules())
    assert d.spec["rep"] is False
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        ref, out = m(x), d(x)
    assert (ref - out).abs().max().item() < 1e-5
    # the online-folded forward is the same function
    for mod in m.modules():
        if isinstance(mod, RepConv3x3):
            mod.online = True
    with torch.no_grad():
        assert (m(x) - ref).abs().max().item() < 1e-5


def test_deploy_state_loads_into_deploy_spec():
    m = randomize(build_model(TINY)).eval()
    d = to_deploy(m)
    d2 = build_model(d.spec)
    d2.load_state_dict(d.state_dict())


def test_mac_counter_matches_hand_count():
    spec = {"type": "edgenet", "widths": [8], "enc_blocks": [], "mid_blocks": 1, "dec_blocks": []}
    m = build_model(spec)
    # at 32x32: unshuffle -> 16x16; head 12->8 3x3, block 2x (8->8 3x3), tail 8->12 3x3
    hw = 16 * 16
    expected = hw * 9 * (12 * 8 + 8 * 8 * 2 + 8 * 12)
    assert count_macs(m, (32, 32)) == expected
    # sizes are padded up to the stride like the runtime does
    assert m.stride == 2 and count_macs(m, (31, 31)) == expected


def test_shipped_size_budget():
    m = build_model({"type": "edgenet", "size": "S"})
    assert count_macs(m, (1280, 720)) / 1e9 <= 20.0
    assert count_params(to_deploy(m)) < count_params(m)


def test_checkpoint_round_trip_and_wrong_arch(tmp_path):
    m = randomize(build_model(TINY))
    p = tmp_path / "m.safetensors"
    save_checkpoint(p, m.state_dict(), m.spec, {"x": 1}, {"iters": 3})
    m2 = load_model(p)
    assert m2.meta["iters"] == 3
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    # a checkpoint whose weights belong to another architecture
    other = build_model({**TINY, "widths": [8, 16, 32]})
    save_checkpoint(p, other.state_dict(), m.spec)
    with pytest.raises(ModelError, match="does not fit architecture"):
        load_model(p)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable"):
        load_model(tmp_path / "bad.safetensors")
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_bad_spec_errors():
    with pytest.raises(ConfigError, match="did you mean 'edgenet'"):
        build_model({"type": "edgnet"})
    with pytest.raises(ConfigError, match="enc_blocks"):
        build_model({"type": "edgenet", "widths": [8, 16], "enc_blocks": [1, 1], "dec_blocks": [1]})


def test_grow_is_function_preserving():
    from edge_deblur.models.grow import grow_edgenet

    m = randomize(build_model(TINY)).eval()
    g = grow_edgenet(m, 3).eval()
    assert len(g.mid) == 3 and g.spec["mid_blocks"] == 3
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert (g(x) - m(x)).abs().max().item() < 1e-6
        assert (to_deploy(g)(x) - m(x)).abs().max().item() < 1e-5


STRIP = {**TINY, "strip_levels": [0, 1], "strip_kernel": 7}


def test_strip_blocks_start_as_identity_and_grow_preserves_function():
    from edge_deblur.models.grow import grow_to

    assert torch.equal(build_model(STRIP).eval()(torch.ones(1, 3, 16, 16)), torch.ones(1, 3, 16, 16))
    m = randomize(build_model(TINY)).eval()
    g = grow_to(m, dict(m.spec, strip_levels=[0, 1], strip_kernel=7)).eval()
    assert set(g.enc_strip) == {"0", "1"} and set(g.dec_strip) == {"0", "1"}
    x = torch.rand(1, 3, 48, 32)
    with torch.no_grad():
        assert (g(x) - m(x)).abs().max().item() < 1e-6
        assert (to_deploy(g)(x) - m(x)).abs().max().item() < 1e-5
    assert count_macs(build_model(STRIP)) > count_macs(build_model(TINY))
    with pytest.raises(ValueError, match=r"spec keys \['rep'\] differ"):
        grow_to(build_model({**TINY, "rep": True}), {**TINY, "rep": False})
    with pytest.raises(ValueError, match="drop levels"):
        grow_to(g, dict(g.spec, strip_levels=[1]))


def test_strip_block_reaches_kernel_half_width_along_rows_and_columns():
    from edge_deblur.models.blocks import StripBlock

    blk = randomize(StripBlock(4, kernel=21), std=0.3).eval()
    for p in blk.parameters():  # positive weights keep the ReLU open, so any reach shows
        p.data.abs_()
    x = torch.rand(1, 4, 41, 41)

    def changed(dy, dx):
        x2 = x.clone()
        x2[0, :, 20 + dy, 20 + dx] += 1.0
        with torch.no_grad():
            return (blk(x2) - blk(x))[0, :, 20, 20].abs().max().item() > 1e-6

    assert changed(0, 10) and changed(0, -10) and changed(10, 0) and changed(-10, 0)
    assert not changed(0, 11) and not changed(11, 0) and not changed(3, 3)


def test_strip_levels_are_checked():
    with pytest.raises(ConfigError, match="strip_levels"):
        build_model({**TINY, "strip_levels": [2]})
    with pytest.raises(ConfigError, match="odd"):
        build_model({**TINY, "strip_levels": [0], "strip_kernel": 8})


def test_info_prints_gmacs_at_1280x720_once_and_at_another_size_when_asked(capsys):
    from edge_deblur.cli import main

    assert main(["info", "--model", "{type: edgenet, size: S}"]) == 0
    out = capsys.readouterr().out
    assert out.count("GMACs at 1280x720: 10.00") == 1 and "640x360" not in out
    assert main(["info", "--model", "{type: edgenet, size: S}", "--size", "640x360"]) == 0
    out = capsys.readouterr().out
    assert out.count("GMACs at 1280x720: 10.00") == 1 and "GMACs at 640x360: 2.55" in out


def test_info_on_a_recipe_reads_the_model_through_its_base_chain(tmp_path, capsys):
    from edge_deblur.cli import main

    (tmp_path / "base.yaml").write_text("data: {sharp_roots: [x]}\nmodel: {type: edgenet, size: S}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nmodel: {mid_blocks: 3}\n")
    assert main(["info", "--model", str(tmp_path / "child.yaml")]) == 0
    out = capsys.readouterr().out
    assert '"mid_blocks": 3' in out and '"widths": [16, 32, 64, 128]' in out


def test_widening_is_function_preserving_and_the_new_channels_learn():
    """More channels at some levels: the output is unchanged at first, and the zeroed weights that
    let old channels read the new ones get gradients at the first step."""
    from edge_deblur.models.grow import grow_to

    for base in (TINY, {**TINY, "rep": False, "strip_levels": [0], "strip_kernel": 5}):
        m = randomize(build_model(base)).eval()
        g = grow_to(m, dict(m.spec, widths=[12, 16, 24])).eval()
        assert g.spec["widths"] == [12, 16, 24] and g.tail.in_channels == 12
        x = torch.rand(2, 3, 40, 56)
        torch.testing.assert_close(g(x), m(x), atol=1e-6, rtol=0)
        tail = g.tail.weight
        assert float(tail[:, 8:].abs().sum()) == 0.0  # nothing reads the new level-0 channels yet
        g.train()
        (g(x) - x.flip(-1)).abs().mean().backward()
        assert float(tail.grad[:, 8:].abs().sum()) > 0  # ... and that changes at the first step
        mid = g.mid[0].conv1
        w = mid.conv3.weight if hasattr(mid, "conv3") else mid.weight
        assert float(w.grad[:16, 16:].abs().sum()) > 0
    with pytest.raises(ValueError, match=r"widths \[4, 16, 16\] must be at least \[8, 16, 16\]"):
        grow_to(m, dict(m.spec, widths=[4, 16, 16]))


def test_adding_a_level_is_function_preserving_and_trains_the_new_level():
    """An edgenet grows by one coarser level: the old bottleneck blocks become that level's
    encoder/decoder blocks, the new level starts silent (same output), and its weights receive
    gradients once the up-projection moves."""
    from edge_deblur.models.grow import grow_to

    m = randomize(build_model(TINY)).eval()
    spec = dict(m.spec, widths=list(m.spec["widths"]) + [32], enc_blocks=list(m.spec["enc_blocks"]) + [1],
                dec_blocks=list(m.spec["dec_blocks"]) + [m.spec["mid_blocks"] - 1], mid_blocks=2)
    g = grow_to(m, spec)
    assert len(g.spec["widths"]) == len(m.spec["widths"]) + 1 and g.stride == 2 * m.stride
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert (g.eval()(x) - m(x)).abs().max().item() < 1e-6
    g.train()
    (g(x) - x).square().mean().backward()
    assert g.up[-1][0].weight.grad.abs().sum() > 0          # the new level's way back in learns first
    with pytest.raises(ValueError, match="enc_blocks"):
        grow_to(m, dict(spec, dec_blocks=list(m.spec["dec_blocks"]) + [m.spec["mid_blocks"] + 1]))
