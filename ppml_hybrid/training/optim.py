"""Optimiser and learning-rate schedule from ``cfg.train``, shared by every training mode.

The update is public post-processing of the (noised) gradient, so the plaintext and the
encrypted modes use the very same optimiser on the public model.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from ppml_hybrid.config import RunConfig
from ppml_hybrid.errors import ConfigError

log = logging.getLogger(__name__)


def effective_lr(cfg: RunConfig, *, train_rows: int) -> float:
    """``train.lr`` is the rate at ``train.lr_reference_batch`` rows per step; the run's batch
    (``train.batch_size``, or all ``train_rows`` when there are fewer) gets it scaled linearly
    (Goyal et al. 2017), which keeps the noise of each update (lr x sigma C / B) where the
    reference was tuned: at batch 64 the demo's 1.2 diverged. ``train.lr_reference_batch=null``
    uses ``train.lr`` as given."""
    ref = cfg.train.lr_reference_batch
    return cfg.train.lr if ref is None else cfg.train.lr * min(cfg.train.batch_size, train_rows) / ref


def make_optimizer(cfg: RunConfig, model: nn.Module, *, train_rows: int) -> torch.optim.Optimizer:
    """The optimiser at :func:`effective_lr` for a run over ``train_rows`` rows (all sites)."""
    lr = effective_lr(cfg, train_rows=train_rows)
    if lr != cfg.train.lr:
        log.info("learning rate %.4g: train.lr=%g is the rate at train.lr_reference_batch=%d rows, scaled to this "
                 "run's batch of %d", lr, cfg.train.lr, cfg.train.lr_reference_batch,
                 min(cfg.train.batch_size, train_rows))
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.train.momentum)
    if cfg.train.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    raise ConfigError(f"train.optimizer={cfg.train.optimizer!r} is not one of sgd, adam")


def make_schedule(cfg: RunConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """Per-step learning-rate schedule: ``train.lr_schedule`` (cosine decay damps the late-epoch
    swings DP noise causes) times a linear warm-up over the first ``train.lr_warmup`` of the run's
    steps (off by default: on the demo it changed neither the mean nor the spread measurably;
    docs/architecture.md)."""
    if cfg.train.lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"train.lr_schedule={cfg.train.lr_schedule!r} is not one of constant, cosine")
    warmup = warmup_steps(cfg, total_steps)
    cosine = cfg.train.lr_schedule == "cosine"

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
        decay = 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)) if cosine else 1.0
        return ramp * decay

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_steps(cfg: RunConfig, total_steps: int) -> int:
    """Steps of linear warm-up: ``train.lr_warmup`` of the run's ``total_steps``, rounded."""
    return int(round(cfg.train.lr_warmup * total_steps))
