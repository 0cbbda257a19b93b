"""Each HE layer type, forward and backward, against PyTorch autograd on the same weights.

Tolerance: |HE - torch| <= 1e-6 * max(1, max|torch|) for every returned tensor (see he_helpers).
Both packings are checked: samples in slots (G = 1) and features packed with rotations (G max).
"""

from __future__ import annotations

import pytest

from he_helpers import check_all, make_run, small_model
from ppml_hybrid.config import BlockConfig

LAYOUTS = [pytest.param(1, id="G1"), pytest.param(None, id="Gmax")]


def dense(out, act="none"):
    return BlockConfig(type="dense", out=out, activation=act)


def conv(out, act, pool="avg", **kw):
    return BlockConfig(type="conv", out=out, activation=act, pool=pool, **kw)


@pytest.mark.parametrize("groups", LAYOUTS)
def test_dense(groups):
    # split 1: the HE side is one dense layer 2*4*4 -> 3 (weights, bias)
    m = small_model(conv(2, "relu", pool="none"), dense(3))
    check_all(make_run(model=m, split=1, image_size=4, batch=5, max_groups=groups))


@pytest.mark.parametrize("groups", LAYOUTS)
def test_dense_poly(groups):
    m = small_model(conv(2, "relu", pool="none"), dense(7, "poly"), dense(3))
    check_all(make_run(model=m, split=1, image_size=4, batch=5, max_groups=groups))


@pytest.mark.parametrize("groups", LAYOUTS)
def test_dense_square(groups):
    m = small_model(conv(2, "relu", pool="none"), dense(6, "square"), dense(2))
    check_all(make_run(model=m, split=1, image_size=4, batch=3, max_groups=groups))


@pytest.mark.parametrize("groups", LAYOUTS)
def test_conv_poly_avgpool(groups):
    m = small_model(conv(2, "relu", pool="none"), conv(3, "poly"), dense(2))
    check_all(make_run(model=m, split=1, image_size=4, batch=3, max_groups=groups))


@pytest.mark.parametrize("groups", LAYOUTS)
def test_conv_square_stride_no_pool(groups):
    m = small_model(conv(2, "relu", pool="none"), conv(3, "square", pool="none", stride=2, padding=1), dense(2))
    check_all(make_run(model=m, split=1, image_size=5, batch=2, max_groups=groups))


@pytest.mark.parametrize("groups", LAYOUTS)
def test_avgpool_without_activation(groups):
    m = small_model(conv(2, "relu", pool="none"), conv(2, "none", pool="avg"), dense(4, "poly"), dense(2))
    check_all(make_run(model=m, split=1, image_size=4, batch=2, max_groups=groups))
