"""What every role of an encrypted run computes for itself from the run config (and the sites'
public training-row counts): the sampling schedule, the DP parameters, the HE run spec, and
each step's party program.

Every role derives these on its own host instead of being told: a coordinator that sent the
parties a smaller noise multiplier, or K a shorter budget, would weaken the run. Nothing here
reads data, keys or the network.

* :func:`he_run_spec` needs the config alone (K and E start before any party reports): the
  slot layout's batch capacity comes from ``train.batch_size`` (7 standard deviations above
  the padded Poisson batch) and H from ``he.mask_hiding_bits`` (default 38; K refuses rounds
  beyond the masked-slot budget that H covers, so a longer run stops instead of weakening);
* :func:`plan_run` needs the sites' training-row counts too (they set the sample rate);
* :func:`step_program` builds the party program of one step (all-MPC or hybrid).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch

from ppml_hybrid.config import RunConfig
from ppml_hybrid.errors import ConfigError
from ppml_hybrid.privacy.accounting import check_accountant, resolve_noise_multiplier
from ppml_hybrid.privacy.batch_count import (
    CountNoise, effective_noise_multiplier, gradient_noise_for, padding_failure_delta,
)
from ppml_hybrid.protocols.dp_step import DPStepParams
from ppml_hybrid.training.sampling import PoissonSchedule


@dataclass(frozen=True)
class RunPlan:
    """The schedule and DP parameters of one encrypted run (module doc)."""

    train_rows: Tuple[int, ...]  # per site, rank order (public: the sites release them)
    schedule: PoissonSchedule
    sigma: float  # the gradient noise multiplier the parties add
    sigma_eff: float  # what the accountant counts, with the noised batch sizes
    dp: Optional[DPStepParams]
    count_noise: Optional[CountNoise]
    privacy: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return sum(self.train_rows)


def is_all_mpc(cfg: RunConfig) -> bool:
    return cfg.split_layer == len(cfg.model.blocks)


def enclave_noise(cfg: RunConfig) -> bool:
    """K draws the DP noise (``dp.noise_source: enclave``, DP on)."""
    return cfg.dp.enabled and cfg.dp.noise_source == "enclave"


def needs_key_service(cfg: RunConfig) -> bool:
    """K takes part: it decrypts the HE->SS rounds (hybrid) or draws the DP noise."""
    return not is_all_mpc(cfg) or enclave_noise(cfg)


def split_clip(cfg: RunConfig) -> Optional[Tuple[int, float]]:
    """The hybrid model clips each sample's split activations to ``he.split_norm_bound``."""
    return None if is_all_mpc(cfg) else (cfg.split_layer, cfg.he.split_norm_bound)


def plan_run(cfg: RunConfig, *, train_rows: Sequence[int]) -> RunPlan:
    """The run's schedule and DP parameters from the config and every site's training rows."""
    rows = tuple(int(r) for r in train_rows)
    if len(rows) != cfg.smpc.parties or any(r < 0 for r in rows) or sum(rows) == 0:
        raise ConfigError(f"training rows per site {rows} do not fit smpc.parties={cfg.smpc.parties} "
                          "(one count per site, at least one row in all)")
    schedule = PoissonSchedule.of(rows=sum(rows), batch_size=cfg.train.batch_size, epochs=cfg.train.epochs,
                                  max_steps=cfg.train.max_steps)
    if not cfg.dp.enabled:
        return RunPlan(train_rows=rows, schedule=schedule, sigma=0.0, sigma_eff=0.0, dp=None, count_noise=None)
    count_noise = CountNoise(std=cfg.dp.count_noise)
    q, steps = schedule.sample_rate, schedule.total_steps
    discrete = enclave_noise(cfg)
    check_accountant(cfg.dp, discrete=discrete)
    if cfg.dp.target_epsilon is not None:
        sigma_eff = resolve_noise_multiplier(cfg.dp, sample_rate=q, steps=steps, discrete=discrete)
        sigma = gradient_noise_for(sigma_eff=sigma_eff, count_std=cfg.dp.count_noise)
    else:
        sigma = resolve_noise_multiplier(cfg.dp, sample_rate=q, steps=steps)
        sigma_eff = effective_noise_multiplier(sigma=sigma, count_std=cfg.dp.count_noise)
    dp = DPStepParams(max_grad_norm=cfg.dp.max_grad_norm, noise_multiplier=sigma, parties=cfg.smpc.parties,
                      noise_source=cfg.dp.noise_source)
    delta_padding = padding_failure_delta(steps=steps, parties=cfg.smpc.parties)
    privacy = {"noise_source": cfg.dp.noise_source,
               "noise": ("one exact discrete Gaussian per step from the key service" if discrete else
                         f"each of {cfg.smpc.parties} parties adds N(0, sigma^2 C^2 / {cfg.smpc.parties - 1}), "
                         "rounded; only the honest parties' noise is credited"),
               "gradient_noise_multiplier": sigma, "released_noise_multiplier": dp.released_noise_multiplier,
               "accountant": f"{cfg.dp.accountant}" + (" at integer orders 2..256" if discrete else ""),
               "count_noise_rows": cfg.dp.count_noise,
               "accounted_noise_multiplier": sigma_eff, "delta": cfg.dp.delta,
               "delta_padding_failure": delta_padding, "delta_total": cfg.dp.delta + delta_padding}
    return RunPlan(train_rows=rows, schedule=schedule, sigma=sigma, sigma_eff=sigma_eff, dp=dp,
                   count_noise=count_noise, privacy=privacy)


def batch_capacity(cfg: RunConfig) -> int:
    """Rows the HE slot layout holds per step: a padded Poisson batch 7 standard deviations above
    its mean, with ``train.batch_size`` as the (upper bound of the) expected batch."""
    parties, expected = cfg.smpc.parties, float(cfg.train.batch_size)
    noise = CountNoise(std=cfg.dp.count_noise) if cfg.dp.enabled else None
    padding_mean = parties * noise.mean_padding if noise is not None else 0.0
    padding_var = parties * noise.std ** 2 if noise is not None else 0.0
    return int(expected + padding_mean + 7 * math.sqrt(expected + padding_var) + 8)


def he_run_spec(cfg: RunConfig) -> Any:
    """The HE run spec K, E and the parties each derive from the config alone (module doc)."""
    from ppml_hybrid.he_stage.runspec import HERunSpec, resolved_hiding

    return resolved_hiding(HERunSpec(he=cfg.he, model=cfg.model, split_layer=cfg.split_layer,
                                     image_size=cfg.data.image_size, parties=cfg.smpc.parties,
                                     batch_capacity=batch_capacity(cfg)))


def key_service_run_spec(cfg: RunConfig) -> Any:
    """K's run spec. An all-MPC run uses K only for the DP noise, but K's attested binding is
    built around CKKS material, so K keys the smallest HE head there is (the last block, as if
    it ran under HE; about 0.2 s and 33 MB at 128 bits on the demo model). Nothing is ever
    decrypted with it: no evaluator is registered, and only E may submit a round."""
    if not is_all_mpc(cfg):
        return he_run_spec(cfg)
    if cfg.model.blocks[-1].type != "dense":
        raise ConfigError(f"dp.noise_source=enclave with split_layer={cfg.split_layer}: K keys the last block as its "
                          "nominal HE head, and model.blocks' last block is not dense; use dp.noise_source=parties")
    return he_run_spec(dataclasses.replace(cfg, split_layer=len(cfg.model.blocks) - 1))


@dataclass(frozen=True)
class HybridContext:
    """What a party's hybrid steps need besides the weights: where K and E are, and the
    public key material this party verified itself."""

    endpoints: Any  # ServiceEndpoints
    material: Any  # the verified encryption material (context and public key)
    spec: Any  # HERunSpec


def step_program(cfg: RunConfig, plan: RunPlan, *, step: int, state: Dict[str, torch.Tensor],
                 hybrid: Optional[HybridContext] = None, key_service: Any = None) -> Any:
    """The party program of step ``step`` (0-based) with the public weights ``state``.

    ``key_service``: the :class:`~ppml_hybrid.protocols.key_access.KeyEndpoint` of the K this
    party verified (all-MPC with ``dp.noise_source: enclave``; hybrid steps use ``hybrid``'s).
    """
    q = plan.schedule.sample_rate
    if is_all_mpc(cfg):
        from ppml_hybrid.protocols.mpc_train_step import MPCTrainStep

        if enclave_noise(cfg) and key_service is None:
            raise ConfigError("dp.noise_source=enclave: the step needs the key service K (it draws the noise)")
        return MPCTrainStep(model=cfg.model, state_dict=state, image_size=cfg.data.image_size, sample_rate=q,
                            dp=plan.dp, count_noise=plan.count_noise, key_service=key_service, step_id=step + 1)
    if hybrid is None:
        raise ConfigError(f"split_layer={cfg.split_layer} runs blocks under HE: the step needs K and E")
    from ppml_hybrid.protocols.hybrid_train_step import HybridTrainStep
    from ppml_hybrid.protocols.params import ConversionParams

    he = hybrid.spec.he
    program = HybridTrainStep(
        model=cfg.model, state_dict=state, image_size=cfg.data.image_size, split_layer=cfg.split_layer,
        sample_rate=q, batch_capacity=hybrid.spec.batch_capacity, dp=plan.dp, material=hybrid.material,
        conversion=ConversionParams(parties=cfg.smpc.parties, scale_bits=cfg.he.scale_bits),
        endpoints=hybrid.endpoints, step_id=step + 1, first_round=0, hiding_bits=he.mask_hiding_bits,
        max_mask_bits=he.max_mask_bits, split_norm_bound=he.split_norm_bound,
        delta_conversion=ConversionParams(parties=cfg.smpc.parties, scale_bits=cfg.he.scale_bits,
                                          integer_bits=cfg.he.delta_clamp_bits),
        count_noise=plan.count_noise)
    # K accepts round ids in order only: every step uses the same number of rounds.
    return dataclasses.replace(program, first_round=step * program.rounds_per_step())
