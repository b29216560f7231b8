"""Copy/compute overlap of the two-slot GPU pipeline against one frame at a time.

Runs the torch-cuda backend on 1280x720 uint8 frames twice:

- ``sync``: one frame at a time, pageable memory, blocking copies (upload, preprocess, model,
  postprocess, download, then the next frame);
- ``two-slot``: the double-buffered schedule (pinned buffers, one stream and events per slot;
  frame N+1 uploads and N-1 downloads while N computes);

and reports FPS of both and their ratio (target: two-slot >= 1.3x sync), then records an event
timeline (per slot and frame: upload/compute/download start and end from CUDA events) as JSON
and a PNG plot.

One command on a CUDA machine (no checkpoint needed: a randomly initialised model of the same
architecture has the same speed)::

    python benchmarks/gpu_overlap.py --out runs/gpu_overlap

Options: ``--checkpoint CKPT.safetensors`` (a trained model), ``--model '{type: edgenet, size: M}'``,
``--precision fp16``, ``--cuda-graphs``, ``--frames``, ``--size``, ``--require-speedup 1.3``.
Results go into docs/BENCHMARKS.md with the card and the command (the script prints the row).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="a .safetensors checkpoint (default: random weights)")
    p.add_argument("--model", default="{type: edgenet, size: S}", help="model spec when no checkpoint is given")
    p.add_argument("--size", default="1280x720", help="frame size WIDTHxHEIGHT (default 1280x720)")
    p.add_argument("--frames", type=int, default=300, help="timed frames per mode (default 300)")
    p.add_argument("--warmup", type=int, default=30, help="untimed frames per mode first (default 30)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per mode; medians are reported (default 5)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--cuda-graphs", action="store_true", help="replay the model as a CUDA graph (in both schedules)")
    p.add_argument("--timeline-frames", type=int, default=12, help="frames in the event timeline (default 12)")
    p.add_argument("--out", default="runs/gpu_overlap", help="folder for gpu_overlap.json and the timeline PNG")
    p.add_argument("--require-speedup", type=float, default=None,
                   help="exit 1 when two-slot FPS / sync FPS is below this (e.g. 1.3)")
    return p.parse_args(argv)


def open_backend(args):
    from edge_deblur.runtime.backends.torch_cuda import TorchCudaBackend

    if args.checkpoint:
        return TorchCudaBackend(args.checkpoint, precision=args.precision)
    import yaml

    from edge_deblur.models import build_model, to_deploy

    spec = yaml.safe_load(args.model)
    model = to_deploy(build_model(spec)).eval()
    return TorchCudaBackend(model=model, precision=args.precision)


def frame_stream(pool, n):
    for i in range(n):
        yield pool[i % len(pool)]


def timed(make_iter, n, warmup, torch):
    """Frames per second of one schedule over ``n`` frames after ``warmup`` untimed ones."""
    for _ in make_iter(warmup):
        pass
    torch.cuda.synchronize()
    t = time.perf_counter()
    count = sum(1 for _ in make_iter(n))
    torch.cuda.synchronize()
    return count / (time.perf_counter() - t)


def plot_timeline(timelines: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (the JSON has the timeline)")
        return False
    colours = {"upload": "tab:blue", "compute": "tab:orange", "download": "tab:green"}
    fig, axes = plt.subplots(len(timelines), 1, figsize=(12, 1.6 + 1.2 * len(timelines)), squeeze=False)
    for ax, (mode, events) in zip(axes[:, 0], timelines.items()):
        if not events:
            continue
        t0 = min(e["start_ms"] for e in events)
        slots = sorted({e["slot"] for e in events})
        for e in events:
            y = slots.index(e["slot"])
            ax.broken_barh([(e["start_ms"] - t0, max(e["end_ms"] - e["start_ms"], 1e-3))], (y - 0.35, 0.7),
                           facecolors=colours[e["stage"]])
            if e["stage"] == "compute":
                ax.text(e["start_ms"] - t0, y, str(e["index"]), va="center", fontsize=7)
        ax.set_yticks(range(len(slots)), [f"slot {s}" for s in slots])
        ax.set_title(mode)
        ax.set_xlabel("ms")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    fig.legend(handles, list(colours), loc="upper right", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_overlap: PyTorch is not installed (a CUDA build is needed)", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(f"gpu_overlap: no CUDA GPU visible to torch {torch.__version__}; run this on a CUDA machine",
              file=sys.stderr)
        return 2
    from edge_deblur.runtime.gpu_pipeline import run_sync
    from edge_deblur.runtime.verify import synthetic_frames

    w, h = (int(v) for v in args.size.lower().split("x"))
    torch.backends.cudnn.benchmark = True
    backend = open_backend(args)
    pool = synthetic_frames(8, w, h, seed=0)

    def sync_iter(n, timeline=False):
        ex = backend.sync_executor(timeline=timeline, cuda_graphs=args.cuda_graphs)
        try:
            yield from run_sync(ex, frame_stream(pool, n))
        finally:
            sync_iter.last = ex.timeline()
            ex.close()

    def slots_iter(n, timeline=False):
        sched = backend.pipeline(slots=2, timeline=timeline, cuda_graphs=args.cuda_graphs)
        try:
            yield from sched.run(frame_stream(pool, n))
        finally:
            slots_iter.last = sched.ex.timeline()
            sched.ex.close()

    # same pixels out of both schedules (same kernels, different ordering)
    a = list(sync_iter(3))
    b = list(slots_iter(3))
    same = all(np.array_equal(x, y) for x, y in zip(a, b))

    # each repeat times both schedules back to back; the median FPS of each and the median of
    # the per-repeat ratios are reported (a ratio measured within one repeat, not across them)
    runs = {"sync": [], "two-slot": []}
    for _ in range(args.repeats):
        runs["sync"].append(timed(sync_iter, args.frames, args.warmup, torch))
        runs["two-slot"].append(timed(slots_iter, args.frames, args.warmup, torch))
    fps = {k: float(np.median(v)) for k, v in runs.items()}
    ratios = [b / a for a, b in zip(runs["sync"], runs["two-slot"])]
    speedup = float(np.median(ratios))

    timelines = {}
    for name, it in (("sync", sync_iter), ("two-slot", slots_iter)):
        for _ in it(args.warmup):
            pass
        for _ in it(args.timeline_frames, timeline=True):
            pass
        timelines[name] = [vars(e) for e in it.last]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    card = torch.cuda.get_device_name()
    result = {
        "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:])),
        "gpu": card,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "model": args.checkpoint or args.model,
        "precision": args.precision,
        "cuda_graphs": args.cuda_graphs,
        "size": [w, h],
        "frames": args.frames,
        "repeats": args.repeats,
        "fps": fps,
        "fps_runs": runs,
        "speedup": speedup,
        "speedup_runs": ratios,
        "outputs_identical": same,
        "timeline": timelines,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    (out / "gpu_overlap.json").write_text(json.dumps(result, indent=2) + "\n")
    png = out / "gpu_overlap_timeline.png"
    plotted = plot_timeline(timelines, png)
    print(f"GPU {card}, torch {torch.__version__}, {args.precision}, {w}x{h}, {args.frames} frames")
    print(f"sync      {fps['sync']:8.1f} FPS")
    print(f"two-slot  {fps['two-slot']:8.1f} FPS   x{speedup:.2f}   (medians of {args.repeats}; outputs identical: {same})")
    print(f"wrote {out / 'gpu_overlap.json'}" + (f" and {png}" if plotted else ""))
    print("docs/BENCHMARKS.md row:")
    print(f"| {card} | {args.model if not args.checkpoint else Path(args.checkpoint).name} | {args.precision} | "
          f"{w}x{h} | {fps['sync']:.1f} | {fps['two-slot']:.1f} | {speedup:.2f}x | `{result['command']}` |")
    if not same:
        print("gpu_overlap: the two schedules gave different pixels", file=sys.stderr)
        return 1
    if args.require_speedup and speedup < args.require_speedup:
        print(f"gpu_overlap: speedup {speedup:.2f} < required {args.require_speedup}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
