"""Runtime profiles (configs/runtime) and validation suites (configs/val) are found from the
package, not the current directory: from any folder in a checkout (editable install), and from
the copy setup.py puts inside a built wheel (edge_deblur/_configs/)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_deblur.config import shipped
from edge_deblur.config.runtime import RUNTIME_DIR, available_profiles, load_runtime_profile
from edge_deblur.config.validation import find_suite, load_suite
from edge_deblur.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_profiles_and_suites_load_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                       # no configs/ here
    assert RUNTIME_DIR == REPO / "configs" / "runtime"  # the checkout is the source of truth
    assert "orin_nano" in available_profiles()
    p = load_runtime_profile("orin_nano")
    assert p.name == "orin_nano" and p.backend == "tensorrt" and p.jetson.module == "orin-nano"
    assert load_runtime_profile("orin_nano.yaml").name == "orin_nano"

    assert Path(find_suite("multi_camera")) == REPO / "configs" / "val" / "multi_camera.yaml"
    assert Path(find_suite("multi_camera.yaml")) == REPO / "configs" / "val" / "multi_camera.yaml"
    sets = load_suite("multi_camera")
    assert [(s.name, s.kind) for s in sets] == [("reds_test_001", "real"), ("gopro", "real"),
                                                ("synthetic_centroid_1280x720", "synthetic")]
    # the folders a suite names are used as written (relative: from the current directory)
    assert sets[1].path == "../shared/data/pairs/GoPro_1280x720"

    # a file in the current directory still wins over a shipped name, and a path is a path
    (tmp_path / "mine.yaml").write_text("data:\n  val_sets: [{name: a, path: somewhere}]\n")
    assert [s.name for s in load_suite("mine.yaml")] == ["a"]


def test_unknown_names_say_where_they_looked_and_what_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"validation suite 'multi_camra' not found: neither a file \(from "
                                          r".*\) nor a shipped suite .*multi_camra\.yaml.*one of: multi_camera"):
        load_suite("multi_camra")
    with pytest.raises(ConfigError, match=r"unknown runtime profile 'orin_nan' \(did you mean 'orin_nano'\?\); "
                                          r"profiles live in .*configs.runtime"):
        load_runtime_profile("orin_nan")


def test_no_checkout_means_the_package_copy(tmp_path, monkeypatch):
    """Installed from a wheel: no pyproject.toml beside the package, so edge_deblur/_configs/."""
    pkg = tmp_path / "site-packages" / "edge_deblur"
    (pkg / "_configs" / "val").mkdir(parents=True)
    monkeypatch.setattr(shipped, "_PKG", pkg)
    assert shipped.checkout_root() is None
    assert shipped.config_dir("runtime") == pkg / "_configs" / "runtime"
    assert shipped.config_dir("val") == pkg / "_configs" / "val"
    with pytest.raises(ValueError, match="unknown config kind 'train'"):
        shipped.config_dir("train")


_LOAD_SCRIPT = textwrap.dedent("""
    import json
    import edge_deblur
    from edge_deblur.config.runtime import RUNTIME_DIR, available_profiles, load_runtime_profile
    from edge_deblur.config.validation import find_suite, load_suite
    p = load_runtime_profile("orin_nano")
    print(json.dumps({"pkg": edge_deblur.__file__, "runtime_dir": str(RUNTIME_DIR), "profiles": available_profiles(),
                      "profile": [p.name, p.precision], "suite": find_suite("multi_camera"),
                      "sets": [s.name for s in load_suite("multi_camera")]}))
""")


def test_built_package_carries_profiles_and_suites(tmp_path):
    """setup.py's build_py (what a wheel is made from) copies configs/runtime and configs/val into
    edge_deblur/_configs/, and the built package loads them with no checkout around it."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for kind in ("runtime", "val"):
        shutil.copytree(REPO / "configs" / kind, src / "configs" / kind)
    shutil.copytree(REPO / "edge_deblur", src / "edge_deblur", ignore=shutil.ignore_patterns("__pycache__", "_configs",
                                                                                            "_bundled"))
    lib = tmp_path / "lib"
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)], cwd=src,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    shipped_files = sorted(p.relative_to(lib / "edge_deblur" / "_configs").as_posix()
                           for p in (lib / "edge_deblur" / "_configs").rglob("*.yaml"))
    expected = sorted(f"{k}/{p.name}" for k in ("runtime", "val") for p in (REPO / "configs" / k).glob("*.yaml"))
    assert shipped_files == expected

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(lib))
    r = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT], cwd=elsewhere, capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["pkg"].startswith(str(lib))                       # the built copy, not the checkout
    assert got["runtime_dir"] == str(lib / "edge_deblur" / "_configs" / "runtime")
    assert "orin_nano" in got["profiles"] and got["profile"] == ["orin_nano", "fp16"]
    assert got["suite"] == str(lib / "edge_deblur" / "_configs" / "val" / "multi_camera.yaml")
    assert got["sets"] == ["reds_test_001", "gopro", "synthetic_centroid_1280x720"]
