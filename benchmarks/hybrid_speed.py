"""Speed targets of the hybrid pipeline, as ratios measured in one command.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hybrid_speed.py [--splits 3 4 5] [--steps 4]
        [--repeats 2] [--batch 256] [--json out.json] [--check] [hydra overrides ...]
    .venv/bin/python benchmarks/hybrid_speed.py --smoke   # tiny: every code path (the suite runs it)

On the demo data, default model (or the overrides), 2 parties + dealer, K and E as local
processes with the default 128-bit CKKS parameters, one thread per process. For every split it
runs the real training loop (``roles.local.train_local``: the deployed roles as local
processes, each party Poisson-sampling its own site's rows), ``--repeats`` times each of:

* DP on (the product: per-sample norms, checked clipping, K's noise);
* DP off (the same pipeline; exact sums opened, no norms, clipping or noise);

interleaved across splits and settings (split 3 on, off, split 4 on, off, ..., then the next
repeat) so that machine drift hits every split alike (the split ratio included); ``--steps`` measured
steps per run after one warm-up step (it opens the RPC channels and K's and E's sessions).

Then, in one party session with the same processes layout, CrypTen's own non-private training
step of the whole model (``crypten.nn``, weights secret-shared, CrossEntropyLoss, autograd,
``update_parameters``; TTP dealer) on a fixed batch of ``--batch`` rows, once to warm up and
``--steps`` times measured: as the model is written, and as a competent CrypTen user would
write it (max pooling before ReLU, ``skip_forward=True`` in the loss); ratio (b) uses the
latter.

Step time = median over every measured step of every repeat. Projections onto every network
profile come from the coordinator's cost model (``smpc_stage/cost_model.py``: compute less
loopback's own transfer, plus rounds x RTT plus the busier direction of each party's link over
all channels: peers, the dealer's link, K and E; slowest party), computed from the same steps.
Printed ratios:

(a) DP step / DP-off step, per split (target <= 1.5x; ``--check`` fails beyond it);
(b) hybrid DP step at the best split / CrypTen whole-model step, per profile (target <= 2x on lan);
(c) the best split per profile.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from bench_config import run_config  # noqa: E402
from ppml_hybrid.data import load_splits  # noqa: E402
from ppml_hybrid.model import build_model  # noqa: E402
from ppml_hybrid.smpc_stage.baseline import CrypTenTrainStep  # noqa: E402
from ppml_hybrid.smpc_stage.cost_model import (  # noqa: E402
    STANDARD_PROFILES, link_bytes, measure_loopback, project_step,
)
from ppml_hybrid.smpc_stage.launcher import PartySession  # noqa: E402
from ppml_hybrid.smpc_stage.transport import Traffic  # noqa: E402
from ppml_hybrid.roles.local import train_local  # noqa: E402
from ppml_hybrid.training.secure import assign_rows  # noqa: E402


TARGET_DP_OVERHEAD = 1.5


def _cfg(overrides: List[str]) -> Any:
    return run_config(["mode=hybrid", *overrides])


def _projected(traffic: List[Traffic], compute_s: float) -> Dict[str, float]:
    loopback = measure_loopback()
    return {net.name: project_step(traffic_per_party=traffic, compute_s=compute_s, network=net,
                                   loopback=loopback).total_s for net in STANDARD_PROFILES}


def _hybrid(cfg: Any) -> Dict[str, Any]:
    """One run through the deployed roles; its measured steps (warm-up dropped) and the
    coordinator's projections (the same cost model, from every channel's traffic)."""
    result = train_local(cfg)  # the demo divided into one folder per site, as train.py runs it
    return {"steps": list(result.step_seconds[1:]) or list(result.step_seconds),
            "projected_s": dict(result.projections),
            "mb_per_step": max(max(t["bytes_sent"], t["bytes_received"]) for t in result.traffic_per_party) / 1e6,
            "stages": {s["stage"]: s["seconds"] for s in result.stage_costs}}


def _pooled(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Median step over every repeat's measured steps; projections: the median over repeats."""
    steps = [s for r in runs for s in r["steps"]]
    profiles = runs[0]["projected_s"].keys()
    return {"step_s": statistics.median(steps), "steps": steps,
            "spread_s": [min(steps), max(steps)],
            "projected_s": {p: statistics.median(r["projected_s"][p] for r in runs) for p in profiles},
            "mb_per_step": statistics.median(r["mb_per_step"] for r in runs),
            "stages": runs[-1]["stages"]}


def _crypten(cfg: Any, splits: Any, *, batch: int, steps: int) -> Dict[str, Dict[str, Any]]:
    """CrypTen's step as written and rewritten (module doc), interleaved in one party session."""
    parties = cfg.smpc.parties
    rows = assign_rows(splits.train, parties=parties)
    per = batch // parties
    fixed = [type(r)(images=r.images[:per], labels=r.labels[:per]) for r in rows]
    model = build_model(cfg.model, image_size=cfg.data.image_size, seed=cfg.seed)
    programs = {key: CrypTenTrainStep(model=cfg.model, state_dict=model.state_dict(), image_size=cfg.data.image_size,
                                      lr=cfg.train.lr, rewritten=key == "crypten")
                for key in ("crypten_literal", "crypten")}
    times: Dict[str, List[float]] = {key: [] for key in programs}
    traffic: Dict[str, Any] = {}
    with PartySession(smpc=cfg.smpc, party_inputs=fixed) as session:
        for program in programs.values():
            session.run(program)  # warm-up
        for i in range(steps):
            for key, program in programs.items():
                results = session.run(program).results
                times[key].append(max(r.seconds for r in results))
                traffic[key] = [r.traffic for r in results]
                print(f"  CrypTen whole-model step{' (rewritten)' if key == 'crypten' else ''} {i + 1}/{steps}: "
                      f"{times[key][-1]:.2f} s", flush=True)
    out = {}
    for key in programs:
        median = statistics.median(times[key])
        out[key] = {"step_s": median, "steps": times[key], "projected_s": _projected(traffic[key], median),
                    "mb_per_step": max(link_bytes(t) for t in traffic[key]) / 1e6, "batch": per * parties}
    return out


def table_markdown(runs: Dict[str, Any]) -> str:
    """The results table and ratio lines from this script's JSON (``run_all.py`` renders the
    README's table with it too)."""
    splits = sorted({int(k.split("/")[0]) for k in runs["hybrid"]})
    profiles = list(runs["crypten"]["projected_s"])
    ratios = runs["ratios"]
    lines = ["| split | DP s/step (min-max) | DP-off s/step | (a) DP / DP-off | MB/step (busier direction) | "
             + " | ".join(f"projected {p} s" for p in profiles) + " |", "|---" * (5 + len(profiles)) + "|"]
    for split in splits:
        on, off = runs["hybrid"][f"{split}/on"], runs["hybrid"][f"{split}/off"]
        lines.append(f"| {split} | {on['step_s']:.2f} ({on['spread_s'][0]:.2f}-{on['spread_s'][1]:.2f}) | "
                     f"{off['step_s']:.2f} | {on['step_s'] / off['step_s']:.2f}x | {on['mb_per_step']:.0f} | "
                     + " | ".join(f"{on['projected_s'][p]:.2f}" for p in profiles) + " |")
    for key, label in (("crypten_literal", "as written"), ("crypten", "rewritten: pool before ReLU, skip_forward")):
        cr = runs[key]
        lines.append(f"| CrypTen whole model (non-private, batch {cr['batch']}, {label}) | {cr['step_s']:.2f} | | | "
                     f"{cr['mb_per_step']:.0f} | " + " | ".join(f"{cr['projected_s'][p]:.2f}" for p in profiles) + " |")
    lines += ["", f"(a) DP step / same pipeline DP off (target <= {TARGET_DP_OVERHEAD}x): "
              + ", ".join(f"split {s} {r:.2f}x" for s, r in ratios["dp_over_dp_off"].items()),
              "(b) hybrid DP step at the best split / CrypTen whole-model step as a competent user writes it "
              "(target <= 2x on lan): " + ", ".join(f"{p} {ratios['hybrid_best_over_crypten'][p]:.2f}x "
                                                    f"(split {ratios['best_split'][p]})" for p in profiles),
              "(c) best split: " + ", ".join(f"{p} {ratios['best_split'][p]}" for p in profiles)]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", type=int, nargs="+", default=[3, 4, 5])
    ap.add_argument("--steps", type=int, default=4, help="measured steps per run (hybrid runs add one warm-up)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved DP-on/DP-off runs per split")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true",
                    help="split 5 only (no E to start: the script runs the same code at every split), 8x8 images, batch 8, 1 step: every code path of the script (the suite runs it)")
    ap.add_argument("--check", action="store_true", help=f"exit 1 when (a) exceeds {TARGET_DP_OVERHEAD}x")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.smoke:
        args.splits, args.steps, args.repeats, args.batch = [5], 1, 1, 8
        args.overrides = ["data.image_size=8", "he=insecure_test", *args.overrides]
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    base = [f"train.batch_size={args.batch}", f"train.max_steps={args.steps + 1}", "train.progress=false",
            *args.overrides]
    cfg0 = _cfg(base)
    splits = load_splits(cfg0.data, num_classes=cfg0.model.num_classes)
    print(f"model {cfg0.model.name}, batch {args.batch} (Poisson, expected), {cfg0.smpc.parties} parties + dealer, "
          f"he={cfg0.he.name}, {args.steps} measured steps per run, {args.repeats} interleaved repeats", flush=True)

    runs: Dict[str, Any] = {"hybrid": {}, "config": {"batch": args.batch, "steps": args.steps,
                                                     "repeats": args.repeats, "overrides": args.overrides}}
    raw: Dict[str, List[Dict[str, Any]]] = {f"{split}/{dp}": [] for split in args.splits for dp in ("on", "off")}
    for rep in range(args.repeats):  # every split and DP setting once per repeat: drift hits all alike
        for split in args.splits:
            for dp in ("on", "off"):
                print(f"split {split}, dp={dp}, repeat {rep + 1}/{args.repeats} ...", flush=True)
                r = _hybrid(_cfg([*base, f"split_layer={split}", f"dp={dp}"]))
                raw[f"{split}/{dp}"].append(r)
                print(f"  steps: {', '.join(f'{s:.2f}' for s in r['steps'])} s", flush=True)
    for key, rs in raw.items():
        runs["hybrid"][key] = _pooled(rs)
    print("CrypTen whole model, non-private: as the model is written, then as a competent CrypTen user would "
          "write it (max pooling before ReLU, skip_forward in the loss) ...", flush=True)
    runs.update(_crypten(cfg0, splits, batch=args.batch, steps=args.steps))

    profiles = [p.name for p in STANDARD_PROFILES]
    ratios_a = {split: runs["hybrid"][f"{split}/on"]["step_s"] / runs["hybrid"][f"{split}/off"]["step_s"]
                for split in args.splits}
    best = {p: min(args.splits, key=lambda s: runs["hybrid"][f"{s}/on"]["projected_s"][p]) for p in profiles}
    ratios_b = {p: runs["hybrid"][f"{best[p]}/on"]["projected_s"][p] / runs["crypten"]["projected_s"][p]
                for p in profiles}
    runs["ratios"] = {"dp_over_dp_off": ratios_a, "hybrid_best_over_crypten": ratios_b, "best_split": best}
    print("\n" + table_markdown(runs))
    missed = [s for s, r in ratios_a.items() if r > TARGET_DP_OVERHEAD]
    print(f"ratio check: (a) {'missed at split(s) ' + ', '.join(map(str, missed)) if missed else 'met'}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
