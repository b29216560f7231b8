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
from functools import cached_property
from typing import Optional

import cv2
import numpy as np

from ..errors import InputError

NORMALIZE_MODES = ("auto", "bitdepth", "percentile")
OTHERS_MODES = ("single", "triples", "copy")
_CV_DEPTH = {np.dtype(np.uint8): cv2.CV_8U, np.dtype(np.uint16): cv2.CV_16U}


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
    # These run once per tile (to_model, accumulate) or per output row band (to_values) and are
    # the raster path's CPU cost besides the model: each works band by band on 2-D planes, in
    # place where it can, with no whole-tile float temporaries.
    def to_model(self, block: np.ndarray, out: Optional[np.ndarray] = None, nodata=None,
                 invalid: Optional[np.ndarray] = None) -> np.ndarray:
        """(count, h, w) sample values -> (G, 3, h, w) float32 model input in [0, 1]
        (``(v - lo) / (hi - lo)``, clipped), written into ``out`` when given. NaN and ``nodata``
        samples are filled with the mean of the band's valid samples in the block (0 if none), so
        that the sentinel (0, 65535, -9999) never reaches the convolutions that valid pixels next to
        it go through; the pixels themselves are restored afterwards. ``invalid`` (h, w), where
        given, marks more such pixels (a GDAL mask)."""
        g_n, (h, w) = len(self.groups), block.shape[1:]
        x = np.empty((g_n, 3, h, w), np.float32) if out is None else out
        done: dict = {}
        for g, (chans, _, _) in enumerate(self.groups):
            for c, b in enumerate(chans):
                dst = x[g, c]
                if b in done:               # a band used twice (a repeated band of the last triple)
                    dst[...] = done[b]
                    continue
                lo, hi = float(self.lo[b]), float(self.hi[b])
                src = block[b]
                inv = np.float32(1.0 / max(hi - lo, 1e-12))
                if lo:
                    np.subtract(src, np.float32(lo), out=dst, dtype=np.float32)
                    dst *= inv
                else:
                    np.multiply(src, inv, out=dst, dtype=np.float32)   # converted and scaled in one pass
                # integers inside [lo, hi] need no clipping (the usual case for bitdepth); the
                # integer min/max are cheaper than a float clip, and not needed at all when
                # [lo, hi] spans the dtype
                hole = None
                if src.dtype.kind in "ui":
                    info = np.iinfo(src.dtype)
                    full = lo <= info.min and hi >= info.max   # [lo, hi] spans the dtype: no reductions
                    mn, mx = (src.min(), src.max()) if src.size and (nodata is not None or not full) else (0, 0)
                    inside = full or (mn >= lo and mx <= hi)
                    if nodata is not None and mn <= nodata <= mx:  # (min/max first: most blocks hold none)
                        hole = src == nodata
                else:
                    inside = False
                    # NaN (a float raster's usual nodata) would spread through every convolution of the tile
                    hole = np.isnan(src)
                    if nodata is not None and nodata == nodata:
                        hole |= src == nodata
                if not inside:
                    np.clip(dst, 0.0, 1.0, out=dst)
                if invalid is not None:  # (h, w) True where a GDAL mask marks the pixel invalid
                    hole = invalid if hole is None else (hole | invalid)
                if hole is not None and hole.any():
                    valid = dst[~hole]
                    dst[hole] = float(valid.mean()) if valid.size else 0.0
                done[b] = dst
        return x

    @cached_property
    def _sources(self) -> list:
        """(Once per plan.) Per processed band (in ``processed`` order): ("single", g) or ("channel", g, c)."""
        src: dict = {}
        for g, (chans, outs, mode) in enumerate(self.groups):
            if mode == "single":
                src[outs[0]] = ("single", g)
            else:
                for c, b in enumerate(chans):
                    if b in outs:
                        src[b] = ("channel", g, c)   # a repeated band: its last channel, as before
        return [src[b] for b in self.processed]

    def accumulate(self, y: np.ndarray, weight: np.ndarray, acc: np.ndarray):
        """``acc`` (len(processed), h, w) += the tile's model output ``y`` (G, 3, h, w) per processed
        band, times ``weight`` (h, w): channel values for RGB and triples, the mean of the three
        channels for bands run alone (not clipped: tiles are blended first, as in-memory tiling does).
        One fused multiply-add per band (OpenCV's ``accumulateProduct``, in place on ``acc``)."""
        third = None
        for k, s in enumerate(self._sources):
            if s[0] == "single":
                if third is None:
                    third = weight * np.float32(1.0 / 3.0)
                tmp = np.add(y[s[1], 0], y[s[1], 1])
                tmp += y[s[1], 2]
                cv2.accumulateProduct(tmp, third, acc[k])
            else:
                cv2.accumulateProduct(np.ascontiguousarray(y[s[1], s[2]]), weight, acc[k])

    def to_values(self, y: np.ndarray, orig: np.ndarray, out: np.ndarray, inv_weight: Optional[np.ndarray] = None):
        """Blended processed bands back to sample values, written into ``out[processed]``:
        ``orig + (clip(y, 0, 1) - clip((orig - lo) / (hi - lo), 0, 1)) * (hi - lo)``, which is
        ``clip(y, 0, 1) * (hi - lo) + lo`` plus the part of ``orig`` outside ``[lo, hi]`` (kept as an
        offset); rounded and clipped for integer types. ``y`` (len(processed), h, w) float32 is
        overwritten (first multiplied by ``inv_weight`` (h, w) when given: the blend's 1 / weight sum);
        ``orig``/``out``: (count, h, w) in the raster's dtype."""
        dt = out.dtype
        integer = dt.kind in "ui"
        fast = _CV_DEPTH.get(dt) if inv_weight is not None else None
        for k, b in enumerate(self.processed):
            lo, hi = float(self.lo[b]), float(self.hi[b])
            v, o = y[k], orig[b]
            if fast is not None and lo == 0 and (hi >= np.iinfo(dt).max or o.max() <= hi):
                # the usual case (bit-depth scaling, samples within it): one fused pass, y / weight
                # sum * hi, rounded and saturated at 0 and the dtype's maximum; then clipped at hi
                cv2.multiply(v, inv_weight, dst=out[b], scale=hi, dtype=fast)
                if hi < np.iinfo(dt).max:
                    np.minimum(out[b], dt.type(hi), out=out[b])
                continue
            if inv_weight is not None:
                v *= inv_weight
            np.clip(v, 0.0, 1.0, out=v)
            v *= np.float32(hi - lo)
            v += np.float32(lo + 0.5 if integer else lo)
            if not integer or o.min() < lo or o.max() > hi:
                v += o - np.clip(o, lo, hi).astype(np.float32)
            if integer:
                info = np.iinfo(dt)
                if dt.kind == "i":
                    np.floor(v, out=v)
                np.clip(v, info.min, info.max, out=v)   # unsigned: v >= 0.5, so truncation rounds
            out[b] = v


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
    # an alpha (transparency mask) band is never an image to deblur: copied as it is, whatever `others` says
    interp = [str(c).lower().split(".")[-1] for c in colorinterp]
    alpha = [b for b in rest if b < len(interp) and interp[b] == "alpha"]
    rest = [b for b in rest if b not in alpha]
    plan.copied = list(alpha)
    if cfg.others == "copy":
        plan.copied = sorted(plan.copied + rest)
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
    if not plan.groups:
        raise InputError(
            f"no band of this {count}-band raster is left for the model: others={cfg.others!r} copies every band "
            "outside an RGB triple" + (f" (and band(s) {[b + 1 for b in alpha]} are alpha)" if alpha else "")
            + "; use others: single (CLI: --other-bands single) to deblur them band by band")
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
