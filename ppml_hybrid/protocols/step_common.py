"""What every party step program shares, all-MPC or hybrid: the party's own rows, sampling and
sharing them (step 1 of both programs), the step's output and its per-stage clock, and the
shapes the DP step releases.

Who learns what (step 1): each party learns its own rows and every party's padded (noised) row
count; the images, one-hot labels and 0/1 row weights are secret-shared.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from ppml_hybrid.config import ModelConfig
from ppml_hybrid.privacy.batch_count import CountNoise
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


@dataclass(frozen=True)
class SharedBatch:
    """One step's batch as shares: images, one-hot labels, secret 0/1 row weights (scale 1, None
    without padding), and the public row count (real rows plus padding)."""

    x: Optional[Any]
    y: Optional[Any]
    weights: Optional[Any]
    size: int


def share_own_sample(ctx: Any, rows: PartyRows, *, sample_rate: float, num_classes: int,
                     count_noise: Optional[CountNoise] = None) -> SharedBatch:
    """Step 1: Poisson-sample this party's own rows, pad them (``count_noise``: dummy rows with
    secret weight 0, :mod:`ppml_hybrid.privacy.batch_count`), share images, one-hot labels and
    row weights. Only each party's padded row count is public."""
    picked = poisson_sample(len(rows.labels), sample_rate)
    images, onehot = rows.images[picked], torch.nn.functional.one_hot(rows.labels[picked], num_classes).float()
    weights = torch.ones(len(picked))
    if count_noise is not None:
        pad = count_noise.draw()
        images = torch.cat([images, torch.zeros(pad, *images.shape[1:])])
        onehot = torch.cat([onehot, torch.zeros(pad, num_classes)])
        weights = torch.cat([weights, torch.zeros(pad)])
    parts: Dict[str, list] = {"x": [], "y": [], "w": []}
    for src in range(ctx.parties):
        mine = src == ctx.rank
        parts["x"].append(ctx.share(images if mine else None, src=src))
        parts["y"].append(ctx.share(onehot if mine else None, src=src))
        if count_noise is not None:
            parts["w"].append(ctx.share(weights if mine else None, src=src, precision=0))
    keep = [i for i, p in enumerate(parts["x"]) if int(p.size(0)) > 0]
    size = sum(int(parts["x"][i].size(0)) for i in keep)
    if not keep:
        return SharedBatch(None, None, None, 0)

    def joined(name: str) -> Optional[Any]:
        if not parts[name]:
            return None
        chosen = [parts[name][i] for i in keep]
        return chosen[0] if len(chosen) == 1 else ctx.crypten.cat(chosen, dim=0)

    return SharedBatch(joined("x"), joined("y"), joined("w"), size)


def trainable_shapes(model: ModelConfig, state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Tuple[int, ...]]:
    """Every parameter the DP step releases, with its shape."""
    return {name: tuple(value.size()) for name, value in state_dict.items()
            if name.endswith(("weight", "bias")) or (name.endswith((".a", ".b")) and model.poly.trainable)}
