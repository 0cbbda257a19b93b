"""Empirical DP checks: the noise's distribution, and a one-run canary audit of the DP step.

* :func:`discrete_gaussian_fit` : chi-square goodness of fit of integer draws against the
  discrete Gaussian N_Z(0, s^2) (tails beyond 4 s pooled). A rounded float Gaussian fails it at
  s <= 1.5 lattice units with 10^5 draws.
* :func:`canary_audit` : Steinke, Nasr, Jagielski (2023), "Privacy auditing with one (1)
  training run", white-box, on the fixed-point plaintext twin of one encrypted DP step: m
  Dirac canaries (gradient (1 - 2^-10) C on one coordinate each, on the sum's lattice, so the
  step's exact clip leaves them untouched and they do not interfere), each included with
  probability 1/2; the released sum is the included canaries plus the noise over all
  coordinates; each canary is scored by its coordinate of the release; the auditor guesses "in"
  for the k highest and "out" for the k lowest scores.
  :func:`one_run_lower_bound` turns the number of correct guesses into an epsilon that holds
  with confidence 1 - beta: the largest eps with
  ``P[Binomial(2k, e^eps / (1 + e^eps)) >= correct] + 2 m delta <= beta / len(ks)`` (their
  Theorem 3.1, the delta term bounded by its largest value; Bonferroni over the k tried).

An audit gives a LOWER bound: it must stay below the accounted epsilon, and a mechanism whose
noise was cut (the positive control) must push it above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


def discrete_gaussian_fit(samples: np.ndarray, sigma: float) -> float:
    """p-value of the chi-square test of integer ``samples`` against N_Z(0, sigma^2)."""
    from scipy import stats

    samples = np.asarray(samples, dtype=np.int64)
    edge = int(math.ceil(4 * sigma))
    far = np.arange(-60 * edge, 60 * edge + 1)
    weights = np.exp(-far.astype(np.float64) ** 2 / (2 * sigma ** 2))
    pmf = weights / weights.sum()
    inside = pmf[(far >= -edge) & (far <= edge)]
    expected = np.concatenate([[pmf[far < -edge].sum()], inside, [pmf[far > edge].sum()]]) * samples.size
    counts = np.bincount(np.clip(samples, -edge - 1, edge + 1) + edge + 1, minlength=2 * edge + 3)
    return float(stats.chisquare(counts, expected).pvalue)


def one_run_lower_bound(*, correct: int, guesses: int, canaries: int, delta: float, beta: float) -> float:
    """The epsilon lower bound of ``correct`` right guesses out of ``guesses`` (module doc); 0 if none."""
    from scipy import stats

    def rejected(eps: float) -> bool:
        p = 1.0 / (1.0 + math.exp(-eps))
        return stats.binom.sf(correct - 1, guesses, p) + 2 * canaries * delta <= beta

    if not rejected(0.0):
        return 0.0
    lo, hi = 0.0, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rejected(mid) else (lo, mid)
    return lo


@dataclass(frozen=True)
class AuditResult:
    epsilon_lower_bound: float
    canaries: int
    dimensions: int
    correct: int
    guesses: int
    k: int


def canary_audit(*, noise_std: float, sampler: Callable[[int, float], np.ndarray], canaries: int = 1000,
                 dimensions: int = 12_000, clip: float = 1.0, scale_bits: int = 32, delta: float = 1e-5,
                 beta: float = 0.05, ks: Sequence[int] = (200,),
                 rng: np.random.Generator) -> AuditResult:
    """One released step of the fixed-point twin with ``noise_std`` (units of C) drawn by
    ``sampler(count, scale)`` (the key service's own), audited with ``canaries`` canaries."""
    if canaries > dimensions:
        raise ValueError(f"{canaries} Dirac canaries need at least as many dimensions (got {dimensions})")
    lattice = 2.0 ** scale_bits
    mark = int(clip * (1 - 2.0 ** -10) * lattice)  # one canary's gradient, on the lattice, norm < C
    included = rng.integers(0, 2, canaries).astype(bool)
    release = sampler(dimensions, noise_std * clip * lattice)
    release[:canaries] += np.where(included, mark, 0)
    scores = release[:canaries] / lattice
    order = np.argsort(scores)
    best = AuditResult(0.0, canaries, dimensions, 0, 0, 0)
    for k in ks:
        correct = int(included[order[-k:]].sum() + (~included[order[:k]]).sum())
        eps = one_run_lower_bound(correct=correct, guesses=2 * k, canaries=canaries, delta=delta,
                                  beta=beta / len(ks))
        if eps > best.epsilon_lower_bound:
            best = AuditResult(eps, canaries, dimensions, correct, 2 * k, k)
    return best
