"""The ``Deblurrer`` facade: frames in, deblurred frames out, any backend.

    from edge_deblur import Deblurrer
    with Deblurrer.open() as deblur:           # the bundled default model, ONNX Runtime on the CPU
        sharp = deblur(frame)                  # HxWx3 BGR uint8 -> same shape and dtype

Any frame size works (padded to the model's stride and cropped back); uint8, uint16 and float32
frames keep their dtype; grayscale (HxW, HxWx1) and BGRA frames keep their layout. Frames larger
than ``tile`` are split and blended (``edge_deblur.runtime.tiling``). Recurrent models (graph
inputs ``state_in*``) get their hidden state carried from frame to frame
(``edge_deblur.runtime.stream_state``): it starts at zeros and is reset by :meth:`Deblurrer.reset`,
whenever the frame size changes, and at a scene cut detected from the frames' colour histograms
(``scene_cut``: the threshold, None or 0 to turn it off). One Deblurrer is one stream: open one per
camera (or share a backend with :meth:`Deblurrer.for_stream`).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from ..errors import BackendError, InputError
from .output_guard import OutputGuard, probe_model, probe_shape
from .preprocess import FrameInfo, frame_to_tensor, tensor_to_frame
from .stream_state import DEFAULT_SCENE_CUT, StreamState, check_threshold
from .tiling import check_tile_overlap
from .tiling import tiled_infer

log = logging.getLogger(__name__)


class UnknownOptionError(InputError, TypeError):
    """An unknown keyword argument to :meth:`Deblurrer.open` (a TypeError too, as Python raises for one)."""


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _open_keywords(backend_class: str) -> list[str]:
    """The keywords :meth:`Deblurrer.open` accepts: its own, ``select``, and those of the backend
    class named ``backend_class`` (already imported: it is the one that refused a keyword)."""
    import inspect
    import sys

    skip = {"self", "path", "opts"}
    names = [n for n in inspect.signature(Deblurrer.open).parameters if n not in skip] + ["select"]
    for mod in [m for k, m in list(sys.modules.items()) if k.startswith(f"{__package__}.backends.")]:
        c = getattr(mod, backend_class, None)
        if isinstance(c, type):
            for n, p in inspect.signature(c.__init__).parameters.items():
                if n not in skip and n not in names and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                    names.append(n)
            break
    return names


class Deblurrer:
    """Frames in, deblurred frames out: ``Deblurrer.open(model)`` (the bundled model by default),
    then ``deblur(frame)`` (any size; uint8, uint16 or float32; BGR, or RGB with ``rgb=True``;
    gray and BGRA keep their layout) returns a new array of the same shape and dtype. The input is
    never modified and no output is reused, so outputs may be kept.

    Threads: an image model's instance may be called from several threads at once (the backends'
    inference calls are thread-safe); a recurrent model's state belongs to one stream, so give
    each camera or thread its own :meth:`for_stream` (same loaded model, own state), and keep the
    Deblurrer it came from open while they run. ``close()`` (or ``with``) frees the model; a
    closed Deblurrer refuses frames with an error that says so.

    See the module docstring for tiling, recurrent state and scene cuts, and :meth:`open` for the
    model, backend and device choices."""

    def __init__(self, backend, rgb: bool = False, tile=None, overlap: int = 128, tile_batch: int = 1, model=None,
                 scene_cut: float | None = DEFAULT_SCENE_CUT, max_bad_frames: int = 30):
        self._closed = False
        self._parent: "Deblurrer | None" = None
        self.backend = backend
        self.rgb = bool(rgb)
        self.tile = tile
        self.overlap = int(overlap)
        self.tile_batch = int(tile_batch)
        self.model = str(model) if model is not None else str(getattr(backend, "path", ""))
        self.stride = int(getattr(backend, "stride", 1) or 1)
        self.recurrent = bool(getattr(backend, "state_specs", None))
        if tile is not None:
            if _is_int(tile):
                t = (tile, tile)
                self.tile = tile = int(tile)  # numpy integers too (tiled_infer wants an int or a pair)
            else:
                # a float, bool, string, or anything that is not an int pair, is refused with one message
                pair = isinstance(tile, (tuple, list)) or (isinstance(tile, np.ndarray) and tile.ndim == 1)
                t = tuple(tile) if pair else ()
            if len(t) != 2 or any(not _is_int(v) or v < self.stride for v in t):
                raise InputError(f"tile must be a positive integer (or (height, width)) >= the stride {self.stride}, got {tile!r}")
            if self.recurrent:
                raise InputError("tiling is not supported for recurrent models (their state covers the whole frame); "
                                 "use tile=None (CLI: drop --tile) or an image model")
        if self.overlap < 0:
            raise InputError(f"overlap must be >= 0, got {overlap!r}")
        check_tile_overlap(tile, self.overlap, self.stride)  # at open, not at the first frame larger than the tile
        check_threshold(scene_cut)  # checked for image models too: a bad value is a mistake either way
        self.stream = StreamState(backend, scene_cut) if self.recurrent else None
        self.scene_cut = self.stream.scene_cut if self.stream is not None else None
        self.frames = 0
        self._owns_backend = True
        self.guard = OutputGuard(max_bad_frames, Path(self.model).name or "model")

    @classmethod
    def open(
        cls,
        model=None,
        backend: str | None = None,
        rgb: bool = False,
        tile=None,
        overlap: int = 128,
        device: str | None = None,
        threads: int | None = None,
        tile_batch: int = 1,
        scene_cut: float | None = DEFAULT_SCENE_CUT,
        max_bad_frames: int = 30,
        probe: bool = True,
        **opts,
    ) -> "Deblurrer":
        """Open ``model`` (.onnx, .safetensors, .engine, or a model folder; None: the bundled
        default) with ``backend`` (default: from the file) on ``device``. For a model folder on
        the CPU, ``select="features"`` (default) picks the file by the CPU's instruction sets,
        ``select="measure"`` times the candidates once and caches the choice per machine;
        ``info["selection"]`` says which file and why. With ``probe`` a small
        probe frame checks that the model returns finite frames of its input's shape
        (``edge_deblur.runtime.output_guard``); NaN/Inf outputs later are passed through as the
        input frame and fail the run after ``max_bad_frames`` in a row."""
        from .backends import open_backend

        if model is None:
            from .bundled import default_model_path

            model = default_model_path()
        try:
            b = open_backend(model, backend, device=device, threads=threads, **opts)
        except TypeError as e:
            # an unknown keyword in **opts reaches the backend's __init__: name it as ours
            m = re.search(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'", str(e))
            if m is None or m.group(2) not in opts:
                raise
            raise UnknownOptionError(
                f"Deblurrer.open() got an unknown keyword argument {m.group(2)!r}; "
                f"it accepts {', '.join(_open_keywords(m.group(1)))}"
            ) from e
        try:
            d = cls(b, rgb=rgb, tile=tile, overlap=overlap, tile_batch=tile_batch, model=getattr(b, "path", model),
                    scene_cut=scene_cut, max_bad_frames=max_bad_frames)
            if probe:
                d.probe()
            return d
        except BaseException:
            b.close()
            raise

    def probe(self):
        """Check the model's output on a probe frame (shape, channels, finiteness); ModelError if wrong."""
        b = self.backend
        if self.recurrent:
            def run(x):
                return b.infer_state(x, b.zero_state(x.shape[0], x.shape[2], x.shape[3]))[0]
        else:
            run = b.infer
        probe_model(run, self.stride, Path(self.model).name or "model", shape=probe_shape(b, self.stride))

    def guard_stats(self) -> dict:
        """``{"bad_frames": n, "longest_bad_run": n}``: outputs with NaN/Inf replaced by their input."""
        return self.guard.stats()

    # -- the three stages, usable separately by a pipeline ----------------------------------------
    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, FrameInfo]:
        """A frame -> the model's (1, 3, H, W) float32 RGB input in [0, 1], padded to the stride, and
        what :meth:`postprocess` needs to turn the output back into a frame like this one."""
        try:
            return frame_to_tensor(frame, self.stride, self.rgb)
        except MemoryError as e:
            raise self._too_large(frame.shape[1], frame.shape[0], e) from e

    def _too_large(self, w: int, h: int, e: BaseException) -> InputError:
        hint = ("use a smaller --tile" if self.tile is not None
                else "split it into tiles with --tile 1024 (Deblurrer.open(tile=1024))")
        return InputError(f"a {w}x{h} frame does not fit in memory here ({type(e).__name__}); {hint}")

    def infer_tensor(self, x: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 RGB in [0, 1], H and W multiples of the stride -> same shape.
        An output with NaN/Inf is replaced by ``x`` (see ``OutputGuard``)."""
        try:
            y = self._infer_raw(x)
        except MemoryError as e:
            raise self._too_large(x.shape[3], x.shape[2], e) from e
        except BackendError as e:
            if "alloc" in str(e).lower():
                raise self._too_large(x.shape[3], x.shape[2], e) from e
            raise
        y, ok = self.guard.check(x, y)
        if not ok and self.stream is not None:
            self.stream.reset("bad_output")  # the state is poisoned too
        return y

    def _check_open(self):
        if self._closed:
            raise BackendError(f"this Deblurrer ({Path(self.model).name}) is closed; open a new one with "
                               "Deblurrer.open(...), or call it inside its with block")
        if self._parent is not None and self._parent._closed:
            raise BackendError(f"the Deblurrer this stream shares its model with ({Path(self.model).name}, "
                               "for_stream()) is closed; keep it open while its streams run")

    def _infer_raw(self, x: np.ndarray) -> np.ndarray:
        self._check_open()
        if self.stream is not None:
            return self.stream.step(x)
        if self.tile is not None:
            return tiled_infer(self.backend.infer, x, self.tile, self.overlap, self.stride, batch=self.tile_batch)
        return self.backend.infer(x)

    @staticmethod
    def postprocess(y: np.ndarray, info: FrameInfo) -> np.ndarray:
        """The model's output for one frame -> a new frame like the one :meth:`preprocess` took."""
        return tensor_to_frame(y, info)

    # -- frames -------------------------------------------------------------------------------------
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Deblur one frame: a new array of the frame's shape and dtype (see the class docstring)."""
        x, info = self.preprocess(frame)
        y = self.infer_tensor(x)
        self.frames += 1
        return tensor_to_frame(y, info)

    def run_batch(self, frames, batch_size: int | None = None) -> list[np.ndarray]:
        """Deblur a list of frames; frames of the same padded size go through the model together
        (``batch_size`` at a time, default all). Recurrent models run them in order, one by one."""
        if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
            raise InputError(f"batch_size must be a positive integer or None (all frames of a size at once), got {batch_size!r}")
        frames = list(frames)
        if self.recurrent or batch_size == 1:
            return [self(f) for f in frames]
        prepared = [self.preprocess(f) for f in frames]
        out: list = [None] * len(frames)
        groups: dict = {}
        for i, (x, _) in enumerate(prepared):
            groups.setdefault(x.shape, []).append(i)
        step = min(batch_size or len(frames), getattr(self.backend, "max_batch", None) or len(frames))
        for idx in groups.values():
            for s in range(0, len(idx), step):
                part = idx[s:s + step]
                y = self.infer_tensor(np.concatenate([prepared[i][0] for i in part], axis=0))
                for j, i in enumerate(part):
                    out[i] = tensor_to_frame(y[j:j + 1], prepared[i][1])
        self.frames += len(frames)
        return out

    def reset(self, reason: str = "manual"):
        """Forget the recurrent state before the next frame (a new video, a new scene; a source
        restart passes ``reason="restart"``). Counted in :attr:`state_stats`; no-op for image models."""
        if self.stream is not None:
            self.stream.reset(reason)

    @property
    def state(self) -> dict | None:
        """The recurrent state the next frame will get (None: zeros; always None for image models)."""
        return self.stream.state if self.stream is not None else None

    def set_state(self, state: dict):
        """Carry ``state`` (a dict like :attr:`state`) into the next frame; its shapes are checked then."""
        if self.stream is None:
            raise InputError(f"{Path(self.model).name} is an image model: it has no recurrent state to set")
        self.stream.set(state)

    def state_stats(self) -> dict:
        """``{"kind": "image"}`` or ``{"kind": "recurrent", "resets": {reason: count}, "scene_cuts": n, ...}``."""
        if self.stream is None:
            return {"kind": "image"}
        return {"kind": "recurrent", **self.stream.stats()}

    def warmup(self, height: int, width: int):
        """Run one black frame of this size (allocations, kernel selection) and forget its state."""
        self._check_open()
        frame = np.zeros((height, width, 3), np.uint8)
        x, _ = self.preprocess(frame)
        if self.stream is not None:
            StreamState(self.backend, None).step(x)  # a throw-away state: this stream's is untouched
        else:
            self.infer_tensor(x)

    def for_stream(self) -> "Deblurrer":
        """A Deblurrer for another stream over the same backend (model loaded once), with its own
        recurrent state. Closing it leaves the shared backend open."""
        d = Deblurrer(self.backend, rgb=self.rgb, tile=self.tile, overlap=self.overlap, tile_batch=self.tile_batch,
                      model=self.model, scene_cut=self.scene_cut, max_bad_frames=self.guard.max_bad_frames)
        d._owns_backend = False
        d._parent = self._parent or self   # the Deblurrer that owns the model, however deep
        return d

    @property
    def info(self) -> dict:
        """What runs: model file, backend, precision, stride, rgb, tiling, image/recurrent kind,
        threads, the file selection's reason (a model folder), ... (printed by the CLI at startup)."""
        b = self.backend
        d = {
            "model": self.model,
            "backend": getattr(b, "name", type(b).__name__),
            "precision": getattr(b, "precision", None),
            "stride": self.stride,
            "rgb": self.rgb,
            "tile": self.tile,
            "overlap": self.overlap if self.tile is not None else None,
            "recurrent": self.recurrent,
            "kind": "recurrent" if self.recurrent else "image",
            "scene_cut": self.scene_cut,
            "macs_per_pixel": getattr(b, "macs_per_pixel", None),
            "threads": getattr(b, "threads", None),
        }
        for k in ("providers", "device"):
            if hasattr(b, k):
                d[k] = str(getattr(b, k)) if k == "device" else getattr(b, k)
        if getattr(b, "selection", None):
            d["selection"] = b.selection
        m = getattr(b, "manifest", None) or {}
        if m.get("name"):
            d["name"] = m["name"]
        if m.get("arch"):
            d["arch"] = m["arch"]
        return d

    def close(self):
        """Free the model (not a shared one: a :meth:`for_stream` Deblurrer leaves it to its parent).
        Closing twice is harmless; frames after it are refused."""
        if self._closed:
            return
        self._closed = True
        if self.backend is not None and self._owns_backend:
            self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return f"Deblurrer({Path(self.model).name!r}, backend={self.info['backend']!r}, stride={self.stride})"
