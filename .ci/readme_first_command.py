#!/usr/bin/env python3
"""CI: the README's first command reproduces the figure the README attributes to it, on a fresh
install.

Copies the working tree (tracked and untracked-but-not-ignored files, as a fresh clone has them)
into a temporary folder, makes a clean virtual environment there (no system site-packages, so
nothing the developer's machine has installed, such as matplotlib or torch, can leak in), runs
the README's first command exactly as written, and compares the PSNR gain the demo measured
(``demo_out/demo_stats.json``) with the demo's figure in the README's "Measured" table. Both are
read from the README at run time, so the check stays true when the model and the README change.
Speed figures are not compared: CI machines differ and tests never check wall-clock time.

Usage: python3 .ci/readme_first_command.py [--keep] [--tolerance 0.015]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def first_command(readme: str) -> str:
    """The first line of the README's first ```bash block, without its trailing comment."""
    m = re.search(r"```(?:bash|sh|console)\n(.*?)```", readme, re.S)
    if not m:
        raise SystemExit("README.md has no ```bash block")
    line = next(ln for ln in m.group(1).splitlines() if ln.strip())
    return re.sub(r"\s+#.*$", "", line).strip()


def demo_figure(readme: str, command: str = "edge-deblur demo", file: str | None = None) -> float:
    """The signed dB figure (e.g. +0.86) of the Measured table row whose command cell is the
    demo's command. The runtime picks the model folder's file by the CPU (INT8 for the CPU where it
    has VNNI/AMX, else FP32), so the row may give one figure per file: '+0.91 dB (`model.int8-cpu.onnx`
    ...), +0.86 dB (`model.onnx` ...)'; ``file`` (the demo's ``file`` stat) picks the one that ran."""
    for row in readme.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[-1].strip("`") == command:
            figs = re.findall(r"([+-]\d+(?:\.\d+)?)\s*dB(?:\s*\(`([^`]+)`)?", cells[1])
            if figs:
                for value, name in figs:
                    if file and name == file:
                        return float(value)
                return float(figs[0][0])
    raise SystemExit(f"README.md has no table row with a '+X.XX dB' figure and the command `{command}`")


def copy_tree(dst: Path):
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tolerance", type=float, default=0.015,
                    help="dB; the README rounds to 0.01 and ONNX Runtime's kernels differ slightly between CPUs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone and venv")
    args = ap.parse_args(argv)

    readme = (REPO / "README.md").read_text()
    cmd = first_command(readme)
    want = demo_figure(readme)
    if "edge-deblur demo" not in cmd:
        raise SystemExit(f"the README's first command {cmd!r} does not run the demo")
    tmp = Path(tempfile.mkdtemp(prefix="edge-deblur-fresh-"))
    try:
        clone = tmp / "edge-deblur"
        copy_tree(clone)
        env_dir = tmp / "venv"
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env.update(VIRTUAL_ENV=str(env_dir), PATH=f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}",
                   PIP_DISABLE_PIP_VERSION_CHECK="1")
        print(f"fresh venv {env_dir}; running the README's first command in {clone}:\n  {cmd}", flush=True)
        r = subprocess.run(["bash", "-ec", cmd], cwd=clone, env=env)
        if r.returncode != 0:
            print(f"FAILED: the README's first command exited with {r.returncode}", file=sys.stderr)
            return 1
        stats = json.loads((clone / "demo_out" / "demo_stats.json").read_text())
        want = demo_figure(readme, file=stats.get("file"))
        got = float(stats["psnr_gain"])
        ok = abs(got - want) <= args.tolerance
        print(f"demo gain on a fresh install: {got:+.3f} dB; README says {want:+.2f} dB "
              f"(tolerance {args.tolerance} dB; model {stats.get('model')}, {stats.get('file')}, {stats.get('backend')}): "
              + ("PASSED" if ok else "FAILED"))
        if not ok:
            print("update the README's demo row to what `edge-deblur demo` prints on a fresh install, or find what "
                  "made the fresh install differ", file=sys.stderr)
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
