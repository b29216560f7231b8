"""Training with batches made on the device (data.synth: torch) and the one-call GPU session
(edge-deblur gpu), run here on the CPU: the time budget, resume, bad input, and a dry run of the
exact command with the repo's own configs."""
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edge_deblur.cli import main
from edge_deblur.config import load_train_config
from edge_deblur.data.pack import build_pack
from edge_deblur.errors import BackendError, ConfigError, ModelError
from edge_deblur.models import build_model
from edge_deblur.models.checkpoint import read_checkpoint, save_checkpoint
from edge_deblur.train import train
from edge_deblur.train.device_data import DeviceBatches
from edge_deblur.train.session import check_init, parse_job, run_session

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpu_data")
    rng = np.random.default_rng(0)
    sharp = d / "sharp"
    sharp.mkdir()
    for i in range(3):
        img = np.full((72 + 8 * i, 96, 3), 40, np.uint8)
        for _ in range(10):
            x, y = rng.integers(0, 80, 2)
            w, h = rng.integers(6, 30, 2)
            cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
        cv2.imwrite(str(sharp / f"{i}.png"), img)
    pairs = d / "pairs"
    for scene in ("s0", "s1"):
        for f in range(3):
            s = cv2.GaussianBlur(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8), (0, 0), 1.0)
            for sub, img in (("sharp", s), ("blur", cv2.blur(s, (5, 1)))):
                (pairs / scene / sub).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(pairs / scene / sub / f"{f:08d}.png"), img)
    pack = d / "train.pack"
    build_pack(pack, [str(sharp)], [str(pairs)], ["s1"], quality=95)
    val = d / "val.pack"
    build_pack(val, val_pairs=[f"{pairs}@s1"])
    return {"sharp": str(sharp), "pairs": str(pairs), "pack": str(pack), "val": str(val)}


def _cfg(tmp_path, folders, extra=()):
    return load_train_config(ROOT / "configs/train/smoke.yaml", [
        f"out_dir={tmp_path / 'run'}", f"data.sharp_roots=[{folders['sharp']}]", f"data.pair_roots=[{folders['pairs']}]",
        "data.pair_exclude=[s1]", "data.pair_prob=0.25", "data.pair_stack=[1,3]", "data.synth=torch",
        f"data.pack={folders['pack']}", "data.blur.length=[2, 12]", "data.blur.layer_prob=0.5", *extra])


def test_device_batches_from_pack_and_folders(tmp_path, folders):
    cfg = _cfg(tmp_path, folders, ["data.downscale=[1, 1.5]"])
    db = DeviceBatches(cfg, "cpu", seed=3, batch_size=6)
    a = [db.next() for _ in range(3)]
    for b in a:
        assert b["blur"].shape == b["sharp"].shape == (6, 3, 32, 32)
        assert b["blur"].dtype == torch.float32 and 0 <= float(b["blur"].min()) and float(b["blur"].max()) <= 1
    again = DeviceBatches(cfg, "cpu", seed=3, batch_size=6)
    assert all(torch.equal(x["blur"], again.next()["blur"]) for x in a)  # determinism under a seed
    cfg2 = _cfg(tmp_path, folders, ["data.pack=null"])  # the same data straight from the folders
    assert DeviceBatches(cfg2, "cpu", batch_size=2).n_images == db.n_images == 3
    assert len(db.pairs) == 3  # scene s1 is held out
    # the prefetching thread gives the same batches in the same order
    it = iter(DeviceBatches(cfg, "cpu", seed=3, batch_size=6, prefetch=True))
    assert all(torch.equal(x["sharp"], next(it)["sharp"]) for x in a)
    it.close()


def test_torch_synth_config_errors(tmp_path, folders):
    with pytest.raises(ConfigError, match="synth"):
        _cfg(tmp_path, folders, ["data.synth=gpu"])
    with pytest.raises(ConfigError, match="data.pack is set"):
        _cfg(tmp_path, folders, ["data.synth=cpu"])


def test_time_budget_stops_and_writes_a_checkpoint_then_resume_counts_on(tmp_path, folders):
    cfg = _cfg(tmp_path, folders, ["train.iters=100000", "train.time_limit=3", "train.ckpt_every=100000",
                                   "train.val_every=100000", "train.log_every=1"])
    r = train(cfg, progress=False)
    assert 0 < r["iters"] < 100000
    last = tmp_path / "run" / "last.safetensors"
    assert last.is_file()
    meta = read_checkpoint(last)[3]
    assert meta["iters"] == r["iters"]
    # the next session starts from that checkpoint and the iteration count continues
    cfg2 = _cfg(tmp_path, folders, [f"out_dir={tmp_path / 'run2'}", f"train.init_from={last}", "train.iters=3",
                                    "train.val_every=3"])
    r2 = train(cfg2, progress=False)
    assert r2["total_iters"] == r["iters"] + 3
    assert read_checkpoint(tmp_path / "run2" / "last.safetensors")[3]["total_iters"] == r["iters"] + 3


def test_growth_adds_blocks_per_level_as_identities():
    from edge_deblur.models.grow import grow_to

    small = build_model({"type": "edgenet", "widths": [8, 16], "enc_blocks": [1], "mid_blocks": 1, "dec_blocks": [1]})
    with torch.no_grad():
        for p in small.parameters():
            p.add_(0.05 * torch.randn_like(p))
    big = grow_to(small, {"type": "edgenet", "widths": [8, 16, 32], "enc_blocks": [3, 1], "mid_blocks": 2,
                          "dec_blocks": [2, 0]})
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(small.eval()(x), big.eval()(x), atol=1e-5)
    assert [len(e) for e in big.enc] == [3, 1]


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    other = build_model({"type": "edgenet", "widths": [8, 16, 32], "enc_blocks": [1, 1], "mid_blocks": 1,
                         "dec_blocks": [1, 1]})
    p = tmp_path / "other.safetensors"
    save_checkpoint(p, {k: v.contiguous() for k, v in other.state_dict().items()}, other.spec, {}, {"iters": 5})
    with pytest.raises(ModelError, match="does not fit the job's model.*move it aside"):
        check_init({"type": "edgenet", "widths": [12, 24], "enc_blocks": [1], "mid_blocks": 1, "dec_blocks": [1]}, str(p))


def test_a_committed_checkpoint_of_another_architecture_stops_the_session_before_training(tmp_path, folders):
    """The session resumes each job from checkpoints/gpu/<name>.safetensors: one of another
    architecture is refused before any training (and nothing lands in $OUT), not after minutes."""
    ck = tmp_path / "committed"
    ck.mkdir()
    other = build_model({"type": "edgenet", "widths": [8, 16, 32], "enc_blocks": [1, 1], "mid_blocks": 1,
                         "dec_blocks": [1, 1]})
    save_checkpoint(ck / "smoke.safetensors", {k: v.contiguous() for k, v in other.state_dict().items()},
                    other.spec, {}, {"iters": 5})
    roots = [f"data.sharp_roots=[{folders['sharp']}]", f"data.pair_roots=[{folders['pairs']}]", "data.pair_exclude=[s1]"]
    out = tmp_path / "OUT"
    with pytest.raises(ModelError, match="does not fit the job's model.*move it aside"):
        run_session([parse_job(" ".join(["configs/train/smoke.yaml", *roots]))], out, folders["pack"],
                    budget_s=500, train_s=4, dry_run=True, ckpt_dir=ck, work_dir=tmp_path / "work", tests=False)
    assert not list(out.glob("*.safetensors")) and not list((tmp_path / "work").rglob("*.safetensors"))


def test_a_pack_of_other_data_is_refused_by_the_training_data(tmp_path, folders):
    """DeviceBatches (what training reads on the GPU) refuses a pack made from other folders than
    the recipe names, saying how to rebuild it."""
    from edge_deblur.errors import DatasetError

    elsewhere = tmp_path / "other_photos"
    elsewhere.mkdir()
    cv2.imwrite(str(elsewhere / "a.png"), np.full((64, 64, 3), 90, np.uint8))
    cfg = _cfg(tmp_path, folders, [f"data.sharp_roots=[{elsewhere}]"])
    with pytest.raises(DatasetError, match="other data than the config names.*edge-deblur pack"):
        DeviceBatches(cfg, "cpu", seed=0, batch_size=2)


def test_no_gpu_is_a_clear_error(tmp_path, folders, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendError, match="no CUDA device.*--dry-run"):
        run_session([parse_job("configs/train/smoke.yaml")], tmp_path / "out", folders["pack"])
    assert main(["gpu", "--job", "configs/train/smoke.yaml", "--pack", folders["pack"], "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(ConfigError, match="key=value"):
        parse_job("configs/train/smoke.yaml train.iters")


def test_jobs_that_would_collide_or_overflow_out_are_refused_before_training(tmp_path, folders):
    from edge_deblur.errors import InputError

    smoke = "configs/train/smoke.yaml"
    with pytest.raises(InputError, match="two jobs are named 'smoke'"):
        run_session([parse_job(smoke), parse_job(smoke)], tmp_path / "o1", folders["pack"], dry_run=True,
                    work_dir=tmp_path / "w", tests=False)
    three = [parse_job(f"{smoke} name=j{i}") for i in range(3)]
    with pytest.raises(InputError, match="3 jobs would leave 9 files in \\$OUT.*at most 2 jobs"):
        run_session(three, tmp_path / "o2", folders["pack"], dry_run=True, work_dir=tmp_path / "w", tests=False)


def test_dry_run_of_the_session_command(tmp_path, folders, monkeypatch):
    """The session command as a lent GPU would run it (two jobs side by side, the repo's own GPU
    config among them), on the CPU with a tiny budget: training, checkpoints, evaluation on the
    validation pack, the files for $OUT, and resuming from a committed checkpoint next time."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "OUT"
    roots = [f"data.sharp_roots=[{folders['sharp']}]", f"data.pair_roots=[{folders['pairs']}]", "data.pair_exclude=[s1]"]
    small = ("model.widths=[8,16,32]", "model.enc_blocks=[1,1]", "model.dec_blocks=[1,1]", "model.mid_blocks=1")
    jobs = [parse_job(" ".join(["configs/train/edgenet_gpu.yaml", *roots, *small, "data.crop=32", "train.batch_size=2",
                                "train.log_every=1", "train.ckpt_every=2"])),
            parse_job(" ".join(["configs/train/smoke.yaml", *roots, "data.pair_prob=0.3", "train.log_every=1"]))]
    ck = tmp_path / "committed"
    rep = run_session(jobs, out, folders["pack"], folders["val"], budget_s=500, train_s=4, dry_run=True,
                      ckpt_dir=ck, work_dir=tmp_path / "work", tests=False)
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8
    assert {"edgenet_gpu.safetensors", "smoke.safetensors", "edgenet_gpu.log.csv", "session.json",
            "session.log"} <= set(files)
    assert all((out / f).stat().st_size < 16 * 2**20 for f in files)
    for name in ("edgenet_gpu", "smoke"):
        job = rep["jobs"][name]
        assert job["exit_code"] == 0 and job["iters"] > 0 and job["samples_per_s"] > 0
        (m,) = job["metrics"]["sets"].values()  # the validation pack's one set
        assert m["pairs"] == 3 and np.isfinite(m["psnr"]) and np.isfinite(job["metrics"]["mean_gain"])
    assert json.loads((out / "session.json").read_text())["dry_run"] is True
    state, _, _, meta = read_checkpoint(out / "smoke.safetensors")
    assert meta["stored"] == "float16" and all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    # bring back: commit the checkpoint; the next session resumes from it and counts on
    ck.mkdir()
    os.replace(out / "smoke.safetensors", ck / "smoke.safetensors")
    first = rep["jobs"]["smoke"]["total_iters"]
    rep2 = run_session(jobs[1:], tmp_path / "OUT2", folders["pack"], None, budget_s=300, train_s=2, dry_run=True,
                       ckpt_dir=ck, work_dir=tmp_path / "work", tests=False)
    assert rep2["jobs"]["smoke"]["prior_iters"] == first
    assert rep2["jobs"]["smoke"]["total_iters"] > first


def test_a_committed_checkpoint_beats_the_jobs_own_init_from(tmp_path):
    """The M5 job names train.init_from=export/edgenet_m5/...: it came after the committed GPU
    checkpoint and won, so every lent GPU would have restarted from the shipped weights."""
    from edge_deblur.config import load_train_config
    from edge_deblur.train.session import job_overrides, parse_job

    job = parse_job("configs/train/smoke.yaml train.init_from=export/edgenet_m5/model.safetensors")
    over = job_overrides(job, tmp_path / "p.pack", tmp_path / "w", 7, "checkpoints/gpu/smoke.safetensors")
    cfg = load_train_config(job.config, over)
    assert cfg.train.init_from == "checkpoints/gpu/smoke.safetensors" and cfg.train.seed == 7
    assert load_train_config(job.config, job_overrides(job, tmp_path / "p.pack", tmp_path / "w", 7, None)).train.init_from \
        == "export/edgenet_m5/model.safetensors"  # no committed checkpoint: the job's own


def test_gpu_tests_run_the_checkouts_tests_from_any_directory(tmp_path, monkeypatch):
    """Run from outside the checkout, ``pytest ... tests`` found nothing (exit 4) and the session
    still exited 0: the tests folder is the checkout's, and pytest runs from the checkout."""
    import subprocess
    from pathlib import Path

    from edge_deblur.train import session as S

    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"], seen["cwd"] = cmd, kw.get("cwd")
        kw["stdout"].write("1 passed\n")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(S.subprocess, "run", fake_run)
    r = S._gpu_tests(tmp_path / "gpu_tests.log", 10.0, {})
    root = Path(S.__file__).resolve().parents[2]
    assert seen["cmd"][-1] == str(root / "tests") and seen["cwd"] == str(root)
    assert r["exit_code"] == 0 and r["summary"] == "1 passed"
