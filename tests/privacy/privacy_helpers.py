"""Statistics of the privacy tests: per-byte chi-square p-values of aligned transcripts, ring sums.

"""

from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np
import torch


def byte_pvalues(a: np.ndarray, b: np.ndarray) -> List[float]:
    """Chi-square homogeneity p-value per byte position of two int64 samples (same length used)."""
    from scipy.stats import chi2_contingency

    n = min(a.size, b.size)
    a = np.ascontiguousarray(a.reshape(-1)[:n]).view(np.uint64)
    b = np.ascontiguousarray(b.reshape(-1)[:n]).view(np.uint64)
    out = []
    for byte in range(8):
        ha = np.bincount(((a >> np.uint64(8 * byte)) & np.uint64(255)).astype(np.int64), minlength=256)
        hb = np.bincount(((b >> np.uint64(8 * byte)) & np.uint64(255)).astype(np.int64), minlength=256)
        keep = (ha + hb) > 0
        out.append(1.0 if keep.sum() < 2 else float(chi2_contingency(np.stack([ha[keep], hb[keep]]))[1]))
    return out


def as_int64(t: Any) -> np.ndarray:
    return (t.numpy() if torch.is_tensor(t) else np.asarray(t)).astype(np.int64).reshape(-1)


def sum_mod(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Sum of int64 arrays mod 2^64 (two's complement wrap)."""
    acc = np.zeros_like(arrays[0], dtype=np.uint64)
    for a in arrays:
        acc = acc + np.asarray(a, dtype=np.int64).view(np.uint64)
    return acc.view(np.int64)


BLOCK = 8192


def blockwise_min_p(a: np.ndarray, b: np.ndarray, *, block: int = BLOCK) -> float:
    """Bonferroni-corrected smallest per-byte chi-square p-value over position-aligned blocks.

    The message schedule of a step depends only on public shapes, so value ``i`` of both
    transcripts comes from the same message: comparing block by block keeps the test's power
    against a leak confined to a few messages (a whole-transcript histogram would dilute it).
    """
    n = min(a.size, b.size)
    ps = []
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        if hi - lo < 1024:  # too few for 256 bins: join the tail to the previous block
            lo = max(0, hi - block)
        ps += byte_pvalues(a[lo:hi], b[lo:hi])
    return min(1.0, min(ps) * len(ps))
