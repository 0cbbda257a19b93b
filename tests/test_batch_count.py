"""Noisy padded batch sizes (privacy/batch_count.py): the padding distribution and the accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from ppml_hybrid.errors import ConfigError
from ppml_hybrid.privacy.batch_count import (
    TAIL, CountNoise, effective_noise_multiplier, gradient_noise_for, padding_failure_delta,
)


def test_padding_is_a_shifted_gaussian_drawn_fresh():
    noise = CountNoise(std=4.0)
    draws = np.array([noise.draw() for _ in range(4000)])
    assert abs(draws.mean() - TAIL * 4.0) < 0.3 and abs(draws.std() - 4.0) < 0.25
    assert draws.min() >= 0 and len(set(draws.tolist())) > 15


def test_effective_noise_multiplier_composes_the_two_gaussians():
    assert effective_noise_multiplier(sigma=1.2, count_std=4.0) == pytest.approx(1.0 / math.sqrt(1 / 1.44 + 1 / 16))
    assert gradient_noise_for(sigma_eff=effective_noise_multiplier(sigma=1.2, count_std=4.0),
                              count_std=4.0) == pytest.approx(1.2)
    with pytest.raises(ConfigError, match="dp.count_noise"):
        gradient_noise_for(sigma_eff=5.0, count_std=4.0)
    with pytest.raises(ConfigError, match="dp.count_noise"):
        CountNoise(std=0.0)


def test_counting_the_batch_sizes_costs_epsilon_and_the_cut_costs_delta():
    """The release of noised counts is not free: the accountant's epsilon grows (about 5% at the
    defaults), and delta grows by the probability of a cut padding (about 1e-7 over a run)."""
    def eps(sigma):
        acc = RDPAccountant()
        for _ in range(56):
            acc.step(noise_multiplier=sigma, sample_rate=1 / 14)
        return acc.get_epsilon(delta=1e-5)

    plain, counted = eps(1.2), eps(effective_noise_multiplier(sigma=1.2, count_std=4.0))
    assert 1.02 < counted / plain < 1.10, (plain, counted)
    assert 1e-8 < padding_failure_delta(steps=56, parties=2) < 1e-6
