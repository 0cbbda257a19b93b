"""Validation and test metrics computed by each site on its own rows; only aggregates leave it.

Steps (party program :class:`EvaluateAtSite`, run in each party process with the public
model of the moment):

1. the site evaluates its own validation or test rows (never sent anywhere) in plaintext with
   the public weights;
2. if the split holds fewer than ``min_patients`` distinct patients, the site reports only that
   it is suppressed (so no site's metrics ever describe a handful of patients);
3. otherwise it reports :class:`SiteAggregate`: row and patient counts, the number of correct
   predictions, the summed cross-entropy, and per class c a histogram of the predicted
   probability of c over ``bins`` equal bins of [0, 1], separately for rows of class c and rows
   of other classes (what a ROC AUC needs);
4. the coordinator pools the reporting sites (:func:`pool`): accuracy = sum correct / sum rows,
   loss = sum loss / sum rows, AUC from the summed histograms (a positive and a negative row in
   the same bin count one half: this binned AUC differs from the exact one by at most half the
   fraction of positive-negative pairs that share a bin, which :func:`auc_max_error` reports;
   large for an untrained model whose scores all sit near 0.5, small once scores spread).

Who learns what: the coordinator (and whoever reads ``metrics.json``) learns per reporting site
its row and patient counts, its number of correct predictions, its summed loss and, per class,
how many of its rows of that class (and of the other classes) scored in each probability bin
(default 20 bins of width 0.05). A suppressed site reveals only that its split has fewer than
``min_patients`` patients. No score of a single row, no image and no label leaves the site.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ppml_hybrid.config import ModelConfig
from ppml_hybrid.errors import TrainingDivergedError
from ppml_hybrid.model import build_model
from ppml_hybrid.protocols.step_common import PartyRows
from ppml_hybrid.training.evaluation import SplitMetrics, logits_of

DEFAULT_BINS = 20
DEFAULT_MIN_PATIENTS = 5
SPLITS = ("val", "test")


@dataclass(frozen=True)
class EvalRows:
    """One site's rows of one evaluation split (stay in that site's process).

    Not :class:`ppml_hybrid.data.ImageSet`: these travel in the party processes' inputs, and
    unpickling an ImageSet imports the data package (MONAI: about 4 s per party process)."""

    images: torch.Tensor
    labels: torch.Tensor
    patient_ids: Tuple[str, ...]


@dataclass(frozen=True)
class SiteRows(PartyRows):
    """A site's own data: training rows (``images``/``labels``, what the training steps use)
    and its validation and test rows."""

    val: Optional[EvalRows] = None
    test: Optional[EvalRows] = None


def eval_rows(data: Any) -> EvalRows:
    """An ImageSet's rows as this site's evaluation rows."""
    return EvalRows(images=data.images, labels=data.labels, patient_ids=tuple(data.patient_ids))


def site_rows(splits: Any) -> SiteRows:
    """A site's own DataSplits as what its party process holds."""
    return SiteRows(images=splits.train.images, labels=splits.train.labels, val=eval_rows(splits.val),
                    test=eval_rows(splits.test))


@dataclass(frozen=True)
class SiteAggregate:
    """What one site reports for one split (module doc, step 3); ``suppressed``: nothing else."""

    site: int
    suppressed: bool
    rows: int = 0
    patients: int = 0
    correct: int = 0
    loss_sum: float = 0.0
    # hist[c][k][b]: rows with (k=1) or without (k=0) label c whose P(c) fell into bin b
    hist: Tuple[Tuple[Tuple[int, ...], ...], ...] = field(default=())

    def metrics(self) -> Optional[SplitMetrics]:
        return None if self.suppressed else pool([self])

    def as_dict(self) -> Dict[str, Any]:
        if self.suppressed:
            return {"site": self.site, "suppressed": True}
        m = self.metrics()
        return {"site": self.site, "suppressed": False, "rows": self.rows, "patients": self.patients,
                **m.as_dict(), "score_histograms": [list(map(list, h)) for h in self.hist]}


@torch.no_grad()
def site_aggregate(model: nn.Module, rows: Optional[EvalRows], *, site: int, num_classes: int,
                   bins: int = DEFAULT_BINS, min_patients: int = DEFAULT_MIN_PATIENTS,
                   batch_size: int = 512) -> SiteAggregate:
    """Steps 1-3 at one site."""
    if rows is None or len(set(rows.patient_ids)) < min_patients:
        return SiteAggregate(site=site, suppressed=True)
    logits = logits_of(model, rows.images, batch_size=batch_size)
    if not bool(torch.isfinite(logits).all()):
        raise TrainingDivergedError(
            f"training diverged: the model's outputs on site {site}'s rows are NaN or infinite. Lower train.lr"
        )
    probs = torch.softmax(logits.double(), dim=1)
    labels = rows.labels
    loss_sum = float(nn.functional.cross_entropy(logits.double(), labels, reduction="sum"))
    correct = int((probs.argmax(dim=1) == labels).sum())
    return SiteAggregate(site=site, suppressed=False, rows=len(labels), patients=len(set(rows.patient_ids)),
                         correct=correct, loss_sum=loss_sum,
                         hist=score_histograms(probs, labels, num_classes=num_classes, bins=bins))


def score_histograms(probs: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
                     bins: int = DEFAULT_BINS) -> Tuple[Tuple[Tuple[int, ...], ...], ...]:
    """hist[c][k][b]: rows with (k=1) or without (k=0) label c whose P(c) fell into bin b of
    ``bins`` equal bins of [0, 1] (what a site releases for AUC and ROC, and the report plots)."""
    bin_of = torch.clamp((probs * bins).long(), max=bins - 1)
    hist = []
    for c in range(num_classes):
        is_c = labels == c
        hist.append(tuple(tuple(int(v) for v in torch.bincount(bin_of[mask, c], minlength=bins))
                          for mask in (~is_c, is_c)))
    return tuple(hist)


def _binned_auc(neg: Sequence[int], pos: Sequence[int]) -> float:
    p, n = sum(pos), sum(neg)
    if p == 0 or n == 0:
        return float("nan")
    below, total = 0, 0.0
    for b in range(len(pos)):
        total += pos[b] * (below + 0.5 * neg[b])
        below += neg[b]
    return total / (p * n)


def _summed(live: Sequence[SiteAggregate]) -> List[List[List[int]]]:
    classes, bins = len(live[0].hist), len(live[0].hist[0][0])
    return [[[sum(a.hist[c][k][b] for a in live) for b in range(bins)] for k in (0, 1)] for c in range(classes)]


def _auc_classes(classes: int) -> range:
    return range(1, 2) if classes == 2 else range(classes)  # binary: the score of class 1


def auc_max_error(aggregates: Sequence[SiteAggregate]) -> float:
    """Largest possible |binned AUC - exact AUC| of the pooled sites: half the fraction of
    positive-negative pairs sharing a bin (averaged over classes as the AUC is)."""
    live = [a for a in aggregates if not a.suppressed]
    if not live:
        return float("nan")
    summed = _summed(live)
    out = []
    for c in _auc_classes(len(summed)):
        neg, pos = summed[c]
        pairs = sum(pos) * sum(neg)
        out.append(0.5 * sum(p * n for p, n in zip(pos, neg)) / pairs if pairs else float("nan"))
    return sum(out) / len(out)


def pool(aggregates: Sequence[SiteAggregate]) -> SplitMetrics:
    """Step 4: the reporting sites' pooled metrics (NaN with n = 0 when every site is suppressed)."""
    live = [a for a in aggregates if not a.suppressed]
    n = sum(a.rows for a in live)
    if n == 0:
        return SplitMetrics(loss=float("nan"), accuracy=float("nan"), auc=float("nan"), n=0)
    summed = _summed(live)
    per_class = [_binned_auc(summed[c][0], summed[c][1]) for c in _auc_classes(len(summed))]
    auc = float("nan") if any(math.isnan(a) for a in per_class) else sum(per_class) / len(per_class)
    return SplitMetrics(loss=sum(a.loss_sum for a in live) / n, accuracy=sum(a.correct for a in live) / n,
                        auc=auc, n=n)


@dataclass(frozen=True)
class EvaluateAtSite:
    """Party program: steps 1-3 on this party's own ``split`` rows with the public weights."""

    model: ModelConfig
    state_dict: Mapping[str, torch.Tensor]
    image_size: int
    split: str
    split_clip: Optional[Tuple[int, float]] = None
    bins: int = DEFAULT_BINS
    min_patients: int = DEFAULT_MIN_PATIENTS

    def __call__(self, ctx: Any, inputs: Any) -> SiteAggregate:
        torch.set_num_threads(1)
        site = getattr(inputs, "rows", inputs)  # HybridPartyInputs carry the site's rows in .rows
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        model = build_model(self.model, image_size=self.image_size, seed=0, split_clip=self.split_clip)
        model.load_state_dict(dict(self.state_dict))
        return site_aggregate(model, getattr(site, self.split, None), site=ctx.rank,
                              num_classes=self.model.num_classes, bins=self.bins, min_patients=self.min_patients)
