"""Opacus DP-SGD step time as a ratio of the non-private step, default model, same process.

    .venv/bin/python benchmarks/dp_step_overhead.py [--batch-size 64] [--repeats 30]
    .venv/bin/python benchmarks/dp_step_overhead.py --smoke   # the test suite runs this

Both steps run on the same inputs, interleaved, after a warm-up; the ratio of medians is
what to compare (absolute times drift on shared machines). One torch thread, like a party.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn

from bench_config import run_config
import ppml_hybrid.privacy.grad_samplers  # noqa: F401
from ppml_hybrid.model import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="relu_cnn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="batch 4, 3 repeats: every code path (the suite runs it)")
    args = parser.parse_args()
    if args.smoke:
        args.batch_size, args.repeats = 4, 3
    torch.set_num_threads(args.threads)
    cfg = run_config([f"model={args.model}"])

    x = torch.randn(args.batch_size, 1, cfg.data.image_size, cfg.data.image_size)
    y = torch.randint(0, cfg.model.num_classes, (args.batch_size,))

    plain = build_model(cfg.model, image_size=cfg.data.image_size, seed=0)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01)

    private_net = GradSampleModule(build_model(cfg.model, image_size=cfg.data.image_size, seed=0))
    private_opt = DPOptimizer(
        torch.optim.SGD(private_net.parameters(), lr=0.01),
        noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=args.batch_size,
    )

    def step(net: nn.Module, opt: torch.optim.Optimizer) -> float:
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        return time.perf_counter() - start

    for _ in range(5):
        step(plain, plain_opt)
        step(private_net, private_opt)
    plain_t, private_t = [], []
    for _ in range(args.repeats):
        plain_t.append(step(plain, plain_opt))
        private_t.append(step(private_net, private_opt))
    p, d = statistics.median(plain_t), statistics.median(private_t)
    print(f"model={args.model} batch={args.batch_size} threads={args.threads} repeats={args.repeats}")
    print(f"non-private step  {p * 1e3:8.2f} ms (median)")
    print(f"Opacus DP step    {d * 1e3:8.2f} ms (median)")
    print(f"ratio DP / non-private: {d / p:.2f}x")


if __name__ == "__main__":
    main()
