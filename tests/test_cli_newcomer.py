"""What a new user hits first (issue 15): `info` on every artifact kind and on unreadable files,
`--json` output that parses, a suggestion for a misspelt command or option, quiet native
libraries by default (`-v` shows them), frame counts with one meaning each, the real reason an
output folder is unusable, `verify` on several models, the default output folders ignored by git,
and the README's first-command check reading its figure from the README."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_deblur.cli import main

from video_helpers import make_video

REPO = Path(__file__).resolve().parents[1]


def cli(*args, timeout=120):
    """Run the CLI in a subprocess, as a user does."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    for k in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", "edge_deblur", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("torch")
    from runtime_helpers import exported

    return exported(tmp_path_factory)


# ---- 1, 5: info on each artifact kind; parameter counts say which form they count -------------
def test_info_onnx_in_a_subprocess(tiny):
    r = cli("info", "-m", tiny["onnx"])
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "precision: fp32" in r.stdout and "deployed" in r.stdout and "GMACs at 1280x720" in r.stdout
    assert "checksum matches" in r.stdout


def test_info_json_for_every_kind(tiny, tmp_path, capsys):
    import onnx

    def info(target, *extra):
        assert main(["info", "-m", str(target), "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    o = info(tiny["onnx"])
    graph = onnx.load(str(tiny["onnx"]))
    assert o["kind"] == "onnx" and o["params_deployed"] == sum(int(np.prod(i.dims)) for i in graph.graph.initializer)
    assert o["stride"] == 4 and o["gmacs_1280x720"] > 0 and o["inputs"][0]["name"] == "input"
    assert info(tiny["fp16"])["precision"] == "fp16"

    c = info(tiny["ckpt"], "--size", "64x48")
    # RepConv training branches: more parameters as trained than deployed, and the deployed
    # count of the checkpoint is what its ONNX export holds
    assert c["kind"] == "checkpoint" and c["params_as_trained"] > c["params_deployed"] == o["params_deployed"]
    assert abs(c["gmacs_1280x720"] - o["gmacs_1280x720"]) < 1e-3 and c["gmacs_64x48"] > 0

    f = info(tiny["dir"])
    assert f["kind"] == "folder" and set(f["files"]) >= {"model.onnx", "model.fp16.onnx"}
    assert info(tiny["dir"] / "manifest.json")["kind"] == "folder"

    # a file changed after export: refused alone, flagged (not fatal) in its folder
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(tiny["dir"], folder)
    with open(folder / "model.fp16.onnx", "ab") as fh:
        fh.write(b"\0")
    assert main(["info", "-m", str(folder / "model.fp16.onnx")]) == 2
    assert "changed, truncated or replaced" in capsys.readouterr().err
    f = info(folder)
    assert "changed, truncated or replaced" in f["files"]["model.fp16.onnx"]["error"]
    assert f["files"]["model.onnx"]["manifest"] == "listed, checksum matches"

    s = info("{type: edgenet, widths: [8, 16], enc_blocks: [1], dec_blocks: [1], mid_blocks: 1}")
    assert s["kind"] == "spec" and s["params_deployed"] == o["params_deployed"]

    main(["info", "-m", str(tiny["ckpt"])])
    text = capsys.readouterr().out
    assert "as trained" in text and "deployed" in text


def test_info_on_artifacts_needs_no_torch(tiny):
    code = ("import sys, json; sys.modules['torch'] = None\n"
            "from edge_deblur.cli import main\n"
            f"assert main(['info', '-m', {str(tiny['dir'])!r}, '--json']) == 0\n"
            f"assert main(['info', '-m', {str(tiny['ckpt'])!r}]) == 0\n")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "as trained" in r.stdout and "install torch" in r.stdout  # header count; deployed needs torch


def _fake_engine(folder: Path, data: bytes) -> Path:
    import hashlib

    from edge_deblur.export import trt_build as tb

    engine = folder / "model.h100-sm90.trt10.8.0.engine"
    engine.write_bytes(data)
    profile = tb.ShapeProfile.from_dict({"min": [1, 3, 16, 16], "opt": [1, 3, 720, 1280], "max": [1, 3, 1088, 1920]})
    man = tb.make_manifest(engine_path=engine, engine_sha256=hashlib.sha256(data).hexdigest(), onnx_path="model.onnx",
                           onnx_sha256="0" * 64, precision="fp16", trt_version="10.8.0", gpu_name="NVIDIA H100",
                           compute_capability="9.0", profile=profile, stride=16, build={"strongly_typed": True})
    tb.write_manifest(engine, man)
    return engine


def test_info_engine_from_its_manifest_and_a_truncated_one(tmp_path, capsys):
    engine = _fake_engine(tmp_path, b"\x01" * 4096)
    assert main(["info", "-m", str(engine), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["kind"] == "engine" and e["gpu"] == "NVIDIA H100" and e["tensorrt"] == "10.8.0" and e["precision"] == "fp16"
    engine.write_bytes(b"\x01" * 1000)  # truncated after the build
    assert main(["info", "-m", str(engine)]) == 2
    err = capsys.readouterr().err
    assert "truncated or replaced" in err and "rebuild" in err


@pytest.mark.parametrize("name,size,words", [
    ("random.onnx", 3000, "truncated, damaged or not ONNX"),
    ("empty.onnx", 0, "no ONNX graph"),
    ("random.safetensors", 3000, "not a readable safetensors checkpoint"),
    ("random.bin", 3000, "not a model artifact"),
])
def test_info_on_unreadable_files_is_a_clear_error(tmp_path, name, size, words):
    p = tmp_path / name
    p.write_bytes(np.random.default_rng(0).bytes(size))
    r = cli("info", "-m", p)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert words in r.stderr and name in r.stderr


# ---- 2: --json means JSON only on stdout ----------------------------------------------------------
def test_deblur_json_stdout_parses(tmp_path):
    pytest.importorskip("onnx")
    model = _identity_onnx(tmp_path)
    video = make_video(tmp_path / "in.avi", n=4)
    r = cli("deblur", video, "-o", tmp_path / "out", "--model", model, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)  # the whole of stdout is one JSON object
    assert summary["videos"] == 1 and summary["frames"] == 4
    assert "in.avi" in r.stderr  # the per-video progress line went to stderr

    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((24, 32, 3), 40 * i, np.uint8))
    r = cli("deblur", folder, "-o", tmp_path / "out2", "--model", model, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["images"] == 3, r.stderr
    assert "3/3 files" in r.stderr  # not a terminal: plain progress lines on stderr


# ---- 8: did you mean ------------------------------------------------------------------------------
def test_misspelt_command_and_option_get_a_suggestion():
    r = cli("strem")
    assert r.returncode == 2 and "did you mean 'stream'?" in r.stderr
    r = cli("demo", "--frmes", "2")
    assert r.returncode == 2 and "did you mean '--frames'?" in r.stderr


# ---- 7: native library logs are quiet by default, -v shows them -----------------------------------
def test_native_logs_quiet_by_default_and_shown_with_v():
    import glob

    if not sys.platform.startswith("linux") or glob.glob("/dev/video9[0-9]"):
        pytest.skip("needs Linux without cameras 90-99")
    # opening a camera index that is not there makes OpenCV probe V4L2 and log about it
    quiet = cli("stream", "--camera", "97", "--max-frames", "1")
    loud = cli("-v", "stream", "--camera", "97", "--max-frames", "1")
    assert quiet.returncode != 0 and loud.returncode != 0
    assert "camera 97" in quiet.stderr  # our own error still says what went wrong
    native = ("[ WARN", "[ INFO", "[ERROR")
    assert not any(tag in quiet.stderr for tag in native), quiet.stderr
    assert any(tag in loud.stderr for tag in native), loud.stderr


def test_configure_native_logs_keeps_a_level_the_user_set(monkeypatch):
    import cv2

    from edge_deblur.io.native_logs import configure_native_logs

    monkeypatch.delenv("OPENCV_LOG_LEVEL", raising=False)
    monkeypatch.delenv("OPENCV_FFMPEG_LOGLEVEL", raising=False)
    before = cv2.utils.logging.getLogLevel()
    try:
        configure_native_logs(False)
        assert os.environ["OPENCV_FFMPEG_LOGLEVEL"] == "-8" and cv2.utils.logging.getLogLevel() == 2
        monkeypatch.setenv("OPENCV_FFMPEG_LOGLEVEL", "32")
        monkeypatch.setenv("OPENCV_LOG_LEVEL", "DEBUG")
        assert "ffmpeg" not in configure_native_logs(True) and os.environ["OPENCV_FFMPEG_LOGLEVEL"] == "32"
    finally:
        cv2.utils.logging.setLogLevel(before)


# ---- 9: frame counts a user can interpret -------------------------------------------------------
def test_max_frames_counts_read_processed_dropped_written(tmp_path, capsys):
    pytest.importorskip("onnx")
    video = make_video(tmp_path / "in.avi", n=12)
    model = _identity_onnx(tmp_path)
    assert main(["stream", "--source", str(video), "--max-frames", "3", "--model", str(model), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (s["frames_in"], s["frames_processed"], s["dropped"], s["frames_out"]) == (3, 3, 0, 3)
    assert main(["stream", "--source", str(video), "--max-frames", "3", "--model", str(model)]) == 0
    assert "frames read 3 processed 3 dropped 0 written 3" in capsys.readouterr().out


def _identity_onnx(folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((3, 3, 1, 1), np.float32)
    for c in range(3):
        w[c, c] = 1.0
    g = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["output"])], "id",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 3, "h", "w"])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b", 3, "h", "w"])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    p = folder / "id.onnx"
    onnx.save(m, str(p))
    return p


# ---- 10: the real reason an output folder is unusable -------------------------------------------
def test_unwritable_output_names_the_reason(tmp_path):
    from edge_deblur.errors import SourceError
    from edge_deblur.io.sinks import ensure_writable_dir

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SourceError, match="is a file, not a folder"):
        ensure_writable_dir(blocker / "sub" / "out", "video 'o.mp4'")
    if sys.platform.startswith("linux") and os.path.isdir("/proc/self"):
        with pytest.raises(SourceError, match="refuses new files") as e:
            ensure_writable_dir(Path("/proc"), "video 'out.mp4'")
        assert "No such file or directory" not in str(e.value).split("(")[0]


# ---- 6: verify several models in one run ---------------------------------------------------------
def test_verify_accepts_several_models(tiny, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["verify", str(tiny["onnx"]), str(tiny["fp16"]), "--checkpoint", str(tiny["ckpt"]),
               "--backends", "onnxruntime,torch", "--frames", "1", "--size", "32x24", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "2/2 models PASSED" in text, text
    reports = json.loads(out.read_text())
    assert [Path(r["model"]).name for r in reports] == ["model.onnx", "model.fp16.onnx"]
    rc = main(["verify", str(tiny["onnx"]), str(tiny["fp16"]), "--checkpoint", str(tiny["ckpt"]),
               "--backends", "onnxruntime,torch", "--frames", "1", "--size", "32x24", "--min-psnr", "fp16=500"])
    text = capsys.readouterr().out
    assert rc == 1 and "1/2 models PASSED; FAILED: " in text and "model.fp16.onnx" in text.splitlines()[-1]


# ---- 11: default output folders are ignored by git -------------------------------------------------
def test_default_output_folders_are_git_ignored():
    from edge_deblur.cli import build_parser
    from edge_deblur.config.schema import TrainConfig

    if subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=REPO, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    demo_out = build_parser().parse_args(["demo"]).out
    for folder in (demo_out, TrainConfig().out_dir):
        r = subprocess.run(["git", "check-ignore", "-q", f"{folder}/x.png"], cwd=REPO)
        assert r.returncode == 0, f"{folder}/ is written by default but not in .gitignore"


# ---- 3: the CI check reads the demo's figure and the first command from the README -------------------
def test_readme_first_command_check_reads_the_readme():
    spec = importlib.util.spec_from_file_location("readme_check", REPO / ".ci" / "readme_first_command.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = (REPO / "README.md").read_text()
    assert "edge-deblur demo" in mod.first_command(readme)
    fig = mod.demo_figure(readme)
    assert f"{fig:+.2f} dB" in readme
    fake = "```bash\npip install . && edge-deblur demo   # try it\n```\n| demo clip | -0.25 dB, 3 FPS | `edge-deblur demo` |\n"
    assert mod.first_command(fake) == "pip install . && edge-deblur demo" and mod.demo_figure(fake) == -0.25
    # one figure per file the runtime may pick (INT8 for the CPU with VNNI/AMX, else FP32)
    two = "| demo clip | +0.91 dB (`model.int8-cpu.onnx`, VNNI), +0.86 dB (`model.onnx`), 20 FPS | `edge-deblur demo` |\n"
    assert mod.demo_figure(two, file="model.onnx") == 0.86 and mod.demo_figure(two, file="model.int8-cpu.onnx") == 0.91
    assert mod.demo_figure(two) == 0.91
