"""Gaussian noise from the operating system's CSPRNG (``os.urandom``).

DP noise must be unpredictable to everyone else: a party whose noise share could be
recomputed (from a seed, from torch's Mersenne Twister state) adds nothing. Box-Muller on
53-bit uniforms read from ``os.urandom``, in float64.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch


def csprng_normal(shape: Sequence[int], *, std: float) -> torch.Tensor:
    """Independent N(0, std^2) samples of ``shape`` (float64), from ``os.urandom``."""
    n = int(np.prod(shape)) if len(shape) else 1
    if std == 0.0 or n == 0:
        return torch.zeros(tuple(shape), dtype=torch.float64)
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint64).reshape(2, n)
    u1 = ((raw[0] >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53  # (0, 1]: log is finite
    u2 = (raw[1] >> np.uint64(11)).astype(np.float64) / 2.0**53
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)
    return torch.from_numpy(z * std).reshape(tuple(shape))
