"""Opacus DP-SGD step time as a ratio of the non-private step, default model, same process.

    .venv/bin/python benchmarks/dp_step_overhead.py [--batch-size 64 256] [--repeats 30]
        [--modes hooks functorch ew] [--json out.json] [--check]
    .venv/bin/python benchmarks/dp_step_overhead.py --smoke   # the test suite runs this

Every step (the non-private one and Opacus's per-sample-gradient modes: ``hooks``, its default;
``functorch``, vmap over the model; ``ew``, PyTorch's expanded weights) runs on the same inputs,
interleaved round-robin, after a warm-up; the ratio of medians is what to compare (absolute
times drift on shared machines). One torch thread, like a party. The headline ratio is Opacus
at its fastest mode for this model (what a competent Opacus user would pick); a mode the model
cannot run in is reported as such. ``--check`` exits 1 when that ratio exceeds 3x at any batch
size (the design's 2.3x plus this machine's noise). ``table_markdown`` renders the JSON (the
script prints it; ``run_all.py`` writes the README's table with it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
from opacus.grad_sample.utils import prepare_module
from opacus.optimizers import DPOptimizer
from torch import nn

from bench_config import run_config
import ppml_hybrid.privacy.grad_samplers  # noqa: F401
from ppml_hybrid.model import build_model


TARGET = 3.0


def measure(cfg: Any, *, batch_size: int, repeats: int, modes: List[str]) -> Dict[str, Any]:
    """Medians (ms) of every arm at one batch size, interleaved round-robin after a warm-up."""
    x = torch.randn(batch_size, 1, cfg.data.image_size, cfg.data.image_size)
    y = torch.randint(0, cfg.model.num_classes, (batch_size,))

    def step(net: nn.Module, opt: torch.optim.Optimizer) -> float:
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        return time.perf_counter() - start

    plain = build_model(cfg.model, image_size=cfg.data.image_size, seed=0)
    arms: Dict[str, Tuple[nn.Module, torch.optim.Optimizer]] = {
        "non-private": (plain, torch.optim.SGD(plain.parameters(), lr=0.01))}
    refused: Dict[str, str] = {}
    for mode in modes:
        try:
            net = prepare_module(build_model(cfg.model, image_size=cfg.data.image_size, seed=0), grad_sample_mode=mode)
            opt = DPOptimizer(torch.optim.SGD(net.parameters(), lr=0.01), noise_multiplier=1.0, max_grad_norm=1.0,
                              expected_batch_size=batch_size)
            step(net, opt)  # a mode that cannot run this model fails here
            arms[f"Opacus {mode}"] = (net, opt)
        except Exception as exc:  # noqa: BLE001 - report the mode as unusable for this model, go on
            refused[mode] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    times: Dict[str, List[float]] = {name: [] for name in arms}
    for _ in range(5):
        for net, opt in arms.values():
            step(net, opt)
    for _ in range(repeats):
        for name, (net, opt) in arms.items():
            times[name].append(step(net, opt))
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    private = {name: m for name, m in med.items() if name != "non-private"}
    best = min(private, key=private.get) if private else None
    return {"batch": batch_size, "median_ms": med, "refused": refused, "fastest": best,
            "ratio": private[best] / med["non-private"] if best else None}


def table_markdown(result: Dict[str, Any]) -> str:
    """The README's table from this script's JSON."""
    modes = result["modes"]
    lines = ["| batch | non-private step | " + " | ".join(f"Opacus `{m}`" for m in modes)
             + " | fastest DP / non-private |", "|---" * (len(modes) + 3) + "|"]
    for row in result["rows"]:
        cells = [str(row["batch"]), f"{row['median_ms']['non-private']:.1f} ms"]
        for m in modes:
            ms = row["median_ms"].get(f"Opacus {m}")
            cells.append(f"{ms:.1f} ms" if ms is not None else "cannot run this model")
        cells.append(f"**{row['ratio']:.2f}x** ({row['fastest'].split()[-1]})" if row["fastest"] else "no mode ran")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="relu_cnn")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[64])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["hooks", "functorch", "ew"])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--check", action="store_true", help=f"exit 1 when the fastest mode exceeds {TARGET}x")
    parser.add_argument("--smoke", action="store_true", help="batch 4, 3 repeats: every code path (the suite runs it)")
    args = parser.parse_args()
    if args.smoke:
        args.batch_size, args.repeats = [4], 3
    torch.set_num_threads(args.threads)
    # Opacus's hooks warn on every backward when the input has no grad (it never has here)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    cfg = run_config([f"model={args.model}"])
    result = {"model": args.model, "image_size": cfg.data.image_size, "threads": args.threads,
              "repeats": args.repeats, "modes": args.modes, "target": TARGET, "rows": []}
    for batch in args.batch_size:
        row = measure(cfg, batch_size=batch, repeats=args.repeats, modes=args.modes)
        result["rows"].append(row)
        med, p = row["median_ms"], row["median_ms"]["non-private"]
        print(f"model={args.model} batch={batch} threads={args.threads} repeats={args.repeats} (interleaved)")
        for name, m in med.items():
            print(f"{name:18s} {m:8.2f} ms (median){'' if name == 'non-private' else f'  {m / p:.2f}x'}")
        for mode, why in row["refused"].items():
            print(f"Opacus {mode:11s} cannot run this model: {why}")
    print()
    print(table_markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if any(row["fastest"] is None for row in result["rows"]):
        print("no Opacus mode ran")
        return 1
    worst = max(result["rows"], key=lambda r: r["ratio"])
    hooks = worst["median_ms"].get("Opacus hooks", float("nan")) / worst["median_ms"]["non-private"]
    print(f"ratio DP / non-private: {worst['ratio']:.2f}x at batch {worst['batch']} ({worst['fastest']}, the fastest "
          f"mode there; hooks, Opacus's default: {hooks:.2f}x)")
    return 1 if args.check and worst["ratio"] > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
