"""Packaging hook (metadata lives in pyproject.toml): the wheel ships the model artifacts of
``export/`` inside the package as ``edge_deblur/_bundled/``, where the runtime looks for its
default model when it is not run from a checkout. Engines (GPU-specific) and hidden/temporary
files are left out."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SKIP_SUFFIXES = {".engine", ".plan", ".tmp", ".pyc"}


class build_py_with_models(build_py):
    def run(self):
        super().run()
        src = HERE / "export"
        if getattr(self, "editable_mode", False) or not src.is_dir():
            return  # editable installs read export/ of the checkout directly
        dst = Path(self.build_lib) / "edge_deblur" / "_bundled"
        for f in sorted(src.rglob("*")):
            rel = f.relative_to(src)
            if f.is_file() and f.suffix.lower() not in SKIP_SUFFIXES and not any(p.startswith(".") for p in rel.parts):
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dst / rel)


setup(cmdclass={"build_py": build_py_with_models})
