"""Tiled inference for frames larger than a configured tile.

The padded frame tensor is cut into tiles of ``tile`` pixels (a multiple of the model's stride,
so every tile sits on the stride grid and a convolutional model sees the same pixels it would
see untiled) that overlap by at least ``overlap`` pixels. Each tile's output is weighted by a
window that is 1 in the tile's middle, 0 in a ``margin`` band along edges shared with another
tile (where the tile lacks context), and a raised-cosine ramp in between; the weighted outputs
are summed and divided by the summed weights. Weights are continuous, so there are no seams, and
normalized, so a constant image stays constant. Frame borders get weight 1 (there is no other
tile to blend with).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import InputError


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def check_tile_overlap(tile, overlap: int, stride: int = 1, names=("tile", "overlap")) -> None:
    """Refuse a ``tile`` (pixels, or (height, width)) that cannot be blended with ``overlap``, both
    rounded up to ``stride`` as tiling does: an overlap of 0, or a tile under twice the overlap.
    ``names``: how the message calls them (the API's arguments, or the CLI's flags)."""
    if tile is None:
        return
    tn, on = names
    s = max(1, int(stride))
    o = _round_up(int(overlap), s)
    if o == 0:
        raise InputError(f"{tn} {tile!r} needs {on} > 0 to blend the tiles without seams (default 128); "
                         f"give {on} N, or drop {tn}")
    small = min(_round_up(int(v), s) for v in ((tile, tile) if np.ndim(tile) == 0 else tile))
    if small < 2 * o:
        rounded = f" (rounded to the model's stride {s}: {small} < 2 x {o})" if s > 1 else ""
        raise InputError(f"{tn} {tile!r} is smaller than twice the {on} {overlap}{rounded}; "
                         f"use {tn} {2 * o} or more, or {on} {small // 2 // s * s} or less")


def tile_starts(size: int, tile: int, overlap: int, stride: int = 1) -> list[int]:
    """Start offsets along one axis: tiles of ``tile`` covering ``[0, size)`` with at least
    ``overlap`` shared pixels, all starts multiples of ``stride``."""
    if size <= tile:
        return [0]
    step = tile - overlap
    if step < stride:
        raise InputError(f"overlap {overlap} leaves no step for tile {tile} (stride {stride}); use a smaller overlap")
    step = step // stride * stride
    n = math.ceil((size - tile) / step) + 1
    starts = [min(i * step, size - tile) for i in range(n)]
    return sorted(set(starts))


def _ramp(length: int, overlap: int, margin: int, low_edge: bool, high_edge: bool) -> np.ndarray:
    """1-D weights of one tile: ramps up over ``overlap`` pixels at a shared low edge and down at
    a shared high edge; 0 over the first/last ``margin`` pixels of the ramp."""
    w = np.ones(length, np.float32)
    ramp_len = overlap - 2 * margin
    i = np.arange(ramp_len, dtype=np.float64)
    up = (0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / ramp_len)).astype(np.float32)  # raised cosine, in (0, 1)
    if low_edge:
        w[:margin] = 0.0
        w[margin:margin + ramp_len] = up
    if high_edge:
        w[length - margin:] = 0.0
        w[length - margin - ramp_len:length - margin] = np.minimum(w[length - margin - ramp_len:length - margin], up[::-1])
    return w


def tiled_infer(
    fn: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    tile: int | tuple[int, int],
    overlap: int = 128,
    stride: int = 1,
    margin: int | None = None,
    batch: int = 1,
) -> np.ndarray:
    """Run ``fn`` ((N, C, h, w) -> (N, C', h, w)) over ``x`` (N, C, H, W) tile by tile and blend.

    ``tile`` (an int or (height, width)) and ``overlap`` are rounded up to the stride;
    ``margin`` (default overlap // 4) is how much of each shared edge is discarded. ``batch``
    tiles go through ``fn`` at once. A frame no larger than the tile runs in one call."""
    if x.ndim != 4:
        raise InputError(f"tiled_infer needs (N, C, H, W), got {x.shape}")
    n, _, H, W = x.shape
    th, tw = (tile, tile) if isinstance(tile, int) else tuple(tile)
    th, tw = _round_up(int(th), stride), _round_up(int(tw), stride)
    overlap = _round_up(int(overlap), stride) if overlap else 0
    if H <= th and W <= tw:
        return fn(x)
    if overlap <= 0:
        raise InputError("tiling needs an overlap > 0 to blend tiles without seams")
    margin = overlap // 4 if margin is None else int(margin)
    if overlap - 2 * margin < 1:
        raise InputError(f"overlap {overlap} must exceed twice the margin {margin}")
    th, tw = min(th, H), min(tw, W)
    for name, t, full in (("height", th, H), ("width", tw, W)):
        if t < full and t < 2 * overlap:
            raise InputError(f"tile {name} {t} must be at least twice the overlap {overlap}; use a larger tile or a smaller overlap")
    ys, xs = tile_starts(H, th, overlap, stride), tile_starts(W, tw, overlap, stride)
    if H % stride or W % stride:
        raise InputError(f"tiled input {W}x{H} must be padded to the stride {stride} first")

    wy = {y: _ramp(th, overlap, margin, y > 0, y + th < H) for y in ys}
    wx = {x0: _ramp(tw, overlap, margin, x0 > 0, x0 + tw < W) for x0 in xs}
    coords = [(y, x0) for y in ys for x0 in xs]
    # float32 accumulators, updated in place: besides the input and the output (one frame each),
    # memory holds only one batch of tiles and its weights, whatever the frame size
    acc = None
    wsum = np.zeros((H, W), np.float32)
    for i in range(0, len(coords), max(1, batch)):
        group = coords[i:i + max(1, batch)]
        tiles = np.concatenate([x[:, :, y:y + th, x0:x0 + tw] for y, x0 in group], axis=0)
        out = fn(np.ascontiguousarray(tiles))
        if out.shape[0] != tiles.shape[0] or out.shape[2:] != tiles.shape[2:]:
            raise InputError(f"the model returned {out.shape} for tiles of shape {tiles.shape}")
        if acc is None:
            acc = np.zeros((n, out.shape[1], H, W), np.float32)
        for j, (y, x0) in enumerate(group):
            w2 = np.outer(wy[y], wx[x0])
            region = acc[:, :, y:y + th, x0:x0 + tw]
            region += out[j * n:(j + 1) * n].astype(np.float32, copy=False) * w2  # a tile-sized temporary
            wsum[y:y + th, x0:x0 + tw] += w2
        del out, tiles
    if not (wsum > 0).all():  # a bug in the layout, never expected
        raise RuntimeError("tiling left pixels without weight")
    np.divide(acc, wsum, out=acc)
    return acc
