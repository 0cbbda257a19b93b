"""Accuracy of the plaintext reference on the demo test split, mean over seeds.

    .venv/bin/python benchmarks/plaintext_accuracy.py [--seeds 0 1 2] [--json out.json] [--check] [overrides ...]
    .venv/bin/python benchmarks/plaintext_accuracy.py --smoke   # 1 seed, 2 steps (the suite runs it)

Prints, for the default config (or the given Hydra overrides): the DP-SGD run's test
accuracy/AUC and epsilon per seed and their mean, the non-private run (dp=off) for the same
seeds (at ``--nonprivate-lr``), and the intensity-statistics baseline (a classifier on global intensity features), so
the README's figures can be reproduced with one command. ``--check`` exits 1 when the DP-SGD
mean is below the README's floor (chance + 15 points) or not above the intensity baseline.
``table_markdown`` renders the JSON (printed here; ``run_all.py`` writes the README's table with it).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List

from bench_config import run_config
from ppml_hybrid.data import intensity_baseline_accuracy, load_splits
from ppml_hybrid.pipeline import train


def _cfg(overrides):
    return run_config(["mode=plaintext", *overrides])


def _runs(label, seeds, overrides) -> Dict[str, Any]:
    runs: List[Dict[str, Any]] = []
    for seed in seeds:
        m = train(_cfg([*overrides, f"seed={seed}"]))
        runs.append({"seed": seed, "accuracy": m["test"]["accuracy"], "auc": m["test"]["auc"], "epsilon": m["epsilon"],
                     "s_per_epoch": m["time_per_epoch_s"]})
        eps = "-" if m["epsilon"] is None else f"{m['epsilon']:.2f}"
        print(f"{label:12s} seed {seed}: test accuracy {m['test']['accuracy']:.4f}  AUC {m['test']['auc']:.4f}"
              f"  epsilon {eps}  {m['time_per_epoch_s']:.1f} s/epoch", flush=True)
    accs = [r["accuracy"] for r in runs]
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"{label:12s} mean test accuracy {statistics.mean(accs):.4f} (sd {sd:.4f}, {len(accs)} seeds)", flush=True)
    return {"label": label, "overrides": list(overrides), "runs": runs, "mean": statistics.mean(accs), "sd": sd}


def table_markdown(result: Dict[str, Any]) -> str:
    """The README's table from this script's JSON."""
    seeds = result["seeds"]
    which = f"seeds {', '.join(str(x) for x in seeds)}" if len(seeds) > 1 else f"seed {seeds[0]}"
    lines = [f"| run | test accuracy, mean of {which} (sd) | per seed | epsilon |",
             "|---|---|---|---|"]
    for key, name in (("dp", "DP-SGD"), ("nonprivate", f"non-private (`dp=off`, lr {result['nonprivate_lr']:g})")):
        arm = result[key]
        eps = {r["epsilon"] for r in arm["runs"]}
        eps_cell = "-" if eps == {None} else " / ".join(f"{e:.2f}" for e in sorted(e for e in eps if e is not None))
        lines.append(f"| {name} | {arm['mean']:.1%} ({arm['sd'] * 100:.1f}) | "
                     + " / ".join(f"{r['accuracy'] * 100:.1f}" for r in arm["runs"]) + f" | {eps_cell} |")
    lines.append(f"| intensity-statistics baseline (gradient boosting on global intensity features) | "
                 f"{result['baseline']:.1%} | | - |")
    return "\n".join(lines)


FLOOR = 0.65  # chance + 15 points (README)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    # Without clipping, the DP learning rate overshoots (gradients are not scaled to <= C).
    parser.add_argument("--nonprivate-lr", type=float, default=0.2)
    parser.add_argument("--smoke", action="store_true", help="seed 0, 2 steps, 16x16 images: every code path")
    parser.add_argument("--check", action="store_true", help=f"exit 1 below {FLOOR:.0%} or the intensity baseline")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=poly_cnn")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.overrides = [0], ["train.max_steps=2", "data.image_size=16", "train.progress=false",
                                           *args.overrides]
    logging.basicConfig(level=logging.WARNING)
    cfg = _cfg(args.overrides)
    splits = load_splits(cfg.data, num_classes=cfg.model.num_classes)
    print(f"data: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test slices")
    baseline = intensity_baseline_accuracy(splits.train, splits.test)
    print(f"intensity-statistics baseline test accuracy: {baseline:.4f}")
    dp = _runs("DP-SGD", args.seeds, args.overrides)
    nonprivate = _runs("non-private", args.seeds, [*args.overrides, "dp=off", f"train.lr={args.nonprivate_lr}",
                                                   "train.lr_reference_batch=null"])
    print(f"ratio DP-SGD / non-private accuracy: {dp['mean'] / nonprivate['mean']:.3f}; DP-SGD / intensity "
          f"baseline: {dp['mean'] / baseline:.3f}")
    ok = dp["mean"] >= FLOOR and dp["mean"] > baseline
    result = {"overrides": args.overrides, "seeds": args.seeds, "nonprivate_lr": args.nonprivate_lr,
              "data": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
              "baseline": baseline, "floor": FLOOR, "dp": dp, "nonprivate": nonprivate, "met": ok}
    print()
    print(table_markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"check: DP-SGD mean {dp['mean']:.4f} against the floor {FLOOR} and the baseline {baseline:.4f}: "
          f"{'met' if ok else 'MISSED'}")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
