"""build_engine on the CPU with a fake TensorRT (tests/trt_fakes.py): DLA needs a fixed profile
(refused when given dynamic, the opt shape when defaulted) and gets the parser's DLA flag where
TensorRT has it; TF32 is turned off and recorded; a rejected profile is a ModelError that names
the input."""
import functools
import types

import pytest

from edge_deblur.errors import BackendError, InputError, ModelError
from edge_deblur.export import engine_cache as ec
from edge_deblur.export import trt_build as tb
from edge_deblur.runtime import cudart
from edge_deblur.runtime.cudart import GpuInfo
from trt_fakes import fake_trt, write_relu_onnx

onnx = pytest.importorskip("onnx")

DYNAMIC = "1x3x16x16:1x3x32x48:1x3x64x64"


@pytest.fixture
def model(tmp_path):
    return write_relu_onnx(tmp_path / "m.onnx")


def install(monkeypatch, **kw):
    trt = fake_trt(**kw)
    monkeypatch.setattr(tb, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(cudart, "gpu_info", lambda device=0: GpuInfo("Orin", 8, 7))
    return trt


build = functools.partial(tb.build_engine, stride=16, state_downscale=4)


# -- DLA ---------------------------------------------------------------------------------------


def test_dla_with_a_dynamic_profile_is_refused_with_the_fixed_shape_to_use(model, tmp_path, monkeypatch):
    install(monkeypatch, num_dla=2)
    with pytest.raises(InputError) as e:
        build(model, tmp_path / "m.engine", DYNAMIC, dla_core=0)
    msg = str(e.value)
    assert "--dla 0" in msg and "fixed shapes only" in msg and "--shapes 1x3x32x48" in msg and "without --dla" in msg


def test_dla_default_profile_becomes_its_opt_shape_fixed(model, tmp_path, monkeypatch, caplog):
    trt = install(monkeypatch, num_dla=2, adjust_for_dla=True)
    man = build(model, tmp_path / "m.engine", None, dla_core=1)
    opt = (1, 3, 736, 1280)
    assert man["profile"] == {"min": list(opt), "opt": list(opt), "max": list(opt)}
    assert trt.built["profiles"][0]["input"] == (opt, opt, opt)
    assert trt.built["profiles"][0]["state_in"] == ((1, 2, 184, 320),) * 3  # follows the image, fixed too
    assert "DLA runs fixed shapes only" in caplog.text and "1x3x736x1280" in caplog.text
    assert trt.built["device"] == "DLA" and trt.built["config"].DLA_core == 1
    # TensorRT 10.16+: the parser adjusts layers for DLA
    assert trt.OnnxParserFlag.ADJUST_FOR_DLA in trt.built["parser_flags"] and man["build"]["dla_parser_adjust"] is True


def test_dla_parser_flag_is_skipped_where_tensorrt_lacks_it(model, tmp_path, monkeypatch):
    trt = install(monkeypatch, num_dla=2, adjust_for_dla=False)  # TensorRT 10.3 (JetPack 6)
    man = build(model, tmp_path / "m.engine", "1x3x32x48", dla_core=0)
    assert not trt.built["parser_flags"] and man["build"]["dla_parser_adjust"] is False
    gpu = build(model, tmp_path / "g.engine", DYNAMIC)
    assert gpu["build"]["dla_parser_adjust"] is None and gpu["profile"]["max"] == [1, 3, 64, 64]


@pytest.mark.parametrize("version, precision, weak, flags", [
    ("10.3.0", "fp16", True, ["FP16"]), ("10.3.0", "int8", True, ["INT8", "FP16"]),
    ("11.4.1", "fp16", False, None)])
def test_dla_on_tensorrt_10_builds_weakly_typed_with_precision_flags(model, tmp_path, monkeypatch, version,
                                                                       precision, weak, flags):
    """DLA takes FP16/INT8 from the builder's flags on TensorRT 10 (strongly typed networks for DLA
    are new in 11.4.1): a strongly typed 10.x build could leave every layer on the GPU through the
    fallback. A GPU build stays strongly typed on every version."""
    trt = install(monkeypatch, num_dla=2, version=version)
    monkeypatch.setattr(tb, "onnx_precision", lambda path: precision)
    man = build(model, tmp_path / "m.engine", "1x3x32x48", dla_core=0)
    assert man["build"]["strongly_typed"] is (not weak) and man["build"]["precision_flags"] == flags
    assert trt.built["network_flags"] == (0 if weak else 1 << trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert all(trt.built["flags"].get(f) for f in flags or [])
    assert not any(trt.built["flags"].get(f) for f in ("FP16", "INT8")) or weak
    trt = install(monkeypatch, num_dla=2, version=version)
    gpu = build(model, tmp_path / "g.engine", "1x3x32x48")
    assert gpu["build"]["strongly_typed"] is True and trt.built["network_flags"] == 2
    assert not trt.built["flags"].get("FP16") and not trt.built["flags"].get("INT8")


def test_an_unreadable_timing_cache_starts_a_new_one(model, tmp_path, monkeypatch, caplog):
    trt = install(monkeypatch, unreadable_timing_cache=True)
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"written by another TensorRT")
    build(model, tmp_path / "m.engine", "1x3x32x48", timing_cache=cache)
    assert trt.built["timing_caches"] == [True]            # the fresh cache, set once
    assert "does not match this GPU/TensorRT; starting a new one" in caplog.text
    assert cache.read_bytes() == b"timing"                # and saved over the unreadable one


def test_engine_cache_and_cli_apply_the_same_dla_rule(model, tmp_path, capsys):
    orin = ec.BuildEnv("Orin", "8.7", "10.3.0.30")
    calls = []

    def fake_build(onnx_path, path, profile, **opts):
        calls.append(profile)
        raise BackendError("stop here")

    with pytest.raises(BackendError, match="stop here"):
        ec.ensure_engine(model, dla_core=0, env=orin, build_fn=fake_build, stride=16)
    assert calls[0].static and calls[0].opt == (1, 3, 736, 1280)
    with pytest.raises(InputError, match="fixed shapes only"):
        ec.ensure_engine(model, shapes=DYNAMIC, dla_core=0, env=orin, build_fn=fake_build, stride=16)
    from edge_deblur.cli import main

    assert main(["build", str(model), "--dla", "0", "--shapes", DYNAMIC, "--stride", "16"]) == 2
    err = capsys.readouterr().err
    assert "fixed shapes only" in err and "--shapes 1x3x32x48" in err


# -- TF32, profile results ---------------------------------------------------------------------


def test_tf32_is_turned_off_and_recorded(model, tmp_path, monkeypatch):
    trt = install(monkeypatch)
    man = build(model, tmp_path / "m.engine", DYNAMIC)
    assert trt.built["flags"]["TF32"] is False and man["build"]["tf32"] is False
    assert tb.read_manifest(tmp_path / "m.engine")["build"]["tf32"] is False
    older = types.SimpleNamespace(BuilderFlag=types.SimpleNamespace())
    assert tb.disable_tf32(object(), older) is None  # no such flag: nothing to record


def test_rejected_optimization_profile_is_a_model_error(model, tmp_path, monkeypatch):
    install(monkeypatch, profile_index=-1)
    with pytest.raises(ModelError) as e:
        build(model, tmp_path / "m.engine", DYNAMIC)
    assert "rejected the optimization profile" in str(e.value) and "--shapes" in str(e.value)
    assert not (tmp_path / "m.engine").exists()


def test_set_shape_runtime_error_names_the_input(model, tmp_path, monkeypatch):
    install(monkeypatch, reject_set_shape="state_in")
    with pytest.raises(ModelError) as e:
        build(model, tmp_path / "m.engine", DYNAMIC)
    msg = str(e.value)
    assert "input 'state_in'" in msg and "API Usage Error" in msg and "fix --shapes" in msg
