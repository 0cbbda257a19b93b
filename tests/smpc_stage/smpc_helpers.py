"""Shared pieces of the SMPC-stage tests: tiny models, the PyTorch reference, tolerances."""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

import torch

from ppml_hybrid.config import BlockConfig, ModelConfig, PolyConfig, SMPCConfig
from ppml_hybrid.model.plaintext import build_model
from ppml_hybrid.smpc_stage.programs import PartyInputs

# Fixed point f = 16 (resolution 1.5e-5); errors grow with depth and sums over the batch.
FORWARD_ATOL, FORWARD_RTOL = 1e-3, 1e-2  # |mpc - torch| <= atol + rtol * max|torch|
GRAD_ATOL, GRAD_RTOL = 5e-3, 1e-2

# Every layer type: conv, ReLU (after max pool, fused order), max pool, poly, avg pool,
# flatten, dense, square.
MODEL_A = ModelConfig(
    name="mpc_a",
    blocks=(
        BlockConfig(type="conv", out=3, activation="relu", pool="max"),
        BlockConfig(type="conv", out=4, activation="poly", pool="avg"),
        BlockConfig(type="dense", out=5, activation="square"),
        BlockConfig(type="dense", out=2, activation="none"),
    ),
    poly=PolyConfig(a=0.1, b=0.9),
)
# The other orders: ReLU on a conv output then average pooling; poly then max pooling; odd
# image size (pooling crops, backward pads).
MODEL_B = ModelConfig(
    name="mpc_b",
    blocks=(
        BlockConfig(type="conv", out=3, activation="relu", pool="avg"),
        BlockConfig(type="conv", out=2, activation="poly", pool="max", stride=1),
        BlockConfig(type="dense", out=2, activation="none"),
    ),
    poly=PolyConfig(a=0.1, b=0.9),
)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid still exists (no-orphan checks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def smpc(parties: int, timeout_s: float = 60.0) -> SMPCConfig:
    return SMPCConfig(parties=parties, master_port=0, timeout_s=timeout_s)


def reference(model: ModelConfig, *, image_size: int, parties: int, rows_per_party: int = 2,
              stop: int | None = None, seed: int = 0):
    """Weights, each party's rows, the output delta and PyTorch's autograd results."""
    net = build_model(model, image_size=image_size, seed=seed + 1)
    stop = len(model.blocks) if stop is None else stop
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randn(rows_per_party, model.in_channels, image_size, image_size, generator=g) for _ in range(parties)]
    x = torch.cat(rows)
    out = net.forward_blocks(x, 0, stop)
    delta = torch.randn(out.shape, generator=g)
    (out * delta).sum().backward()  # so dL/d(out) = delta
    grads = {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}
    inputs = [PartyInputs(rows=rows[r], delta=delta if r == 0 else None) for r in range(parties)]
    return net, inputs, out.detach(), grads


def close(got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float) -> Tuple[bool, float, float]:
    err = (got.reshape(want.shape) - want).abs().max().item()
    bound = atol + rtol * want.abs().max().item()
    return err <= bound, err, bound
