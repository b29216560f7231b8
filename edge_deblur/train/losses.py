"""Losses: Charbonnier / L1 pixel losses, a frequency-domain loss and GAN losses.
(FFT is used in the loss only, never inside a model graph.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def charbonnier(pred, target, eps: float = 1e-3):
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def l1(pred, target, eps: float = 0.0):
    return (pred - target).abs().mean()


def frequency_loss(pred, target):
    """L1 between the 2-D spectra (real and imaginary parts), as in MIMO-UNet's FFT loss."""
    p = torch.fft.rfft2(pred.float(), norm="backward")
    t = torch.fft.rfft2(target.float(), norm="backward")
    return (torch.view_as_real(p) - torch.view_as_real(t)).abs().mean() / (pred.shape[-1] * pred.shape[-2]) ** 0.5


def gan_d_loss(real_logits, fake_logits):
    """Hinge loss for the discriminator."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def gan_g_loss(fake_logits):
    return -fake_logits.mean()


PIXEL_LOSSES = {"charbonnier": charbonnier, "l1": l1}
