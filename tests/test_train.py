"""Plaintext training end to end: learns the demo task under DP, writes metrics, runs sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ppml_hybrid.config import parse_run_config
from ppml_hybrid.data import intensity_baseline_accuracy, load_splits
from ppml_hybrid.pipeline import train

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# Floor stated in the README: chance (50%) + 15 points after a short DP run.
ACCURACY_FLOOR = 0.65


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="train", overrides=["mode=plaintext", "train.progress=false", *overrides])
    container = OmegaConf.to_container(raw, resolve=True)
    container["output_dir"] = str(tmp_path / "run")
    return parse_run_config(container)


def test_short_dp_run_beats_chance_and_intensity_statistics(tmp_path):
    cfg = _cfg(tmp_path, "train.epochs=5")
    metrics = train(cfg)
    splits = load_splits(cfg.data, num_classes=2)
    baseline = intensity_baseline_accuracy(splits.train, splits.test)
    test_acc = metrics["test"]["accuracy"]
    assert metrics["epsilon"] is not None and 0 < metrics["epsilon"] < 50
    assert test_acc >= ACCURACY_FLOOR, f"DP test accuracy {test_acc:.3f} below floor {ACCURACY_FLOOR}"
    assert test_acc > baseline + 0.05, f"CNN {test_acc:.3f} vs intensity statistics {baseline:.3f}"
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test"]["accuracy"] == test_acc
    assert len(written["epochs"]) == 5 and all(e["epsilon"] > 0 for e in written["epochs"])
    assert written["epochs"][0]["epsilon"] < written["epochs"][-1]["epsilon"]
    assert (tmp_path / "run" / "model.pt").is_file()
    # the report: plots and report.md beside metrics.json, the confusion counts from the test rows
    report = (tmp_path / "run" / "report.md").read_text()
    for image in ("curves.png", "test.png"):
        assert (tmp_path / "run" / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image in report
    hist = written["test_score_histograms"]
    assert sum(map(sum, hist[1])) == written["test"]["n"]
    assert "balanced accuracy" in report and "majority-class rate" in report


def test_dp_off_reports_no_epsilon_and_target_epsilon_is_met(tmp_path):
    off = train(_cfg(tmp_path / "off", "dp=off", "train.max_steps=5"))
    assert off["epsilon"] is None and off["steps"] == 5
    target = train(_cfg(tmp_path / "eps", "dp.target_epsilon=4.0", "train.max_steps=20"))
    assert target["steps"] == 20
    assert target["epsilon"] == pytest.approx(4.0, rel=0.05)


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_hydra_multirun_writes_one_result_per_job_goes_on_after_a_failed_job_and_exits_with_its_code(tmp_path):
    proc = _run_cli("-m", "mode=plaintext", "train.lr=-1,0.05", "train.max_steps=2", "train.progress=false",
                    f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]  # ConfigError of the first job
    results = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert [p.parent.name[:2] for p in results] == ["1_"]  # one result per job that ran, none for the failed one
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    status = [r["status"] for r in summary["rows"]]
    assert status[0].startswith("failed: ConfigError: train.lr must be positive") and status[1:] == ["ok"], status
    text = (tmp_path / "sweep" / "summary.md").read_text()
    assert "failed: ConfigError" in text and "| job | mode |" in text


def test_cli_errors_exit_non_zero_with_one_line(tmp_path):
    proc = _run_cli("split_layer=2", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert proc.returncode == 2
    assert "SplitError: split_layer=2 puts block 3" in proc.stdout + proc.stderr
    proc = _run_cli("dp.max_grad_norm=-1", f"hydra.run.dir={tmp_path}/r2", cwd=tmp_path)
    assert proc.returncode == 2
    assert "dp.max_grad_norm" in proc.stdout + proc.stderr


def test_cli_bad_data_exits_3_naming_the_file(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label,patient_id\nmissing_scan.nii.gz,1,p1\n")
    proc = _run_cli("mode=plaintext", "data=nifti", f"data.root={tmp_path}",
                    f"data.labels={tmp_path}/labels.csv", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert proc.returncode == 3
    out = proc.stdout + proc.stderr
    assert "DataError" in out and "missing_scan.nii.gz" in out
    # the failed run's folder says so, and holds no result
    error = json.loads((tmp_path / "r" / "error.json").read_text())
    assert error["type"] == "DataError" and error["exit_code"] == 3
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_a_diverging_run_stops_naming_the_learning_rate(tmp_path):
    """A learning rate far too high: the plaintext run watches its training loss and stops with an
    error naming train.lr (it used to end "successfully" with a loss of 1e12)."""
    from ppml_hybrid.errors import TrainingDivergedError

    with pytest.raises(TrainingDivergedError, match=r"train.lr \(now 5000\)"):
        train(_cfg(tmp_path, "dp=off", "train.lr=5000", "train.epochs=2"))


def test_divergence_rule_and_the_short_schedule_warning(tmp_path, caplog):
    from ppml_hybrid.errors import TrainingDivergedError
    from ppml_hybrid.training.checks import check_divergence, check_schedule

    cfg = _cfg(tmp_path)
    check_divergence(6.0, first=0.7, num_classes=2, what="loss", cfg=cfg)  # below 10 x max(0.7, ln 2)
    for bad in (7.5, float("nan"), float("inf")):
        with pytest.raises(TrainingDivergedError, match="Lower train.lr"):
            check_divergence(bad, first=0.7, num_classes=2, what="loss", cfg=cfg)
    # one model's validation loss (encrypted modes) swings more: 7.2 after epoch 2 of a demo run is
    # not divergence there; 100 x max(0.7, ln 2) and non-finite values are
    check_divergence(7.2, first=0.71, num_classes=2, what="val loss", cfg=cfg, snapshot=True)
    for bad in (72.0, float("nan")):
        with pytest.raises(TrainingDivergedError, match="Lower train.lr"):
            check_divergence(bad, first=0.71, num_classes=2, what="val loss", cfg=cfg, snapshot=True)
    check_schedule(cfg, total_steps=8, n_train=14)
    assert "only 8 optimiser steps" in caplog.text and "train.epochs" in caplog.text


def test_max_epsilon_stops_a_plaintext_run_before_the_cap(tmp_path):
    metrics = train(_cfg(tmp_path, "dp.max_epsilon=2.0", "train.epochs=4"))
    assert metrics["epsilon"] <= 2.0 and metrics["steps"] < 56
    assert all(e["steps"] > 0 for e in metrics["epochs"])
