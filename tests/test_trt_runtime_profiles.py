"""Runtime profiles under configs/runtime/ (Jetson Orin Nano / NX / AGX, driving 720p, satellite
tiles): they load, validate, and report typos with the nearest valid key."""
import pytest

from edge_deblur.config.runtime import RuntimeProfile, available_profiles, load_runtime_profile
from edge_deblur.errors import ConfigError
from edge_deblur.export.trt_build import parse_shapes


def bundled_stride() -> int:
    import json
    from pathlib import Path

    from edge_deblur.runtime.bundled import default_model_path

    folder = Path(default_model_path())
    folder = folder if folder.is_dir() else folder.parent
    return int(json.loads((folder / "manifest.json").read_text())["stride"])


def test_every_profile_loads_and_its_engine_shapes_fit_the_stride():
    """At the bundled model's stride (32 for edgenet M5): 720 is not a multiple of it, so a profile
    or the build default with 720x1280 fails at build time (they were checked at 16, edgenet S's)."""
    from edge_deblur.export.trt_build import DEFAULT_SHAPES

    stride = bundled_stride()
    assert stride == 32
    parse_shapes(DEFAULT_SHAPES, stride=stride)
    names = available_profiles()
    assert {"orin_nano", "orin_nx", "agx_orin", "driving_720p", "satellite_tiles"} <= set(names)
    for name in names:
        p = load_runtime_profile(name)
        assert isinstance(p, RuntimeProfile) and p.name == name and p.description
        if p.engine.shapes:
            parse_shapes(p.engine.shapes, stride=stride)
        if p.jetson is not None and p.engine.dla_core is not None:
            assert p.engine.dla_core < p.jetson.dla_cores


def test_jetson_facts():
    nano, nx, agx = (load_runtime_profile(n) for n in ("orin_nano", "orin_nx", "agx_orin"))
    assert nano.jetson.dla_cores == 0 and nx.jetson.dla_cores == 2 and agx.jetson.dla_cores == 2
    assert nano.stream.source == "csi://0" and nano.backend == "tensorrt"
    assert load_runtime_profile("satellite_tiles").pipeline.tile == 1024


def test_typos_and_bad_values_are_reported():
    with pytest.raises(ConfigError, match="did you mean 'orin_nano'"):
        load_runtime_profile("orin_nan")
    with pytest.raises(ConfigError, match="did you mean 'workspace_mb'"):
        load_runtime_profile("orin_nano", ["engine.workspace=512"])
    with pytest.raises(ConfigError, match="orin-nano has 0 DLA"):
        load_runtime_profile("orin_nano", ["engine.dla_core=0"])
    with pytest.raises(ConfigError, match="DLA runs FP16 and INT8 only"):
        load_runtime_profile("agx_orin", ["engine.dla_core=0", "precision=fp32"])
    with pytest.raises(ConfigError, match="engine.shapes.*min <= opt <= max"):  # the stride is checked at build
        load_runtime_profile("driving_720p", ["engine.shapes=1x3x720x1280:1x3x256x256:1x3x1088x1920"])
    with pytest.raises(ConfigError, match="not one of"):
        load_runtime_profile("driving_720p", ["precision=fp64"])
    with pytest.raises(ConfigError, match="dynamic: DLA runs fixed shapes only.*engine.shapes=1x3x736x1280"):
        load_runtime_profile("agx_orin", ["engine.dla_core=1", "precision=int8"])
    p = load_runtime_profile("agx_orin", ["engine.dla_core=1", "engine.shapes=1x3x720x1280", "precision=int8"])
    assert p.engine.dla_core == 1 and p.model_file("export/edgenet").name == "model.int8.onnx"


def test_profile_from_a_path(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("precision: fp32\npipeline: {slots: 1}\n")
    p = load_runtime_profile(f)
    assert p.name == "mine" and p.pipeline.slots == 1 and p.backend == "auto"
