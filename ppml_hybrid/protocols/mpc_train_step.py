"""One DP training step with every block under MPC (``split_layer = L``), run by each party.

Steps (design section 5 with s = L; no HE stage is involved):

1. each party Poisson-samples its OWN rows at rate q with ``os.urandom`` (nobody, not even the
   orchestrator, can recompute batch membership), pads them with a noisy number of dummy rows
   (:mod:`ppml_hybrid.privacy.batch_count`) and secret-shares the images, one-hot labels and
   0/1 row weights (``src`` = its rank); only each party's padded row count is public;
2. MPC forward through blocks 1..L with the public weights (``MPCBlocks``);
3. ``delta_z = softmax(z) - y`` in MPC (CrypTen's softmax approximation);
4. MPC backward through blocks L..1, keeping every layer's input and output delta as shares;
5. the DP step (:mod:`ppml_hybrid.protocols.dp_step`): per-sample norms, checked clip factors,
   clipped sums, each party's CSPRNG noise share; the noised sums are opened. (``dp=off``:
   the exact sums are opened instead; a non-private run for reference and benchmarks.)

Who learns what: each party learns its own rows, the padded (noised) row counts and the noised
gradient sums; logits, deltas, norms, clip factors and row weights stay shares.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ppml_hybrid.config import ModelConfig
from ppml_hybrid.privacy.batch_count import CountNoise
from ppml_hybrid.protocols.dp_step import DPStepParams, noise_only_sums, open_gradient_sums, trainable_sites
from ppml_hybrid.protocols.key_access import KeyEndpoint, step_noise
from ppml_hybrid.protocols.step_common import (
    PartyRows, StageClock, StepOutput, share_own_sample, trainable_shapes,
)
from ppml_hybrid.smpc_stage.stage import MPCBlocks


@dataclass(frozen=True)
class MPCTrainStep:
    """Party program of one all-MPC DP step (module doc)."""

    model: ModelConfig
    state_dict: Mapping[str, torch.Tensor]
    image_size: int
    sample_rate: float
    dp: Optional[DPStepParams]  # None: dp=off (exact sums are opened; non-private runs only)
    count_noise: Optional[CountNoise] = None  # pads each party's batch (dp on); None with dp=off
    key_service: Optional[KeyEndpoint] = None  # K, verified by this party (dp.noise_source: enclave)
    step_id: int = 0  # K draws each step's noise once

    def __call__(self, ctx: Any, rows: PartyRows) -> StepOutput:
        torch.set_num_threads(1)
        crypten = ctx.crypten
        start, before = time.perf_counter(), ctx.transport.snapshot()
        clock = StageClock(ctx.transport)
        shared = share_own_sample(ctx, rows, sample_rate=self.sample_rate, num_classes=self.model.num_classes,
                                  count_noise=self.count_noise)
        x, y, batch = shared.x, shared.y, shared.size
        clock.lap("share_inputs")
        costs: Tuple[Any, ...] = ()
        if batch == 0:
            sums = self._noise_only(ctx, rows)
            clock.lap("dp_step")
        else:
            stage = MPCBlocks.build(model=self.model, state_dict=self.state_dict, image_size=self.image_size,
                                    stop=len(self.model.blocks))
            trace = stage.forward(x, crypten=crypten, transport=ctx.transport)
            delta = trace.output.softmax(1) - y
            clock.lap("mpc_forward")
            back = stage.backward(trace, delta, crypten=crypten, transport=ctx.transport, weight_grads=False)
            clock.lap("mpc_backward")
            sums = open_gradient_sums(trainable_sites(stage.layers, trace, back), params=self.dp, crypten=crypten,
                                      row_weights=shared.weights, noise=self._noise(ctx, rows))
            clock.lap("dp_step")
            costs = trace.costs + back.costs
        return StepOutput(noised_sums=dict(sums), batch_size=batch, seconds=time.perf_counter() - start,
                          traffic=ctx.transport.snapshot() - before, layer_costs=costs, stages=clock.stages())

    def _noise_only(self, ctx: Any, rows: PartyRows) -> Dict[str, torch.Tensor]:
        """An empty Poisson batch still releases (noise-only) sums, as the accountant assumes."""
        return noise_only_sums(trainable_shapes(self.model, self.state_dict), params=self.dp, crypten=ctx.crypten,
                               noise=self._noise(ctx, rows))

    def _noise(self, ctx: Any, rows: PartyRows) -> Any:
        return step_noise(ctx, rows, dp=self.dp, key=self.key_service, step=self.step_id)
