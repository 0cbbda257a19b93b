"""Depth derivation, parameter checks, and the CryptoContexts they build."""

from __future__ import annotations

import dataclasses

import pytest

from he_helpers import load_he, load_model
from ppml_hybrid.errors import ConfigError, SplitError
from ppml_hybrid.he_stage import HEParamsError, build_context, count_levels, derive_params
from ppml_hybrid.he_stage.params import spare_levels_for_masking

# (model, split) -> (forward levels, backward levels), hand-derived:
# relu_cnn s=3: x4 = W a (1), x4^2 (2), z = [aW5, bW5][x4^2, x4] (3);
#   back: dh4, g = (2aW5)^T dz (1), dx4 = x4*g + b*dh4 (2), da = W4^T dx4 (3).
# poly_cnn s=1: forward 1 + 2 per poly block; backward 2 per poly block + 1 (x*g after its level).
EXPECTED = {
    ("relu_cnn", 3): (3, 3),
    ("relu_cnn", 4): (1, 1),
    ("poly_cnn", 1): (7, 11),
    ("poly_cnn", 2): (5, 7),
    ("poly_cnn", 3): (3, 3),
    ("poly_cnn", 4): (1, 1),
}


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_level_counts(key):
    assert count_levels(model=load_model(key[0]), split_layer=key[1]) == EXPECTED[key]


@pytest.mark.parametrize("parties", [2, 3])
@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_depth_is_conversion_plus_compute_plus_spare(key, parties):
    p = derive_params(he=load_he("ckks_128"), model=load_model(key[0]), split_layer=key[1], parties=parties)
    plan = p.depth_plan
    assert plan.conversion_levels == parties - 1
    assert plan.compute_levels == max(EXPECTED[key])
    assert plan.spare_levels == 1
    assert p.multiplicative_depth == parties - 1 + max(EXPECTED[key]) + 1


def test_spare_levels_formula():
    kw = dict(scale_bits=50, first_mod_bits=60)
    assert spare_levels_for_masking(max_mask_bits=8, **kw) == 0  # |v + R| < 2^9 fits the last 10 bits
    assert spare_levels_for_masking(max_mask_bits=56, **kw) == 1  # the default: |v + R| < 2^57
    assert spare_levels_for_masking(max_mask_bits=60, **kw) == 2


def test_default_model_fits_ring_2_14_at_128_bits():
    p = derive_params(he=load_he("ckks_128"), model=load_model("relu_cnn"), split_layer=3, parties=2)
    info = build_context(params=p).info
    assert (info.ring_dim, info.slots, p.multiplicative_depth) == (16384, 8192, 5)


def test_split_errors():
    with pytest.raises(SplitError):
        derive_params(he=load_he("ckks_128"), model=load_model("relu_cnn"), split_layer=2, parties=2)
    with pytest.raises(HEParamsError, match="no HE stage"):
        derive_params(he=load_he("ckks_128"), model=load_model("relu_cnn"), split_layer=5, parties=2)


def test_insecure_only_under_an_insecure_name():
    bad = dataclasses.replace(load_he("insecure_test"), name="fast")
    with pytest.raises(ConfigError, match="insecure"):
        derive_params(he=bad, model=load_model("relu_cnn"), split_layer=3, parties=2)
    with pytest.raises(HEParamsError):
        derive_params(he=dataclasses.replace(load_he("ckks_128"), insecure=True), model=load_model("relu_cnn"),
                      split_layer=3, parties=2)
