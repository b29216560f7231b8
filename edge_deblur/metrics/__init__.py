"""Image quality and latency metrics in numpy (no torch): PSNR, SSIM, tone-aligned PSNR, percentiles."""
from .quality import psnr, ssim, to_float01
from .tone import tone_align, tone_aligned_psnr, tone_fit
from .latency import LatencyStats

__all__ = ["psnr", "ssim", "to_float01", "tone_align", "tone_aligned_psnr", "tone_fit", "LatencyStats"]
