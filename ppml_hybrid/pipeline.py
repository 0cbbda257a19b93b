"""One run, from a checked config to metrics on disk.

``train(cfg)`` is what ``train.py`` calls after Hydra has composed the config. It checks
everything that can be checked before any work starts (model shapes, the split), then
dispatches on ``mode``.
"""

from __future__ import annotations

import logging
from typing import Any, Dict

import torch

from ppml_hybrid.config import RunConfig
from ppml_hybrid.model import valid_splits
from ppml_hybrid.training.checks import check_privacy_for_data, check_run
from ppml_hybrid.training.results import write_results

log = logging.getLogger(__name__)


def train(cfg: RunConfig) -> Dict[str, Any]:
    """Run ``cfg`` and return its metrics (also written to ``metrics.json`` in the output dir).

    ``mode=plaintext`` trains here. ``mode=hybrid`` starts the consortium's roles on this
    machine (:mod:`ppml_hybrid.roles.local`: one party process per site reading only its own
    folder, the dealer, K and E) and coordinates them from this process: the same entry points
    and wire as a multi-host deployment."""
    check_run(cfg)
    torch.set_num_threads(cfg.train.num_threads)
    if cfg.mode == "plaintext":
        from ppml_hybrid.data import load_splits
        from ppml_hybrid.training.plaintext import train_plaintext

        log.info("mode=plaintext: split_layer=%d is not used (valid splits for %s: %s)",
                 cfg.split_layer, cfg.model.name, list(valid_splits(cfg.model)))
        splits = load_splits(cfg.data, num_classes=cfg.model.num_classes, progress=cfg.train.progress)
        log.info("data: %d train / %d val / %d test images", len(splits.train.labels),
                 len(splits.val.labels), len(splits.test.labels))
        check_privacy_for_data(cfg, n_train=len(splits.train.labels))
        result = train_plaintext(cfg, splits)
    else:
        from ppml_hybrid.roles.local import train_local

        result = train_local(cfg)
    metrics = write_results(cfg, result)
    if cfg.output_dir is not None:
        from ppml_hybrid.report import write_report

        log.info("report: %s (plots beside it)", write_report(cfg, metrics, cfg.output_dir))
    return metrics
