"""Image quality and latency metrics in numpy (no torch): PSNR, SSIM, percentiles."""
from .quality import psnr, ssim, to_float01
from .latency import LatencyStats

__all__ = ["psnr", "ssim", "to_float01", "LatencyStats"]
