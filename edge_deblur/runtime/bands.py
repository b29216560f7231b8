"""Bands and sample values of a raster -> the model's three [0, 1] channels, and back.

A three-band model sees an RGB triple of the raster's bands (``rgb_bands``, 1-based as in GDAL);
every other band is either run on its own (``others: single``: the band replicated to three
channels, the output channels averaged), grouped into pseudo-RGB triples (``others: triples``;
a last incomplete group repeats its last band), or copied untouched (``others: copy``).

Sample values are mapped to [0, 1] per band with ``(v - lo) / (hi - lo)``, clipped:

* ``normalize: bitdepth``: ``lo = 0``, ``hi = 2**bits - 1`` (``bit_depth``, default: the raster's
  ``NBITS`` tag, else the dtype's width), e.g. 4095 for a 12-bit sensor in uint16;
* ``normalize: percentile``: ``lo``/``hi`` are the ``percentiles`` of each band, estimated from a
  grid of small windows (never the whole raster), nodata excluded;
* ``normalize: auto``: bitdepth for uint8/uint16, percentile otherwise.

Back to sample values the model's change is added to the input, ``v + (y - x) * (hi - lo)``, so a
value outside ``[lo, hi]`` keeps its offset, and with ``bitdepth`` the result is simply
``y * (2**bits - 1)``. The ranges used are recorded in the output's tags (``tags()``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import InputError

NORMALIZE_MODES = ("auto", "bitdepth", "percentile")
OTHERS_MODES = ("single", "triples", "copy")


@dataclass
class BandConfig:
    """How a raster's bands and values reach a three-band model (the ``raster:`` section of a
    runtime profile; also ``--bands``, ``--normalize`` ... on the command line)."""

    normalize: str = "auto"                 # auto | bitdepth | percentile
    bit_depth: Optional[int] = None         # bitdepth mode: sensor bits (default: NBITS tag, else dtype)
    percentiles: tuple = (0.5, 99.5)        # percentile mode: low and high percentile per band
    rgb_bands: Optional[list] = None        # 1-based [R, G, B] (default: colour interpretation, else 1, 2, 3)
    others: str = "single"                  # single | triples | copy for the bands outside the triple

    def validate(self, where: str = "raster") -> "BandConfig":
        if self.normalize not in NORMALIZE_MODES:
            raise InputError(f"{where}.normalize: {self.normalize!r} is not one of {', '.join(NORMALIZE_MODES)}")
        if self.others not in OTHERS_MODES:
            raise InputError(f"{where}.others: {self.others!r} is not one of {', '.join(OTHERS_MODES)}")
        if self.bit_depth is not None and not (isinstance(self.bit_depth, (int, np.integer)) and 1 <= self.bit_depth <= 32):
            raise InputError(f"{where}.bit_depth: must be an integer from 1 to 32, got {self.bit_depth!r}")
        p = tuple(self.percentiles)
        if len(p) != 2 or not (0 <= p[0] < p[1] <= 100):
            raise InputError(f"{where}.percentiles: need [low, high] with 0 <= low < high <= 100, got {list(p)!r}")
        self.percentiles = (float(p[0]), float(p[1]))
        if self.rgb_bands is not None:
            rb = list(self.rgb_bands)
            if len(rb) != 3 or len(set(rb)) != 3 or not all(isinstance(b, (int, np.integer)) and b >= 1 for b in rb):
                raise InputError(f"{where}.rgb_bands: need three different 1-based band numbers, got {self.rgb_bands!r}")
            self.rgb_bands = [int(b) for b in rb]
        return self


@dataclass
class BandPlan:
    """The groups of a raster's bands that go through the model, and the value ranges."""

    count: int
    groups: list = field(default_factory=list)      # [(c0, c1, c2) 0-based band per model channel, [out bands], mode]
    copied: list = field(default_factory=list)      # 0-based bands copied untouched
    lo: np.ndarray = None                           # per band (float64)
    hi: np.ndarray = None
    normalize: str = "bitdepth"
    detail: str = ""                                # e.g. "bitdepth:12" or "percentile:0.5-99.5"
    rgb_bands: Optional[list] = None                # 1-based triple used (None: no triple)
    others: str = "single"

    @property
    def processed(self) -> list:
        """0-based bands written from the model's output, ascending."""
        return sorted({b for _, outs, _ in self.groups for b in outs})

    def tags(self) -> dict:
        ranges = ";".join(f"{lo:g},{hi:g}" for lo, hi in zip(self.lo, self.hi))
        t = {"EDGE_DEBLUR_NORMALIZE": self.detail, "EDGE_DEBLUR_BAND_RANGES": ranges,
             "EDGE_DEBLUR_OTHER_BANDS": self.others}
        if self.rgb_bands:
            t["EDGE_DEBLUR_RGB_BANDS"] = ",".join(str(b) for b in self.rgb_bands)
        if self.copied:
            t["EDGE_DEBLUR_COPIED_BANDS"] = ",".join(str(b + 1) for b in self.copied)
        return t

    # -- values ------------------------------------------------------------------------------------
    def to_model(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(count, h, w) sample values -> ((G, 3, h, w) float32 model input, (count, h, w) float32
        normalized values of every band)."""
        lo = self.lo.astype(np.float32)[:, None, None]
        inv = (1.0 / np.maximum(self.hi - self.lo, 1e-12)).astype(np.float32)[:, None, None]
        xn = block.astype(np.float32)
        xn -= lo
        xn *= inv
        np.clip(xn, 0.0, 1.0, out=xn)
        x = np.stack([xn[list(chans)] for chans, _, _ in self.groups]) if self.groups else np.zeros((0, 3) + block.shape[1:], np.float32)
        return np.ascontiguousarray(x), xn

    def from_model(self, y: np.ndarray) -> np.ndarray:
        """(G, 3, h, w) model output -> (len(processed), h, w) float32, in ``processed`` order
        (not clipped: tiles are blended first, as in-memory tiling does)."""
        index = {b: i for i, b in enumerate(self.processed)}
        out = np.empty((len(index),) + y.shape[2:], np.float32)
        for g, (chans, outs, mode) in enumerate(self.groups):
            if mode == "single":
                out[index[outs[0]]] = y[g].mean(axis=0)
            else:
                for c, b in zip(range(3), chans):
                    if b in outs:
                        out[index[b]] = y[g, c]
        return out

    def to_values(self, y: np.ndarray, orig: np.ndarray, xn: np.ndarray, dtype) -> np.ndarray:
        """Processed bands back to sample values: ``orig + (clip(y, 0, 1) - xn) * (hi - lo)``, rounded and
        clipped to ``dtype``. ``y``: (len(processed), h, w); ``orig``/``xn``: (count, h, w)."""
        bands = self.processed
        scale = (self.hi - self.lo).astype(np.float32)[bands][:, None, None]
        v = orig[bands].astype(np.float32) + (np.clip(y, 0.0, 1.0) - xn[bands]) * scale
        dt = np.dtype(dtype)
        if dt.kind in "ui":
            info = np.iinfo(dt)
            v = np.floor(v + 0.5)
            np.clip(v, info.min, info.max, out=v)
        return v.astype(dt)


def default_bit_depth(dtype, nbits_tag=None) -> Optional[int]:
    if nbits_tag:
        try:
            return int(nbits_tag)
        except ValueError:
            pass
    dt = np.dtype(dtype)
    return dt.itemsize * 8 if dt.kind == "u" else None


def plan_bands(cfg: BandConfig, count: int, dtype, colorinterp=(), nbits_tag=None, sample=None) -> BandPlan:
    """The band groups and value ranges for a raster of ``count`` bands of ``dtype``.

    ``colorinterp``: per-band names ('red', 'green', 'blue', ...); ``sample()`` -> (count, n)
    float64 values (nodata removed as NaN) for percentile mode."""
    cfg.validate()
    dt = np.dtype(dtype)
    plan = BandPlan(count=count, others=cfg.others)
    # -- which bands go where
    rgb = None
    if cfg.rgb_bands is not None:
        if count < 3 or max(cfg.rgb_bands) > count:
            raise InputError(
                f"band mapping rgb_bands={cfg.rgb_bands} does not match the raster's {count} band(s); "
                f"use band numbers from 1 to {count}" + (" or drop rgb_bands (fewer than 3 bands run band by band)" if count < 3 else "")
            )
        rgb = [b - 1 for b in cfg.rgb_bands]
    elif count >= 3:
        names = [str(c).lower().split(".")[-1] for c in colorinterp]
        if all(n in names for n in ("red", "green", "blue")):
            rgb = [names.index("red"), names.index("green"), names.index("blue")]
        else:
            rgb = [0, 1, 2]
    if rgb is not None:
        plan.groups.append((tuple(rgb), list(rgb), "rgb"))
        plan.rgb_bands = [b + 1 for b in rgb]
    rest = [b for b in range(count) if rgb is None or b not in rgb]
    if cfg.others == "copy":
        plan.copied = rest
    elif cfg.others == "single":
        plan.groups += [((b, b, b), [b], "single") for b in rest]
    else:
        for i in range(0, len(rest), 3):
            part = rest[i:i + 3]
            if len(part) == 1:
                plan.groups.append(((part[0],) * 3, part, "single"))
            else:
                chans = tuple(part + [part[-1]] * (3 - len(part)))
                plan.groups.append((chans, part, "triple"))
    # -- value ranges
    mode = cfg.normalize
    if mode == "auto":
        mode = "bitdepth" if dt in (np.dtype(np.uint8), np.dtype(np.uint16)) else "percentile"
    plan.normalize = mode
    if mode == "bitdepth":
        bits = cfg.bit_depth or default_bit_depth(dt, nbits_tag)
        if bits is None:
            raise InputError(f"normalize: bitdepth needs an unsigned integer raster or bit_depth, got dtype {dt}; "
                             "use normalize: percentile for signed or float data")
        if dt.kind == "u" and bits > dt.itemsize * 8:
            raise InputError(f"bit_depth {bits} exceeds the raster's {dt} samples; use at most {dt.itemsize * 8}")
        plan.lo = np.zeros(count)
        plan.hi = np.full(count, float(2 ** bits - 1))
        plan.detail = f"bitdepth:{bits}"
    else:
        if sample is None:
            raise InputError("percentile normalization needs sample values")
        vals = np.asarray(sample(), np.float64)
        lo_p, hi_p = cfg.percentiles
        plan.lo = np.zeros(count)
        plan.hi = np.ones(count)
        for b in range(count):
            v = vals[b][np.isfinite(vals[b])]
            if v.size == 0:
                continue
            lo, hi = np.percentile(v, [lo_p, hi_p])
            if not hi > lo:
                hi = lo + 1.0
            plan.lo[b], plan.hi[b] = float(lo), float(hi)
        plan.detail = f"percentile:{lo_p:g}-{hi_p:g}"
    return plan
