"""One run, from a checked config to metrics on disk.

``train(cfg)`` is what ``train.py`` calls after Hydra has composed the config. It checks
everything that can be checked before any work starts (model shapes, the split), then
dispatches on ``mode``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict

import torch

from ppml_hybrid.config import RunConfig
from ppml_hybrid.errors import ConfigError
from ppml_hybrid.model import block_shapes, valid_splits, validate_split

log = logging.getLogger(__name__)


def check_run(cfg: RunConfig) -> None:
    """Everything that can fail from the config alone fails here, before data or processes."""
    block_shapes(cfg.model, cfg.data.image_size)
    if cfg.mode == "hybrid":
        validate_split(cfg.model, cfg.split_layer)


def _check_privacy_for_data(cfg: RunConfig, *, n_train: int) -> None:
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


def train(cfg: RunConfig) -> Dict[str, Any]:
    """Run ``cfg`` and return its metrics (also written to ``metrics.json`` in the output dir)."""
    check_run(cfg)
    from ppml_hybrid.data import load_splits
    from ppml_hybrid.training.plaintext import train_plaintext
    from ppml_hybrid.training.secure import train_secure

    if cfg.mode == "plaintext":
        log.info("mode=plaintext: split_layer=%d is not used (valid splits for %s: %s)",
                 cfg.split_layer, cfg.model.name, list(valid_splits(cfg.model)))
    torch.set_num_threads(cfg.train.num_threads)
    splits = load_splits(cfg.data, num_classes=cfg.model.num_classes, progress=cfg.train.progress)
    log.info("data: %d train / %d val / %d test images", len(splits.train.labels),
             len(splits.val.labels), len(splits.test.labels))
    _check_privacy_for_data(cfg, n_train=len(splits.train.labels))
    result = train_plaintext(cfg, splits) if cfg.mode == "plaintext" else train_secure(cfg, splits)
    metrics = {
        "mode": cfg.mode,
        "model": cfg.model.name,
        "split_layer": cfg.split_layer,
        "seed": cfg.seed,
        "dp": asdict(cfg.dp),
        **result.metrics(),
    }
    delta = metrics.get("privacy", {}).get("delta_total", cfg.dp.delta)
    log.info(
        "test: accuracy %.4f, AUC %.4f, loss %.4f%s", result.test.accuracy, result.test.auc,
        result.test.loss, f"; epsilon {result.epsilon:.3f} at delta {delta:.3g}"
        if result.epsilon is not None else " (dp=off)",
    )
    if cfg.output_dir is not None:
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2) + "\n")
        torch.save(
            {"state_dict": result.model.state_dict(), "model": asdict(cfg.model),
             "image_size": cfg.data.image_size, "split_clip": getattr(result.model, "split_clip", None)},
            out / "model.pt",
        )
        log.info("wrote %s and %s", out / "metrics.json", out / "model.pt")
    return metrics


def _finite(value: Any) -> Any:
    """JSON has no NaN: write undefined values (AUC with one class) as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
