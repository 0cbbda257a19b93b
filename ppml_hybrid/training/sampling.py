"""The Poisson-sampling schedule of a DP run, shared by the plaintext and encrypted modes.

Opacus's ``make_private`` turns a loader of ``ceil(N / B)`` batches into Poisson sampling at
rate ``q = 1 / ceil(N / B)`` with ``ceil(N / B)`` steps per epoch, and divides the summed
gradient by ``int(N q)``. The encrypted mode uses the same three numbers, so both modes take the
same steps, the same expected batch and report the same epsilon (target (i) of issue 5 compares
them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class PoissonSchedule:
    sample_rate: float  # q: each row joins a step's batch with probability q
    steps_per_epoch: int
    total_steps: int
    expected_batch: int  # the divisor of the summed (noised) gradient

    @classmethod
    def of(cls, *, rows: int, batch_size: int, epochs: int, max_steps: Optional[int]) -> "PoissonSchedule":
        steps_per_epoch = math.ceil(rows / min(batch_size, rows))
        q = 1.0 / steps_per_epoch
        total = epochs * steps_per_epoch
        if max_steps is not None:
            total = min(total, max_steps)
        return cls(sample_rate=q, steps_per_epoch=steps_per_epoch, total_steps=total,
                   expected_batch=max(1, int(rows * q)))
