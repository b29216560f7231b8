"""Where a CPU training iteration goes, and whether bf16 autocast trains like FP32.

    python benchmarks/train_step.py --threads 2

For the stage-11 recipe of edgenet S (128x128 crops, batch 16, short blur) and the long-blur
recipe of edgenet M5 (256x256, batch 8, 4-80 px blur, moving layers), in one run:
* synthesis: ms per sample, one process (what one DataLoader worker does);
* a training step (forward, backward, AdamW): FP32, FP32 channels-last, bf16 autocast +
  channels-last, medians of ``--steps`` after two warm-up steps;
* iterations per hour on 2 cores with one synthesis worker: the step and the worker's share of
  the synthesis run side by side, so the slower one bounds the rate (with the replay pool the
  worker makes ``replay_fresh`` samples per step instead of a batch);
* bf16 vs FP32: the loss and the gradient of the same batch (cosine similarity), and 40 steps of
  training from the same weights on the same batches (final loss on held-out samples).
Prints one JSON object; record it in docs/BENCHMARKS.md with the CPU's flags.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_deblur.config import load_train_config  # noqa: E402
from edge_deblur.data.datasets import SyntheticDataset  # noqa: E402
from edge_deblur.models import build_model  # noqa: E402
from edge_deblur.train.losses import PIXEL_LOSSES  # noqa: E402


def cpu_flags() -> list[str]:
    want = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return []
    return [f for f in want if f in flags]


def synth_ms(cfg, n: int) -> float:
    ds = SyntheticDataset(cfg.data.sharp_roots, crop=cfg.data.crop, blur_cfg=cfg.data.blur, scale=cfg.data.scale,
                          seed=0, length=n + 2, downscale=cfg.data.downscale)
    ds[0]
    ts = []
    for i in range(1, n + 1):
        t = time.perf_counter()
        ds[i]
        ts.append(time.perf_counter() - t)
    return 1000 * statistics.median(ts), [ds[i] for i in range(min(n, 8))]


def step_ms(model, x, y, steps: int, cl: bool, bf16: bool) -> float:
    model = model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
    if cl:
        x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    loss_fn = PIXEL_LOSSES["charbonnier"]
    ts = []
    for i in range(steps + 2):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            ts.append(time.perf_counter() - t)
    return 1000 * statistics.median(ts)


def bf16_check(spec, samples, steps: int = 40, init_path: str | None = None) -> dict:
    x = torch.stack([s["blur"] for s in samples])
    y = torch.stack([s["sharp"] for s in samples])
    xt, yt, xv, yv = x[:-2], y[:-2], x[-2:], y[-2:]
    loss_fn = PIXEL_LOSSES["charbonnier"]
    torch.manual_seed(0)
    init = build_model(spec)
    if init_path and Path(init_path).is_file():  # trained weights: an untrained edgenet is the identity
        from edge_deblur.models.checkpoint import read_checkpoint

        init.load_state_dict(read_checkpoint(init_path)[0])
    out = {"init": init_path if init_path and Path(init_path).is_file() else "untrained"}
    grads = {}
    for bf16 in (False, True):
        m = build_model(spec)
        m.load_state_dict(init.state_dict())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(m(xt).float(), yt)
        loss.backward()
        grads[bf16] = torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
        out[f"loss_{'bf16' if bf16 else 'fp32'}"] = float(loss.detach())
        m.zero_grad()
        opt = torch.optim.AdamW(m.parameters(), 2e-4)
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(m(xt).float(), yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out[f"heldout_loss_after_{steps}_{'bf16' if bf16 else 'fp32'}"] = float(loss_fn(m(xv), yv))
    out["grad_cosine"] = float(torch.nn.functional.cosine_similarity(grads[False], grads[True], dim=0))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="configs/train/edgenet_s_swa_ft.yaml")
    ap.add_argument("--after", default="configs/train/edgenet_m5_long.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--synth", type=int, default=24)
    ap.add_argument("--init", default="export/edgenet_m5/model.safetensors",
                    help="weights the bf16 check starts from (the after-recipe's architecture)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    import cv2

    cv2.setNumThreads(1)
    res = {"cpu_flags": cpu_flags(), "threads": a.threads, "torch": torch.__version__}
    for tag, path in (("before", a.before), ("after", a.after)):
        cfg = load_train_config(path)
        t = cfg.train
        ms, samples = synth_ms(cfg, a.synth)
        torch.manual_seed(0)
        x = torch.rand(t.batch_size, 3, cfg.data.crop, cfg.data.crop)
        y = x.clone()
        row = {"config": path, "crop": cfg.data.crop, "batch": t.batch_size, "synth_ms_per_sample": round(ms, 1)}
        for name, cl, bf in (("fp32", False, False), ("fp32_cl", True, False), ("bf16_cl", True, True)):
            row[f"step_ms_{name}"] = round(step_ms(build_model(cfg.model), x, y, a.steps, cl, bf), 1)
        fresh = (t.replay_fresh or max(1, t.batch_size // 4)) if t.replay_pool else t.batch_size
        used = "bf16_cl" if t.bf16 else ("fp32_cl" if t.channels_last else "fp32")
        # two cores: the step uses both, the worker's synthesis takes its share of them
        per_step = row[f"step_ms_{used}"] + fresh * ms / a.threads
        row.update(recipe_mode=used, fresh_per_step=fresh, est_ms_per_iter=round(per_step, 1),
                   est_iters_per_hour=int(3.6e6 / per_step),
                   est_samples_per_hour=int(3.6e6 / per_step * t.batch_size),
                   est_megapixels_per_hour=round(3.6e6 / per_step * t.batch_size * cfg.data.crop ** 2 / 1e6))
        if tag == "after":
            row["bf16_vs_fp32"] = bf16_check(cfg.model, samples, init_path=a.init)
        res[tag] = row
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
