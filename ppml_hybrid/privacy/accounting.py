"""Privacy accounting: noise calibration and epsilon, through Opacus's accountants.

Discrete Gaussian noise (``dp.noise_source: enclave``) is accounted by RDP at INTEGER orders
only, where the sampled Gaussian mechanism's bound is exact for it too: for an integer-valued
sum with integer shift mu (the clipped sums are exact ring values on the noise's own lattice),
``E_{N_Z(0)}[(N_Z(mu)(x) / N_Z(0)(x))^k] = exp(k (k-1) ||mu||^2 / (2 s^2))`` for every integer
k (complete the square; ``k mu`` is a lattice point, so the shifted sum equals the normaliser),
the same moment as the continuous Gaussian's. Opacus's integer-order formula is the binomial
expansion of these moments under Poisson subsampling (Mironov, Talwar, Zhang 2019), so it
holds unchanged; fractional orders (and the PRV accountant) use the continuous density and are
not used for this source. Rounding: the exact clip bounds the rounded per-sample pieces
themselves (protocols/dp_step.py), so the sensitivity in lattice units is below C 2^b exactly,
and K's scale sigma C 2^b is rounded up.
"""

from __future__ import annotations

from ppml_hybrid.config import DPConfig
from ppml_hybrid.errors import ConfigError


DISCRETE_GAUSSIAN_ORDERS = tuple(range(2, 257))


def epsilon_options(*, discrete: bool) -> dict:
    """Keyword arguments of ``accountant.get_epsilon`` for this noise (module doc)."""
    return {"alphas": list(DISCRETE_GAUSSIAN_ORDERS)} if discrete else {}


def check_accountant(dp: DPConfig, *, discrete: bool) -> None:
    if discrete and dp.accountant != "rdp":
        raise ConfigError(f"dp.accountant={dp.accountant} accounts a continuous Gaussian; dp.noise_source=enclave "
                          "releases a discrete Gaussian, accounted exactly by RDP at integer orders: use "
                          "dp.accountant=rdp (or dp.noise_source=parties)")


def resolve_noise_multiplier(dp: DPConfig, *, sample_rate: float, steps: int, discrete: bool = False) -> float:
    """The noise multiplier to use: calibrated from ``dp.target_epsilon`` when that is set."""
    if dp.target_epsilon is None:
        if dp.noise_multiplier is None:
            raise ConfigError("dp needs dp.noise_multiplier or dp.target_epsilon (or dp=off)")
        return dp.noise_multiplier
    # imported here: Opacus takes about 4 s to import, which a party process with a fixed
    # noise multiplier need not pay
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(
            get_noise_multiplier(
                target_epsilon=dp.target_epsilon,
                target_delta=dp.delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=dp.accountant,
                **epsilon_options(discrete=discrete),
            )
        )
    except ValueError as exc:
        raise ConfigError(
            f"dp.target_epsilon={dp.target_epsilon} cannot be reached in {steps} steps at "
            f"sample rate {sample_rate:.4g}: {exc}"
        ) from exc
