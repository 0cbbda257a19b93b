"""Opacus DP-SGD step time as a ratio of the non-private step, default model, same process.

    .venv/bin/python benchmarks/dp_step_overhead.py [--batch-size 64] [--repeats 30]
        [--modes hooks functorch ew] [--check]
    .venv/bin/python benchmarks/dp_step_overhead.py --smoke   # the test suite runs this

Every step (the non-private one and Opacus's per-sample-gradient modes: ``hooks``, its default;
``functorch``, vmap over the model; ``ew``, PyTorch's expanded weights) runs on the same inputs,
interleaved round-robin, after a warm-up; the ratio of medians is what to compare (absolute
times drift on shared machines). One torch thread, like a party. The headline ratio is Opacus
at its fastest mode for this model (what a competent Opacus user would pick); a mode the model
cannot run in is reported as such. ``--check`` exits 1 when that ratio exceeds 3x (the design's
2.3x plus this machine's noise).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from typing import Dict, List, Tuple

import torch
from opacus.grad_sample.utils import prepare_module
from opacus.optimizers import DPOptimizer
from torch import nn

from bench_config import run_config
import ppml_hybrid.privacy.grad_samplers  # noqa: F401
from ppml_hybrid.model import build_model


TARGET = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="relu_cnn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["hooks", "functorch", "ew"])
    parser.add_argument("--check", action="store_true", help=f"exit 1 when the fastest mode exceeds {TARGET}x")
    parser.add_argument("--smoke", action="store_true", help="batch 4, 3 repeats: every code path (the suite runs it)")
    args = parser.parse_args()
    if args.smoke:
        args.batch_size, args.repeats = 4, 3
    torch.set_num_threads(args.threads)
    # Opacus's hooks warn on every backward when the input has no grad (it never has here)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    cfg = run_config([f"model={args.model}"])

    x = torch.randn(args.batch_size, 1, cfg.data.image_size, cfg.data.image_size)
    y = torch.randint(0, cfg.model.num_classes, (args.batch_size,))

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
    for mode in args.modes:
        try:
            net = prepare_module(build_model(cfg.model, image_size=cfg.data.image_size, seed=0), grad_sample_mode=mode)
            opt = DPOptimizer(torch.optim.SGD(net.parameters(), lr=0.01), noise_multiplier=1.0, max_grad_norm=1.0,
                              expected_batch_size=args.batch_size)
            step(net, opt)  # a mode that cannot run this model fails here
            arms[f"Opacus {mode}"] = (net, opt)
        except Exception as exc:  # noqa: BLE001 - report the mode as unusable for this model, go on
            refused[mode] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    times: Dict[str, List[float]] = {name: [] for name in arms}
    for _ in range(5):
        for net, opt in arms.values():
            step(net, opt)
    for _ in range(args.repeats):
        for name, (net, opt) in arms.items():
            times[name].append(step(net, opt))
    med = {name: statistics.median(t) for name, t in times.items()}
    p = med["non-private"]
    print(f"model={args.model} batch={args.batch_size} threads={args.threads} repeats={args.repeats} (interleaved)")
    for name, m in med.items():
        print(f"{name:18s} {m * 1e3:8.2f} ms (median){'' if name == 'non-private' else f'  {m / p:.2f}x'}")
    for mode, why in refused.items():
        print(f"Opacus {mode:11s} cannot run this model: {why}")
    private = {name: m for name, m in med.items() if name != "non-private"}
    if not private:
        print("no Opacus mode ran")
        return 1
    best = min(private, key=private.get)
    ratio = private[best] / p
    print(f"ratio DP / non-private: {ratio:.2f}x ({best}, the fastest mode here; hooks, Opacus's default: "
          f"{private.get('Opacus hooks', float('nan')) / p:.2f}x)")
    return 1 if args.check and ratio > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
