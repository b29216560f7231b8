"""ONNX Runtime backend: CPU by default; CUDA or TensorRT execution providers when present and
asked for (``device="cuda"`` / ``device="tensorrt"`` or an explicit ``providers`` list).

Recurrent models are supported generically: graph inputs named ``state_in*`` and outputs named
``state_out*`` (paired by suffix) are a hidden state that :meth:`infer_state` takes and returns;
:meth:`zero_state` makes the initial state. A state tensor is ``(N, C, H / s, W / s)`` with C
from the graph and ``s`` from the metadata key ``edge_deblur.state_scale.<name>`` (or the model
folder's manifest; a state without either is refused).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ...errors import BackendError, DependencyError, ModelError
from ..manifest import verify_artifact
from .base import Backend

log = logging.getLogger(__name__)

_DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def cpu_cores() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def bounded_threads(threads: int | None) -> int:
    """``threads`` (None: all cores), at most the cores this process may use: more threads than
    cores only contend (and ``--threads 100000`` would try to create 100000 threads). Warns when
    it lowers the count; InputError for a count below 1."""
    cores = cpu_cores()
    if threads is None:
        return cores
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        from ...errors import InputError

        raise InputError(f"threads must be a positive integer (at most the {cores} cores here), got {threads!r}")
    if threads > cores:
        log.warning("%d threads asked but this process may use %d cores; using %d", threads, cores, cores)
        return cores
    return threads


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - base dependency
        raise DependencyError(f"onnxruntime is not installed ({e}); pip install onnxruntime") from e
    return ort


def session_options(threads: int | None = None):
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = bounded_threads(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        path,
        device: str | None = None,
        providers: list | None = None,
        threads: int | None = None,
        stride: int | None = None,
        verify: bool = True,
    ):
        super().__init__()
        ort = _ort()
        p = Path(path)
        if not p.is_file():
            raise ModelError(f"model file not found: {str(p)!r}; pass an .onnx file (edge-deblur export CKPT -o DIR)")
        manifest, entry = verify_artifact(p) if verify else ({}, None)
        device = (device or "cpu").lower()
        if providers is None:
            if device not in _DEVICE_PROVIDERS:
                raise BackendError(f"unknown ONNX Runtime device {device!r}; use one of {', '.join(_DEVICE_PROVIDERS)}")
            providers = list(_DEVICE_PROVIDERS[device])
            available = ort.get_available_providers()
            if providers[0] not in available:
                raise BackendError(
                    f"ONNX Runtime here has no {providers[0]} (available: {', '.join(available)}); "
                    "install onnxruntime-gpu for CUDA/TensorRT, or use device='cpu'"
                )
        self.threads = bounded_threads(threads)
        try:
            self._sess = ort.InferenceSession(str(p), session_options(self.threads), providers=providers)
        except Exception as e:  # InvalidProtobuf, Fail, NoSuchFile, RuntimeException ...
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(
                f"cannot load ONNX model {str(p)!r}: {msg}; the file is corrupt, truncated or not an ONNX "
                "model: re-export it (edge-deblur export CKPT -o DIR)"
            ) from e
        self.path = p
        self.providers = self._sess.get_providers()
        meta = dict(self._sess.get_modelmeta().custom_metadata_map or {})
        self.metadata = meta
        self.manifest = dict(manifest)
        self.artifact = dict(entry or {})

        def from_meta(key, cast):
            v = meta.get(f"edge_deblur.{key}")
            try:
                return cast(v) if v is not None else None
            except ValueError:
                return None

        self.stride = int(stride or self.manifest.get("stride") or from_meta("stride", int) or 1)
        self.precision = str(self.artifact.get("precision") or from_meta("precision", str) or "fp32")
        mpp = self.manifest.get("macs_per_pixel") or from_meta("macs_per_pixel", float)
        self.macs_per_pixel = float(mpp) if mpp else None

        ins = self._sess.get_inputs()
        outs = self._sess.get_outputs()
        names_in = [i.name for i in ins]
        names_out = [o.name for o in outs]
        main_in = [n for n in names_in if not n.startswith("state_in")]
        main_out = [n for n in names_out if not n.startswith("state_out")]
        if len(main_in) != 1 or len(main_out) < 1:
            raise ModelError(
                f"{str(p)!r} has inputs {names_in} and outputs {names_out}; an edge-deblur model has one "
                "image input (plus optional state_in* inputs) and an image output"
            )
        self.input_name = "input" if "input" in main_in else main_in[0]
        self.output_name = "output" if "output" in main_out else main_out[0]
        in_meta = ins[names_in.index(self.input_name)]
        self.input_dtype = _ORT_TYPES.get(in_meta.type, np.float32)
        n0 = in_meta.shape[0] if in_meta.shape else None
        if isinstance(n0, int) and n0 > 0:  # exported with a fixed batch (e.g. 1): batches are split to it
            self.max_batch = n0
        self.state_specs = []
        for i in ins:
            if not i.name.startswith("state_in"):
                continue
            out_name = "state_out" + i.name[len("state_in"):]
            if out_name not in names_out:
                raise ModelError(f"{str(p)!r}: state input {i.name!r} has no matching output {out_name!r} (the graph's "
                                 f"outputs: {names_out}); a recurrent model needs a state_outX for every state_inX: "
                                 "re-export it with edge-deblur export CHECKPOINT -o DIR")
            shape = list(i.shape)
            ch = shape[1] if len(shape) > 1 and isinstance(shape[1], int) else None
            if ch is None:
                raise ModelError(f"{str(p)!r}: state input {i.name!r} needs a fixed channel count, got shape {shape}")
            scale = from_meta(f"state_scale.{i.name}", int) or next(
                (int(e["scale"]) for e in self.manifest.get("state") or [] if e.get("input") == i.name and e.get("scale")),
                None)
            if not scale:  # a guess would make a zero state of the wrong size, failing deep in the graph
                raise ModelError(f"{str(p)!r}: state input {i.name!r} has no scale (metadata "
                                 f"'edge_deblur.state_scale.{i.name}', or the manifest's state entry): how much "
                                 "smaller than the frame the state is cannot be known; re-export it with "
                                 "edge-deblur export CHECKPOINT -o DIR")
            self.state_specs.append(
                {"input": i.name, "output": out_name, "channels": ch, "scale": scale, "rank": len(shape),
                 "dtype": _ORT_TYPES.get(i.type, np.float32)}
            )
        paired = {s["output"] for s in self.state_specs}
        orphans = [n for n in names_out if n.startswith("state_out") and n not in paired]
        if orphans:
            raise ModelError(
                f"{str(p)!r}: state output(s) {orphans} have no matching input "
                f"{['state_in' + n[len('state_out'):] for n in orphans]}; a recurrent model needs a state_inX for "
                "every state_outX (re-export it with edge-deblur export)"
            )
        kind = self.manifest.get("kind") or meta.get("edge_deblur.kind")
        if kind is not None and kind != ("recurrent" if self.state_specs else "image"):
            raise ModelError(
                f"{str(p)!r}: the manifest says a {kind} model but the graph has "
                f"{'state inputs ' + str([s['input'] for s in self.state_specs]) if self.state_specs else 'no state inputs'}; "
                "the manifest belongs to another model: re-export it (edge-deblur export CKPT -o DIR)"
            )
        self.kind = "recurrent" if self.state_specs else "image"
        self._out_names = [self.output_name] + [s["output"] for s in self.state_specs]

    # ------------------------------------------------------------------------------------------
    def _check(self, x: np.ndarray) -> np.ndarray:
        self.check_input(x)
        if x.dtype != self.input_dtype:
            x = x.astype(self.input_dtype)
        return np.ascontiguousarray(x)

    def _run(self, feeds: dict):
        try:
            return self._sess.run(self._out_names, feeds)
        except Exception as e:
            raise BackendError(f"ONNX Runtime failed on {self.path.name}: {str(e).strip()[:500]}") from e

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.state_specs:
            y, _ = self.infer_state(x, self.zero_state(*self._nhw(x)))
            return y
        y = self._run({self.input_name: self._check(x)})[0]
        return y if y.dtype == np.float32 else y.astype(np.float32)

    @staticmethod
    def _nhw(x):
        return x.shape[0], x.shape[2], x.shape[3]

    def state_shapes(self, n: int, h: int, w: int) -> dict:
        """name -> shape of each state tensor for a batch of n frames of h x w (padded)."""
        return {s["input"]: tuple([n, s["channels"]] + [h // s["scale"], w // s["scale"]][: max(0, s["rank"] - 2)])
                for s in self.state_specs}

    def zero_state(self, n: int, h: int, w: int) -> dict:
        specs = {s["input"]: s for s in self.state_specs}
        return {k: np.zeros(shape, specs[k]["dtype"]) for k, shape in self.state_shapes(n, h, w).items()}

    def infer_state(self, x: np.ndarray, state: dict) -> tuple[np.ndarray, dict]:
        from ..stream_state import check_state

        feeds = {self.input_name: self._check(x)}
        check_state(self.state_shapes(*self._nhw(x)), state, self.path.name)  # no allocation per frame
        feeds.update(state)
        outs = self._run(feeds)
        new = {s["input"]: o for s, o in zip(self.state_specs, outs[1:])}
        y = outs[0]
        return (y if y.dtype == np.float32 else y.astype(np.float32)), new

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "providers": self.providers,
            "threads": self.threads,
            "precision": self.precision,
            "stride": self.stride,
        }

    def close(self):
        self._sess = None
