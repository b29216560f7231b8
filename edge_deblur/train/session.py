"""One-call GPU training session: everything a lent GPU should do, in one command that ends inside
the device tool's 600-second limit and leaves its results in one folder (``$OUT``).

1. checks the device (a clear error without CUDA, unless ``dry_run``: then the same steps on CPU);
2. trains every job (a training recipe) at once, each in its own process on the one GPU, with the
   batches made on the GPU from the data pack (``data.synth: torch``), resuming from the job's
   committed checkpoint (``checkpoints/gpu/<name>.safetensors``) so each lent GPU continues where
   the last one stopped, for a wall-clock budget (``train.time_limit``), sampling GPU utilization
   and memory with ``nvidia-smi`` meanwhile;
3. evaluates each trained model on the validation pairs unpacked from the validation pack
   (``edge-deblur eval``);
4. runs the GPU tests (``pytest -m gpu``) in the time that is left;
5. writes at most 8 files to ``out``: per job ``<name>.safetensors`` (EMA weights in float16)
   and ``<name>.log.csv``; ``session.json`` (card, samples/s, GPU
   utilization, metrics); ``session.log``; ``gpu_tests.log``.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import BackendError, ConfigError, InputError

log = logging.getLogger("edge_deblur.session")

__all__ = ["Job", "run_session", "parse_job", "device_report"]



MAX_OUT_FILES = 8  # what the device tool brings back from $OUT
# a job's start-up (imports, CUDA, decoding the pack onto the GPU, the start checkpoint) and its
# final save are outside train.time_limit's clock; past train time + this, it gets SIGTERM
START_SLACK_S = 45.0


@dataclass
class Job:
    config: str
    overrides: list[str] = field(default_factory=list)
    name: str = ""


def parse_job(text: str) -> Job:
    """``"CONFIG key=value ..."``: a training recipe and its overrides for this session (one
    shell word; quote values with spaces)."""
    import shlex

    parts = shlex.split(text)
    if not parts:
        raise ConfigError("empty --job; give 'CONFIG [key=value ...]'")
    over = parts[1:]
    bad = [o for o in over if "=" not in o]
    if bad:
        raise ConfigError(f"--job {text!r}: {bad[0]!r} is not key=value; write 'CONFIG key=value ...'")
    return Job(parts[0], over)


def device_report() -> dict:
    """The card as torch and nvidia-smi see it (empty values where there is none)."""
    import torch

    rep = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        rep.update(gpu=p.name, gpu_mem_gib=round(p.total_memory / 2**30, 1), sm=p.multi_processor_count,
                   capability=f"{p.major}.{p.minor}")
    if shutil.which("nvidia-smi"):
        try:
            rep["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                                "--format=csv,noheader"], capture_output=True, text=True,
                                               timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:  # pragma: no cover - depends on the machine
            rep["nvidia_smi"] = f"failed: {e}"
    return rep


class _GpuSampler:
    """``nvidia-smi`` utilization/memory every 0.5 s while training runs (nothing without it)."""

    def __init__(self, path: Path):
        self.path = path
        self.proc = None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self.f = open(self.path, "w")
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used,power.draw",
                                          "--format=csv,noheader,nounits", "-lms", "500"], stdout=self.f,
                                         stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
            self.f.close()

    def summary(self, skip_s: float = 20.0) -> dict:
        """Mean and max utilization after the first ``skip_s`` seconds (start-up, pack decoding)."""
        if not self.path.is_file():
            return {}
        rows = []
        for line in self.path.read_text().splitlines():
            parts = [p.strip() for p in line.split(",")]
            try:
                rows.append((float(parts[1]), float(parts[2]), float(parts[3])))
            except (IndexError, ValueError):
                continue
        if not rows:
            return {}
        steady = rows[int(skip_s / 0.5):] or rows
        util = [r[0] for r in steady]
        return {"gpu_util_mean": round(sum(util) / len(util), 1), "gpu_util_max": max(util),
                "gpu_mem_used_mib_max": max(r[1] for r in rows), "power_w_mean": round(sum(r[2] for r in steady) / len(steady), 1),
                "samples": len(rows)}


def _throughput(csv_path: Path, batch: int) -> dict:
    """Iterations/s and samples/s of the training log's steady rows (the first logged row, which
    holds start-up and cudnn autotuning, is left out when there are more)."""
    if not csv_path.is_file():
        return {}
    rows = [r for r in csv.DictReader(open(csv_path)) if r.get("it_per_s")]
    if not rows:
        return {}
    steady = rows[1:] if len(rows) > 1 else rows
    its = [float(r["it_per_s"]) for r in steady]
    it = sum(its) / len(its)
    return {"it_per_s": round(it, 2), "samples_per_s": round(it * batch, 1), "log_rows": len(steady)}


def _ckpt_for_out(src: Path, dst: Path) -> Path:
    """Write a checkpoint's weights to ``dst`` in float16: half the bytes to bring back and commit
    (the device tool's files are < 16 MiB, and the whole tree it sends, committed checkpoints
    included, < 64 MiB); the meta says ``stored: float16``."""
    from ..models.checkpoint import read_checkpoint, save_checkpoint

    state, spec, cfg, meta = read_checkpoint(src)
    half = {k: (v.half().contiguous() if v.is_floating_point() else v.contiguous()) for k, v in state.items()}
    save_checkpoint(dst, half, spec, cfg, dict(meta, stored="float16"))
    return dst


def job_overrides(job, pack, out_dir, seed: int, start_from) -> list:
    """The overrides a job trains with on the device machine: the packed data, its own folder and
    seed, then the job's own overrides, then where it starts from. ``start_from`` comes last, so a
    committed checkpoint (the previous GPU session's) beats an ``init_from`` the job names."""
    # the device machine has no ../shared: validation runs at the end, on the packed sets
    over = ["data.synth=torch", f"data.pack={pack}", f"out_dir={out_dir}", "data.val_pairs=null",
            "data.val_synthetic=null", "data.val_sets=[]", f"train.seed={seed}"]
    over += list(job.overrides)
    if start_from:
        over.append(f"train.init_from={start_from}")
    return over


def _committed_init(job_name: str, ckpt_dir: Path) -> Optional[Path]:
    p = ckpt_dir / f"{job_name}.safetensors"
    return p if p.is_file() else None


def _prior_iters(path: Optional[Path]) -> int:
    if path is None:
        return 0
    from ..models.checkpoint import read_checkpoint

    meta = read_checkpoint(path)[3]
    return int(meta.get("total_iters", meta.get("iters", 0)))


def check_init(spec: dict, path: str) -> None:
    """Raise ``ModelError`` unless the checkpoint at ``path`` loads into ``spec`` (or grows into
    it: more blocks, new blocks as identities), as ``train.init_from`` will need."""
    from ..errors import ModelError
    from ..models import build_model
    from ..models.checkpoint import read_checkpoint

    state, ispec, _, _ = read_checkpoint(path)
    model = build_model(spec)
    try:
        model.load_state_dict(state)
        return
    except RuntimeError as e:
        first = str(e).splitlines()[0]
    try:
        from ..models.grow import grow_to

        small = build_model(ispec)
        small.load_state_dict(state)
        grow_to(small, model.spec)
    except (ValueError, RuntimeError) as ge:
        raise ModelError(f"checkpoint {path!r} is a {ispec} and does not fit the job's model {model.spec} ({first}), "
                         f"nor grow into it ({ge}); move it aside or train the model it was made for") from ge


def run_session(jobs: list[Job], out: str | os.PathLike, pack: str, val_pack: Optional[str] = None,
                budget_s: float = 540.0, train_s: Optional[float] = None, dry_run: bool = False,
                ckpt_dir: str | os.PathLike = "checkpoints/gpu", init: Optional[str] = None,
                work_dir: str | os.PathLike = "runs/gpu", tests: bool = True) -> dict:
    """Run the session (see the module docstring); returns what ``session.json`` holds.

    ``budget_s``: wall-clock seconds for the whole session (keep it well inside the call's limit);
    ``train_s``: training seconds (default: what the budget leaves after start-up, evaluation and
    tests). ``init``: a checkpoint to start jobs from that have no committed checkpoint (grown
    into larger edgenets). ``dry_run``: run on the CPU (a check of the command, not training).
    """
    t0 = time.time()
    import torch

    from ..config import load_train_config
    from ..data.pack import read_manifest, unpack_pairs

    if not jobs:
        raise ConfigError("no jobs: give at least one --job 'CONFIG [key=value ...]'")
    if not dry_run and not torch.cuda.is_available():
        raise BackendError(
            f"no CUDA device: torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no GPU. Run this on a "
            "lent GPU machine (docs/GPU_TRAINING.md), or add --dry-run to check the command on the CPU")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ckpt_dir = Path(ckpt_dir)
    logfile = out / "session.log"
    handler = logging.FileHandler(logfile)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root_log = logging.getLogger("edge_deblur")
    root_log.addHandler(handler)
    root_log.setLevel(logging.INFO)
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "dry_run": dry_run,
                    "budget_s": budget_s, "device": device_report(), "jobs": {}}
    try:
        log.info(f"session: {len(jobs)} job(s), budget {budget_s:.0f} s, device {report['device']}")
        manifest = read_manifest(pack)
        report["pack"] = {"path": str(pack), "digest": manifest["digest"], "counts": manifest["counts"]}
        # resolve every job first: a bad config fails here, before any training starts
        resolved = []
        for job in jobs:
            base = load_train_config(job.config, job.overrides)
            name = job.name or base.name
            committed = _committed_init(name, ckpt_dir)
            # resume > the recipe's own init_from (with the job's overrides) > --init
            start_from = str(committed) if committed else (base.train.init_from or init)
            prior = _prior_iters(Path(start_from)) if start_from else 0
            over = job_overrides(job, pack, work / name, base.train.seed + prior, start_from)
            cfg = load_train_config(job.config, over)
            if start_from:
                check_init(cfg.model, start_from)
            resolved.append((name, job, over, cfg, start_from, prior))
            if (work / name / "state.pt").exists():  # a fresh run each session: the committed checkpoint is the state
                shutil.rmtree(work / name)
        names = [r[0] for r in resolved]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InputError(f"two jobs are named {dup[0]!r}: their files in $OUT would overwrite each other; "
                             "give each its own name (a job's name= override)")
        if 2 * len(resolved) + 3 > MAX_OUT_FILES:
            raise InputError(f"{len(resolved)} jobs would leave {2 * len(resolved) + 3} files in $OUT (a checkpoint and "
                             f"a log each, and the session's 3), over the {MAX_OUT_FILES} the device tool brings back; "
                             f"run at most {(MAX_OUT_FILES - 3) // 2} jobs per call")
        val_dirs = {}
        if val_pack:
            val_dirs = {Path(r).name: d for r, d in unpack_pairs(val_pack, work / "val").items()}
            report["val_sets"] = sorted(val_dirs)
        # time plan: start-up and evaluation reserve, then tests in what is left
        reserve = 25.0 + 20.0 * len(resolved) + (60.0 if tests else 0.0)
        t_train = float(train_s) if train_s else max(5.0, budget_s - (time.time() - t0) - reserve)
        t_train = min(t_train, max(5.0, budget_s - (time.time() - t0) - START_SLACK_S * len(resolved)))
        report["train_s"] = round(t_train, 1)
        procs, stopped = [], set()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path.cwd())] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
                   PYTHONUNBUFFERED="1")
        sampler = _GpuSampler(work / "nvidia_smi.csv")
        with sampler:
            for name, job, over, cfg, start_from, prior in resolved:
                cmd = [sys.executable, "-m", "edge_deblur", "train", "--config", job.config, "--no-progress",
                       *over, f"train.time_limit={t_train:.0f}"]
                log.info(f"[{name}] {' '.join(cmd[2:])}")
                f = open(work / f"{name}.train.log", "w")
                procs.append((name, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env), f))
            # start-up (imports, pack decoding) is not in train.time_limit's clock; the budget is the
            # hard limit: past it a job is stopped with SIGTERM, and it still saves a checkpoint
            deadline = max(time.time() + t_train + START_SLACK_S,
                           t0 + budget_s - 20.0 * len(resolved) - (60.0 if tests else 0.0))
            for name, p, f in procs:
                try:
                    p.wait(max(1.0, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    log.info(f"[{name}] still running at its deadline: stopping it (it saves a checkpoint)")
                    stopped.add(name)
                    p.terminate()
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        p.kill()
                f.close()
        report["gpu"] = sampler.summary()
        for name, p, _ in procs:
            tail = (work / f"{name}.train.log").read_text().splitlines()[-15:]
            for line in tail:
                log.info(f"[{name}] {line}")
            if p.returncode != 0:
                log.info(f"[{name}] training exited with {p.returncode}")
        for (name, job, over, cfg, start_from, prior), (_, p, _) in zip(resolved, procs):
            run_dir = work / name
            last = run_dir / "last.safetensors"
            entry = {"config": job.config, "overrides": job.overrides, "init_from": start_from, "prior_iters": prior,
                     "batch_size": cfg.train.batch_size, "crop": cfg.data.crop, "exit_code": p.returncode,
                     "stopped_at_deadline": name in stopped}
            entry.update(_throughput(run_dir / "log.csv", cfg.train.batch_size))
            if last.is_file():
                from ..models.checkpoint import read_checkpoint

                meta = read_checkpoint(last)[3]
                entry.update(iters=meta.get("iters"), total_iters=meta.get("total_iters"),
                             params=meta.get("params"), params_deployed=meta.get("params_deployed"), gmacs_1280x720=meta.get("gmacs_1280x720"))
                dst = _ckpt_for_out(last, out / f"{name}.safetensors")
                entry["checkpoint"] = dst.name
                entry["metrics"] = _evaluate(last, val_dirs, dry_run, env, t0 + budget_s)
            if (run_dir / "log.csv").is_file():
                shutil.copyfile(run_dir / "log.csv", out / f"{name}.log.csv")
            report["jobs"][name] = entry
            log.info(f"[{name}] {json.dumps({k: v for k, v in entry.items() if k != 'metrics'})}")
            met = entry.get("metrics", {})
            for vs, m in met.get("sets", {}).items():
                log.info(f"[{name}] {vs}: {m.get('psnr', float('nan')):.3f} dB, gain {m.get('psnr_gain', float('nan')):+.3f}, "
                         f"tone-aligned {m.get('tone_gain', float('nan')):+.3f}")
            if "sets" not in met and met:
                log.info(f"[{name}] evaluation: {met}")
            elif met:
                log.info(f"[{name}] mean of the per-set gains {met.get('mean_gain')}; real scenes below input: "
                         f"{met.get('real_below_input')}")
        left = budget_s - (time.time() - t0)
        if tests and left > 45:
            report["gpu_tests"] = _gpu_tests(out / "gpu_tests.log", left - 15, env)
        else:
            report["gpu_tests"] = {"skipped": f"{left:.0f} s left" if tests else "off"}
        report["seconds"] = round(time.time() - t0, 1)
        log.info(f"session done in {report['seconds']} s")
    finally:
        (out / "session.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        root_log.removeHandler(handler)
        handler.close()
    return report


def _evaluate(ckpt: Path, val_dirs: dict, dry_run: bool, env: dict, end: float) -> dict:
    """``edge-deblur eval`` of one checkpoint on every validation folder at once (torch backend,
    on the GPU): its JSON report (per set PSNR/SSIM/tone-aligned gains, the mean of the per-set
    gains, real scenes below their input)."""
    if not val_dirs:
        return {}
    left = end - time.time()
    if left < 15:
        return {"skipped": f"{left:.0f} s left"}
    cmd = [sys.executable, "-m", "edge_deblur", "eval", "--model", str(ckpt), "--backend",
           "torch" if dry_run else "torch-cuda", "--json"]
    for d in val_dirs.values():
        cmd += ["--data", str(d)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10.0, left - 10), env=env)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    if r.returncode != 0:
        return {"error": (r.stderr or r.stdout).strip()[-400:]}
    full = json.loads(r.stdout.strip().splitlines()[-1])
    return {k: v for k, v in full.items() if k != "model"}


def _gpu_tests(path: Path, seconds: float, env: dict) -> dict:
    """``pytest -m gpu`` (the tests that need a GPU) within ``seconds``; the log goes to ``path``.
    The tests are the checkout's (``tests/`` beside the package), run from the checkout whatever
    the working directory (from elsewhere pytest found no ``tests`` and the session still said 0)."""
    root = Path(__file__).resolve().parents[2]
    tests = root / "tests"
    if not tests.is_dir():
        path.write_text(f"no tests folder at {tests}: the GPU tests run from a checkout of the repository\n")
        return {"exit_code": None, "summary": f"skipped: no tests folder at {tests}", "seconds": 0.0}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(tests)]
    t = time.time()
    with open(path, "w") as f:
        try:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=seconds, env=env, cwd=str(root))
            code = r.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    tail = path.read_text().strip().splitlines()[-1:] if path.is_file() else []
    return {"exit_code": code, "summary": tail[0] if tail else "", "seconds": round(time.time() - t, 1)}
