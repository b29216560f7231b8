"""Deblur an archive on a Ray cluster with Ray Data (``pip install 'edge-deblur[ray]'``).

The tasks of ``edge_deblur.runtime.archive`` (an image, a video, or a row window of a large
raster) become a Ray dataset; ``map_batches`` runs them on an actor pool where every actor opens
the model once (with one GPU per actor where the cluster has GPUs and ``gpus_per_actor`` > 0).
Each call of an actor runs a group of tasks (``group_tasks``): a video or a raster window alone,
images several at a time, since Ray Data costs tens of milliseconds per call, as much as a small
image's whole inference. The driver collects the result rows as they arrive (a progress
bar), merges raster parts, writes manifests and returns the per-item table.

``address=None`` starts a local Ray instance (``num_cpus`` CPUs); an address (``host:port``,
``ray://host:port`` or ``auto``) joins an existing cluster; an address that does not answer
within ``connect_timeout`` seconds is a ``ClusterError`` naming it. The pool's settings are
checked before Ray starts (``check_pool_options``), the model is opened once in the driver
(``check_model``: a bad model is one error, not a traceback per actor), and a pool the cluster's
resources cannot hold (more GPUs per actor than the cluster has, ...) is a ``ClusterError`` within
seconds (``check_cluster_fits``) instead of actors waiting forever to be scheduled.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import socket
import time
from typing import Optional

from ..errors import ClusterError, InputError, require
from . import archive as A

log = logging.getLogger(__name__)


# modules imported by the worker processes that a local instance starts (its Ray Data actors)
PRELOAD = "ray.data,edge_deblur.runtime.ray_batch,edge_deblur.runtime.deblurrer,onnxruntime"


def _host_port(address: str) -> Optional[tuple[str, int]]:
    a = address.strip()
    default = 10001 if a.startswith("ray://") else 6379
    for prefix in ("ray://", "http://", "https://"):
        if a.startswith(prefix):
            a = a[len(prefix):]
    a = a.split("/")[0]
    if not a or a == "auto" or a == "local":
        return None
    host, _, port = a.rpartition(":") if ":" in a else (a, "", str(default))
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError:
        raise ClusterError(f"Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379 or ray://head:10001)") from None


def _number(value, flag: str, *, integer: bool, minimum: float, strict: bool = False, hint: str = ""):
    """InputError unless ``value`` is a (whole, with ``integer``) number >= ``minimum`` (> with ``strict``)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        what = "a whole number" if integer else "a number"
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise InputError(f"{flag} must be {what} {bound}, got {value!r}{hint}")


def check_pool_options(*, actors=None, cpus_per_actor=1, gpus_per_actor=0, rows_per_task=2048, num_cpus=None,
                       connect_timeout=5.0):
    """The pool's settings, before Ray starts: a zero or negative value would leave the actors
    unschedulable (Ray waits for them forever) or fail deep inside Ray."""
    if actors is not None:
        _number(actors, "--actors", integer=True, minimum=1, hint=" (or leave it out: CPUs / --cpus-per-actor)")
    _number(cpus_per_actor, "--cpus-per-actor", integer=False, minimum=0, strict=True, hint=" (e.g. 1 or 0.5)")
    _number(gpus_per_actor, "--gpus-per-actor", integer=False, minimum=0, hint=" (0: CPU actors)")
    _number(rows_per_task, "--rows-per-task", integer=True, minimum=1, hint=" (default 2048)")
    if num_cpus is not None:
        _number(num_cpus, "--num-cpus", integer=True, minimum=1, hint=" (or leave it out: all of this machine's CPUs)")
    _number(connect_timeout, "--connect-timeout", integer=False, minimum=0, strict=True, hint=" (seconds; default 5)")


def check_cluster_fits(resources: dict, *, cpus_per_actor: float, gpus_per_actor: float, actors=None,
                       where: str = "the local Ray instance"):
    """ClusterError when the cluster (``ray.cluster_resources()``) cannot hold one actor, or the
    ``actors`` asked for, instead of a pool that waits forever for resources that never come."""
    cpus, gpus = float(resources.get("CPU", 0) or 0), float(resources.get("GPU", 0) or 0)
    has = f"{where} has {cpus:g} CPUs and {gpus:g} GPUs"
    if cpus_per_actor > cpus or gpus_per_actor > gpus:
        asks = f"{cpus_per_actor:g} CPUs" + (f" and {gpus_per_actor:g} GPUs" if gpus_per_actor else "")
        fix = ("--gpus-per-actor 0 (CPU actors) or a cluster with GPUs (--ray ADDRESS)" if gpus_per_actor > gpus
               else f"--cpus-per-actor {cpus:g} or less" + (" (or a larger --num-cpus)" if "local" in where else ""))
        raise ClusterError(f"one actor asks for {asks} (--cpus-per-actor {cpus_per_actor:g}, --gpus-per-actor "
                           f"{gpus_per_actor:g}) but {has}; no actor could start: use {fix}")
    if actors is not None:
        if actors * cpus_per_actor > cpus or actors * gpus_per_actor > gpus:
            fit = int(cpus // cpus_per_actor)
            if gpus_per_actor:
                fit = min(fit, int(gpus // gpus_per_actor))
            raise ClusterError(f"--actors {actors} x (--cpus-per-actor {cpus_per_actor:g}, --gpus-per-actor "
                               f"{gpus_per_actor:g}) needs {actors * cpus_per_actor:g} CPUs and "
                               f"{actors * gpus_per_actor:g} GPUs but {has}; use --actors {max(1, fit)} or fewer")


def deblurrer_options(settings: dict) -> dict:
    """``Deblurrer.open`` keywords from the batch's settings: ``scene_cut`` and ``max_bad_frames``
    where they are given (else the defaults), and ``engine`` (a runtime profile's engine build
    options for the tensorrt backend: shapes, workspace_mb, dla_core ...; see deblur_cmd.engine_options)."""
    opts = dict(settings.get("engine") or {})
    opts.update({k: settings[k] for k in ("scene_cut", "max_bad_frames") if settings.get(k) is not None})
    return opts


def check_model(settings: dict, remote: bool = False) -> int:
    """Open the model once in the driver (with its probe frame, as eval and verify do) before any
    actor starts: a missing or broken model is one ModelError here, not a traceback from every
    actor. Returns the model's stride. A GPU-only model on a remote cluster is left to its nodes."""
    backend, device = settings.get("backend"), settings.get("device")
    needs_gpu = backend in ("tensorrt", "torch-cuda") or str(device or "").startswith("cuda")
    if remote and needs_gpu:
        return 1
    from .deblurrer import Deblurrer

    with Deblurrer.open(settings["model_file"], backend=backend, device=device, threads=1,
                        tile=settings.get("tile"), overlap=settings.get("overlap", 128),
                        **deblurrer_options(settings)) as d:
        return int(getattr(d, "stride", 1) or 1)


def check_reachable(address: str, timeout: float = 5.0):
    """Raise ClusterError unless something accepts a TCP connection at ``address`` within
    ``timeout`` seconds (ray.init would otherwise retry for minutes)."""
    _number(timeout, "--connect-timeout", integer=False, minimum=0, strict=True, hint=" (seconds; default 5)")
    hp = _host_port(address)
    if hp is None:
        return
    if address.strip().startswith("ray://"):
        import importlib.util

        if importlib.util.find_spec("grpc") is None:  # what ray.init would say only after the model loaded
            raise ClusterError(f"{address!r} is a Ray client address, which needs the Ray client: "
                               "pip install 'ray[client]'; or give the head's GCS address instead (HOST:6379)")
    try:
        with socket.create_connection(hp, timeout=timeout) as sock:
            answers = _answers_grpc(sock, timeout)
    except OSError as e:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address!r} ({hp[0]}:{hp[1]}: {e.strerror or e}) within {timeout:g} s; "
            "check the head node's address and port (ray status on the head), or drop --ray ADDRESS to run locally"
        ) from e
    where = ("the head's GCS listens on 6379 and the Ray client server on ray://HOST:10001 (the dashboard's "
             "8265 is not a cluster address); check the port with ray status on the head, or drop --ray ADDRESS "
             "to run locally")
    if answers is False:
        raise ClusterError(
            f"{address!r} ({hp[0]}:{hp[1]}) accepts connections but does not answer as a Ray cluster (no gRPC "
            f"reply within {timeout:g} s): {where}")
    if answers and not address.strip().startswith("ray://"):
        why = _gcs_refuses(hp, timeout)
        if why:
            raise ClusterError(
                f"{address!r} ({hp[0]}:{hp[1]}) answers gRPC but not as a Ray cluster's GCS ({why}): {where}")


_AUTH_CODES = re.compile(r"rpc_code: (7|16)\b|unauthenticated|permission denied|auth token", re.I)
_NO_SUCH_SERVICE = re.compile(r"status: 404\b|rpc_code: 12\b|unimplemented", re.I)


def _gcs_refuses(hp, timeout: float) -> Optional[str]:
    """Ask the server at ``hp`` for its cluster ID, as ``ray.init`` does first, with Ray's own GCS
    client: None when it answers (a Ray GCS), else why not. Any HTTP/2 server passes the SETTINGS
    probe (a proxy, another gRPC service); ``ray.init`` would then retry it once a second for about
    20 s, printing a warning each time. Retried here until ``timeout``, with the client's log
    lines kept off the terminal. None too where this Ray has no such client (a private API)."""
    try:
        from ray._raylet import InnerGcsClient
        standalone = InnerGcsClient.standalone   # (address, cluster_id, timeout_ms): fetches the cluster ID
    except (ImportError, AttributeError):
        return None
    deadline = time.monotonic() + timeout
    why = None
    while True:
        left_ms = max(100, int((deadline - time.monotonic()) * 1000))
        with _stderr_silenced():
            try:
                host = f"[{hp[0]}]" if ":" in hp[0] else hp[0]    # an IPv6 head: [::1]:6379
                standalone(f"{host}:{hp[1]}", None, left_ms)
                return None
            except ValueError:  # an address form this client does not parse: leave it to ray.init
                return None
            except Exception as e:  # noqa: BLE001 - RpcError (Received http2 header with status: 404, ...)
                why = f"{type(e).__name__}: {str(e).strip()[:200]}"
                if _AUTH_CODES.search(str(e)):  # a GCS that wants a token: Ray, which ray.init will say
                    return None
                if _NO_SUCH_SERVICE.search(str(e)):  # definite: no GCS service there (not one starting up)
                    return why
        if time.monotonic() + 0.5 >= deadline:
            return why
        time.sleep(0.5)


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 pointed at /dev/null (Ray's C++ client logs there, below Python)."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2: nothing to silence
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        os.close(saved)
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


def _answers_grpc(sock, timeout: float) -> Optional[bool]:
    """Whether the server at ``sock`` speaks HTTP/2, as Ray's GCS and client servers (gRPC) do: its
    first frame after our connection preface is its SETTINGS. Anything else (an HTTP/1 reply, a
    closed connection, silence) is False, so that a wrong port fails here in seconds instead of in
    ray.init's minutes of retries. None: not checked (TLS, where the preface would go unanswered)."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return None
    sock.settimeout(timeout)
    try:
        sock.sendall(_HTTP2_PREFACE)
        head = b""
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:  # a timeout or a reset
        return False
    return head[3] == 0x04


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None, connect_timeout: float = 5.0):
    """``ray.init`` for a local instance (no address) or a cluster; reuses a running session."""
    ray = require("ray", "ray")
    require("ray.data", "ray")
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None  # Ray's own convention for a cluster
    if address:
        check_reachable(address, connect_timeout)
    kw = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
              logging_level=logging.WARNING)
    # the actors import this package from the same place as the driver
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    # and import what an actor needs while the instance starts, not when the actor is created; Ray
    # runs its workers at nice 15 by default (below the driver), but here the workers do the work
    local_env = dict(env, RAY_preload_python_modules=os.environ.get("RAY_preload_python_modules", PRELOAD),
                     RAY_worker_niceness=os.environ.get("RAY_worker_niceness", "0"))
    try:
        if address:
            ray.init(address=address, runtime_env={"env_vars": env}, **kw)
        else:
            # A local instance inherits the driver's environment: set there, the workers that Ray
            # starts with the instance (before any task) serve the actors. A runtime_env would
            # make every actor wait for a fresh worker process to start and import Ray.
            with _environ(local_env):
                _init_local(ray, num_cpus, kw)
    except Exception as e:  # noqa: BLE001 - ray raises bare Exceptions for a node that does not start
        where = repr(address) if address else "a new local instance (ray.init)"
        raise ClusterError(f"cannot start or join Ray at {where}: {str(e).strip()[:300]}; "
                           "check `ray status`, free memory and CPU, or pass --ray ADDRESS of a running cluster") from e
    return ray


@contextlib.contextmanager
def _environ(env: dict):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _init_local(ray, num_cpus, kw, attempts: int = 3):
    """Start a local instance. Ray gives its raylet a fixed 30 s to register; on a heavily loaded
    machine that can run out, so a failed start is retried (after ray.shutdown) twice more."""
    for i in range(attempts):
        try:
            # "local": a new instance even where `ray start` left a cluster (or its stale address
            # file, /tmp/ray/ray_current_cluster) on this machine; join one with --ray ADDRESS
            ray.init(address="local", num_cpus=num_cpus, **kw)
            return
        except Exception as e:  # noqa: BLE001
            if i == attempts - 1 or "timed out during startup" not in str(e):
                raise
            log.warning("the local Ray instance did not start in time (%s); retrying", e)
            ray.shutdown()


def group_tasks(tasks: list[dict], n_actors: int, max_group: int = 16, calls_per_actor: int = 4) -> list[list[dict]]:
    """Tasks in groups, one group per actor call, in the order to run them.

    Ray Data costs a fixed amount per call (scheduling, the block in and out of the object store,
    the result rows back to the driver): tens of milliseconds on a small machine, as much as a
    320x180 image's whole inference. Images therefore go ``k`` to a call, with ``k`` up to
    ``max_group`` but small enough that every actor still gets about ``calls_per_actor`` calls of
    images (the last calls balance the actors). A video or a raster window is long enough to be a
    call of its own; these come first, so that no long task starts last."""
    heavy = [t for t in tasks if t["kind"] != "image"]
    images = [t for t in tasks if t["kind"] == "image"]
    k = max(1, min(max_group, math.ceil(len(images) / max(1, n_actors * calls_per_actor))))
    return [[t] for t in heavy] + [images[i:i + k] for i in range(0, len(images), k)]


class DeblurActor:
    """One per actor: opens the model once, then runs groups of tasks (a Ray Data batch of rows,
    each row a JSON list of tasks) and returns one result row per task."""

    def __init__(self, settings: dict):
        from .deblurrer import Deblurrer

        self.settings = settings
        device = settings.get("device")
        if device is None and settings.get("gpus_per_actor", 0) > 0:
            device = "cuda"
        self.d = Deblurrer.open(settings["model_file"], backend=settings.get("backend"), device=device,
                                threads=settings.get("threads"), tile=settings.get("tile"),
                                overlap=settings.get("overlap", 128), **deblurrer_options(settings))

    def __call__(self, batch: dict) -> dict:
        rows = []
        for group in batch["tasks"]:
            for task in json.loads(_scalar(group)):
                rows.append(A.run_task(self.d, task, self.settings))
        return {k: [r[k] for r in rows] for k in rows[0]}


def _scalar(v):
    return v.item() if hasattr(v, "item") else v


def run_archive(inputs, out_root, settings: dict, *, address: Optional[str] = None, actors: Optional[int] = None,
                cpus_per_actor: float = 1, gpus_per_actor: float = 0, rows_per_task: int = 2048,
                num_cpus: Optional[int] = None, progress: bool = False, connect_timeout: float = 5.0,
                verify_model: bool = True) -> dict:
    """Plan, run on Ray, finish. Returns ``{"items": [...], "ok", "failed", "skipped", "seconds",
    "frames", "frames_per_s"}`` (per-item rows: input, output, kind, status, error, tasks, frames).
    The options are checked before Ray starts, the model is opened once here (``verify_model``;
    False when the caller has just done it), and the pool against the cluster's resources."""
    check_pool_options(actors=actors, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor,
                       rows_per_task=rows_per_task, num_cpus=num_cpus, connect_timeout=connect_timeout)
    t0 = time.perf_counter()
    items = A.plan_archive(inputs, out_root, settings, rows_per_task=rows_per_task)
    tasks = [t for it in items if not it.skipped for t in it.tasks]
    rows_by_item: dict = {it.index: [] for it in items}
    ray = None
    t_run = time.perf_counter()
    if tasks:
        if verify_model:
            check_model(settings, remote=address is not None)
        ray = connect(address, num_cpus=num_cpus, connect_timeout=connect_timeout)
        import ray.data  # noqa: F401

        resources = ray.cluster_resources()
        check_cluster_fits(resources, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, actors=actors,
                           where=f"the Ray cluster at {address!r}" if address else "the local Ray instance")
        fit = int(float(resources.get("CPU", 1)) // cpus_per_actor)
        if gpus_per_actor:
            fit = min(fit, int(float(resources.get("GPU", 0)) // gpus_per_actor))
        n_actors = actors or max(1, min(len(tasks), fit))
        s = dict(settings, gpus_per_actor=gpus_per_actor, threads=settings.get("threads") or max(1, int(cpus_per_actor)))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.verbose_progress = False
        groups = group_tasks(tasks, n_actors)
        ds = ray.data.from_items([{"tasks": json.dumps(g)} for g in groups], override_num_blocks=len(groups))
        out = ds.map_batches(DeblurActor, fn_constructor_kwargs={"settings": s}, batch_size=1,
                             compute=ray.data.ActorPoolStrategy(size=n_actors), num_cpus=cpus_per_actor,
                             num_gpus=gpus_per_actor or None)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(tasks), unit="task", desc="batch", leave=False)
        t_run = time.perf_counter()
        try:
            for row in out.iter_rows():
                row = {k: _scalar(v) for k, v in row.items()}
                rows_by_item[int(row["item"])].append(row)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    table = []
    for it in items:
        if it.skipped:
            table.append({"item": it.index, "input": it.src, "output": it.dst, "kind": it.kind, "status": "skipped",
                          "error": "", "tasks": 0, "frames": 0, "seconds": 0.0, "reason": it.reason})
        else:
            table.append(A.finish_item(it, rows_by_item[it.index], out_root, settings))
    secs = time.perf_counter() - t0
    run_s = time.perf_counter() - t_run
    frames = sum(r["frames"] for r in table if r["status"] == "ok")
    return {
        "items": table, "ok": sum(r["status"] == "ok" for r in table),
        "failed": sum(r["status"] == "failed" for r in table), "skipped": sum(r["status"] == "skipped" for r in table),
        "tasks": len(tasks), "frames": frames, "seconds": round(secs, 3), "run_seconds": round(run_s, 3),
        "frames_per_s": round(frames / run_s, 3) if frames and run_s > 0 else None,
        "address": address or "local",
    }
