"""Checks that fail a run before any work starts: from the config alone, or from the data size."""

from __future__ import annotations

import logging
import math

from ppml_hybrid.config import RunConfig
from ppml_hybrid.errors import ConfigError
from ppml_hybrid.model import block_shapes, validate_split

log = logging.getLogger(__name__)


def check_run(cfg: RunConfig) -> None:
    """Everything that can fail from the config alone fails here, before data or processes."""
    block_shapes(cfg.model, cfg.data.image_size)
    if cfg.mode == "hybrid":
        validate_split(cfg.model, cfg.split_layer)


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
