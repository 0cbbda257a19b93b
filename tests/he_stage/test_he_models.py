"""Whole HE heads of the configured models, end to end: encrypt, forward, backward, decrypt."""

from __future__ import annotations

import pytest

from he_helpers import check_all, load_he, load_model, make_run


@pytest.mark.parametrize("split", [3, 4])
def test_relu_cnn(split):
    check_all(make_run(model=load_model("relu_cnn"), split=split, image_size=32, batch=4))


@pytest.mark.parametrize("split", [2, 3, 4])
def test_poly_cnn(split):
    check_all(make_run(model=load_model("poly_cnn"), split=split, image_size=8, batch=4))


@pytest.mark.slow
def test_poly_cnn_split1_samples_in_slots():
    check_all(make_run(model=load_model("poly_cnn"), split=1, image_size=8, batch=4, max_groups=1))


def test_default_128bit_params():
    """HEStd_128_classic with the default model's derived depth (ring 2^14), small shapes."""
    run = make_run(model=load_model("relu_cnn"), split=3, image_size=8, batch=4, he=load_he("ckks_128"),
                   max_groups=16)
    info = run.evaluator.info
    assert (info.ring_dim, info.multiplicative_depth, info.security_level) == (16384, 5, "HEStd_128_classic")
    assert not info.insecure
    check_all(run)
