"""A NAFNet-style baseline (Chen et al. 2022) with LayerNorm written in plain ops and
SimpleGate, for comparison at higher compute. Same stride contract as edgenet."""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import LayerNorm2d, SimpleGate


class NAFBlock(nn.Module):
    def __init__(self, c: int, expand: int = 2):
        super().__init__()
        dw = c * expand
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.sg = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, c * 2, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x):
        y = self.sg(self.conv2(self.conv1(self.norm1(x))))
        y = y * self.sca(y)
        x = x + self.conv3(y) * self.beta
        y = self.conv5(self.sg(self.conv4(self.norm2(x))))
        return x + y * self.gamma


class NAFNetLite(nn.Module):
    def __init__(
        self,
        widths: list[int] = (16, 32, 64, 128),
        enc_blocks: list[int] = (1, 1, 2),
        mid_blocks: int = 2,
        dec_blocks: list[int] = (1, 1, 1),
        in_ch: int = 3,
    ):
        super().__init__()
        widths, enc_blocks, dec_blocks = list(widths), list(enc_blocks), list(dec_blocks)
        levels = len(widths)
        if len(enc_blocks) != levels - 1 or len(dec_blocks) != levels - 1:
            raise ValueError(f"enc_blocks and dec_blocks need {levels - 1} entries for {levels} widths")
        self.stride = 2 * 2 ** (levels - 1)
        self.unshuffle = nn.PixelUnshuffle(2)
        self.intro = nn.Conv2d(in_ch * 4, widths[0], 3, padding=1)
        self.enc = nn.ModuleList(nn.Sequential(*[NAFBlock(widths[i]) for _ in range(enc_blocks[i])]) for i in range(levels - 1))
        self.down = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 2, stride=2) for i in range(levels - 1))
        self.mid = nn.Sequential(*[NAFBlock(widths[-1]) for _ in range(mid_blocks)])
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i + 1], widths[i] * 4, 1), nn.PixelShuffle(2)) for i in range(levels - 1)
        )
        self.dec = nn.ModuleList(nn.Sequential(*[NAFBlock(widths[i]) for _ in range(dec_blocks[i])]) for i in range(levels - 1))
        self.ending = nn.Conv2d(widths[0], in_ch * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        nn.init.zeros_(self.ending.weight)
        nn.init.zeros_(self.ending.bias)

    def forward(self, x):
        h = self.intro(self.unshuffle(x))
        skips = []
        for enc, down in zip(self.enc, self.down):
            h = enc(h)
            skips.append(h)
            h = down(h)
        h = self.mid(h)
        for i in reversed(range(len(self.up))):
            h = self.dec[i](self.up[i](h) + skips[i])
        return self.shuffle(self.ending(h)) + x
