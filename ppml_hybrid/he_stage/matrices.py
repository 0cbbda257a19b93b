"""Public-weight linear maps as sparse matrices on flattened (C, H, W) features.

Under HE every linear piece (dense, convolution, average pooling) is the same thing: a matrix
applied to the feature vector of each sample, the order of features being PyTorch's flatten
order. A convolution is a sparse matrix with one row per (out channel, y, x) and at most
``C_in * k * k`` entries per row; average pooling has ``k * k`` entries of ``1 / k^2`` per row.
Composing them (pooling folded into the next layer) is a sparse product.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import scipy.sparse as sp


def dense_matrix(*, weight: np.ndarray) -> sp.csr_matrix:
    w = np.asarray(weight, dtype=np.float64)
    return sp.csr_matrix(w)


def conv_matrix(*, weight: np.ndarray, in_shape: Tuple[int, int, int], stride: int, padding: int) -> sp.csr_matrix:
    """Matrix of ``Conv2d`` (without bias) mapping flattened ``in_shape`` to flattened outputs."""
    w = np.asarray(weight, dtype=np.float64)
    co_n, ci_n, kh, kw = w.shape
    c, h, wd = in_shape
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (wd + 2 * padding - kw) // stride + 1
    co, oy, ox, ci, ky, kx = np.meshgrid(
        np.arange(co_n), np.arange(ho), np.arange(wo), np.arange(ci_n), np.arange(kh), np.arange(kw), indexing="ij"
    )
    iy = oy * stride - padding + ky
    ix = ox * stride - padding + kx
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd)
    rows = (co * ho + oy) * wo + ox
    cols = (ci * h + iy) * wd + ix
    data = w[co, ci, ky, kx]
    m = sp.coo_matrix((data[ok], (rows[ok], cols[ok])), shape=(co_n * ho * wo, c * h * wd))
    return m.tocsr()


def conv_out_hw(*, in_hw: Tuple[int, int], kernel: int, stride: int, padding: int) -> Tuple[int, int]:
    h, w = in_hw
    return (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1


def avgpool_matrix(*, shape: Tuple[int, int, int], size: int) -> sp.csr_matrix:
    """Matrix of ``AvgPool2d(size)`` (floor mode) on flattened ``shape``."""
    c, h, w = shape
    ho, wo = h // size, w // size
    ch, oy, ox, dy, dx = np.meshgrid(
        np.arange(c), np.arange(ho), np.arange(wo), np.arange(size), np.arange(size), indexing="ij"
    )
    rows = (ch * ho + oy) * wo + ox
    cols = (ch * h + oy * size + dy) * w + ox * size + dx
    data = np.full(rows.size, 1.0 / (size * size))
    return sp.coo_matrix((data, (rows.ravel(), cols.ravel())), shape=(c * ho * wo, c * h * w)).tocsr()


def conv_bias(*, bias: np.ndarray, out_hw: Tuple[int, int]) -> np.ndarray:
    return np.repeat(np.asarray(bias, dtype=np.float64), out_hw[0] * out_hw[1])
