"""Checks that fail a run before any work starts: from the config alone, or from the data size."""

from __future__ import annotations

import logging
import math

from ppml_hybrid.config import RunConfig
from ppml_hybrid.errors import ConfigError, TrainingDivergedError
from ppml_hybrid.model import block_shapes, validate_split

log = logging.getLogger(__name__)


def check_run(cfg: RunConfig) -> None:
    """Everything that can fail from the config alone fails here, before data or processes."""
    block_shapes(cfg.model, cfg.data.image_size)
    if cfg.mode == "hybrid":
        validate_split(cfg.model, cfg.split_layer)


# a loss this many times above the larger of its first value and chance (ln K) is divergence
DIVERGENCE_FACTOR = 10.0
# The same for one model's loss (the encrypted modes' validation loss after an epoch): a snapshot
# swings far more than an epoch's mean training loss. On the demo (plaintext DP, default config),
# 1 of 24 runs had a validation loss 13x chance after one epoch and still ended at 99%; a hybrid
# run (clip 0.5, lr 2.4) was stopped at 10x in epoch 2 (7.2 against 0.71 after epoch 1).
# Blow-ups (a rate far too high) reach 1e3+ or NaN within an epoch.
SNAPSHOT_DIVERGENCE_FACTOR = 100.0
# fewer steps than this rarely train a DP model: said, with the keys that change it
FEW_STEPS = 32  # the demo defaults take 56 (and reach ~95% in plaintext); a few hundred rows take 8


def check_divergence(loss: float, *, first: float, num_classes: int, what: str, cfg: RunConfig,
                     snapshot: bool = False) -> None:
    """Stop a run whose ``loss`` (what the run may see: the epoch's mean training loss in plaintext
    mode, the public model's pooled validation loss in encrypted modes: ``snapshot``) has blown
    up, naming train.lr."""
    factor = SNAPSHOT_DIVERGENCE_FACTOR if snapshot else DIVERGENCE_FACTOR
    bound = factor * max(first, math.log(num_classes))
    if math.isfinite(loss) and loss <= bound:
        return
    raise TrainingDivergedError(
        f"training diverged: the {what} reached {loss:.4g} (started at {first:.4g}; the limit is {bound:.3g}). "
        f"Lower train.lr (now {cfg.train.lr:g}); with larger train.epochs or a smaller train.batch_size a "
        "learning rate that worked before can diverge")


def check_schedule(cfg: RunConfig, *, total_steps: int, n_train: int) -> None:
    """Say when the schedule gives the model few steps (small data sets with the demo's defaults);
    not when the user capped them with train.max_steps."""
    if total_steps < FEW_STEPS and cfg.train.max_steps is None:
        log.warning("this run takes only %d optimiser steps (%d training rows, train.batch_size=%d, train.epochs=%d"
                    "): DP-SGD usually needs more. Raise train.epochs or lower train.batch_size (and "
                    "check epsilon), or expect a model close to chance", total_steps, n_train,
                    cfg.train.batch_size, cfg.train.epochs)


def check_privacy_for_data(cfg: RunConfig, *, n_train: int) -> None:
    """DP settings that the data size makes meaningless: refused (delta) or said (batch = all)."""
    if not cfg.dp.enabled:
        return
    if cfg.dp.delta >= 1.0 / n_train:
        raise ConfigError(
            f"dp.delta={cfg.dp.delta:g} is not below 1/N = {1.0 / n_train:.3g} for the {n_train} training rows: "
            "such a delta allows releasing a whole row in the clear. Choose dp.delta well below 1/N "
            f"(e.g. {10 ** math.floor(math.log10(0.1 / n_train)):g})"
        )
    if cfg.train.batch_size >= n_train:
        log.warning("train.batch_size=%d is at least the %d training rows: every step samples every row "
                    "(sample rate 1.0), so subsampling adds no privacy and epsilon grows quickly",
                    cfg.train.batch_size, n_train)
