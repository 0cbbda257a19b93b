"""Optimiser and learning-rate schedule from ``cfg.train``, shared by every training mode.

The update is public post-processing of the (noised) gradient, so the plaintext and the
encrypted modes use the very same optimiser on the public model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ppml_hybrid.config import RunConfig
from ppml_hybrid.errors import ConfigError


def make_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum)
    if cfg.train.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    raise ConfigError(f"train.optimizer={cfg.train.optimizer!r} is not one of sgd, adam")


def make_schedule(cfg: RunConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """Per-step learning-rate schedule; cosine decay damps the late-epoch swings DP noise causes."""
    if cfg.train.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if cfg.train.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
    raise ConfigError(f"train.lr_schedule={cfg.train.lr_schedule!r} is not one of constant, cosine")
