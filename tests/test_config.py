import pytest

from edge_deblur.config import apply_overrides, load_train_config, parse_override, to_dict
from edge_deblur.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


BASE = "model: {type: edgenet, size: S}\ndata: {sharp_roots: [x]}\n"


def test_loads_and_resolves(tmp_path):
    cfg = load_train_config(write(tmp_path, BASE + "train: {iters: 7}\n"))
    assert cfg.train.iters == 7
    assert cfg.data.sharp_roots == ["x"]
    assert to_dict(cfg)["train"]["iters"] == 7


def test_typo_in_yaml_key_suggests_nearest(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_train_config(write(tmp_path, BASE + "train: {itres: 7}\n"))
    assert "train.itres" in str(e.value) and "did you mean 'iters'" in str(e.value)


def test_typo_in_nested_blur_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data.blur.lenght.*did you mean 'length'"):
        load_train_config(write(tmp_path, "data: {sharp_roots: [x], blur: {lenght: [1, 2]}}\n"))


def test_override_typo_and_values(tmp_path):
    p = write(tmp_path, BASE)
    cfg = load_train_config(p, ["train.lr=3e-4", "train.amp=false", "data.blur.length=[1, 5]"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.amp is False
    assert cfg.data.blur.length == [1.0, 5.0]
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        load_train_config(p, ["train.batchsize=4"])


def test_bad_types_and_values_are_named(tmp_path):
    p = write(tmp_path, BASE)
    with pytest.raises(ConfigError, match="train.iters: expected an integer"):
        load_train_config(p, ["train.iters=many"])
    with pytest.raises(ConfigError, match="probability"):
        load_train_config(p, ["data.blur.jpeg_prob=2"])
    with pytest.raises(ConfigError, match="multiple of 16"):
        load_train_config(p, ["data.crop=100"])


def test_unknown_model_type_and_argument(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'edgenet'"):
        load_train_config(write(tmp_path, "model: {type: edgnet}\ndata: {sharp_roots: [x]}\n"))
    with pytest.raises(ConfigError, match="did you mean 'widths'"):
        load_train_config(write(tmp_path, "model: {type: edgenet, widht: [8]}\ndata: {sharp_roots: [x]}\n"))


def test_override_parsing_never_evaluates_code():
    key, value = parse_override("train.name=__import__('os').system('true')")
    assert key == ["train", "name"] and isinstance(value, str)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.iters")
    assert apply_overrides({"a": {"b": 1}}, ["a.b=2"]) == {"a": {"b": 2}}


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "nope.yaml")


def test_every_shipped_training_config_loads_and_builds_its_model():
    """The recipes the model cards cite must stay loadable as the schema changes."""
    from pathlib import Path

    from edge_deblur.models import build_model

    root = Path(__file__).resolve().parents[1] / "configs" / "train"
    paths = sorted(root.glob("*.yaml"))  # smoke.yaml too: every shipped config is complete on its own
    assert len(paths) >= 10, paths
    for p in paths:
        cfg = load_train_config(p)
        assert cfg.name == p.stem, f"{p.name}: name {cfg.name!r} should match the file name"
        assert "test_001" in cfg.data.pair_exclude or not cfg.data.pair_roots, f"{p.name} trains on the held-out scene"
        # GoPro_1280x720 is the GoPro test split: validation only, never a training source
        sources = [str(r) for r in (*cfg.data.sharp_roots, *cfg.data.pair_roots)]
        assert not any("GoPro" in r for r in sources), f"{p.name} trains on GoPro validation frames: {sources}"
        build_model(cfg.model)


def test_gpu_tier_recipe_draws_the_blur_of_the_cpu_default_recipe():
    """The GPU tier trains on the data the CPU runs validated (edgenet_m5_long.yaml): the same
    blur law, photo scale and share of real pairs; only the synthesis path, pack, batch and model
    differ. A drift here (uniform lengths, photos shrunk to half) silently trains on heavier blur."""
    import dataclasses
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs" / "train"
    gpu = load_train_config(root / "edgenet_gpu.yaml").data
    cpu = load_train_config(root / "edgenet_m5_long.yaml").data
    # the discrete-frame blur came after edgenet_m5_long.yaml (edgenet_m5_discrete.yaml adds it)
    disc = load_train_config(root / "edgenet_m5_discrete.yaml").data
    # and the centroid-aligned targets after that (edgenet_m5_centroid.yaml, session 12)
    cen = load_train_config(root / "edgenet_m5_centroid.yaml").data
    assert gpu.blur.align == cen.blur.align == "centroid" and disc.blur.align == "mid_time"
    assert dataclasses.asdict(gpu.blur) == dataclasses.asdict(cen.blur)
    assert dataclasses.replace(disc.blur, align="centroid") == cen.blur
    assert dataclasses.replace(cpu.blur, discrete_prob=disc.blur.discrete_prob) == disc.blur
    for key in ("scale", "pair_prob", "pair_stack", "pair_exclude", "sharp_roots", "pair_roots"):
        assert getattr(gpu, key) == getattr(cpu, key), key


def test_blur_settings_that_silently_misbehaved_are_refused():
    """length_log with a zero lower end fell back to uniform draws; a zoom past 0.5 made the scale
    cross zero (9.8 dB samples); negative rotation or anxiety were taken as they came."""
    import pytest

    from edge_deblur.config.schema import BlurConfig
    from edge_deblur.errors import ConfigError

    for kw, match in ((dict(length=[0.0, 80.0], length_log=True), "lower end > 0"), (dict(zoom=2.5), "zoom: must be"),
                      (dict(rotation_deg=-1.0), "rotation_deg: must be"), (dict(anxiety=-0.1), "anxiety: must be")):
        with pytest.raises(ConfigError, match=match):
            BlurConfig(**kw).validate()
    BlurConfig(length=[4.0, 80.0], length_log=True).validate()
