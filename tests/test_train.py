"""A short training run lowers the loss, writes checkpoints/logs, and resumes from its state."""
import csv
import json

import cv2
import numpy as np
import pytest
import torch

from edge_deblur.config import load_train_config
from edge_deblur.errors import ModelError
from edge_deblur.models.blocks import reparameterize_
from edge_deblur.models.checkpoint import load_model, read_checkpoint
from edge_deblur.train import train


@pytest.fixture(scope="module")
def sharp_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sharp")
    rng = np.random.default_rng(0)
    for i in range(3):
        img = np.full((96, 96, 3), 40, np.uint8)
        for _ in range(12):  # rectangles with hard edges: blur is visible and learnable
            x, y = rng.integers(0, 80, 2)
            w, h = rng.integers(6, 30, 2)
            cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
        cv2.imwrite(str(d / f"{i}.png"), img)
    return d


def make_cfg(tmp_path, sharp_dir, iters, extra=()):
    return load_train_config(
        "configs/train/smoke.yaml",
        [f"out_dir={tmp_path / 'run'}", f"data.sharp_roots=[{sharp_dir}]", f"train.iters={iters}",
         # a task a tiny model learns in tens of steps (denoising), so the test checks the loop itself
         "data.blur.length=[0, 0]", "data.blur.noise_prob=1", "data.blur.gaussian_sigma=[0.08, 0.08]",
         "data.blur.poisson_peak=[1e6, 1e6]", "data.blur.jpeg_prob=0", "data.blur.sharp_prob=0",
         "train.ema_decay=0.9", *extra],
    )


def fixed_batch_loss(model, cfg):
    from edge_deblur.data.datasets import build_train_dataset

    ds = build_train_dataset(cfg.data, length=16, seed=999)
    b = [ds[i] for i in range(16)]
    x = torch.stack([d["blur"] for d in b])
    y = torch.stack([d["sharp"] for d in b])
    with torch.no_grad():
        return float((model(x) - y).abs().mean())


def test_training_lowers_loss_and_resumes(tmp_path, sharp_dir):
    cfg = make_cfg(tmp_path, sharp_dir, 40, ["train.lr=3e-3", "train.val_every=40", "train.ckpt_every=20"])
    from edge_deblur.models import build_model

    before = fixed_batch_loss(build_model(cfg.model).eval(), cfg)
    result = train(cfg, progress=False)
    assert result["iters"] == 40
    run = tmp_path / "run"
    assert (run / "last.safetensors").is_file() and (run / "state.pt").is_file()
    model = load_model(run / "last.safetensors")
    after = fixed_batch_loss(model, cfg)
    assert after < before * 0.93, (before, after)
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert rows and rows[-1]["iter"] == "40"
    # resume: a longer schedule continues from iteration 40, not from scratch
    cfg2 = make_cfg(tmp_path, sharp_dir, 50, ["train.lr=3e-3", "train.val_every=50", "train.ckpt_every=10"])
    result2 = train(cfg2, progress=False)
    assert result2["iters"] == 50
    st = torch.load(run / "state.pt", weights_only=True)
    assert st["iter"] == 50
    _, spec, config, meta = read_checkpoint(run / "last.safetensors")
    assert meta["iters"] == 50 and config["train"]["iters"] == 50 and spec["type"] == "edgenet"
    # the training form's count and the exported one's (RepVGG branches folded), as a manifest gives it
    from edge_deblur.models import build_model
    from edge_deblur.models.profile import count_params

    trained = build_model(spec)
    assert meta["params"] == count_params(trained)
    assert meta["params_deployed"] == count_params(reparameterize_(trained)) < meta["params"]
    iters = [int(r["iter"]) for r in csv.DictReader(open(run / "log.csv"))]
    assert iters == sorted(iters) and iters[-1] == 50 and min(i for i in iters if i > 40) > 40


def test_init_from_accumulates_iterations(tmp_path, sharp_dir):
    cfg = make_cfg(tmp_path, sharp_dir, 6, ["train.val_every=6", "train.ckpt_every=6"])
    train(cfg, progress=False)
    first = tmp_path / "run" / "last.safetensors"
    cfg2 = load_train_config(
        "configs/train/smoke.yaml",
        [f"out_dir={tmp_path / 'run2'}", f"data.sharp_roots=[{sharp_dir}]", "train.iters=4",
         f"train.init_from={first}", "train.val_every=4"],
    )
    train(cfg2, progress=False)
    _, _, _, meta = read_checkpoint(tmp_path / "run2" / "last.safetensors")
    assert meta["iters"] == 4 and meta["total_iters"] == 10


def test_init_from_a_smaller_edgenet_grows_it(tmp_path, sharp_dir):
    """A checkpoint without strip blocks starts a run of the same net with them: the new blocks
    begin as identities, so the first output equals the checkpoint's."""
    cfg = make_cfg(tmp_path, sharp_dir, 4, ["train.val_every=4", "train.ckpt_every=4"])
    train(cfg, progress=False)
    first = tmp_path / "run" / "last.safetensors"
    small = load_model(first).eval()
    _, spec, _, _ = read_checkpoint(first)
    grown_spec = dict(spec, strip_levels=[0], strip_kernel=5)
    cfg2 = load_train_config(
        "configs/train/smoke.yaml",
        [f"out_dir={tmp_path / 'grown'}", f"data.sharp_roots=[{sharp_dir}]", "train.iters=2", "train.val_every=2",
         f"train.init_from={first}", "train.lr=1e-12"],
    )
    cfg2.model = grown_spec
    train(cfg2, progress=False)
    _, gspec, _, meta = read_checkpoint(tmp_path / "grown" / "last.safetensors")
    assert gspec["strip_levels"] == [0] and meta["total_iters"] == 6
    grown = load_model(tmp_path / "grown" / "last.safetensors").eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert (grown(x) - small(x)).abs().max().item() < 1e-6
    # a spec that is not a growth (narrower levels) is refused with both reasons
    cfg3 = load_train_config(
        "configs/train/smoke.yaml",
        [f"out_dir={tmp_path / 'bad'}", f"data.sharp_roots=[{sharp_dir}]", "train.iters=1", f"train.init_from={first}"],
    )
    cfg3.model = dict(spec, widths=[max(1, w // 2) for w in spec["widths"]])
    with pytest.raises(ModelError, match="nor can it grow into it"):
        train(cfg3, progress=False)


def test_train_cli_reports_typos(tmp_path, capsys):
    from edge_deblur.cli import main

    rc = main(["train", "-c", "configs/train/smoke.yaml", "train.iter=3"])
    assert rc != 0
    assert "did you mean 'iters'" in capsys.readouterr().err


def test_gan_mode_and_recurrent_clips(tmp_path, sharp_dir):
    # GAN mode: a discriminator is trained alongside and saved in the resume state
    cfg = make_cfg(tmp_path, sharp_dir, 3, ["train.adv_weight=0.01", "train.val_every=3"])
    train(cfg, progress=False)
    st = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert "disc" in st and "dopt" in st
    # recurrent model on synthetic clips: the state is an explicit input/output
    cfg = load_train_config(
        "configs/train/smoke.yaml",
        [f"out_dir={tmp_path / 'rnn'}", f"data.sharp_roots=[{sharp_dir}]", "train.iters=3", "train.val_every=3",
         "model.type=edgenet_rnn", "data.clip_frames=3"],
    )
    train(cfg, progress=False)
    m = load_model(tmp_path / "rnn" / "last.safetensors")
    x = torch.rand(1, 3, 32, 32)
    y, h = m(x, torch.zeros(m.state_shape(32, 32)))
    assert y.shape == x.shape and h.shape == m.state_shape(32, 32)
    bad = load_train_config("configs/train/smoke.yaml", [f"data.sharp_roots=[{sharp_dir}]", "model.type=edgenet_rnn"])
    from edge_deblur.errors import ConfigError

    with pytest.raises(ConfigError, match="clip_frames"):
        train(bad, progress=False)


def test_ddp_two_processes(tmp_path, sharp_dir):
    """torchrun with 2 CPU processes (gloo): both ranks step in lockstep, rank 0 writes."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "edge_deblur", "train", "-c", "configs/train/smoke.yaml", "--no-progress",
           f"out_dir={tmp_path / 'ddp'}", f"data.sharp_roots=[{sharp_dir}]", "train.iters=4", "train.val_every=4"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    _, _, _, meta = read_checkpoint(tmp_path / "ddp" / "last.safetensors")
    assert meta["iters"] == 4


def test_sigterm_to_the_process_group_still_saves_a_resumable_state(tmp_path, sharp_dir):
    """kill -- -PGID (or Ctrl-C in a terminal) reaches the DataLoader workers too: the trainer must
    still write its resume checkpoint, not die in PyTorch's worker-death handler halfway through."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "edge_deblur", "train", "-c", "configs/train/smoke.yaml", "--no-progress",
           f"out_dir={run}", f"data.sharp_roots=[{sharp_dir}]", "train.iters=100000", "data.workers=1",
           "train.val_every=100000", "train.ckpt_every=100000", "train.log_every=5"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.time() + 120
        log = run / "log.csv"
        while not (log.is_file() and len(log.read_text().splitlines()) >= 3):  # header + 2 rows
            assert p.poll() is None, p.communicate()[1][-3000:]
            assert time.time() < deadline, "training did not start logging within 120 s"
            time.sleep(0.5)
        os.killpg(p.pid, signal.SIGTERM)  # the trainer and its DataLoader worker
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert "is killed by signal" not in err, err[-3000:]
    assert "saving a checkpoint to resume from" in err
    st = torch.load(run / "state.pt", weights_only=True)
    assert st["iter"] >= 10 and not (run / "state.tmp").exists()
    _, _, _, meta = read_checkpoint(run / "last.safetensors")
    assert meta["iters"] == st["iter"]


def test_a_worker_killed_by_the_same_signal_still_leaves_a_checkpoint(tmp_path, sharp_dir, monkeypatch):
    """pkill -f "edge-deblur train" TERMs the trainer and its workers; when a worker's death is
    reported first (PyTorch raises "DataLoader worker ... is killed by signal" while the interrupt
    unwinds), the run died without its checkpoint (131 iterations lost in session 18)."""
    from edge_deblur.train import loop

    real = loop.build_train_loader

    def dying(*a, **k):
        inner = real(*a, **k)

        class Loader:
            def __iter__(self):
                for i, b in enumerate(inner):
                    if i == 6:
                        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated. ")
                    yield b

            def __getattr__(self, name):
                return getattr(inner, name)

        return Loader()

    monkeypatch.setattr(loop, "build_train_loader", dying)
    cfg = make_cfg(tmp_path, sharp_dir, 50, ["train.val_every=1000", "train.ckpt_every=1000"])
    with pytest.raises(RuntimeError, match="is killed by signal"):
        train(cfg, progress=False)
    assert read_checkpoint(tmp_path / "run" / "last.safetensors")[3]["iters"] == 6
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=True)["iter"] == 6


def test_kept_checkpoints_average_into_one(tmp_path, sharp_dir, capsys):
    from edge_deblur.cli import main
    from edge_deblur.errors import ConfigError

    cfg = make_cfg(tmp_path, sharp_dir, 6, ["train.val_every=6", "train.ckpt_every=2", "train.keep_every=2"])
    train(cfg, progress=False)
    kept = sorted((tmp_path / "run").glob("ckpt_*.safetensors"))
    assert [p.name for p in kept] == ["ckpt_000002.safetensors", "ckpt_000004.safetensors", "ckpt_000006.safetensors"]
    out = tmp_path / "avg.safetensors"
    assert main(["average", str(tmp_path / "run" / "ckpt_*.safetensors"), "-o", str(out)]) == 0
    states = [read_checkpoint(p)[0] for p in kept]
    avg, spec, _, meta = read_checkpoint(out)
    for k, v in avg.items():
        assert torch.allclose(v, sum(s[k] for s in states) / 3, atol=1e-6)
    assert not torch.equal(states[0][next(iter(avg))], states[2][next(iter(avg))])  # the inputs differ
    assert meta["total_iters"] == 6 and [s["iters"] for s in meta["averaged_from"]] == [2, 4, 6]
    assert load_model(out).spec == spec
    assert main(["average", str(kept[0]), "-o", str(out)]) != 0
    assert "at least two" in capsys.readouterr().err
    other = make_cfg(tmp_path / "o", sharp_dir, 2, ["train.val_every=2", "model.widths=[8, 8]"])
    train(other, progress=False)
    assert main(["average", str(kept[0]), str(tmp_path / "o" / "run" / "last.safetensors"), "-o", str(out)]) != 0
    assert "one architecture" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="keep_every"):
        make_cfg(tmp_path, sharp_dir, 6, ["train.ckpt_every=4", "train.val_every=6", "train.keep_every=5"])


def test_pixel_losses_match_their_definitions():
    from edge_deblur.metrics.quality import psnr
    from edge_deblur.train.losses import PIXEL_LOSSES

    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 8, 8, generator=g)
    pred = (target + 0.05 * torch.randn(2, 3, 8, 8, generator=g)).clamp(0, 1)
    want = -np.mean([psnr(pred[i].numpy(), target[i].numpy()) for i in range(2)])
    got = float(PIXEL_LOSSES["psnr"](pred, target))
    assert abs(got - want) < 1e-3, (got, want)
    assert abs(float(PIXEL_LOSSES["mse"](pred, target)) - float(((pred - target) ** 2).mean())) < 1e-9
    # where the input allows two answers (half the pixels 0, half 1, same blurry input), the MSE
    # family pulls a constant prediction to their mean; L1 does not care where between them it lies
    t = torch.zeros(1, 1, 4, 4)
    t[..., ::2, :] = 1.0
    mid, low = torch.full_like(t, 0.5), torch.full_like(t, 0.2)
    for name in ("psnr", "mse"):
        f = PIXEL_LOSSES[name]
        assert float(f(mid, t)) < float(f(low, t)) - 0.01
    assert abs(float(PIXEL_LOSSES["l1"](mid, t)) - float(PIXEL_LOSSES["l1"](low, t))) < 1e-6


def test_lowpass_loss_sees_local_brightness_not_detail():
    from edge_deblur.train.losses import lowpass_loss

    # a checkerboard and flat grey share every 8x8 mean: no lowpass loss, though every pixel is off
    t = torch.zeros(1, 3, 16, 16)
    t[..., ::2, ::2] = 1.0
    t[..., 1::2, 1::2] = 1.0
    flat = torch.full_like(t, 0.5)
    assert float(lowpass_loss(flat, t, 8)) < 1e-7
    # brightening one 8x8 cell by 0.1 costs 0.1 on that cell's mean: a quarter of the cells here
    bright = t.clone()
    bright[..., :8, :8] += 0.1
    assert abs(float(lowpass_loss(bright, t, 8)) - 0.025) < 1e-6
    with pytest.raises(ValueError, match="lowpass_scale=32"):
        lowpass_loss(t, t, 32)


def test_lowpass_weight_enters_the_training_loss(tmp_path, sharp_dir):
    """Two one-iteration runs from the same seed differ only in train.lowpass_weight: their logged
    losses differ (the term is really added), and a typo in its name gets a suggestion."""
    from edge_deblur.errors import ConfigError

    losses = []
    for w in (0.0, 5.0):
        cfg = make_cfg(tmp_path / str(w), sharp_dir, 1, ["train.log_every=1", f"train.lowpass_weight={w}",
                                                         "train.lowpass_scale=4", "data.blur.gaussian_sigma=[0.3, 0.3]"])
        train(cfg, progress=False)
        with open(tmp_path / str(w) / "run" / "log.csv") as f:
            losses.append(float(list(csv.DictReader(f))[-1]["loss"]))
    assert losses[1] > losses[0] + 1e-4, losses
    with pytest.raises(ConfigError, match=r"lowpas_weight.*did you mean .lowpass_weight."):
        load_train_config("configs/train/smoke.yaml", ["train.lowpas_weight=1"])


def test_time_limit_ends_the_schedule_and_the_run(tmp_path, sharp_dir, monkeypatch):
    import edge_deblur.train.loop as loop

    cfg = make_cfg(tmp_path, sharp_dir, 10_000, ["train.time_limit=40", "train.log_every=5", "train.warmup_iters=2",
                                                 "train.val_every=10000", "train.ckpt_every=10000"])
    # the cosine runs to whichever ends first: half the time limit is half the schedule
    half = loop.lr_at(10, cfg, elapsed=20.0)
    assert half == pytest.approx(cfg.train.lr * (cfg.train.min_lr_ratio + (1 - cfg.train.min_lr_ratio) * 0.5), rel=1e-6)
    assert loop.lr_at(10, cfg, elapsed=40.0) == pytest.approx(cfg.train.lr * cfg.train.min_lr_ratio)

    class Clock:  # each reading of the clock is one second later: the run ends after a few iterations
        now = 1000.0

        def time(self):
            self.now += 1.0
            return self.now

        def __getattr__(self, name):
            import time
            return getattr(time, name)

    monkeypatch.setattr(loop, "time", Clock())
    result = train(cfg, progress=False)
    assert 0 < result["iters"] < 10_000
    run = tmp_path / "run"
    st = torch.load(run / "state.pt", weights_only=True)
    assert st["iter"] == result["iters"] and st["elapsed"] >= 40
    _, _, _, meta = read_checkpoint(run / "last.safetensors")
    assert meta["iters"] == result["iters"]
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert rows[-1]["iter"] == str(result["iters"])
    # resuming with the same limit trains nothing more; a larger limit continues
    assert train(cfg, progress=False)["iters"] == result["iters"]
    cfg2 = make_cfg(tmp_path, sharp_dir, 10_000, ["train.time_limit=80", "train.log_every=5", "train.warmup_iters=2",
                                                  "train.val_every=10000", "train.ckpt_every=10000"])
    assert train(cfg2, progress=False)["iters"] > result["iters"]


def test_replay_pool_completes_batches_from_earlier_samples():
    """Each batch is the loader's fresh samples plus earlier ones, seen again under a symmetry of the
    square; nothing is invented (every pooled sample is a flip/transpose of one the loader made)."""
    from edge_deblur.train.replay import ReplayPool, _dihedral

    made = []

    def loader():
        g = torch.Generator().manual_seed(0)
        for _ in range(30):
            b = torch.rand(2, 3, 8, 8, generator=g)
            made.append(b)
            yield {"blur": b, "sharp": b * 0.5}

    batches = list(ReplayPool(loader(), batch_size=6, size=10, seed=0))
    assert len(batches) == 30 - 2  # the first two loader batches only fill the pool
    seen = torch.cat(made)
    variants = torch.stack([_dihedral(seen, c) for c in range(8)], 1).half().float()  # (N, 8, 3, 8, 8)
    for i, b in enumerate(batches):
        assert b["blur"].shape == (6, 3, 8, 8)
        assert torch.equal(b["blur"][:2], made[i + 2])          # the fresh samples come first
        for x, y in zip(b["blur"][2:], b["sharp"][2:]):
            d = (variants - x).abs().flatten(2).amax(2)                  # (N, 8)
            assert d.min() < 1e-6                                        # a pooled sample, transformed
            assert torch.allclose(y, x * 0.5, atol=2e-3)                 # its target, transformed alike
    with pytest.raises(ValueError, match="replay_pool"):
        ReplayPool(loader(), batch_size=8, size=4)


def test_replay_pool_and_bf16_train(tmp_path, sharp_dir, monkeypatch, caplog):
    import edge_deblur.runtime.cpu_features as cf
    from edge_deblur.errors import ConfigError

    autocasts = []
    real_autocast = torch.autocast

    def recording_autocast(*a, **k):
        autocasts.append((k.get("dtype"), k.get("enabled", True)))
        return real_autocast(*a, **k)

    monkeypatch.setattr(torch, "autocast", recording_autocast)
    # a CPU with native bf16 (AMX): bf16 autocast, whatever CPU runs the test
    monkeypatch.setattr(cf, "cpu_features", lambda *a, **k: cf.features_from({"avx2", "avx512f", "amx_bf16"}, "AMX CPU"))
    cfg = make_cfg(tmp_path, sharp_dir, 12, ["train.replay_pool=16", "train.replay_fresh=1", "train.bf16=true",
                                              "train.val_every=12", "train.ckpt_every=12"])
    result = train(cfg, progress=False)
    assert result["iters"] == 12
    assert (torch.bfloat16, True) in autocasts and "no native bfloat16" not in caplog.text
    # an AVX2-only CPU: emulated bf16 ran 8x slower than FP32 there, so FP32 with a warning
    autocasts.clear()
    monkeypatch.setattr(cf, "cpu_features", lambda *a, **k: cf.features_from({"avx2", "fma"}, "AVX2 CPU"))
    cfg = make_cfg(tmp_path / "b", sharp_dir, 4, ["train.bf16=true", "train.val_every=4", "train.ckpt_every=4"])
    with caplog.at_level("WARNING", logger="edge_deblur.train"):
        train(cfg, progress=False)
    assert "has no native bfloat16" in caplog.text
    assert autocasts and all(not enabled for _, enabled in autocasts)
    with pytest.raises(ConfigError, match="replay_pool"):
        make_cfg(tmp_path, sharp_dir, 12, ["train.replay_pool=2"]).train.validate()


def test_a_resumed_run_continues_the_sample_stream(tmp_path, sharp_dir):
    """Resuming at iteration k trains on the samples an uninterrupted run would have seen from k
    on; it used to replay the stream from its first sample."""
    from edge_deblur.train.loop import build_train_loader

    cfg = make_cfg(tmp_path, sharp_dir, 6, ["data.workers=0", "train.replay_pool=0", "data.blur.length=[2, 6]"])
    full = [b["blur"] for b in build_train_loader(cfg)]
    resumed = [b["blur"] for b in build_train_loader(cfg, start=3)]
    assert len(full) == 6 and len(resumed) == 3
    assert all(torch.equal(a, b) for a, b in zip(resumed, full[3:]))
    assert not torch.equal(resumed[0], full[0])
    gpu_path = make_cfg(tmp_path, sharp_dir, 6, ["data.synth=torch", "train.replay_pool=0"])
    first = next(iter(build_train_loader(gpu_path, device=torch.device("cpu"))))["blur"]
    later = next(iter(build_train_loader(gpu_path, device=torch.device("cpu"), start=3)))["blur"]
    assert first.shape == later.shape and not torch.equal(first, later)


def test_a_sigterm_during_the_final_save_waits_for_it():
    import os
    import signal

    from edge_deblur.train.loop import _sigterm_waits

    before = signal.getsignal(signal.SIGTERM)
    done = []
    with _sigterm_waits("a test"):
        os.kill(os.getpid(), signal.SIGTERM)  # would end the process (or raise) without the guard
        done.append(1)
    assert done == [1] and signal.getsignal(signal.SIGTERM) == before
