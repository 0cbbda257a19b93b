"""Privacy accounting: noise calibration and epsilon, through Opacus's accountants."""

from __future__ import annotations

from ppml_hybrid.config import DPConfig
from ppml_hybrid.errors import ConfigError


def resolve_noise_multiplier(dp: DPConfig, *, sample_rate: float, steps: int) -> float:
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
            )
        )
    except ValueError as exc:
        raise ConfigError(
            f"dp.target_epsilon={dp.target_epsilon} cannot be reached in {steps} steps at "
            f"sample rate {sample_rate:.4g}: {exc}"
        ) from exc
