"""The multirun summary: one row per job, failed jobs listed, best split per model and profile."""

from __future__ import annotations

import json

from ppml_hybrid.sweep import render_markdown, summarize


def _job(root, name, split, lan, wan, acc=0.6):
    d = root / name
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({
        "mode": "hybrid", "model": "relu_cnn", "split_layer": split, "steps": 3, "time_per_step_s": 2.0,
        "projected_epoch_s": {"lan": lan, "wan": wan, "wan_slow": wan * 3},
        "mpc_traffic_per_step": [{"party": 0, "bytes_sent": 5e6, "rounds": 100}, {"party": 1, "bytes_sent": 4e6, "rounds": 90}],
        "epsilon": 1.5, "test": {"accuracy": acc},
    }))


def test_best_split_per_profile_and_failed_jobs(tmp_path):
    _job(tmp_path, "0_split_layer=3", 3, lan=100.0, wan=900.0)
    _job(tmp_path, "1_split_layer=4", 4, lan=120.0, wan=500.0)
    (tmp_path / "2_split_layer=5").mkdir()  # a job that failed before writing metrics
    summary = summarize(tmp_path)
    assert [r["status"] for r in summary["rows"]] == ["ok", "ok", "failed (no metrics.json)"]
    assert summary["rows"][0]["bytes_per_step"] == 5e6 and summary["rows"][0]["rounds_per_step"] == 100
    assert summary["best_split"]["relu_cnn/lan"]["split_layer"] == 3
    assert summary["best_split"]["relu_cnn/wan"]["split_layer"] == 4
    table = render_markdown(summary)
    assert "relu_cnn/wan: split_layer=4" in table and "failed (no metrics.json)" in table


def test_the_sweep_plot_is_drawn_from_the_summary(tmp_path):
    from ppml_hybrid.report import write_sweep_plot

    _job(tmp_path, "0_split_layer=3", 3, lan=100.0, wan=900.0, acc=0.9)
    _job(tmp_path, "1_split_layer=4", 4, lan=120.0, wan=500.0, acc=0.8)
    assert write_sweep_plot(summarize(tmp_path), tmp_path) == "sweep.png"
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    one = tmp_path / "one"
    one.mkdir()
    _job(one, "0_split_layer=3", 3, lan=100.0, wan=900.0)
    assert write_sweep_plot(summarize(one), one) is None  # nothing to compare
