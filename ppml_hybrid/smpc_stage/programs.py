"""Party programs: what each party process runs between ``crypten.init`` and shutdown.

A program is a picklable callable ``program(context, inputs)`` run by every party with its
own inputs (:func:`ppml_hybrid.smpc_stage.launcher.run_parties`). Steps of :class:`StageStep`:

1. every party secret-shares its own rows (``src`` = its rank; the row count is public), and
   the shares are concatenated in rank order into one batch;
2. the delta at the split is secret-shared by the party that holds it (tests and benchmarks:
   party 0; in the pipeline it arrives as shares from the HE->SS conversion);
3. :class:`~ppml_hybrid.smpc_stage.stage.MPCBlocks` forward and backward;
4. the report: per-layer traffic and time of this party. Only with ``reveal=True`` (tests)
   are the output, deltas and gradients opened, to compare with PyTorch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ppml_hybrid.config import ModelConfig
from ppml_hybrid.smpc_stage.stage import LayerCost, MPCBlocks
from ppml_hybrid.smpc_stage.transport import LinkShaping, Traffic, ViewRecorder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultPlan:
    """Test aid: make ``party`` crash (exit), raise, or hang after sharing its inputs."""

    party: int
    kind: str  # crash | raise | hang


@dataclass(frozen=True)
class PartyInputs:
    """One party's own data: its rows (N_r, C, H, W), and the delta at the split if it holds it."""

    rows: torch.Tensor
    delta: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class StepReport:
    """One party's view of one forward+backward step."""

    rank: int
    batch: int
    seconds: float
    forward_s: float
    backward_s: float
    traffic: Traffic
    costs: Tuple[LayerCost, ...]
    revealed: Optional[Dict[str, torch.Tensor]] = None
    opened_sample: Optional[torch.Tensor] = None
    extra: Dict[str, Any] = field(default_factory=dict)


def share_batch(ctx: Any, rows: Optional[torch.Tensor]) -> Any:
    """Step 1: each party inputs its own rows; returns the batch's shares in rank order."""
    parts = [ctx.share(rows if ctx.rank == r else None, src=r) for r in range(ctx.parties)]
    return ctx.crypten.cat(parts, dim=0) if len(parts) > 1 else parts[0]


def _inject(fault: Optional[FaultPlan], rank: int) -> None:
    if fault is None or fault.party != rank:
        return
    log.warning("party %d: injected fault %s", rank, fault.kind)
    if fault.kind == "crash":
        os._exit(13)
    if fault.kind == "raise":
        raise RuntimeError("injected failure (test)")
    if fault.kind == "hang":
        time.sleep(3600)


@dataclass(frozen=True)
class StageStep:
    """Forward + backward through blocks ``1..stop`` (see the module doc)."""

    model: ModelConfig
    state_dict: Mapping[str, torch.Tensor]
    image_size: int
    stop: int
    reveal: bool = False
    fault: Optional[FaultPlan] = None
    delta_src: int = 0
    shaping: Optional[LinkShaping] = None  # if set: a second, shaped step is reported
    warmup: bool = False

    def __call__(self, ctx: Any, inputs: PartyInputs) -> StepReport:
        torch.set_num_threads(1)
        stage = MPCBlocks.build(model=self.model, state_dict=self.state_dict, image_size=self.image_size, stop=self.stop)
        if self.warmup:
            self._step(ctx, stage, inputs)
        report = self._step(ctx, stage, inputs)
        if self.shaping is None:
            return report
        # The same step again with per-round delay and bandwidth limits in the transport;
        # the unshaped report rides along (the cost model projects from it).
        ctx.transport.set_shaping(self.shaping)
        try:
            shaped = self._step(ctx, stage, inputs)
        finally:
            ctx.transport.set_shaping(None)
        return dataclasses.replace(shaped, extra={"unshaped": report})

    def _step(self, ctx: Any, stage: MPCBlocks, inputs: PartyInputs) -> StepReport:
        crypten = ctx.crypten
        start_traffic = ctx.transport.snapshot()
        t0 = time.perf_counter()
        x = share_batch(ctx, inputs.rows)
        delta = ctx.share(inputs.delta if ctx.rank == self.delta_src else None, src=self.delta_src)
        _inject(self.fault, ctx.rank)
        t1 = time.perf_counter()
        trace = stage.forward(x, crypten=crypten, transport=ctx.transport)
        t2 = time.perf_counter()
        back = stage.backward(trace, delta, crypten=crypten, transport=ctx.transport)
        t3 = time.perf_counter()
        traffic = ctx.transport.snapshot() - start_traffic
        revealed = None
        if self.reveal:
            revealed = {"output": trace.output.get_plain_text()}
            for name, d in back.input_deltas.items():
                revealed[f"delta_in:{name}"] = d.get_plain_text()
            for name, g in back.grads.items():
                revealed[f"grad:{name}"] = g.get_plain_text()
        return StepReport(
            rank=ctx.rank,
            batch=int(x.size(0)),
            seconds=t3 - t0,
            forward_s=t2 - t1,
            backward_s=t3 - t2,
            traffic=traffic,
            costs=trace.costs + back.costs,
            revealed=revealed,
        )


@dataclass(frozen=True)
class ViewProbe:
    """Leakage test: record what party ``observer`` learns while the others input secrets.

    For each entry of ``inputs.extra_rows`` (party 0's alternative secret batches), runs the
    stage forward+backward and keeps a sample of the values ``observer`` opened. With
    ``plant`` set, first opens party 0's input masked only by ``plant`` (0: unmasked;
    otherwise a uniform mask in [-plant, plant)) — the positive control a leak check must catch.
    """

    model: ModelConfig
    state_dict: Mapping[str, torch.Tensor]
    image_size: int
    stop: int
    observer: int = 1
    plant: Optional[float] = None

    def __call__(self, ctx: Any, inputs: Any) -> Dict[str, torch.Tensor]:
        torch.set_num_threads(1)
        crypten = ctx.crypten
        stage = MPCBlocks.build(model=self.model, state_dict=self.state_dict, image_size=self.image_size, stop=self.stop)
        views: Dict[str, torch.Tensor] = {}
        for label, rows in inputs.items():
            recorder = ViewRecorder()
            if ctx.rank == self.observer:
                ctx.transport.recorder = recorder
            x = share_batch(ctx, rows)
            if self.plant is not None:  # planted leak first, then the honest step as usual
                noise = torch.empty(tuple(x.size())).uniform_(-self.plant, self.plant)
                mask = ctx.share(noise if ctx.rank == 0 else None, src=0)  # unknown to the observer
                (x + mask).get_plain_text()  # a weakly masked (plant > 0) or unmasked opening
            trace = stage.forward(x, crypten=crypten)
            delta = ctx.share(torch.ones(tuple(trace.output.size())) if ctx.rank == 0 else None, src=0)
            stage.backward(trace, delta, crypten=crypten)
            ctx.transport.recorder = None
            views[label] = recorder.take()
        return views if ctx.rank == self.observer else {}
