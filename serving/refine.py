"""Edge-aware upsampling of the model's low-resolution mask onto the photo.

A bilinear upsample of a 256-pixel mask leaves edges a few photo pixels off
and soft.  The fast guided filter (He & Sun, 2015) fits, in every window, the
mask as a linear function of the photo's brightness, at a working resolution
a few times the mask's, then applies those fits to the full-size photo: the
mask's edges snap to the photo's.  NumPy and Pillow only, like the client.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Working resolution, as a multiple of the mask's longest side, the window
# radius in working pixels, and the regulariser (edges weaker than about
# sqrt(EPS) in brightness, 0..1, are smoothed over, not followed).  Chosen on
# the eval splits of ../shared/data: see docs/benchmarks.md.
WORK_SCALE = 1
RADIUS = 4
EPS = 1e-2


def _box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)² window, clipped at the borders, via an integral image."""
    height, width = x.shape
    integral = np.zeros((height + 1, width + 1), np.float64)
    integral[1:, 1:] = x.cumsum(0).cumsum(1)
    rows = np.arange(height)
    cols = np.arange(width)
    top, bottom = np.clip(rows - radius, 0, height), np.clip(rows + radius + 1, 0, height)
    left, right = np.clip(cols - radius, 0, width), np.clip(cols + radius + 1, 0, width)
    total = (
        integral[bottom][:, right]
        - integral[top][:, right]
        - integral[bottom][:, left]
        + integral[top][:, left]
    )
    area = np.outer(bottom - top, right - left)
    return (total / area).astype(np.float32)


def _brightness(gray: Image.Image) -> np.ndarray:
    return np.asarray(gray, np.float32) / 255.0


def _resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(values, "F").resize(size, Image.Resampling.BILINEAR))


def bilinear_upsample(mask: np.ndarray, photo: Image.Image) -> Image.Image:
    """The uint8 mask (h, w) as an L image at the photo's size, unrefined."""
    return Image.fromarray(mask, "L").resize(photo.size, Image.Resampling.BILINEAR)


def guided_upsample(
    mask: np.ndarray, photo: Image.Image, radius: int = RADIUS, eps: float = EPS
) -> Image.Image:
    """The uint8 mask (h, w) as an L image at the photo's size, edges following the photo."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    scale = min(1.0, WORK_SCALE * max(mask.shape) / max(photo.size))
    work = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
    gray = photo.convert("L")  # once: the guide at full size and, downscaled, at work size
    guide = _brightness(gray.resize(work, Image.Resampling.BILINEAR) if gray.size != work else gray)
    target = _resize(mask.astype(np.float32) / 255.0, work)
    mean_guide = _box_mean(guide, radius)
    mean_target = _box_mean(target, radius)
    covariance = _box_mean(guide * target, radius) - mean_guide * mean_target
    variance = _box_mean(guide * guide, radius) - mean_guide * mean_guide
    slope = covariance / (variance + eps)
    offset = mean_target - slope * mean_guide
    slope = _resize(_box_mean(slope, radius), photo.size)
    offset = _resize(_box_mean(offset, radius), photo.size)
    refined = slope * _brightness(gray) + offset
    return Image.fromarray(np.clip(refined * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
