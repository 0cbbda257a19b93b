"""One DP training step with every block under MPC (``split_layer = L``), run by each party.

Steps (design section 5 with s = L; no HE stage is involved):

1. each party Poisson-samples its OWN rows at rate q with ``os.urandom`` (nobody, not even the
   orchestrator, can recompute batch membership) and secret-shares the sampled images and
   one-hot labels (``src`` = its rank); only each party's sampled row count is public;
2. MPC forward through blocks 1..L with the public weights (``MPCBlocks``);
3. ``delta_z = softmax(z) - y`` in MPC (CrypTen's softmax approximation);
4. MPC backward through blocks L..1, keeping every layer's input and output delta as shares;
5. the DP step (:mod:`ppml_hybrid.protocols.dp_step`): per-sample norms, checked clip factors,
   clipped sums, each party's CSPRNG noise share; the noised sums are opened. (``dp=off``:
   the exact sums are opened instead; a non-private run for reference and benchmarks.)

Who learns what: each party learns its own rows, the public row counts and the noised
gradient sums; logits, deltas, norms and clip factors stay shares.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from ppml_hybrid.config import ModelConfig
from ppml_hybrid.protocols.dp_step import DPStepParams, noise_only_sums, open_gradient_sums, trainable_sites
from ppml_hybrid.smpc_stage.stage import MPCBlocks
from ppml_hybrid.smpc_stage.transport import Traffic


@dataclass(frozen=True)
class PartyRows:
    """One party's own training rows (never sent to another process than its party's)."""

    images: torch.Tensor  # [N_j, C, S, S]
    labels: torch.Tensor  # [N_j]


@dataclass(frozen=True)
class StepOutput:
    """What a party reports after one step: only public values."""

    noised_sums: Mapping[str, torch.Tensor]
    batch_size: int  # sum of the parties' public row counts
    seconds: float
    traffic: Traffic
    layer_costs: Tuple[Any, ...] = ()  # LayerCost of every MPC layer, forward and backward
    stages: Tuple["StageCost", ...] = ()  # time and traffic per protocol stage, in order


@dataclass(frozen=True)
class StageCost:
    """One protocol stage of a step at one party: wall time and MPC traffic."""

    stage: str
    seconds: float
    traffic: Traffic


class StageClock:
    """Splits a step into named stages (time and this party's MPC traffic per stage)."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._stages: list = []
        self._t, self._traffic = time.perf_counter(), transport.snapshot()

    def lap(self, stage: str) -> None:
        """Close the stage that ran since the last lap, under ``stage``."""
        now, traffic = time.perf_counter(), self._transport.snapshot()
        self._stages.append(StageCost(stage, now - self._t, traffic - self._traffic))
        self._t, self._traffic = now, traffic

    def stages(self) -> Tuple[StageCost, ...]:
        return tuple(self._stages)


def poisson_sample(n: int, rate: float) -> torch.Tensor:
    """Indices of rows kept by independent Bernoulli(rate) draws from ``os.urandom``."""
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    draws = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)
    keep = draws.astype(np.float64) / 2.0**53 < rate
    return torch.from_numpy(np.nonzero(keep)[0]).long()


def share_own_sample(ctx: Any, rows: PartyRows, *, sample_rate: float,
                     num_classes: int) -> Tuple[Optional[Any], Optional[Any], int]:
    """Step 1: Poisson-sample this party's own rows, share images and one-hot labels.

    Returns the batch's image and label shares (rank order; None when every party drew no
    row) and the public batch size.
    """
    picked = poisson_sample(len(rows.labels), sample_rate)
    x_parts, y_parts = [], []
    for src in range(ctx.parties):
        mine = src == ctx.rank
        x_parts.append(ctx.share(rows.images[picked] if mine else None, src=src))
        onehot = torch.nn.functional.one_hot(rows.labels[picked], num_classes).float() if mine else None
        y_parts.append(ctx.share(onehot, src=src))
    keep = [i for i, p in enumerate(x_parts) if int(p.size(0)) > 0]
    batch = sum(int(x_parts[i].size(0)) for i in keep)
    if not keep:
        return None, None, 0
    if len(keep) == 1:
        return x_parts[keep[0]], y_parts[keep[0]], batch
    cat = ctx.crypten.cat
    return cat([x_parts[i] for i in keep], dim=0), cat([y_parts[i] for i in keep], dim=0), batch


@dataclass(frozen=True)
class MPCTrainStep:
    """Party program of one all-MPC DP step (module doc)."""

    model: ModelConfig
    state_dict: Mapping[str, torch.Tensor]
    image_size: int
    sample_rate: float
    dp: Optional[DPStepParams]  # None: dp=off (exact sums are opened; non-private runs only)

    def __call__(self, ctx: Any, rows: PartyRows) -> StepOutput:
        torch.set_num_threads(1)
        crypten = ctx.crypten
        start, before = time.perf_counter(), ctx.transport.snapshot()
        clock = StageClock(ctx.transport)
        x, y, batch = share_own_sample(ctx, rows, sample_rate=self.sample_rate, num_classes=self.model.num_classes)
        clock.lap("share_inputs")
        costs: Tuple[Any, ...] = ()
        if batch == 0:
            sums = self._noise_only(ctx)
            clock.lap("dp_step")
        else:
            stage = MPCBlocks.build(model=self.model, state_dict=self.state_dict, image_size=self.image_size,
                                    stop=len(self.model.blocks))
            trace = stage.forward(x, crypten=crypten, transport=ctx.transport)
            delta = trace.output.softmax(1) - y
            clock.lap("mpc_forward")
            back = stage.backward(trace, delta, crypten=crypten, transport=ctx.transport, weight_grads=False)
            clock.lap("mpc_backward")
            sums = open_gradient_sums(trainable_sites(stage.layers, trace, back), params=self.dp, crypten=crypten)
            clock.lap("dp_step")
            costs = trace.costs + back.costs
        return StepOutput(noised_sums=dict(sums), batch_size=batch, seconds=time.perf_counter() - start,
                          traffic=ctx.transport.snapshot() - before, layer_costs=costs, stages=clock.stages())

    def _noise_only(self, ctx: Any) -> Dict[str, torch.Tensor]:
        """An empty Poisson batch still releases (noise-only) sums, as the accountant assumes."""
        return noise_only_sums(trainable_shapes(self.model, self.state_dict), params=self.dp, crypten=ctx.crypten)


def trainable_shapes(model: ModelConfig, state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Tuple[int, ...]]:
    """Every parameter the DP step releases, with its shape."""
    return {name: tuple(value.size()) for name, value in state_dict.items()
            if name.endswith(("weight", "bias")) or (name.endswith((".a", ".b")) and model.poly.trainable)}
