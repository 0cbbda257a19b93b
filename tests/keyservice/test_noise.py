"""K's DP noise (dp.noise_source=enclave): the exact sampler, one draw per step, shares that
reveal nothing alone, nothing kept or logged. Each test names the planted leak it catches."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy import stats

from ppml_hybrid.keyservice.noise import NoiseBook, additive_shares, discrete_gaussian, lattice_scale
from ppml_hybrid.privacy.audit import discrete_gaussian_fit
from ppml_hybrid.privacy.csprng import csprng_normal
from ppml_hybrid.rpc.keyservice_errors import AnnouncementMismatchError, NotRegisteredError, RoundReplayError
from ppml_hybrid.rpc.errors import (
    FailedPreconditionError, InvalidArgumentError, PermissionDeniedError, UnavailableError,
)
from ppml_hybrid.rpc.messages import NoiseRequest, NoiseSlot

LAYOUT = (NoiseSlot(name="blocks.0.conv.weight", count=300, scale_bits=32), NoiseSlot(name="blocks.3.bias", count=20,
                                                                                       scale_bits=48))


def request(step: int, *, sigma: float = 1.2, slots=LAYOUT) -> NoiseRequest:
    return NoiseRequest(step=step, slots=slots, noise_multiplier=sigma, max_grad_norm=1.0)


def joined(shares) -> np.ndarray:
    total = np.zeros_like(shares[0], dtype=np.uint64)
    for s in shares:
        total = total + s.astype(np.uint64)
    return total.astype(np.int64)


def arrays_in(obj, seen=None) -> list:
    """Every numpy array reachable from ``obj`` through attributes and containers."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, dict):
        items = list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = list(obj)
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    else:
        return []
    return [a for item in items for a in arrays_in(item, seen)]


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.5, 4.0])
def test_the_sampler_is_the_discrete_gaussian_where_rounding_a_float_gaussian_is_not(sigma):
    """10^5 draws at 1-4 lattice units fit N_Z(0, sigma^2). Positive control: the rounded float
    Gaussian (what the parties' source draws) fails the same test where 10^5 draws can tell them
    apart (sigma <= 1.5: p < 1e-7 in every trial run; at 2.5 and 4 the difference, a variance of
    sigma^2 + 1/12, needs far more draws)."""
    draws = discrete_gaussian(100_000, scale=sigma)
    assert draws.dtype == np.int64
    assert discrete_gaussian_fit(draws, sigma) > 1e-4
    if sigma <= 1.5:
        rounded = np.round(csprng_normal((100_000,), std=sigma).numpy()).astype(np.int64)
        assert discrete_gaussian_fit(rounded, sigma) < 1e-6


def test_standard_deviation_at_the_sums_scale_is_sigma_c_within_one_percent():
    scale = lattice_scale(noise_multiplier=1.2, max_grad_norm=1.0, scale_bits=32)
    assert scale >= 1.2 * 2.0 ** 32  # rounded up, never less
    draws = discrete_gaussian(100_000, scale=scale).astype(np.float64)
    assert abs(draws.std() / scale - 1.0) < 0.01
    assert abs(draws.mean()) < 5 * scale / math.sqrt(draws.size)


def test_shares_sum_to_the_noise_and_each_is_uniform():
    noise = discrete_gaussian(50_000, scale=1000.0)
    shares = additive_shares(noise, 3)
    assert np.array_equal(joined(shares), noise)
    for s in shares[:-1] + [shares[-1]]:  # every share alone: the top byte is uniform over 256 values
        top = (s.astype(np.uint64) >> np.uint64(56)).astype(np.int64)
        assert stats.chisquare(np.bincount(top, minlength=256)).pvalue > 1e-4


def test_one_draw_per_step_each_share_once_then_nothing_is_kept():
    """Planted leaks caught: noise served twice for a step, or kept after the last delivery."""
    book = NoiseBook(parties=2, request_quota=4, max_open_steps=2)
    a = book.fetch(party=1, request=request(1))
    assert book.held_steps() == (1,)
    with pytest.raises(RoundReplayError):
        book.fetch(party=1, request=request(1))  # the same step again: no second share, no second draw
    b = book.fetch(party=2, request=request(1))
    assert book.held_steps() == ()  # forgotten once both shares are out
    assert not arrays_in(book)  # no array anywhere in K's noise state
    noise = joined([a, b])
    scales = np.repeat([lattice_scale(noise_multiplier=1.2, max_grad_norm=1.0, scale_bits=b) for b in (32, 48)],
                       [300, 20])
    assert np.all(np.abs(noise / scales) < 7)  # sigma C 2^b, sum by sum
    for party in (1, 2):  # a step once delivered is never drawn again, for anyone
        with pytest.raises(RoundReplayError):
            book.fetch(party=party, request=request(1))
    with pytest.raises(RoundReplayError):
        book.fetch(party=2, request=request(0))  # and steps only go up


def test_a_party_naming_less_noise_or_another_layout_is_refused():
    book = NoiseBook(parties=2, request_quota=4, max_open_steps=2)
    book.fetch(party=1, request=request(3))
    with pytest.raises(AnnouncementMismatchError):
        book.fetch(party=2, request=request(3, sigma=0.1))
    with pytest.raises(AnnouncementMismatchError):
        book.fetch(party=2, request=request(3, slots=LAYOUT[:1]))


@pytest.mark.parametrize("bad", [
    dict(step=-1), dict(noise_multiplier=0.0), dict(noise_multiplier=float("nan")), dict(max_grad_norm=-1.0),
    dict(slots=(NoiseSlot(name="w", count=4, scale_bits=32), NoiseSlot(name="w", count=4, scale_bits=32))),
    dict(noise_multiplier=1e6, slots=(NoiseSlot(name="w", count=4, scale_bits=48),)),
])
def test_malformed_requests_are_refused_before_any_draw(bad):
    fields = dict(step=1, slots=LAYOUT, noise_multiplier=1.2, max_grad_norm=1.0)
    fields.update(bad)
    with pytest.raises(InvalidArgumentError):
        NoiseRequest(**fields)


def test_over_grpc_each_party_gets_its_own_share_and_no_noise_is_logged(k, caplog):
    """Real K over mTLS: parties only; the two shares sum to a Gaussian of the right size; K's log
    holds no share and no noise value (planted leak: logging the noise)."""
    from ppml_hybrid.roles.local_services import party_name
    from ppml_hybrid.rpc.noise_client import NoiseClient
    from ppml_hybrid.rpc.tls import EVALUATOR

    def client(name):
        return NoiseClient(address=k.running.address, server_trust_pem=k.running.trust_pem,
                           credential=k.pki.clients[name], timeout_s=30.0)

    caplog.set_level(logging.DEBUG)
    for outsider in (EVALUATOR, "stranger"):  # E, and a certificate nobody registered
        with pytest.raises((NotRegisteredError, PermissionDeniedError, UnavailableError)):
            client(outsider).fetch_noise(request=request(1))
    a = client(party_name(1)).fetch_noise(request=request(1))
    b = client(party_name(2)).fetch_noise(request=request(1))
    noise = joined([a, b])
    assert noise.shape == (320,)
    assert 0.8 < np.std(noise[:300] / 2.0 ** 32) / 1.2 < 1.2
    with pytest.raises(FailedPreconditionError):  # RoundReplayError at K: the same step again
        client(party_name(2)).fetch_noise(request=request(1))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "noise share" in logged  # K did log the deliveries ...
    for value in np.concatenate([a, b, noise])[:50]:
        assert str(int(value)) not in logged  # ... and none of the values
