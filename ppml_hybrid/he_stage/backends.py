"""Two interchangeable executors of the head's program.

:class:`LevelBackend` only tracks each tensor's level (``max(inputs) + 1`` for any product,
``max(inputs)`` for additions and rotations); the depth in :mod:`params` comes from running the
head's own code on it. :class:`CKKSBackend` runs the same calls on OpenFHE ciphertexts.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple

from ppml_hybrid.he_stage.errors import LayoutError
from ppml_hybrid.he_stage.layout import SlotLayout
from ppml_hybrid.he_stage.linear import LinearPlan, apply_plan


@dataclass(frozen=True)
class LevelTensor:
    n_features: int
    level: int


@dataclass(frozen=True)
class CKKSTensor:
    """A batch of feature vectors as packed ciphertexts (layout fixed per run)."""

    cts: Tuple[Any, ...]
    n_features: int
    layout: SlotLayout

    def __post_init__(self) -> None:
        if len(self.cts) != self.layout.num_ciphertexts(self.n_features):
            raise LayoutError(
                f"{self.n_features} features need {self.layout.num_ciphertexts(self.n_features)} "
                f"ciphertexts under {self.layout}; got {len(self.cts)}"
            )


class LevelBackend:
    """Counts levels; the ops' arguments that carry weights are ignored."""

    def linear(self, *, op: str, terms: Sequence[LevelTensor], n_out: int) -> LevelTensor:
        return LevelTensor(n_out, max(t.level for t in terms) + 1)

    def mul(self, x: LevelTensor, y: LevelTensor) -> LevelTensor:
        return LevelTensor(x.n_features, max(x.level, y.level) + 1)

    def square(self, x: LevelTensor) -> LevelTensor:
        return LevelTensor(x.n_features, x.level + 1)

    def scale(self, x: LevelTensor, c: float) -> LevelTensor:
        return LevelTensor(x.n_features, x.level + 1)

    def add(self, x: LevelTensor, y: LevelTensor) -> LevelTensor:
        return LevelTensor(x.n_features, max(x.level, y.level))


class CKKSBackend:
    """Runs the program on ciphertexts with public weights (as prepared linear plans)."""

    def __init__(self, *, cc: Any, layout: SlotLayout, plans: Mapping[str, LinearPlan],
                 encoder: Optional[Executor] = None) -> None:
        self._cc = cc
        self._layout = layout
        self._plans = plans
        self._encoder = encoder

    def linear(self, *, op: str, terms: Sequence[CKKSTensor], n_out: int) -> CKKSTensor:
        cts = apply_plan(cc=self._cc, plan=self._plans[op], inputs=[t.cts for t in terms], encoder=self._encoder)
        return CKKSTensor(tuple(cts), n_out, self._layout)

    def mul(self, x: CKKSTensor, y: CKKSTensor) -> CKKSTensor:
        return CKKSTensor(tuple(self._cc.EvalMult(a, b) for a, b in zip(x.cts, y.cts)), x.n_features, self._layout)

    def square(self, x: CKKSTensor) -> CKKSTensor:
        return CKKSTensor(tuple(self._cc.EvalSquare(a) for a in x.cts), x.n_features, self._layout)

    def scale(self, x: CKKSTensor, c: float) -> CKKSTensor:
        return CKKSTensor(tuple(self._cc.EvalMult(a, float(c)) for a in x.cts), x.n_features, self._layout)

    def add(self, x: CKKSTensor, y: CKKSTensor) -> CKKSTensor:
        return CKKSTensor(tuple(self._cc.EvalAdd(a, b) for a, b in zip(x.cts, y.cts)), x.n_features, self._layout)
