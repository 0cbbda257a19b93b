"""Synthetic lesions whose label is decided by local arrangement, not by intensity statistics.

Every object has the same two ingredients: a *footprint* (the ``N`` grid pixels nearest to its
centre, an ellipse) and a fixed *multiset of values* (``N_bright`` enhancing values and
``N_dark`` dark values drawn from one profile). Two arrangements of the very same values on the
very same footprint:

* **nodule** (distractor, both classes): bright core, dark rim -- a solid enhancing nodule
  with surrounding oedema;
* **ring lesion** (label 1): dark core, bright rim -- a ring-enhancing lesion with a necrotic
  centre.

Objects *replace* the tissue under their footprint. So a ring lesion and a nodule hide the same
tissue and contribute exactly the same pixel values: the image histogram (and any statistic of
it: mean, max, percentiles, kurtosis) has the same distribution in both classes, and only the
centre/surround polarity, visible to a 3x3 convolution, tells them apart.

Objects are drawn on a coarse grid and then repeated 2x2 onto the stored image, so that area
downsampling to that grid (``image_size = stored_size / 2``, the default 64 -> 32) reproduces the
drawn values exactly instead of blurring thin rims more than solid cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Blob:
    """One object on the coarse grid (coordinates and radius in coarse pixels)."""

    centre: tuple[float, float]
    radius: float
    """Radius of the footprint (for aspect 1); its area is ``pi * radius**2`` pixels."""
    aspect: float
    angle: float
    bright: float
    """Peak value of the enhancing part (T1 units, white matter is about 0.85)."""
    dark: float
    """Base value of the dark part."""
    ring: bool
    """True: ring lesion (dark core, bright rim). False: nodule (bright core, dark rim)."""


def value_profile(n: int, *, plateau: float = 0.4) -> np.ndarray:
    """``n`` values in (0, 1], decreasing: a flat top over ``plateau`` of the ranks, then a cosine taper."""
    u = (np.arange(n) + 0.5) / max(n, 1)
    taper = 0.5 * (1.0 + np.cos(np.pi * np.clip((u - plateau) / (1.0 - plateau), 0.0, 1.0)))
    return np.where(u < plateau, 1.0, taper)


def draw_blobs(blobs: Sequence[Blob], *, grid: int, dark_fraction: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Render ``blobs`` on a ``grid x grid`` canvas; return (values, owner).

    ``owner`` holds the index of the blob covering each pixel, -1 outside every footprint.
    Later blobs overwrite earlier ones where they overlap; callers place them apart.
    """
    values = np.zeros((grid, grid), dtype=np.float64)
    owner = np.full((grid, grid), -1, dtype=np.int64)
    yy, xx = np.mgrid[0:grid, 0:grid] + 0.5
    for index, blob in enumerate(blobs):
        dy, dx = yy - blob.centre[0], xx - blob.centre[1]
        c, s = np.cos(blob.angle), np.sin(blob.angle)
        # Elliptical distance; the tiny index-based tie-breaker makes the order deterministic.
        dist = np.hypot((c * dx + s * dy) / blob.aspect, (-s * dx + c * dy) * blob.aspect)
        dist = dist + 1e-9 * np.arange(grid * grid).reshape(grid, grid) / (grid * grid)
        n = max(int(round(np.pi * blob.radius**2)), 2)
        n_dark = min(max(int(round(dark_fraction * n)), 1), n - 1)
        n_bright = n - n_dark
        foot = np.argsort(dist, axis=None, kind="stable")[:n]
        bright = blob.bright * (0.8 + 0.2 * value_profile(n_bright))
        dark = blob.dark * (1.0 + 0.4 * (1.0 - value_profile(n_dark)))
        if blob.ring:
            core, rim, rim_values, core_values = foot[:n_dark], foot[n_dark:], bright, dark
        else:
            core, rim, rim_values, core_values = foot[:n_bright], foot[n_bright:], dark, bright
        # Rim values are ranked from the middle of the rim outwards (brightest/darkest mid-rim).
        rim_dist = dist.flat[rim]
        middle = 0.5 * (rim_dist.min() + rim_dist.max())
        rim = rim[np.argsort(np.abs(rim_dist - middle), kind="stable")]
        values.flat[core] = core_values
        values.flat[rim] = rim_values
        owner.flat[foot] = index
    return values, owner
