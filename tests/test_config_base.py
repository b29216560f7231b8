"""``base:`` inheritance of training configs: deep merge of mappings, lists replace, paths relative
to the file, errors that name the file and line, missing bases and cycles."""
from pathlib import Path

import pytest

from edge_deblur.cli import main
from edge_deblur.config import load_train_config, to_dict
from edge_deblur.errors import ConfigError

ROOT = """\
model: {type: edgenet, size: S}
data:
  sharp_roots: [a, b]
  pair_roots: [p]
  pair_exclude: [test_001]
  blur:
    length: [2.0, 28.0]
    noise_prob: 0.3
train:
  iters: 9000
  lr: 1.0e-3
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_chain_of_bases_merges_mappings_and_replaces_lists(tmp_path):
    write(tmp_path / "root.yaml", ROOT)
    # the base is resolved relative to the file that names it, not to the working directory
    write(tmp_path / "stages" / "mid.yaml", "base: ../root.yaml\ndata: {blur: {length: [4.0, 36.0]}}\n"
                                             "train: {lr: 5.0e-4}\n")
    leaf = write(tmp_path / "stages" / "leaf.yaml", "base: mid.yaml\nname: leaf\nmodel: {mid_blocks: 6}\n"
                                                      "data: {sharp_roots: [c]}\ntrain: {iters: 100}\n")
    cfg = load_train_config(leaf)
    assert cfg.name == "leaf"
    assert cfg.model == {"type": "edgenet", "size": "S", "mid_blocks": 6}   # mapping merged
    assert cfg.data.sharp_roots == ["c"]                                      # list replaced, not appended
    assert cfg.data.pair_roots == ["p"]                                       # inherited from the root
    assert cfg.data.blur.length == [4.0, 36.0] and cfg.data.blur.noise_prob == 0.3  # nested merge
    assert cfg.train.iters == 100 and cfg.train.lr == pytest.approx(5e-4)
    assert "base" not in to_dict(cfg)
    # overrides still apply last
    assert load_train_config(leaf, ["data.blur.noise_prob=0.9"]).data.blur.noise_prob == 0.9


def test_unknown_key_names_the_file_and_line_it_was_written_at(tmp_path):
    write(tmp_path / "root.yaml", ROOT.replace("    noise_prob: 0.3\n", "    noise_prob: 0.3\n    lenght: [1, 2]\n"))
    child = write(tmp_path / "child.yaml", "# a comment\nbase: root.yaml\ntrain:\n  lr: 2.0e-4\n  itres: 5\n")
    with pytest.raises(ConfigError) as e:
        load_train_config(child)
    msg = str(e.value)
    # data.blur.lenght was written on line 9 of the base, not in the child
    assert f"{tmp_path / 'root.yaml'} line 9" in msg and "data.blur.lenght" in msg and "did you mean 'length'" in msg
    write(tmp_path / "root.yaml", ROOT)
    with pytest.raises(ConfigError) as e:
        load_train_config(child)
    assert f"{child} line 5" in str(e.value) and "train.itres" in str(e.value) and "did you mean 'iters'" in str(e.value)
    # a bad value is located too, and an override is named as such
    write(child, "base: root.yaml\ndata:\n  blur: {jpeg_prob: 2}\n")
    with pytest.raises(ConfigError, match=rf"{child} line 3: data.blur.jpeg_prob: probability"):
        load_train_config(child)
    with pytest.raises(ConfigError, match=r"override 'train.iters=many'"):
        load_train_config(tmp_path / "root.yaml", ["train.iters=many"])


def test_missing_base_and_cycles_are_clear_errors(tmp_path, capsys):
    p = write(tmp_path / "missing.yaml", "name: a\nbase: nope.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_train_config(p)
    assert f"{p} line 2" in str(e.value) and "'nope.yaml' not found" in str(e.value)
    assert str(tmp_path / "nope.yaml") in str(e.value)
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: c.yaml\n")
    write(tmp_path / "c.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle: .*a\.yaml -> .*b\.yaml -> .*c\.yaml -> .*a\.yaml"):
        load_train_config(tmp_path / "a.yaml")
    write(tmp_path / "self.yaml", "base: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_train_config(tmp_path / "self.yaml")
    write(tmp_path / "list.yaml", "base: [a.yaml, b.yaml]\n")
    with pytest.raises(ConfigError, match="'base' must be one file name"):
        load_train_config(tmp_path / "list.yaml")
    # the CLI turns it into a message and a non-zero exit
    assert main(["train", "-c", str(p), "--print-config"]) == 2
    assert "not found" in capsys.readouterr().err


def test_stage_configs_are_folded_into_bases():
    """The stage recipes state only what differs from the stage they build on, and resolve to
    what the stages ran with (checked against the pre-fold copies when they were folded)."""
    root = Path(__file__).resolve().parents[1] / "configs" / "train"
    text = (root / "edgenet_s_swa_ft.yaml").read_text()
    assert "base: edgenet_s_light_ft.yaml" in text and "sharp_roots" not in text
    cfg = load_train_config(root / "edgenet_s_swa_ft.yaml")
    assert cfg.train.min_lr_ratio == 1.0 and cfg.train.time_limit == 4200 and cfg.train.threads == 1
    assert cfg.train.lowpass_weight == 2.0 and cfg.train.lr == pytest.approx(1.5e-4) and cfg.train.keep_every == 250
    assert cfg.data.pair_stack == [1, 1, 3, 5] and cfg.data.downscale == [1.0, 2.5]
    assert cfg.data.blur.gamma_range == [3.0, 4.2] and cfg.data.blur.anxiety == 0.0015
    assert cfg.data.val_scenes == ["test_001"] and cfg.data.pair_exclude == ["test_001"]
