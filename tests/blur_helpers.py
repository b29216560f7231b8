"""Shared by the blur synthesis tests (OpenCV and torch paths)."""
import numpy as np


def centre_offset(blurred: np.ndarray, sharp: np.ndarray) -> float:
    """Distance in pixels between the centres of mass of two 2-D images (a blurred point and the
    point in its target)."""
    yy, xx = np.mgrid[:blurred.shape[0], :blurred.shape[1]]
    cb = np.array([(blurred * yy).sum(), (blurred * xx).sum()]) / blurred.sum()
    cs = np.array([(sharp * yy).sum(), (sharp * xx).sum()]) / sharp.sum()
    return float(np.hypot(*(cb - cs)))
