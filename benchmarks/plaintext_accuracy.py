"""Accuracy of the plaintext reference on the demo test split, mean over seeds.

    .venv/bin/python benchmarks/plaintext_accuracy.py [--seeds 0 1 2] [overrides ...]

Prints, for the default config (or the given Hydra overrides): the DP-SGD run's test
accuracy/AUC and epsilon per seed and their mean, the non-private run (dp=off) for the same
seeds (at ``--nonprivate-lr``), and the intensity-statistics baseline (a classifier on global intensity features), so
the README's figures can be reproduced with one command.
"""

from __future__ import annotations

import argparse
import logging
import statistics

from bench_config import run_config
from ppml_hybrid.data import intensity_baseline_accuracy, load_splits
from ppml_hybrid.pipeline import train


def _cfg(overrides):
    return run_config(["mode=plaintext", *overrides])


def _runs(label, seeds, overrides):
    accs = []
    for seed in seeds:
        m = train(_cfg([*overrides, f"seed={seed}"]))
        accs.append(m["test"]["accuracy"])
        eps = "-" if m["epsilon"] is None else f"{m['epsilon']:.2f}"
        print(f"{label:12s} seed {seed}: test accuracy {m['test']['accuracy']:.4f}  AUC {m['test']['auc']:.4f}"
              f"  epsilon {eps}  {m['time_per_epoch_s']:.1f} s/epoch", flush=True)
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"{label:12s} mean test accuracy {statistics.mean(accs):.4f} (sd {sd:.4f}, {len(accs)} seeds)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    # Without clipping, the DP learning rate overshoots (gradients are not scaled to <= C).
    parser.add_argument("--nonprivate-lr", type=float, default=0.2)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=poly_cnn")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = _cfg(args.overrides)
    splits = load_splits(cfg.data, num_classes=cfg.model.num_classes)
    print(f"data: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test slices")
    print(f"intensity-statistics baseline test accuracy: {intensity_baseline_accuracy(splits.train, splits.test):.4f}")
    _runs("DP-SGD", args.seeds, args.overrides)
    _runs("non-private", args.seeds, [*args.overrides, "dp=off", f"train.lr={args.nonprivate_lr}"])


if __name__ == "__main__":
    main()
