"""A finished run's results on disk: ``metrics.json`` and ``model.pt`` (what every mode writes)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict

import torch

from ppml_hybrid.config import RunConfig

log = logging.getLogger("ppml_hybrid.pipeline")


def write_results(cfg: RunConfig, result: Any) -> Dict[str, Any]:
    """Log the test result; write ``metrics.json`` and ``model.pt`` to ``cfg.output_dir`` (if set)."""
    metrics = {
        "mode": cfg.mode,
        "model": cfg.model.name,
        "split_layer": cfg.split_layer,
        "seed": cfg.seed,
        "dp": asdict(cfg.dp),
        **result.metrics(),
    }
    _warn_if_unmeasured(result.test)
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
        torch.save(model_file_contents(cfg, result.model), out / "model.pt")
        log.info("wrote %s and %s", out / "metrics.json", out / "model.pt")
    return metrics


def _warn_if_unmeasured(test: Any) -> None:
    """Say so when the test metrics measure nothing (a run that 'succeeds' with AUC nan)."""
    n = getattr(test, "n", None)
    if n == 0:
        log.warning("NO TEST METRICS: every site's test split has fewer than the minimum number of patients "
                    "(its metrics are suppressed); add patients or raise data.test_fraction")
    elif not math.isfinite(test.auc):
        log.warning("test AUC is undefined: the test rows hold a single class (%d rows); the accuracy alone says "
                    "little. Add patients of every class or raise data.test_fraction", n or 0)


def model_file_contents(cfg: RunConfig, model: Any) -> Dict[str, Any]:
    """What ``model.pt`` holds: the public weights, the model config, and the data geometry
    (image size, slicing) that ``python -m ppml_hybrid predict`` applies to new scans."""
    return {"state_dict": model.state_dict(), "model": asdict(cfg.model), "image_size": cfg.data.image_size,
            "split_clip": getattr(model, "split_clip", None),
            "data": {"slice_axis": cfg.data.slice_axis, "slice_range": list(cfg.data.slice_range),
                     "slice_step": cfg.data.slice_step}}


def _finite(value: Any) -> Any:
    """JSON has no NaN: write undefined values (AUC with one class) as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
