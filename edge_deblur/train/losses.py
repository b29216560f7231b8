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


def lowpass_loss(pred, target, scale: int = 8):
    """L1 between ``scale`` x ``scale`` box means: the local brightness. Real blur is averaged in
    linear light, so a blurred frame is brighter than its sharp frame by an amount that depends
    on the blur and the scene; per pixel that is a small share of the pixel losses, and a model
    trained on them alone leaves much of it (REDS test_001: +5 of +8 levels). This term weights
    the local mean as much as the pixel loss weights each pixel."""
    if pred.shape[-1] < scale or pred.shape[-2] < scale:
        raise ValueError(f"lowpass_loss: a {pred.shape[-2]}x{pred.shape[-1]} crop is smaller than lowpass_scale={scale}")
    return (F.avg_pool2d(pred.float(), scale) - F.avg_pool2d(target.float(), scale)).abs().mean()


def gan_d_loss(real_logits, fake_logits):
    """Hinge loss for the discriminator."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def gan_g_loss(fake_logits):
    return -fake_logits.mean()


PIXEL_LOSSES = {"charbonnier": charbonnier, "l1": l1, "mse": mse, "psnr": psnr_loss}
