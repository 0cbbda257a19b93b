"""What the coordinator and the parties say to each other (over :mod:`ppml_hybrid.rpc.coordination`).

Session, in order (who learns what: the coordinator learns every site's training-row count,
each step's opened noised gradient sums and padded batch size, traffic and timing counters,
and each site's suppressed-or-aggregated evaluation; the parties learn the public weights):

1. party -> coordinator :class:`Hello` (its role, the run digest, its training-row count);
2. coordinator -> every party :class:`Start` (every site's count, rank order, and the step a
   resumed run continues from); each party checks its own entry, derives the plan itself
   (:mod:`ppml_hybrid.training.plan`), checks a resume against its own ledger, verifies K's
   attestation itself (hybrid) and answers :class:`Ready` with digests of both and the number of
   this run's releases its ledger holds, which the coordinator compares across parties;
3. per step: :class:`TrainStep` (step number, public weights) -> :class:`StepDone`;
   per evaluation: :class:`Evaluate` -> :class:`Evaluated`;
4. :class:`Stop` ends the session; a party that fails sends :class:`Failed` (error type and
   first line) before it exits.

Frozen dataclasses, encoded by :mod:`ppml_hybrid.rpc.codec` (no pickle): each side decodes
only the types it expects (:data:`TO_PARTY`, :data:`TO_COORDINATOR`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch

from ppml_hybrid.protocols.step_common import StageCost, StepOutput
from ppml_hybrid.smpc_stage.stage import LayerCost
from ppml_hybrid.smpc_stage.transport import ChannelTraffic, Traffic
from ppml_hybrid.training.site_metrics import SiteAggregate


@dataclass(frozen=True)
class Hello:
    role: str
    run_digest: str
    train_rows: int


@dataclass(frozen=True)
class Start:
    train_rows: Tuple[int, ...]
    resume_step: int = 0  # a resumed run's first step (train.resume)


@dataclass(frozen=True)
class Ready:
    plan_digest: str
    key_material_digest: str  # "" when no block runs under HE
    development_attestation: bool = False
    ledger_releases: int = 0  # this run's releases already in the site's ledger (a count: public)


@dataclass(frozen=True)
class TrainStep:
    step: int  # 0-based
    state: Dict[str, torch.Tensor]


@dataclass(frozen=True)
class Evaluate:
    split: str
    state: Dict[str, torch.Tensor]


@dataclass(frozen=True)
class Stop:
    reason: str = ""


@dataclass(frozen=True)
class StepDone:
    output: StepOutput


@dataclass(frozen=True)
class Evaluated:
    aggregate: SiteAggregate


@dataclass(frozen=True)
class Failed:
    role: str
    error: str  # the exception's type name
    message: str  # its first line
    exit_code: int = 1


TO_PARTY: Tuple[type, ...] = (Start, TrainStep, Evaluate, Stop)
TO_COORDINATOR: Tuple[type, ...] = (Hello, Ready, StepDone, Evaluated, Failed, StepOutput, StageCost, LayerCost,
                                    Traffic, ChannelTraffic, SiteAggregate)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(msg: Any) -> str:
    return type(msg).__name__
