"""The training loop: AdamW, warm-up + cosine, EMA, gradient clipping, AMP on CUDA, resume,
validation on several sets (real pairs from several cameras and a fixed full-resolution synthetic
set: ``data.validation_sets()``, metrics/suite.py), CSV log, curve PNG, DDP.

Layout of ``out_dir``:
  last.safetensors   EMA weights + arch spec + resolved config + meta (the model to use)
  best.safetensors   the EMA weights with the best mean of the per-set PSNR gains so far
  state.pt           raw weights, optimizer, scheduler, EMA, RNG and iteration (resume)
  log.csv, curve.png
"""
from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..config import TrainConfig, to_dict
from ..errors import ConfigError, ModelError
from ..models import build_model
from ..models.registry import arch_class
from ..models.checkpoint import read_checkpoint, save_checkpoint
from ..models.profile import deployed_params, summary
from ..metrics.suite import one_line
from .ema import EMA
from .losses import PIXEL_LOSSES, frequency_loss, gan_d_loss, gan_g_loss, lowpass_loss
from .resume import load_resume_state

log = logging.getLogger("edge_deblur.train")


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


_WORKER_KILLED = re.compile(r"DataLoader worker \(pid[^)]*\) is killed by signal")


def ignore_worker_deaths():
    """A signal sent to the whole process group (Ctrl-C in a terminal, ``kill -- -PGID``,
    ``pkill -f``) also stops the DataLoader workers, and PyTorch's SIGCHLD handler then raises
    "DataLoader worker ... is killed" in the middle of writing the resume checkpoint. The
    workers are no longer needed once training stops, so their deaths are ignored from here."""
    if hasattr(signal, "SIGCHLD") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


@contextlib.contextmanager
def _sigterm_waits(what: str):
    """While the run's last checkpoint is written, a SIGTERM (a deadline, such as the GPU session's)
    waits for it instead of interrupting it: the work is saved, and the run ends as it would have."""
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        if got:
            log.info(f"SIGTERM during {what}: finished it first; the run ends here")


def lr_at(it: int, cfg, elapsed: float = 0.0) -> float:
    """Warm-up, then cosine decay to ``min_lr_ratio``. With ``train.time_limit`` the cosine runs
    to whichever ends first, ``iters`` or the time limit (``elapsed`` seconds of training)."""
    t = cfg.train
    if it < t.warmup_iters:
        return t.lr * (it + 1) / t.warmup_iters
    p = (it - t.warmup_iters) / max(1, t.iters - t.warmup_iters)
    if t.time_limit > 0:
        p = max(p, elapsed / t.time_limit)
    p = min(1.0, p)
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def build_train_loader(cfg: TrainConfig, rank: int = 0, world: int = 1, device=None, start: int = 0):
    """The training batches from iteration ``start`` on: a resumed run continues the sample stream
    where it stopped instead of replaying the samples it has already trained on."""
    import cv2

    if cfg.data.synth == "torch":  # batches made on the training device, no workers
        from .device_data import DeviceBatches

        # a random stream, not indexed: a resumed run draws from another seed
        return DeviceBatches(cfg, device, seed=cfg.train.seed + 1000 * rank + 7919 * int(start))

    from ..data.datasets import build_train_dataset

    # OpenCV's thread pool must be sized before the workers fork: resizing it inside a forked
    # worker can deadlock. One thread each: the workers are the parallelism.
    if cfg.data.workers > 0:
        cv2.setNumThreads(1)

    ds = build_train_dataset(cfg.data, seed=cfg.train.seed + 1000 * rank, length=cfg.train.iters * cfg.train.batch_size)
    workers = cfg.data.workers
    t = cfg.train
    batch = t.batch_size
    if t.replay_pool:
        batch = t.replay_fresh or max(1, t.batch_size // 4)
    if start:  # samples are a function of (seed, index): skip the ones iterations < start used
        ds = torch.utils.data.Subset(ds, range(min(len(ds), int(start) * batch), len(ds)))
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=False,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
    )
    if t.replay_pool:
        from .replay import ReplayPool

        return ReplayPool(loader, t.batch_size, t.replay_pool, seed=t.seed + 1000 * rank)
    return loader


def _worker_init(worker_id: int):
    torch.set_num_threads(1)


class Validator:
    """Runs the model through the runtime's own preprocessing on every validation set (full frames,
    or the centre crop / subset a set asks for) and returns the multi-set report of
    ``metrics.suite.evaluate_sets`` ({} when the config names no set)."""

    def __init__(self, set_configs, device):
        from ..data.valsets import load_val_sets

        self.device = device
        # a synthetic set is (re)made when missing or made with other settings (data/valsets.py)
        self.sets = load_val_sets(set_configs, make_always=True)

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict:
        from ..metrics.suite import evaluate_sets
        from ..runtime.preprocess import frame_to_tensor, tensor_to_frame

        model.eval()
        stride = getattr(model, "stride", 1)
        recurrent = getattr(model, "recurrent", False)
        state = {"h": None}

        def fn(frame):
            t, info = frame_to_tensor(frame, stride)
            x = torch.from_numpy(t).to(self.device)
            if recurrent:
                h = state["h"]
                if h is None or tuple(h.shape) != tuple(model.state_shape(x.shape[2], x.shape[3])):
                    h = torch.zeros(model.state_shape(x.shape[2], x.shape[3]), device=self.device)
                y, state["h"] = model(x, h)
            else:
                y = model(x)
            return tensor_to_frame(y.float().cpu().numpy(), info)

        def reset():
            state["h"] = None

        if not self.sets:
            return {}
        return evaluate_sets(fn, self.sets, reset=reset, with_ssim=True)


_SET_COLUMNS = ("psnr", "psnr_gain", "ssim", "ssim_gain", "tone_gain", "worst_scene_gain", "seconds")


def log_fields(set_names) -> list[str]:
    """log.csv columns: per set ``<set>_psnr``, ``_psnr_gain``, ``_ssim``, ``_ssim_gain``,
    ``_tone_gain``, ``_worst_scene_gain``, ``_seconds``; then the overall ``mean_gain`` (the
    selection metric), ``mean_tone_gain`` and ``real_below_input`` (how many real scenes are worse
    than their blurry input)."""
    fields = ["iter", "lr", "loss", "it_per_s"]
    for n in set_names:
        fields += [f"{n}_{k}" for k in _SET_COLUMNS]
    if set_names:
        fields += ["mean_gain", "mean_tone_gain", "real_below_input"]
    return fields


def log_row(report: dict) -> dict:
    row = {}
    for n, m in report["sets"].items():
        for k in _SET_COLUMNS:
            if m.get(k) is not None:
                row[f"{n}_{k}"] = f"{m[k]:.4f}" if k != "seconds" else f"{m[k]:.1f}"
    row["mean_gain"] = f"{report['mean_gain']:.4f}"
    if report.get("mean_tone_gain") is not None:
        row["mean_tone_gain"] = f"{report['mean_tone_gain']:.4f}"
    row["real_below_input"] = str(len(report["real_below_input"]))
    return row


def _open_log(csv_path: Path, fields: list[str]) -> list[str]:
    """Create log.csv with ``fields``; a log from before (a resumed run, or one written with other
    validation sets) keeps its columns and rows and gains the new columns. Returns the header."""
    if not csv_path.exists():
        with open(csv_path, "w", newline="") as f:
            csv.DictWriter(f, fieldnames=fields).writeheader()
        return fields
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    merged = header + [k for k in fields if k not in header]
    if merged != header:
        tmp = csv_path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=merged)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, csv_path)
    return merged


def _plot_curve(csv_path: Path, png_path: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        return
    losses = [(int(r["iter"]), float(r["loss"])) for r in rows if r.get("loss")]  # validation-only rows have none
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    if losses:
        ax[0].plot(*zip(*losses))
    ax[0].set_xlabel("iteration")
    ax[0].set_ylabel("train loss")
    ax[0].set_yscale("log")
    for key in [k for k in rows[0] if k.endswith("_psnr_gain") or k == "mean_gain"]:
        pts = [(int(r["iter"]), float(r[key])) for r in rows if r.get(key)]
        if pts:
            ax[1].plot(*zip(*pts), marker="o", label=key.replace("_psnr_gain", ""),
                       **({"color": "black", "linewidth": 2} if key == "mean_gain" else {}))
    ax[1].set_xlabel("iteration")
    ax[1].set_ylabel("PSNR gain over blurry input (dB)")
    if ax[1].lines:
        ax[1].legend()
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png_path)


def train(cfg: TrainConfig, model: nn.Module | None = None, progress: bool = True) -> dict:
    """Train per ``cfg``; resumes from ``out_dir/state.pt`` when it exists. Returns final metrics."""
    world, rank, local = _dist_info()
    ddp = world > 1
    if ddp:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    t = cfg.train
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed + rank)
    np.random.seed(t.seed + rank)

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prior_iters = 0
    init_ckpt = read_checkpoint(t.init_from) if (t.init_from and model is None) else None
    if model is None:
        mspec = dict(cfg.model)
        if init_ckpt is not None and set(mspec) == {"type"} and mspec["type"] != init_ckpt[1].get("type"):
            # model: {type: edgenet_rnn} with an image checkpoint: the image model's sizes, made recurrent
            mspec = dict(init_ckpt[1], type=mspec["type"])
            log.info(f"model spec from train.init_from: {mspec}")
        model = build_model(mspec)
    spec = getattr(model, "spec", None) or cfg.model
    if getattr(model, "recurrent", False) != (cfg.data.clip_frames > 0):
        raise ConfigError(
            f"model type {spec.get('type')!r} is {'' if getattr(model, 'recurrent', False) else 'not '}recurrent but "
            f"data.clip_frames={cfg.data.clip_frames}; recurrent models train on clips (set data.clip_frames, e.g. 4), "
            "single-frame models need data.clip_frames=0"
        )
    if t.init_from:
        state, ispec, _, imeta = init_ckpt or read_checkpoint(t.init_from)
        try:
            if getattr(model, "recurrent", False) and not getattr(arch_class(ispec.get("type", "")), "recurrent", False):
                from ..models.grow import to_recurrent

                image = build_model(ispec)
                image.load_state_dict(state)
                try:
                    model = to_recurrent(image, spec)
                except ValueError as ve:
                    raise RuntimeError(str(ve)) from ve
                log.info(f"recurrent {spec.get('type')} starts from image model {ispec.get('type')}: "
                         "its first frame equals the image model's output")
            else:
                model.load_state_dict(state)
        except RuntimeError as e:
            # a smaller edgenet grows into the configured one (new blocks start as identities, new channels unread)
            try:
                from ..models.grow import grow_to

                small = build_model(ispec)
                small.load_state_dict(state)
                model = grow_to(small, spec)
            except (ValueError, RuntimeError, ConfigError) as ge:
                raise ModelError(
                    f"train.init_from {t.init_from!r} (spec {ispec}) does not fit model {spec}: {e}; "
                    f"nor can it grow into it: {ge}"
                ) from e
            log.info(f"grew {ispec} into {spec}: the added blocks start as identities and the added channels are read by nothing yet (the same output)")
        prior_iters = int(imeta.get("total_iters", imeta.get("iters", 0)))
        log.info(f"initialised from {t.init_from} ({prior_iters} prior iterations)")
    model = model.to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    info = summary(model)
    info["params_deployed"] = deployed_params(model)
    if rank == 0:
        log.info(f"model {spec.get('type')}: {info['params'] / 1e6:.3f} M params as trained "
                 f"({info['params_deployed'] / 1e6:.3f} M deployed), {info['gmacs_1280x720']:.2f} GMACs at 1280x720")

    ema = EMA(model, t.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    disc = dopt = None
    if t.adv_weight > 0:
        from ..models.discriminator import PatchDiscriminator

        disc = PatchDiscriminator().to(device)
        dopt = torch.optim.AdamW(disc.parameters(), lr=t.disc_lr, betas=(0.5, 0.99))
    cpu_bf16 = t.bf16 and device.type == "cpu"
    if cpu_bf16:
        from ..runtime.cpu_features import cpu_features

        feats = cpu_features()
        if feats.flags and not feats.bf16:  # (no flags read: not Linux, leave it as asked)
            log.warning("train.bf16 is set but this CPU (%s, %s) has no native bfloat16 (AVX512-BF16 or AMX): "
                        "torch would emulate it, 8x slower than FP32 on an AVX2 CPU; training in FP32 "
                        "(set train.bf16=false to say so)", feats.model, feats.isa)
            cpu_bf16 = False
    use_amp = (t.amp and device.type == "cuda") or cpu_bf16
    amp_dtype = torch.bfloat16 if (use_amp and (device.type == "cpu" or torch.cuda.is_bf16_supported())) else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    start = 0
    best = -1e9  # the best mean of the per-set gains so far (kept across resumes)
    elapsed0 = 0.0  # seconds trained before this process (resume), for train.time_limit
    state_path = out / "state.pt"
    if state_path.is_file():
        st = load_resume_state(state_path, device)
        try:
            best = float(st.get("best", best))
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["opt"])
            ema.load_state_dict(st["ema"])
            if disc is not None and "disc" in st:
                disc.load_state_dict(st["disc"])
                dopt.load_state_dict(st["dopt"])
            start = int(st["iter"])
            elapsed0 = float(st.get("elapsed", 0.0))
            prior_iters = int(st.get("prior_iters", prior_iters))
            torch.set_rng_state(st["rng"].cpu())
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
            raise ModelError(
                f"cannot resume from {str(state_path)!r}: it was written for another model or optimizer "
                f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}); "
                f"move it away to start this run afresh, or set out_dir to another folder"
            ) from e
        if rank == 0:
            log.info(f"resumed from {state_path} at iteration {start}")
    if start >= t.iters:
        log.info(f"already trained {start} >= train.iters={t.iters}; raise train.iters to continue")

    train_model = model
    if ddp:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[local] if device.type == "cuda" else None)
    pixel_loss = PIXEL_LOSSES[t.loss]
    eps_kw = {"eps": t.charbonnier_eps} if t.loss == "charbonnier" else {}
    validator = Validator(cfg.data.validation_sets(), device) if rank == 0 else None
    resolved = to_dict(cfg)
    csv_path = out / "log.csv"
    fields = log_fields([s.name for s in validator.sets] if validator is not None else [])
    if rank == 0:
        fields = _open_log(csv_path, fields)
    last_metrics: dict = {}
    t_begin = time.time()

    def trained_for() -> float:
        return elapsed0 + time.time() - t_begin

    def out_of_time() -> bool:
        """train.time_limit reached; under DDP rank 0's clock decides for every rank."""
        if t.time_limit <= 0:
            return False
        if not ddp:
            return trained_for() >= t.time_limit
        flag = torch.tensor([float(trained_for() >= t.time_limit)], device=device)
        torch.distributed.broadcast(flag, 0)
        return bool(flag.item())

    def save(it: int, metrics: dict | None = None):
        nonlocal best
        meta = {"iters": it, "total_iters": prior_iters + it, "params": info["params"],
                "params_deployed": info["params_deployed"],
                "gmacs_1280x720": info["gmacs_1280x720"], "metrics": metrics or last_metrics,
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if t.init_from:
            meta["init_from"] = t.init_from
        sd = {k: v.contiguous() for k, v in ema.model.state_dict().items()}
        save_checkpoint(out / "last.safetensors", sd, spec, resolved, meta)
        if t.keep_every > 0 and it > 0 and it % t.keep_every == 0:
            save_checkpoint(out / f"ckpt_{it:06d}.safetensors", sd, spec, resolved, meta)
        # best.safetensors first, so that state.pt never names a best it does not have
        score = (metrics or {}).get("mean_gain")
        if score is not None and score > best:
            # chosen by the mean of the per-set gains (metrics/suite.py); "real_below_input" in the
            # metrics lists the real scenes it still makes worse
            best = score
            save_checkpoint(out / "best.safetensors", sd, spec, resolved, meta | {"best": True})
        st = {"model": model.state_dict(), "opt": opt.state_dict(), "ema": ema.state_dict(),
              "iter": it, "prior_iters": prior_iters, "rng": torch.get_rng_state(),
              "elapsed": trained_for(), "best": best}
        if disc is not None:
            st["disc"] = disc.state_dict()
            st["dopt"] = dopt.state_dict()
        tmp = state_path.with_suffix(".tmp")
        torch.save(st, tmp)
        os.replace(tmp, state_path)

    def validate(it: int, row: dict) -> dict:
        """Validate the EMA weights, log them, save a checkpoint with the metrics; returns ``row``
        with the metrics added (for log.csv)."""
        nonlocal last_metrics
        last_metrics = validator(ema.model)
        if last_metrics:
            row.update(log_row(last_metrics))
            log.info(f"iter {it}: {one_line(last_metrics)}")
        save(it, last_metrics)
        return row

    it = start
    timed_out = t.time_limit > 0 and elapsed0 >= t.time_limit
    if timed_out:
        log.info(f"already trained {elapsed0:.0f} s >= train.time_limit={t.time_limit:g} s; raise it to continue")
    if start < t.iters and not timed_out:
        loader = build_train_loader(cfg, rank, world, device, start=start)
        bar = None
        if progress and rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=t.iters, initial=start, desc="train", dynamic_ncols=True, mininterval=5)
        tic = time.time()
        loss_acc, n_acc = 0.0, 0
        model.train()
        try:
            for batch in loader:
                if it >= t.iters:
                    break
                blur = batch["blur"].to(device, non_blocking=True)
                sharp = batch["sharp"].to(device, non_blocking=True)
                if t.channels_last and blur.ndim == 4:
                    blur = blur.contiguous(memory_format=torch.channels_last)
                    sharp = sharp.contiguous(memory_format=torch.channels_last)
                if (not ddp or it % t.log_every == 0) and out_of_time():
                    timed_out = True
                    if rank == 0:
                        log.info(f"train.time_limit={t.time_limit:g} s reached at iteration {it}")
                    break
                lr = lr_at(it, cfg, trained_for())
                for g in opt.param_groups:
                    g["lr"] = lr
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    if blur.ndim == 5:  # clips (B, T, 3, h, w): carry the recurrent state through time
                        preds, h = [], None
                        for f in range(blur.shape[1]):
                            xf = blur[:, f]
                            if h is None:
                                h = torch.zeros(model.state_shape(xf.shape[2], xf.shape[3], xf.shape[0]), device=device)
                            elif t.tbptt and f % t.tbptt == 0:
                                h = h.detach()  # truncated back-propagation through time
                            pf, h = train_model(xf, h)
                            preds.append(pf)
                        pred = torch.stack(preds, 1).flatten(0, 1)
                        sharp = sharp.flatten(0, 1)
                    else:
                        pred = train_model(blur)
                    loss = pixel_loss(pred.float(), sharp, **eps_kw)
                    if t.freq_weight > 0:
                        loss = loss + t.freq_weight * frequency_loss(pred, sharp)
                    if t.lowpass_weight > 0:
                        loss = loss + t.lowpass_weight * lowpass_loss(pred, sharp, t.lowpass_scale)
                    if disc is not None:
                        loss = loss + t.adv_weight * gan_g_loss(disc(pred))
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if t.grad_clip > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                scaler.step(opt)
                scaler.update()
                if disc is not None:
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                        dl = gan_d_loss(disc(sharp), disc(pred.detach()))
                    dopt.zero_grad(set_to_none=True)
                    dl.backward()
                    dopt.step()
                ema.update(model)
                it += 1
                loss_acc += float(loss.detach())
                n_acc += 1
                if bar is not None:
                    bar.update(1)
                if rank != 0:
                    continue
                row = None
                if it % t.log_every == 0 or it == t.iters:
                    speed = n_acc / max(1e-9, time.time() - tic)
                    row = {"iter": it, "lr": f"{lr:.3g}", "loss": f"{loss_acc / max(1, n_acc):.5f}", "it_per_s": f"{speed:.3f}"}
                    if bar is not None:
                        bar.set_postfix(loss=row["loss"], lr=row["lr"])
                    loss_acc, n_acc, tic = 0.0, 0, time.time()
                if it % t.val_every == 0 or it == t.iters:
                    row = validate(it, row or {"iter": it, "lr": f"{lr:.3g}", "loss": "", "it_per_s": ""})
                    model.train()
                elif it % t.ckpt_every == 0:
                    save(it)
                if row is not None:
                    with open(csv_path, "a", newline="") as f:
                        csv.DictWriter(f, fieldnames=fields).writerow(row)
                    if "loss" in row and row["loss"] and it % (t.log_every * 10) == 0:
                        _plot_curve(csv_path, out / "curve.png")
        except (KeyboardInterrupt, RuntimeError) as e:
            # a signal to the process group (pkill -f, kill -- -PGID) stops the DataLoader workers
            # too; PyTorch's handler for their deaths can replace the interrupt with "DataLoader
            # worker ... is killed by signal" while it unwinds: that is a stop as well
            if isinstance(e, RuntimeError) and not _WORKER_KILLED.search(str(e)):
                raise
            if rank == 0:
                log.info(f"interrupted at iteration {it}; saving a checkpoint to resume from")
                ignore_worker_deaths()
                save(it)
            raise
        finally:
            if bar is not None:
                bar.close()
        with _sigterm_waits("the final validation and checkpoint"):
            if rank == 0 and timed_out and (it == start or it % t.val_every != 0):
                # the run ends here: validate it like the end of the schedule
                row = validate(it, {"iter": it, "lr": "", "loss": "", "it_per_s": ""})
                with open(csv_path, "a", newline="") as f:
                    csv.DictWriter(f, fieldnames=fields).writerow(row)
            elif rank == 0 and it % t.val_every != 0:
                save(it)
    if rank == 0:
        _plot_curve(csv_path, out / "curve.png")
    if ddp:
        torch.distributed.destroy_process_group()
    return {"iters": it, "total_iters": prior_iters + it, "metrics": last_metrics, "out_dir": str(out)}
