"""A replay pool of synthesized training samples.

Long synthetic blur is expensive to make on a CPU (a 256x256 crop with 80 px of camera shake is
tens of sub-frame warps), as expensive as a training step of a small model. With
``train.replay_pool`` set, the loader makes only ``train.replay_fresh`` new samples per step and
each batch is completed from a pool of recent samples (single frames or clips), each seen again
under a fresh random flip/transpose (the 8 symmetries of the square; a clip's frames all get the
same one). Every sample is still used a bounded number of
times (about ``batch_size / replay_fresh`` on average), and the pool keeps turning over, so the
stream of blur stays as varied as the loader makes it while synthesis no longer holds back the
step. Samples are held as float16 (8-bit levels are exact to well under half a level).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch


def _dihedral(x: torch.Tensor, code: int) -> torch.Tensor:
    """One of the 8 symmetries of the square on (..., H, W); H == W for transposes."""
    if code & 1:
        x = x.flip(-1)
    if code & 2:
        x = x.flip(-2)
    if code & 4 and x.shape[-1] == x.shape[-2]:
        x = x.transpose(-1, -2)
    return x


class ReplayPool:
    """Yields ``{"blur", "sharp"}`` batches of ``batch_size``: the ``fresh`` new samples of each
    loader batch plus ``batch_size - fresh`` drawn from a pool of up to ``size`` earlier ones.

    ``loader`` must yield batches of ``fresh`` samples. Deterministic for a given ``seed``."""

    def __init__(self, loader: Iterable[dict], batch_size: int, size: int, seed: int = 0):
        if size < batch_size:
            raise ValueError(f"train.replay_pool ({size}) must hold at least a batch ({batch_size})")
        self.loader, self.batch_size, self.size = loader, int(batch_size), int(size)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.blur: torch.Tensor | None = None
        self.sharp: torch.Tensor | None = None
        self.filled = 0

    def _insert(self, blur: torch.Tensor, sharp: torch.Tensor):
        n = blur.shape[0]
        if self.blur is None:
            self.blur = torch.empty((self.size, *blur.shape[1:]), dtype=torch.float16)
            self.sharp = torch.empty((self.size, *sharp.shape[1:]), dtype=torch.float16)
        if self.filled + n <= self.size:
            idx = torch.arange(self.filled, self.filled + n)
            self.filled += n
        else:  # replace random old samples
            idx = torch.randperm(self.size, generator=self.gen)[:n]
        self.blur[idx] = blur.to(torch.float16)
        self.sharp[idx] = sharp.to(torch.float16)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            blur, sharp = batch["blur"], batch["sharp"]
            fresh = blur.shape[0]
            self._insert(blur, sharp)
            if self.filled < self.batch_size:
                continue
            k = self.batch_size - fresh
            pick = torch.randint(0, self.filled, (k,), generator=self.gen)
            codes = torch.randint(0, 8, (k,), generator=self.gen).tolist()
            old_b = torch.stack([_dihedral(self.blur[i], c) for i, c in zip(pick.tolist(), codes)]).float()
            old_s = torch.stack([_dihedral(self.sharp[i], c) for i, c in zip(pick.tolist(), codes)]).float()
            yield {"blur": torch.cat([blur, old_b]), "sharp": torch.cat([sharp, old_s])}
