"""Validation and test metrics computed at each site: pooled values against the plaintext twin,
suppression of small sites, and what leaves a site (aggregates only)."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from sklearn.metrics import roc_auc_score

from ppml_hybrid.config import BlockConfig, ModelConfig, SMPCConfig
from ppml_hybrid.model import build_model
from ppml_hybrid.smpc_stage.launcher import PartySession
from ppml_hybrid.training.evaluation import evaluate
from ppml_hybrid.training.site_metrics import (
    EvalRows, EvaluateAtSite, SiteRows, auc_max_error, pool, site_aggregate,
)

IMAGE = 8


def _model(classes: int):
    cfg = ModelConfig(name="t", num_classes=classes, blocks=(
        BlockConfig(type="conv", out=4, activation="relu", pool="avg"),
        BlockConfig(type="dense", out=classes, activation="none")))
    return cfg, build_model(cfg, image_size=IMAGE, seed=1)


def _rows(n: int, patients: int, classes: int, seed: int) -> EvalRows:
    g = torch.Generator().manual_seed(seed)
    return EvalRows(images=3 * torch.randn(n, 1, IMAGE, IMAGE, generator=g),
                    labels=torch.randint(0, classes, (n,), generator=g),
                    patient_ids=tuple(f"s{seed}-p{i % patients}" for i in range(n)))


@pytest.mark.parametrize("classes", [2, 3])
def test_pooled_site_metrics_match_the_plaintext_twin(classes):
    cfg, model = _model(classes)
    sites = [_rows(60, 12, classes, 1), _rows(45, 9, classes, 2), _rows(70, 14, classes, 3)]
    aggs = [site_aggregate(model, r, site=j, num_classes=classes) for j, r in enumerate(sites)]
    got = pool(aggs)
    images = torch.cat([r.images for r in sites])
    labels = torch.cat([r.labels for r in sites])
    want = evaluate(model, images, labels)
    assert got.n == want.n == len(labels)
    assert got.accuracy == pytest.approx(want.accuracy, abs=1e-12)
    assert got.loss == pytest.approx(want.loss, rel=1e-6)
    bound = auc_max_error(aggs)
    assert abs(got.auc - want.auc) <= bound + 1e-12, (got.auc, want.auc, bound)
    assert bound < 0.2  # spread scores: the bins resolve most pairs


def test_a_site_with_few_patients_reports_nothing_and_is_left_out_of_the_pool():
    cfg, model = _model(2)
    big, small = _rows(60, 12, 2, 1), _rows(16, 4, 2, 2)
    aggs = [site_aggregate(model, big, site=0, num_classes=2), site_aggregate(model, small, site=1, num_classes=2)]
    assert aggs[1].suppressed and aggs[1].rows == 0 and aggs[1].hist == () and aggs[1].as_dict() == {
        "site": 1, "suppressed": True}
    assert pool(aggs) == pool(aggs[:1])
    assert pool(aggs[1:]).n == 0 and math.isnan(pool(aggs[1:]).accuracy)


def test_what_leaves_a_site_is_the_same_for_any_order_of_its_rows():
    """A site's report is an aggregate: permuting its rows changes nothing the coordinator gets
    (a report that carried per-row scores or labels would change), and its size does not grow
    with the number of rows."""
    cfg, model = _model(2)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rows = _rows(64, 16, 2, 5)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    shuffled = EvalRows(images=rows.images[perm], labels=rows.labels[perm],
                        patient_ids=tuple(rows.patient_ids[i] for i in perm.tolist()))
    double = EvalRows(images=torch.cat([rows.images] * 2), labels=torch.cat([rows.labels] * 2),
                      patient_ids=rows.patient_ids * 2)
    empty = torch.zeros(0, 1, IMAGE, IMAGE)
    inputs = [SiteRows(images=empty, labels=torch.zeros(0, dtype=torch.long), val=rows, test=double),
              SiteRows(images=empty, labels=torch.zeros(0, dtype=torch.long), val=shuffled, test=double)]
    with PartySession(smpc=SMPCConfig(parties=2, timeout_s=60), party_inputs=inputs) as session:
        val = session.run(EvaluateAtSite(model=cfg, state_dict=state, image_size=IMAGE, split="val")).results
        test = session.run(EvaluateAtSite(model=cfg, state_dict=state, image_size=IMAGE, split="test")).results
    a, b = val
    assert (a.rows, a.patients, a.correct, a.hist) == (b.rows, b.patients, b.correct, b.hist)
    assert a.loss_sum == pytest.approx(b.loss_sum, rel=1e-9)
    assert len(pickle.dumps(test[0])) <= len(pickle.dumps(a)) + 16  # twice the rows, the same report size
