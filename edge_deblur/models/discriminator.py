"""PatchGAN discriminator for GAN mode (train.adv_weight > 0)."""
from __future__ import annotations

import torch.nn as nn


class PatchDiscriminator(nn.Module):
    def __init__(self, in_ch: int = 3, width: int = 32, layers: int = 3):
        super().__init__()
        mods = [nn.Conv2d(in_ch, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = width
        for _ in range(1, layers):
            mods += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.GroupNorm(8, ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        mods += [nn.Conv2d(ch, 1, 3, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)
