"""Accuracy of hybrid DP training against plaintext Opacus at the same epsilon, one command.

    .venv/bin/python benchmarks/hybrid_accuracy.py [--seeds 0 1 2 3 4] [--split 3]
        [--noise-source enclave|parties] [--plaintext-repeats 3] [--json out.json] [--check]
        [--real-images [DIR]] [hydra overrides ...]
    .venv/bin/python benchmarks/hybrid_accuracy.py --smoke   # tiny: every code path (the suite runs it)
    .venv/bin/python benchmarks/hybrid_accuracy.py --merge a.json b.json --json all.json [--check]

Same data (the demo, or real MR slices: below), same model, same schedule and the same clipping for every run; per seed:

* hybrid: ``mode=hybrid split_layer=--split dp.noise_source=--noise-source`` (DP on). With
  ``enclave`` the key service draws one discrete Gaussian of std sigma C per step: the release
  carries exactly the noise the accountant credits. With ``parties`` each of n parties adds
  ``N(0, sigma^2 C^2 / (n - 1))``: the release carries ``sqrt(n / (n - 1))`` times it;
* plaintext, same epsilon: Opacus calibrated to the epsilon the hybrid run reports
  (``dp.target_epsilon``);
* plaintext, same total noise (``parties`` only): Opacus at ``sigma sqrt(n / (n - 1))``:
  isolates what encryption costs.

``--real-images [DIR]`` trains every arm on real MR slices (``benchmarks/real_images.py`` writes
the folder from files shipped in nilearn and nibabel; without DIR, once, into the demo's cache)
through the own-data path instead of the demo.

Each plaintext reference runs ``--plaintext-repeats`` times per seed (seconds each, against
minutes for a hybrid run). ``--merge`` pools the JSON of earlier invocations of the same
configuration (seeds run in separate commands) and reports them as one. Printed: test accuracy
per run, means (sd) with their 95% t-intervals, and each gap in points with its 95% Welch
t-interval and, blocked by seed (a seed fixes the initialisation of both arms), the mean of the
per-seed gaps with its t-interval over seeds. Target (``enclave``): the hybrid mean within 2 points of the
plaintext mean at the same epsilon (``--check`` exits 1 otherwise). Seeds fix model
initialisation only; batches and noise come from OS entropy in every mode.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import real_images
from bench_config import run_config
from ppml_hybrid.errors import TrainingDivergedError
from ppml_hybrid.pipeline import train


def _run(label: str, overrides: List[str], seed: int) -> Dict[str, Any]:
    """One run's test metrics; a run the divergence check stops is returned as such (printed,
    kept in the JSON, left out of the means), not allowed to end the benchmark."""
    start = time.perf_counter()
    try:
        m = train(run_config(overrides))
    except TrainingDivergedError as exc:
        print(f"  {label:28s} STOPPED: {exc}", flush=True)
        return {"seed": seed, "diverged": str(exc), "seconds": time.perf_counter() - start}
    out = {"seed": seed, "accuracy": m["test"]["accuracy"], "auc": m["test"]["auc"], "epsilon": m["epsilon"],
           "noise_multiplier": m["noise_multiplier"], "seconds": time.perf_counter() - start}
    print(f"  {label:28s} test accuracy {out['accuracy']:.4f}  AUC {out['auc']:.4f}  "
          f"epsilon {out['epsilon']:.3f}  noise multiplier {out['noise_multiplier']:.4f}  "
          f"({out['seconds']:.0f} s)", flush=True)
    return out


def _done(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [r for r in runs if "accuracy" in r]


def _by_seed(runs: List[Dict[str, Any]], seeds: List[int]) -> List[Tuple[int, List[Dict[str, Any]]]]:
    """(seed, its completed runs) in ``seeds`` order; a seed named twice (merged files) is one
    group. JSON from before runs carried their seed is grouped by position, as it was written."""
    if all("seed" in r for r in runs):
        return [(s, [r for r in runs if r["seed"] == s and "accuracy" in r]) for s in dict.fromkeys(seeds)]
    per = len(runs) // len(seeds)
    return [(s, runs[i * per:(i + 1) * per]) for i, s in enumerate(seeds)]


def _mean_interval(runs: List[Dict[str, Any]]) -> Dict[str, float]:
    """Mean test accuracy in percent with its 95% t-interval over the runs, and their sd."""
    from scipy import stats

    x = [100 * r["accuracy"] for r in _done(runs)]
    mean = statistics.mean(x) if x else float("nan")
    if len(x) < 2:
        return {"mean": mean, "sd": float("nan"), "low": float("nan"), "high": float("nan"), "runs": len(x)}
    sd = statistics.stdev(x)
    half = stats.t.ppf(0.975, len(x) - 1) * sd / math.sqrt(len(x))
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "runs": len(x)}


def _welch(a: List[Dict[str, Any]], b: List[Dict[str, Any]]) -> Dict[str, float]:
    """mean(a) - mean(b) in points with its 95% Welch t-interval (run-to-run spread: OS-entropy
    batches and noise), so a gap is read against what the runs can resolve."""
    from scipy import stats

    x = [100 * r["accuracy"] for r in _done(a)]
    y = [100 * r["accuracy"] for r in _done(b)]
    gap = statistics.mean(x) - statistics.mean(y) if x and y else float("nan")
    if len(x) < 2 or len(y) < 2:
        return {"gap_points": gap, "low": float("nan"), "high": float("nan")}
    ci = stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
    return {"gap_points": gap, "low": float(ci.low), "high": float(ci.high)}


def _paired(a: List[Dict[str, Any]], b: List[Dict[str, Any]], seeds: List[int]) -> Dict[str, float]:
    """mean over seeds of (mean(a) - mean(b) within the seed) with its 95% t-interval over seeds.

    A seed fixes the model's initialisation in both arms, and the demo's runs differ more between
    seeds than within one (one initialisation ends 10 points lower in every arm): blocking by seed
    takes that shared part out of the gap's spread. Runs are stored seed by seed."""
    from scipy import stats

    d = [100 * (statistics.mean(r["accuracy"] for r in ra) - statistics.mean(r["accuracy"] for r in rb))
         for (_, ra), (_, rb) in zip(_by_seed(a, seeds), _by_seed(b, seeds)) if ra and rb]
    gap = statistics.mean(d) if d else float("nan")
    if len(d) < 2:
        return {"gap_points": gap, "low": float("nan"), "high": float("nan"), "seeds": len(d)}
    half = stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return {"gap_points": gap, "low": gap - half, "high": gap + half, "seeds": len(d)}


def hybrid_split_overrides(overrides: List[str], work: Path) -> List[str]:
    """Overrides that give a plaintext run exactly the hybrid run's data: the union of each site's
    own train/val/test split, as a labels CSV with a fixed ``split`` column under ``work``.

    A one-machine hybrid run divides the rows among the parties' site folders and each party
    splits its own rows (as a hospital would); a plaintext run splits all rows at once. The two
    test sets then hold different patients, a fixed offset between the arms that more runs do
    not average away (on the real-image set before its split was fixed: +8.7 points for the
    hybrid, [+5.2, +12.2]). Same images otherwise: the slicing keys are the run's own."""
    from ppml_hybrid.data.dataset import split_folder
    from ppml_hybrid.data.sites import demo_site_folders, site_label_files

    cfg = run_config(overrides)
    d, n = cfg.data, cfg.smpc.parties
    rest = [o for o in overrides if not o.startswith(("data=", "data."))]
    sites = ([(f, f / "labels.csv") for f in demo_site_folders(d, parties=n)] if d.name == "demo"
             else site_label_files(d, parties=n, out_dir=work))
    rows = []
    for root, labels in sites:  # each party's own split of its site (data.load_site_splits)
        _, parts = split_folder(d, root=root, labels=labels, num_classes=cfg.model.num_classes)
        rows += [(r, name) for name in ("train", "val", "test") for r in getattr(parts, name)]
    base = Path(os.path.commonpath([str(r.path) for r, _ in rows]))
    base = base if base.is_dir() else base.parent
    work.mkdir(parents=True, exist_ok=True)
    csv_path = work / "hybrid_split.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "patient_id", "split"])
        writer.writerows((r.path.relative_to(base).as_posix(), r.label, r.patient_id, name) for r, name in rows)
    return [*rest, "data=nifti", f"data.root={base}", f"data.labels={csv_path}",
            f"data.image_size={d.image_size}", f"data.slice_axis={d.slice_axis}",
            f"data.slice_range=[{d.slice_range[0]},{d.slice_range[1]}]", f"data.slice_step={d.slice_step}"]


# The real-image set (benchmarks/real_images.py) has 740 training slices: batches of 128 over 6
# epochs give 36 steps (the default's 256 x 4 would give 12, too few for DP-SGD).
REAL_IMAGE_SCHEDULE = ["train.batch_size=128", "train.epochs=6"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--split", type=int, default=3, help="split_layer of the hybrid runs (3: the default run)")
    ap.add_argument("--noise-source", choices=["enclave", "parties"], default="enclave")
    ap.add_argument("--plaintext-repeats", type=int, default=3, help="plaintext runs per seed and reference")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--check", action="store_true", help="exit 1 when the enclave target (2 points) is missed")
    ap.add_argument("--smoke", action="store_true",
                    help="1 seed, 2 steps of batch 16 on 8x8 images, insecure test CKKS, two plaintext runs: every code "
                         "path but the two-sided interval (the suite runs it; its accuracies mean nothing)")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="pool these earlier JSON outputs (same configuration) instead of running")
    ap.add_argument("--real-images", type=Path, nargs="?", default=None, const=Path("auto"),
                    help="train on real MR slices through the own-data path (data=nifti) with "
                         + " ".join(REAL_IMAGE_SCHEDULE) + " instead of the demo: a folder written by "
                         "benchmarks/real_images.py, or none named: its set in the demo's cache (written on first use)")
    ap.add_argument("--plaintext-for", type=Path, nargs="+", default=None,
                    help="JSON of earlier invocations (one configuration): keep their hybrid runs and run the "
                         "plaintext arm again for each (on the hybrid's split, at each run's epsilon)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run, e.g. train.epochs=4")
    args = ap.parse_args()
    if args.merge:
        return _report(args, *_merged(args.merge, args))
    if args.plaintext_for:
        repeats = args.plaintext_repeats
        earlier, _ = _merged(args.plaintext_for, args)  # their configuration, seeds and hybrid runs
        args.plaintext_repeats, args.plaintext_for = repeats, [str(p) for p in args.plaintext_for]
    if args.smoke:
        args.seeds, args.plaintext_repeats = [0], 2
        args.overrides = ["data.image_size=8", "he=insecure_test", "train.max_steps=2", "train.batch_size=16",
                          *args.overrides]
    if args.real_images and not args.plaintext_for:  # --plaintext-for: its overrides are expanded
        root = real_images.ensure(real_images.default_folder() if str(args.real_images) == "auto"
                                  else args.real_images).resolve()
        args.real_images = root
        args.overrides = ["data=nifti", f"data.root={root}", f"data.labels={root / 'labels.csv'}",
                          *REAL_IMAGE_SCHEDULE, *args.overrides]
    logging.basicConfig(level=logging.WARNING)
    parties = run_config(args.overrides).smpc.parties
    arms = ["hybrid", "plaintext_same_epsilon"] + (["plaintext_same_noise"] if args.noise_source == "parties" else [])
    runs: Dict[str, List[Dict[str, Any]]] = {k: [] for k in arms}
    earlier_hybrid = (dict(_by_seed(earlier["hybrid"], args.seeds)) if args.plaintext_for else {})
    args.plaintext_split = "hybrid"  # the plaintext arms train and test on the hybrid's own split
    with tempfile.TemporaryDirectory(prefix="hybrid-split-") as work:
        plain = hybrid_split_overrides(args.overrides, Path(work))
        for seed in dict.fromkeys(args.seeds):
            print(f"seed {seed}:", flush=True)
            if args.plaintext_for:
                done = [{**r, "seed": seed} for r in earlier_hybrid.get(seed, [])]
                for r in done:
                    print(f"  {'hybrid (earlier run)':28s} test accuracy {r['accuracy']:.4f}", flush=True)
            else:
                done = [_run(f"hybrid (split {args.split}, {args.noise_source})",
                             ["mode=hybrid", f"split_layer={args.split}", f"dp.noise_source={args.noise_source}",
                              *args.overrides, f"seed={seed}"], seed)]
            runs["hybrid"] += done
            finished = _done(done)
            if not finished:
                print("  (no plaintext runs for this seed: they are calibrated to the hybrid run's epsilon)")
                continue
            sigma, eps = finished[0]["noise_multiplier"], finished[0]["epsilon"]
            common = [*plain, f"seed={seed}"]
            for _ in range(args.plaintext_repeats):
                runs["plaintext_same_epsilon"].append(_run(
                    "plaintext, same epsilon", ["mode=plaintext", *common, "dp.noise_multiplier=null",
                                                f"dp.target_epsilon={eps}"], seed))
                if "plaintext_same_noise" in runs:
                    total = sigma * math.sqrt(parties / (parties - 1))
                    runs["plaintext_same_noise"].append(_run(
                        f"plaintext, noise x{total / sigma:.3f}", ["mode=plaintext", *common, "dp.target_epsilon=null",
                                                                   f"dp.noise_multiplier={total}"], seed))
    return _report(args, runs, arms)


def table_markdown(result: Dict[str, Any]) -> str:
    """Per-seed accuracies of every arm, each arm's mean with its t-interval, and the gaps, from
    this script's JSON (``run_all.py`` renders the README's table with it)."""
    runs, means, gaps = result["runs"], result["means"], result["gaps"]
    arms, seeds = list(runs), result["config"]["seeds"]
    grouped = {a: _by_seed(runs[a], seeds) for a in arms}
    rows = ["| seed | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for i, (seed, _) in enumerate(grouped[arms[0]]):
        cells = [" / ".join(f"{100 * r['accuracy']:.1f}" for r in grouped[a][i][1]) + "%" if grouped[a][i][1] else "-"
                 for a in arms]
        rows.append(f"| {seed} | " + " | ".join(cells) + " |")
    rows.append("| mean (sd) [95% t-interval] | " + " | ".join(
        f"**{means[a]['mean']:.1f}%** ({means[a]['sd']:.1f}) [{means[a]['low']:.1f}, {means[a]['high']:.1f}]"
        for a in arms) + " |")
    rows.append("| epsilon (delta 1e-5) | " + " | ".join(
        f"{_done(runs[a])[0]['epsilon']:.2f}" if _done(runs[a]) else "-" for a in arms) + " |")
    stopped = [f"{a} seed {r['seed']}" for a in arms for r in runs[a] if "diverged" in r]
    if stopped:
        rows.append(f"| stopped by the divergence check (left out of the means) | {', '.join(stopped)} |"
                    + " |" * (len(arms) - 1))
    rows.append("")
    for arm, g in gaps.items():
        rows.append(f"- hybrid - {arm}: **{g['gap_points']:+.1f} points**, 95% Welch interval "
                    f"[{g['low']:+.1f}, {g['high']:+.1f}]")
        p = result.get("paired", {}).get(arm)
        if p:
            rows.append(f"  - paired by seed (both arms share each seed's initialisation): {p['gap_points']:+.1f} "
                        f"points, 95% t-interval over {p['seeds']} seeds [{p['low']:+.1f}, {p['high']:+.1f}]")
    if result["config"].get("merge"):
        rows.append("- pooled by `hybrid_accuracy.py --merge` from " + ", ".join(
            f"`{Path(p).name}`" for p in result["config"]["merge"]))
    return "\n".join(rows)


def _merged(paths: List[Path], args: argparse.Namespace):
    """Runs of earlier invocations pooled; refuses JSON of another configuration. Files whose runs
    all carry their seed may differ in plaintext repeats (runs are grouped by seed); older files
    are grouped by position and must not."""
    if len({p.resolve() for p in paths}) != len(paths):
        raise SystemExit("--merge: a file is named twice; its runs would count twice")
    loaded = [(p, json.loads(p.read_text())) for p in paths]
    seeded = all("seed" in r for _, d in loaded for rs in d["runs"].values() for r in rs)
    same = ("split", "noise_source", "real_images", "plaintext_split", "overrides") + (
        () if seeded else ("plaintext_repeats",))
    first = loaded[0][1]["config"]
    for p, d in loaded[1:]:
        for key in same:
            if d["config"].get(key) != first.get(key):
                raise SystemExit(f"--merge: {p} has {key}={d['config'].get(key)!r}, {paths[0]} has {first.get(key)!r}; "
                                 "only runs of one configuration can be pooled")
    for key in same:
        setattr(args, key, first.get(key))
    if seeded and len({str(d["config"].get("plaintext_repeats")) for _, d in loaded}) > 1:
        args.plaintext_repeats = sorted({d["config"].get("plaintext_repeats") for _, d in loaded}, key=str)
    args.seeds = [s for _, d in loaded for s in d["config"]["seeds"]]
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for _, d in loaded:
        for arm, rs in d["runs"].items():
            runs.setdefault(arm, []).extend(rs)
    return runs, list(runs)


def _report(args: argparse.Namespace, runs: Dict[str, List[Dict[str, Any]]], arms: List[str]) -> int:
    print(f"\nmean test accuracy over seeds {args.seeds} (dp.noise_source={args.noise_source}):")
    means = {k: _mean_interval(v) for k, v in runs.items()}
    for k, m in means.items():
        sd = m["sd"] if m["runs"] > 1 else 0.0
        print(f"  {k:24s} {m['mean']:.1f}% (sd {sd:.1f}) over {m['runs']} runs, 95% t-interval of the mean "
              f"[{m['low']:.1f}, {m['high']:.1f}]")
    gaps = {k: _welch(runs["hybrid"], runs[k]) for k in arms[1:]}
    paired = {k: _paired(runs["hybrid"], runs[k], args.seeds) for k in arms[1:]}
    for k, g in gaps.items():
        print(f"hybrid - {k}: {g['gap_points']:+.1f} points, 95% Welch interval [{g['low']:+.1f}, {g['high']:+.1f}]"
              + (" (target: within 2)" if k == "plaintext_same_epsilon" and args.noise_source == "enclave" else ""))
        print(f"  paired by seed: {paired[k]['gap_points']:+.1f} points, 95% t-interval over {paired[k]['seeds']} "
              f"seeds [{paired[k]['low']:+.1f}, {paired[k]['high']:+.1f}]")
    config = {k: ([str(p) for p in v] if k == "merge" and v else str(v) if isinstance(v, Path) else v)
              for k, v in vars(args).items()}
    result = {"config": config, "runs": runs, "means": means, "gaps": gaps, "paired": paired}
    print("\n" + table_markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    missed = args.noise_source == "enclave" and abs(gaps["plaintext_same_epsilon"]["gap_points"]) > 2.0
    if args.noise_source == "enclave":
        print(f"gap check: hybrid - plaintext at the same epsilon within 2 points: {'missed' if missed else 'met'}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
