"""Losses: Charbonnier / L1 / MSE / PSNR pixel losses, a frequency-domain loss and GAN losses.
(FFT is used in the loss only, never inside a model graph.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def charbonnier(pred, target, eps: float = 1e-3):
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def l1(pred, target):
    return (pred - target).abs().mean()


def mse(pred, target):
    return ((pred - target) ** 2).mean()


def psnr_loss(pred, target, eps: float = 1e-8):
    """Minus the mean per-image PSNR (dB, images in [0, 1]), as NAFNet trains: the metric the
    models are judged by. Where the input leaves the answer uncertain (long blur) the MSE family
    pulls towards the conditional mean, which PSNR rewards, where L1/Charbonnier pull towards the
    median. ``eps`` keeps the log finite on a perfect match."""
    err = ((pred - target) ** 2).flatten(1).mean(1)
    return (10.0 * torch.log10(err + eps)).mean()


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


PIXEL_LOSSES = {"charbonnier": charbonnier, "l1": l1, "mse": mse, "psnr": psnr_loss}
