"""Aggregate classification metrics of a model on one split (loss, accuracy, AUC).

Only aggregates leave this function: per-sample losses and predictions stay inside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ppml_hybrid.errors import TrainingDivergedError


@dataclass(frozen=True)
class SplitMetrics:
    loss: float
    accuracy: float
    auc: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def logits_of(model: nn.Module, images: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """The model's outputs on ``images`` in eval mode, in batches (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 512) -> SplitMetrics:
    """Mean cross-entropy, accuracy and (one-vs-rest) ROC AUC over ``images``."""
    logits = logits_of(model, images, batch_size=batch_size)
    if not bool(torch.isfinite(logits).all()):
        raise TrainingDivergedError(
            "training diverged: the model's outputs are NaN or infinite. Lower train.lr (the default "
            "suits DP-SGD's clipped gradients; non-private runs, dp=off, need about 0.2)"
        )
    loss = nn.functional.cross_entropy(logits, labels).item()
    probs = torch.softmax(logits, dim=1).numpy()
    y = labels.numpy()
    accuracy = float((probs.argmax(axis=1) == y).mean())
    return SplitMetrics(loss=loss, accuracy=accuracy, auc=_auc(y, probs), n=len(y))


def _auc(y: np.ndarray, probs: np.ndarray) -> float:
    # imported here: party processes load this module (for SplitMetrics, through the site
    # metrics) and never compute an exact AUC; scikit-learn costs each of them about 2.4 s
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")  # AUC is undefined with one class present
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(roc_auc_score(y, probs, multi_class="ovr", labels=list(range(probs.shape[1]))))
