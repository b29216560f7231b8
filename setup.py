"""Packaging hook (metadata lives in pyproject.toml): the wheel ships the model artifacts of
``export/`` inside the package as ``edge_deblur/_bundled/``, where the runtime looks for its
default model when it is not run from a checkout. Engines (GPU-specific) and hidden/temporary
files are left out.

It also ships the runtime profiles and validation suites (``configs/runtime/*.yaml``,
``configs/val/*.yaml``) as ``edge_deblur/_configs/runtime`` and ``edge_deblur/_configs/val``,
where ``edge_deblur.config.shipped`` finds them when not run from a checkout (``--profile
orin_nano``, ``--suite multi_camera`` from any directory). The checkout's ``configs/`` stays the
source of truth; editable installs read it directly."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SKIP_SUFFIXES = {".engine", ".plan", ".tmp", ".pyc"}


CONFIG_KINDS = ("runtime", "val")  # configs/<kind>/*.yaml -> edge_deblur/_configs/<kind>/ (see edge_deblur.config.shipped)


class build_py_with_models(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable installs read export/ and configs/ of the checkout directly
        self.copy_models()
        self.copy_configs()

    def copy_models(self):
        src = HERE / "export"
        if not src.is_dir():
            return
        dst = Path(self.build_lib) / "edge_deblur" / "_bundled"
        for f in sorted(src.rglob("*")):
            rel = f.relative_to(src)
            if f.is_file() and f.suffix.lower() not in SKIP_SUFFIXES and not any(p.startswith(".") for p in rel.parts):
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dst / rel)

    def copy_configs(self):
        for kind in CONFIG_KINDS:
            src = HERE / "configs" / kind
            files = sorted(f for f in src.glob("*.yaml") if f.is_file() and not f.name.startswith(".")) \
                if src.is_dir() else []
            if not files:
                raise RuntimeError(f"{src} holds no *.yaml: the wheel would ship without its "
                                   f"{'runtime profiles' if kind == 'runtime' else 'validation suites'}; "
                                   "build from a full checkout (or an sdist made by MANIFEST.in)")
            dst = Path(self.build_lib) / "edge_deblur" / "_configs" / kind
            if dst.is_dir():
                shutil.rmtree(dst)  # a stale build/ must not keep a profile removed from configs/
            dst.mkdir(parents=True)
            for f in files:
                shutil.copy2(f, dst / f.name)


setup(cmdclass={"build_py": build_py_with_models})
