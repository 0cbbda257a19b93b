"""The run report: decision counts and ROC from the released score histograms, and the files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ppml_hybrid.config import parse_run_config
from ppml_hybrid.report import binary_counts, pooled_histograms, roc_points, write_report

CONF = Path(__file__).resolve().parents[1] / "conf"


def _hist(neg_scores, pos_scores, bins=20):
    """hist[c][k] for two classes from P(class 1) of the negatives and the positives."""
    b = lambda s: np.bincount(np.minimum((np.asarray(s) * bins).astype(int), bins - 1), minlength=bins)  # noqa: E731
    p1_neg, p1_pos = b(neg_scores), b(pos_scores)
    # class 0's scores are 1 - P(1): its "with label 0" rows are the negatives
    p0_neg, p0_pos = b(1 - np.asarray(pos_scores)), b(1 - np.asarray(neg_scores))
    return np.array([[p0_neg, p0_pos], [p1_neg, p1_pos]])


def test_counts_balanced_accuracy_and_majority_rate_from_histograms():
    hist = _hist(neg_scores=[0.1, 0.2, 0.7, 0.05], pos_scores=[0.9, 0.6, 0.4, 0.8, 0.95, 0.99])
    c = binary_counts(hist)
    assert (c.tp, c.fn, c.fp, c.tn) == (5, 1, 1, 3)
    assert c.balanced_accuracy == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert c.majority_rate == pytest.approx(6 / 10)
    # a model that says "1" for everything: accuracy = the majority rate, balanced accuracy 0.5
    always = binary_counts(_hist(neg_scores=[0.9] * 4, pos_scores=[0.9] * 6))
    assert always.balanced_accuracy == pytest.approx(0.5)


def test_roc_runs_from_origin_to_one_and_is_monotone():
    hist = _hist(neg_scores=np.linspace(0, 0.6, 30), pos_scores=np.linspace(0.4, 1, 30))
    fpr, tpr = roc_points(hist[1][0], hist[1][1])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_suppressed_sites_are_left_out_of_the_pooled_histograms():
    h = _hist([0.1], [0.9]).tolist()
    metrics = {"sites": {"test": [{"suppressed": False, "score_histograms": h}, {"suppressed": True},
                                  {"suppressed": False, "score_histograms": h}]}}
    assert pooled_histograms(metrics).sum() == 2 * np.asarray(h).sum()


def test_an_encrypted_runs_report_has_its_plots_and_says_when_a_model_separates_nothing(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = parse_run_config(OmegaConf.to_container(compose(config_name="train"), resolve=True))
    flat = _hist(neg_scores=[0.55] * 50, pos_scores=[0.56] * 50).tolist()
    metrics = {
        "mode": "hybrid", "split_layer": 3, "model": "relu_cnn", "test": {"accuracy": 0.5, "auc": 0.5, "n": 100},
        "epsilon": 1.5, "steps": 2, "time_per_step_s": 14.0, "dp": {"delta": 1e-5},
        "privacy": {"noise_source": "enclave", "gradient_noise_multiplier": 1.2, "released_noise_multiplier": 1.2},
        "epochs": [{"epoch": 1, "steps": 2, "val": {"loss": 0.7, "accuracy": 0.5, "auc": float("nan")},
                    "epsilon": 1.5}],
        "sites": {"test": [{"suppressed": False, "score_histograms": flat}]},
        "stages_per_step": [{"stage": "mpc_forward", "seconds": 3.0, "bytes_sent": 1e8}],
        "mpc_layers_per_step": [{"party": 0, "layer": "block1.pool", "direction": "forward", "bytes_sent": 7e7}],
    }
    report = write_report(cfg, metrics, tmp_path).read_text()
    for image in ("curves.png", "test.png", "cost.png"):
        assert (tmp_path / image).stat().st_size > 10_000 and f"({image})" in report
    assert "hardly separates the classes" in report
    assert "enclave" in report and "1.2000 / 1.2000" in report
    assert "split_layer: 3" in report  # the configuration is part of the report
