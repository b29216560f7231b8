"""Engine cache on the CPU: keys and paths, build-once-then-reuse, and rebuild or refusal (with
the differing field named) for another ONNX, GPU or TensorRT. The build itself is injected: a
function that writes an engine file and the manifest the real builder would write."""
import functools
import os
import stat

import pytest

from edge_deblur.errors import BackendError
from edge_deblur.export import engine_cache as ec
from edge_deblur.export import trt_build as tb

H100 = ec.BuildEnv("NVIDIA H100 80GB HBM3", "9.0", "10.8.0.43")
# the files below are stand-ins, not ONNX graphs: give the stride instead of reading it
ensure = functools.partial(ec.ensure_engine, stride=16)
ORIN = ec.BuildEnv("Orin", "8.7", "10.3.0.30")
H100_TRT11 = ec.BuildEnv("NVIDIA H100 80GB HBM3", "9.0", "11.4.1.2")


class FakeBuilder:
    """Stands in for trt_build.build_engine: writes bytes + a manifest for ``env``."""

    def __init__(self, env):
        self.env = env
        self.calls = []

    def __call__(self, onnx, path, profile, **opts):
        self.calls.append((onnx, path, profile, opts))
        path.write_bytes(b"engine for " + onnx.read_bytes())
        man = tb.make_manifest(engine_path=path, engine_sha256="x", onnx_path=onnx, onnx_sha256=tb.sha256_file(onnx),
                               precision="fp16", trt_version=self.env.trt_version, gpu_name=self.env.gpu_name,
                               compute_capability=self.env.compute_capability, profile=profile, stride=16,
                               device=self.env.device,
                               build={"dla_core": opts.get("dla_core"), "workspace_mb": opts.get("workspace_mb"),
                                      "builder_optimization_level": opts.get("opt_level")})
        tb.write_manifest(path, man)
        return man


@pytest.fixture
def onnx_file(tmp_path):
    p = tmp_path / "model.fp16.onnx"
    p.write_bytes(b"fake onnx v1")
    return p


def test_engine_path_names_gpu_and_tensorrt(onnx_file):
    p = ec.engine_path_for(onnx_file, H100)
    assert p == onnx_file.parent / "model.fp16.h100-80gb-hbm3-sm90.trt10.8.0.43.engine"
    assert ec.engine_path_for(onnx_file, ORIN).name == "model.fp16.orin-sm87.trt10.3.0.30.engine"
    custom = ec.engine_path_for(onnx_file, H100, tb.parse_shapes("1x3x720x1280"))
    assert custom != p and custom.name.startswith("model.fp16.h100-80gb-hbm3-sm90.trt10.8.0.43.")
    assert custom == ec.engine_path_for(onnx_file, H100, tb.parse_shapes("1x3x720x1280"))  # stable key
    dla = ec.engine_path_for(onnx_file, ORIN, dla_core=0)
    assert ".dla0." in dla.name and dla != ec.engine_path_for(onnx_file, ORIN, dla_core=1)


def test_engine_goes_to_user_cache_when_onnx_folder_is_read_only(tmp_path, monkeypatch, onnx_file):
    monkeypatch.setenv("EDGE_DEBLUR_CACHE", str(tmp_path / "cache"))
    p = ec.engine_path_for(onnx_file, H100, cache_dir=None)
    assert p.parent == onnx_file.parent  # writable
    p2 = ec.engine_path_for(onnx_file, H100, cache_dir=tmp_path / "elsewhere")
    sha = tb.sha256_file(onnx_file)[:12]
    assert p2 == tmp_path / "elsewhere" / f"model.fp16-{sha}.h100-80gb-hbm3-sm90.trt10.8.0.43.engine"
    if os.geteuid() != 0:  # root ignores permissions
        mode = onnx_file.parent.stat().st_mode
        os.chmod(onnx_file.parent, stat.S_IRUSR | stat.S_IXUSR)
        try:
            p3 = ec.engine_path_for(onnx_file, H100)
        finally:
            os.chmod(onnx_file.parent, mode)
        assert p3.parent == tmp_path / "cache" / "engines" and sha in p3.name


def test_builds_once_then_reuses(onnx_file):
    build = FakeBuilder(H100)
    p1 = ensure(onnx_file, env=H100, build_fn=build)
    p2 = ensure(onnx_file, env=H100, build_fn=build)
    assert p1 == p2 and p1.is_file() and len(build.calls) == 1
    assert tb.read_manifest(p1)["onnx"]["sha256"] == tb.sha256_file(onnx_file)


def test_changed_onnx_is_rebuilt_or_refused(onnx_file):
    build = FakeBuilder(H100)
    path = ensure(onnx_file, env=H100, build_fn=build)
    onnx_file.write_bytes(b"fake onnx v2 (re-exported)")
    with pytest.raises(BackendError) as e:
        ensure(onnx_file, env=H100, build_fn=build, rebuild=False)
    msg = str(e.value)
    assert "ONNX checksum" in msg and "edge-deblur build" in msg and "--backend onnxruntime" in msg
    assert len(build.calls) == 1
    assert ensure(onnx_file, env=H100, build_fn=build) == path
    assert len(build.calls) == 2 and path.read_bytes().endswith(b"v2 (re-exported)")


def test_other_gpu_or_tensorrt_gets_its_own_engine(onnx_file):
    b1, b2, b3 = FakeBuilder(H100), FakeBuilder(ORIN), FakeBuilder(H100_TRT11)
    paths = {ensure(onnx_file, env=b.env, build_fn=b) for b in (b1, b2, b3)}
    assert len(paths) == 3 and all(len(b.calls) == 1 for b in (b1, b2, b3))


def test_engine_with_foreign_manifest_at_the_cache_path_is_refused(onnx_file):
    """An engine copied from another machine under this machine's name: the manifest tells."""
    path = ec.engine_path_for(onnx_file, H100)
    FakeBuilder(ORIN)(onnx_file, path, tb.parse_shapes(None))  # built on an Orin, named for the H100
    with pytest.raises(BackendError) as e:
        ensure(onnx_file, env=H100, build_fn=FakeBuilder(H100), rebuild=False)
    msg = str(e.value)
    assert "GPU: engine has 'Orin', wanted 'NVIDIA H100 80GB HBM3'" in msg
    assert "compute capability" in msg and "TensorRT version: engine has 10.3.0.30, wanted 10.8.0.43" in msg


def test_missing_manifest_means_rebuild(onnx_file):
    build = FakeBuilder(H100)
    path = ensure(onnx_file, env=H100, build_fn=build)
    tb.manifest_path(path).unlink()
    with pytest.raises(BackendError, match="manifest"):
        ensure(onnx_file, env=H100, build_fn=build, rebuild=False)
    ensure(onnx_file, env=H100, build_fn=build)
    assert len(build.calls) == 2


def test_options_reach_the_builder(onnx_file, tmp_path):
    build = FakeBuilder(ORIN)
    ensure(onnx_file, env=ORIN, build_fn=build, shapes="1x3x720x1280",  # DLA: one fixed shape
                     workspace_mb=1024, dla_core=0, timing_cache=tmp_path / "t.cache")
    _, path, profile, opts = build.calls[0]
    assert profile == tb.parse_shapes("1x3x720x1280")
    assert opts["workspace_mb"] == 1024 and opts["dla_core"] == 0 and opts["timing_cache"] == tmp_path / "t.cache"
    assert ".dla0." in path.name


def test_compare_manifest_fields():
    profile = tb.parse_shapes(None)
    m = tb.make_manifest(engine_path="e.engine", engine_sha256="x", onnx_path="m.onnx", onnx_sha256="a" * 64,
                         precision="fp32", trt_version=H100.trt_version, gpu_name=H100.gpu_name,
                         compute_capability="9.0", profile=profile, stride=16, build={"dla_core": None})
    assert ec.compare_manifest(m, env=H100, onnx_sha256="a" * 64, profile=profile, dla_core=None) == []
    narrow = tb.parse_shapes("1x3x512x512:1x3x720x1280:1x3x720x1280")
    assert ec.compare_manifest(m, profile=narrow) == []  # a wider engine serves a narrower request
    wider = tb.parse_shapes("1x3x256x256:1x3x720x1280:1x3x2160x3840")
    assert [x.field for x in ec.compare_manifest(m, profile=wider)] == ["profile"]
    assert [x.field for x in ec.compare_manifest(m, env=H100_TRT11)] == ["TensorRT version"]
    assert [x.field for x in ec.compare_manifest(m, dla_core=0)] == ["DLA core"]


def test_check_engine_for_an_explicit_engine_file(onnx_file, caplog):
    path = onnx_file.with_suffix(".engine")
    FakeBuilder(ORIN)(onnx_file, path, tb.parse_shapes(None))
    assert ec.check_engine(path, ORIN)["gpu"]["name"] == "Orin"
    with pytest.raises(BackendError, match="GPU.*rebuild it with: edge-deblur build"):
        ec.check_engine(path, H100)
    tb.manifest_path(path).unlink()
    assert ec.check_engine(path, H100) is None  # no manifest: warn, let TensorRT decide
    assert "no manifest" in caplog.text


def test_ensure_engine_needs_the_onnx(tmp_path):
    from edge_deblur.errors import ModelError

    with pytest.raises(ModelError, match="edge-deblur export"):
        ensure(tmp_path / "nope.onnx", env=H100, build_fn=FakeBuilder(H100))


# every Jetson Orin module reports the GPU name 'Orin' and sm 8.7
NANO = ec.BuildEnv("Orin", "8.7", "10.3.0.30", multiprocessors=8, memory_gib=7,
                   board="NVIDIA Jetson Orin Nano Developer Kit")
NX8 = ec.BuildEnv("Orin", "8.7", "10.3.0.30", multiprocessors=8, memory_gib=7,
                  board="NVIDIA Jetson Orin NX Engineering Reference Developer Kit")
AGX = ec.BuildEnv("Orin", "8.7", "10.3.0.30", multiprocessors=16, memory_gib=61,
                  board="NVIDIA Jetson AGX Orin Developer Kit")


def test_orin_modules_get_their_own_engines(onnx_file):
    paths = {ec.engine_path_for(onnx_file, env) for env in (NANO, NX8, AGX)}
    assert len(paths) == 3 and ".orin-sm87-16sm-61gb-" in ec.engine_path_for(onnx_file, AGX).name
    builds = [FakeBuilder(env) for env in (NANO, NX8, AGX)]
    assert len({ensure(onnx_file, env=b.env, build_fn=b) for b in builds}) == 3
    assert all(len(b.calls) == 1 for b in builds)
    assert tb.read_manifest(ec.engine_path_for(onnx_file, AGX))["gpu"]["multiprocessors"] == 16


def test_engine_of_another_orin_module_is_refused(onnx_file):
    """An AGX Orin engine under the Orin Nano's name (a shared cache, a copied folder)."""
    path = ec.engine_path_for(onnx_file, NANO)
    FakeBuilder(AGX)(onnx_file, path, tb.parse_shapes(None))
    with pytest.raises(BackendError) as e:
        ensure(onnx_file, env=NANO, build_fn=FakeBuilder(NANO), rebuild=False)
    msg = str(e.value)
    assert "SM count: engine has 16, wanted 8" in msg and "GPU memory (GiB): engine has 61, wanted 7" in msg
    with pytest.raises(BackendError, match="SM count"):
        ec.check_engine(path, NANO)  # given directly: refused as well
    old = ec.engine_path_for(onnx_file, NANO)  # an engine from before device properties were recorded
    FakeBuilder(ORIN)(onnx_file, old, tb.parse_shapes(None))
    assert ec.check_engine(old, NANO)["gpu"]["name"] == "Orin"  # given directly: TensorRT decides
    with pytest.raises(BackendError, match="SM count: engine has not recorded"):
        ensure(onnx_file, env=NANO, build_fn=FakeBuilder(NANO), rebuild=False)  # the cache rebuilds it


def test_build_options_are_part_of_the_key(onnx_file):
    build = FakeBuilder(H100)
    default = ensure(onnx_file, env=H100, build_fn=build)
    small = ensure(onnx_file, env=H100, build_fn=build, workspace_mb=256)
    large = ensure(onnx_file, env=H100, build_fn=build, workspace_mb=4096)
    fast = ensure(onnx_file, env=H100, build_fn=build, opt_level=0)
    assert len({default, small, large, fast}) == 4 and len(build.calls) == 4
    assert build.calls[3][3]["opt_level"] == 0
    assert ensure(onnx_file, env=H100, build_fn=build, workspace_mb=256) == small and len(build.calls) == 4
    assert default.name == "model.fp16.h100-80gb-hbm3-sm90.trt10.8.0.43.engine"  # defaults: the plain name


def test_engine_built_with_other_options_is_refused(onnx_file):
    path = ec.engine_path_for(onnx_file, H100)
    FakeBuilder(H100)(onnx_file, path, tb.parse_shapes(None), workspace_mb=4096, opt_level=5)
    with pytest.raises(BackendError) as e:
        ensure(onnx_file, env=H100, build_fn=FakeBuilder(H100), rebuild=False)
    msg = str(e.value)
    assert "workspace (MiB): engine has 4096, wanted None" in msg and "builder optimization level" in msg
    m = tb.read_manifest(path)
    assert ec.compare_manifest(m, options=ec.BuildOptions.make(4096, 5), stride=16) == []
    assert [x.field for x in ec.compare_manifest(m, stride=8, options=ec.BuildOptions.make(4096, 5))] == ["stride"]
    assert ec.BuildOptions.make(dla_core=0, gpu_fallback=False).key() == {"gpu_fallback": False}
    assert ec.BuildOptions.make(gpu_fallback=False).gpu_fallback is None  # only a DLA build falls back


def test_device_properties_come_from_the_gpu(tmp_path):
    from edge_deblur.runtime import cudart

    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\0")
    assert cudart.jetson_board(str(model)) == "NVIDIA Jetson Orin Nano Developer Kit"
    assert cudart.jetson_board(str(tmp_path / "none")) == ""
    gpu = cudart.GpuInfo("Orin", 8, 7, total_memory=int(7.4 * 2**30), multiprocessors=8,
                         board="NVIDIA Jetson Orin Nano Developer Kit")
    assert ec.BuildEnv.from_gpu(gpu, "10.3.0.30") == NANO
    assert tb.device_properties(cudart.GpuInfo("X", 9, 0)) == {}  # unknown: not part of the key
