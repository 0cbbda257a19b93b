"""Accuracy of hybrid DP training against plaintext Opacus, mean over seeds, one command.

    .venv/bin/python benchmarks/hybrid_accuracy.py [--seeds 0 1 2] [--split 3] [--plaintext-repeats 3]
        [--json out.json]
        [hydra overrides ...]

Same data (demo), same model, same schedule and the same clipping for every run; per seed:

* hybrid: ``mode=hybrid split_layer=--split`` (DP on; 2 parties each add
  ``N(0, sigma^2 C^2 / (n - 1))``, so the released sum carries ``n / (n - 1)`` times Opacus's noise
  variance; the accountant counts only the honest parties' ``sigma``);
* plaintext, same total noise: Opacus with noise multiplier ``sigma * sqrt(n / (n - 1))``: isolates
  what encryption costs (fixed point, approximate clipping, conversions);
* plaintext, same epsilon: Opacus with ``sigma``, the epsilon the hybrid run reports.

Each plaintext reference runs ``--plaintext-repeats`` times per seed (seconds each, against
minutes for a hybrid run), so its mean is the better estimated side of each gap.

Printed: test accuracy per seed and run, means (sd), and the two gaps in percentage points:
(i) hybrid - plaintext at the same total noise (target: within 1 point), (ii) hybrid -
plaintext at the same epsilon (the price of distributed noise). Seeds fix model initialisation
only; batches and noise come from OS entropy in every mode.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List

from bench_config import run_config
from ppml_hybrid.pipeline import train


def _run(label: str, overrides: List[str]) -> Dict[str, Any]:
    start = time.perf_counter()
    m = train(run_config(overrides))
    out = {"accuracy": m["test"]["accuracy"], "auc": m["test"]["auc"], "epsilon": m["epsilon"],
           "noise_multiplier": m["noise_multiplier"], "seconds": time.perf_counter() - start}
    print(f"  {label:28s} test accuracy {out['accuracy']:.4f}  AUC {out['auc']:.4f}  "
          f"epsilon {out['epsilon']:.3f}  noise multiplier {out['noise_multiplier']:.4f}  "
          f"({out['seconds']:.0f} s)", flush=True)
    return out


def _mean(runs: List[Dict[str, Any]]) -> str:
    accs = [r["accuracy"] for r in runs]
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return f"{100 * statistics.mean(accs):.1f}% (sd {100 * sd:.1f})"


def _half_width(a: List[Dict[str, Any]], b: List[Dict[str, Any]]) -> float:
    """Half-width in points of a normal 95% interval for mean(a) - mean(b) (run-to-run spread:
    OS-entropy batches and noise), so a gap is read against what the seeds can resolve."""
    def var_of_mean(runs: List[Dict[str, Any]]) -> float:
        accs = [r["accuracy"] for r in runs]
        return statistics.variance(accs) / len(accs) if len(accs) > 1 else float("nan")

    return 100 * 1.96 * math.sqrt(var_of_mean(a) + var_of_mean(b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--split", type=int, default=3, help="split_layer of the hybrid runs (3: the default run)")
    ap.add_argument("--plaintext-repeats", type=int, default=3, help="plaintext runs per seed and reference")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run, e.g. train.epochs=4")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    parties = run_config(args.overrides).smpc.parties
    runs: Dict[str, List[Dict[str, Any]]] = {"hybrid": [], "plaintext_same_noise": [], "plaintext_same_epsilon": []}
    for seed in args.seeds:
        print(f"seed {seed}:", flush=True)
        common = [*args.overrides, f"seed={seed}"]
        hybrid = _run(f"hybrid (split {args.split})", ["mode=hybrid", f"split_layer={args.split}", *common])
        sigma = hybrid["noise_multiplier"]
        total = sigma * math.sqrt(parties / (parties - 1))
        # The noise multipliers are fixed here, so neither plaintext run re-calibrates to a target.
        fixed = ["dp.target_epsilon=null"]
        runs["hybrid"].append(hybrid)
        # Plaintext runs are cheap: repeat them so the references' means carry less run-to-run noise.
        for _ in range(args.plaintext_repeats):
            runs["plaintext_same_noise"].append(
                _run(f"plaintext, noise x{total / sigma:.3f}", ["mode=plaintext", *common, *fixed,
                                                                   f"dp.noise_multiplier={total}"]))
            runs["plaintext_same_epsilon"].append(
                _run("plaintext, same epsilon", ["mode=plaintext", *common, *fixed, f"dp.noise_multiplier={sigma}"]))
    mean = {k: statistics.mean(r["accuracy"] for r in v) for k, v in runs.items()}
    print(f"\nmean test accuracy over seeds {args.seeds}:")
    for k, v in runs.items():
        print(f"  {k:24s} {_mean(v)} over {len(v)} runs")
    gap_noise = 100 * (mean["hybrid"] - mean["plaintext_same_noise"])
    gap_eps = 100 * (mean["hybrid"] - mean["plaintext_same_epsilon"])
    half_noise = _half_width(runs["hybrid"], runs["plaintext_same_noise"])
    half_eps = _half_width(runs["hybrid"], runs["plaintext_same_epsilon"])
    print(f"(i) hybrid - plaintext at the same total noise: {gap_noise:+.1f} points, 95% interval "
          f"+-{half_noise:.1f} (target: within 1)")
    print(f"(ii) hybrid - plaintext at the same epsilon: {gap_eps:+.1f} points, 95% interval +-{half_eps:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"config": vars(args) | {"json": str(args.json)}, "runs": runs,
                                         "gap_same_noise_points": gap_noise,
                                         "gap_same_epsilon_points": gap_eps,
                                         "gap_same_noise_95_half_width": half_noise,
                                         "gap_same_epsilon_95_half_width": half_eps}, indent=2) + "\n")


if __name__ == "__main__":
    main()
