"""benchmarks/hybrid_accuracy.py's statistics and --merge, on JSON written here (no training):
the gap paired by seed, runs the divergence check stopped, and which files may be pooled."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "hybrid_accuracy.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

from hybrid_accuracy import _by_seed, _mean_interval, _paired, table_markdown  # noqa: E402


def _r(seed, acc):
    return {"seed": seed, "accuracy": acc, "auc": acc, "epsilon": 3.44, "noise_multiplier": 1.2, "seconds": 1.0}


def _file(path, *, seeds, hybrid, plain, repeats, overrides=()):
    cfg = {"seeds": seeds, "split": 3, "noise_source": "enclave", "plaintext_repeats": repeats, "real_images": None,
           "overrides": list(overrides), "merge": None}
    path.write_text(json.dumps({"config": cfg, "runs": {"hybrid": hybrid, "plaintext_same_epsilon": plain}}))
    return path


def test_the_paired_gap_takes_out_what_a_seed_shares():
    # seed 1 is 20 points lower in both arms; within each seed the hybrid is 1 point above
    hybrid = [_r(0, 0.96), _r(1, 0.76), _r(2, 0.95)]
    plain = [_r(0, 0.95), _r(0, 0.95), _r(1, 0.75), _r(1, 0.75), _r(2, 0.94), _r(2, 0.94)]
    p = _paired(hybrid, plain, [0, 1, 2])
    assert p["gap_points"] == pytest.approx(1.0) and p["seeds"] == 3
    assert p["high"] - p["low"] == pytest.approx(0.0, abs=1e-9)  # the same gap in every seed
    # a seed whose hybrid run was stopped has no pair: left out, not counted as 0
    stopped = [{"seed": 0, "diverged": "training diverged", "seconds": 5.0}, *hybrid[1:]]
    assert _paired(stopped, plain, [0, 1, 2])["seeds"] == 2
    assert _mean_interval(stopped)["runs"] == 2
    assert [(s, len(g)) for s, g in _by_seed(stopped, [0, 1, 2])] == [(0, 0), (1, 1), (2, 1)]


def test_a_stopped_run_is_listed_in_the_table_not_averaged():
    runs = {"hybrid": [{"seed": 0, "diverged": "x", "seconds": 1.0}, _r(1, 0.9), _r(2, 0.8)],
            "plaintext_same_epsilon": [_r(1, 0.9), _r(2, 0.9)]}
    result = {"config": {"seeds": [0, 1, 2]}, "runs": runs,
              "means": {a: _mean_interval(r) for a, r in runs.items()},
              "gaps": {"plaintext_same_epsilon": {"gap_points": -5.0, "low": -1.0, "high": 1.0}}}
    text = table_markdown(result)
    assert "| 0 | - | - |" in text
    assert "stopped by the divergence check" in text and "hybrid seed 0" in text
    assert "**85.0%**" in text  # the two completed hybrid runs


def _merge(*paths, out):
    return subprocess.run([sys.executable, str(SCRIPT), "--merge", *map(str, paths), "--json", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_merge_pools_seeded_files_with_other_repeat_counts(tmp_path):
    a = _file(tmp_path / "a.json", seeds=[0, 1], repeats=2, hybrid=[_r(0, 0.9), _r(1, 0.8)],
              plain=[_r(0, 0.9), _r(0, 0.9), _r(1, 0.8), _r(1, 0.8)])
    b = _file(tmp_path / "b.json", seeds=[0, 1], repeats=1, hybrid=[_r(0, 0.92), _r(1, 0.82)],
              plain=[_r(0, 0.9), _r(1, 0.8)])
    proc = _merge(a, b, out=tmp_path / "ab.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged = json.loads((tmp_path / "ab.json").read_text())
    assert merged["means"]["hybrid"]["runs"] == 4 and merged["means"]["plaintext_same_epsilon"]["runs"] == 6
    assert merged["paired"]["plaintext_same_epsilon"]["seeds"] == 2  # seed 0 of both files is one group
    assert merged["paired"]["plaintext_same_epsilon"]["gap_points"] == pytest.approx(1.0)


def test_merge_refuses_another_configuration_and_names_it(tmp_path):
    a = _file(tmp_path / "a.json", seeds=[0], repeats=1, hybrid=[_r(0, 0.9)], plain=[_r(0, 0.9)])
    b = _file(tmp_path / "b.json", seeds=[1], repeats=1, hybrid=[_r(1, 0.9)], plain=[_r(1, 0.9)],
              overrides=["train.lr_warmup=0.25"])
    proc = _merge(a, b, out=tmp_path / "ab.json")
    assert proc.returncode != 0 and "overrides" in proc.stderr and "b.json" in proc.stderr
    assert not (tmp_path / "ab.json").exists()


def test_the_plaintext_arm_gets_exactly_the_hybrid_runs_split(tmp_path):
    """A one-machine hybrid run splits each site's rows at that site; plaintext would split all
    rows at once (other test patients). hybrid_split_overrides hands plaintext the sites' own
    splits: same patients in every split, same images."""
    from bench_config import run_config
    from hybrid_accuracy import hybrid_split_overrides

    from ppml_hybrid.data import load_splits
    from ppml_hybrid.data.dataset import load_site_splits
    from ppml_hybrid.data.sites import demo_site_folders

    small = ["data.image_size=8"]
    cfg = run_config(small)
    plain = load_splits(run_config(hybrid_split_overrides(small, tmp_path)).data)
    sites = [load_site_splits(dataclasses.replace(cfg.data, root=str(f), name="nifti"))
             for f in demo_site_folders(cfg.data, parties=cfg.smpc.parties)]
    drawn = load_splits(cfg.data)  # what a plaintext run would use by itself
    for name in ("train", "val", "test"):
        ours = getattr(plain, name)
        union = sorted(p for s in sites for p in getattr(s, name).patient_ids)
        assert sorted(ours.patient_ids) == union
        assert tuple(ours.images.shape[1:]) == tuple(getattr(sites[0], name).images.shape[1:])
    assert sorted(drawn.test.patient_ids) != sorted(plain.test.patient_ids)  # why the arm needs it
