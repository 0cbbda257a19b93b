"""E's per-step ciphertext store: forward's intermediates kept until backward, bounded.

At most ``max_steps`` steps are held; starting a newer one drops the oldest (its ids then
answer UNKNOWN STEP), so memory stays bounded even when a caller never releases a step.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ppml_hybrid.he_stage.backends import CKKSTensor
from ppml_hybrid.he_stage.head import HEBackward, HEForward, HEWeights
from ppml_hybrid.rpc.evaluator_errors import StepReplayError, UnknownStepError, UnknownTensorError


@dataclass(frozen=True)
class StepState:
    step_id: int
    batch: int
    weights: HEWeights
    forward: HEForward
    backward: Optional[HEBackward] = None

    def tensors(self) -> Dict[str, CKKSTensor]:
        out: Dict[str, Any] = {"logits": self.forward.logits}
        out.update({f"pre.{j}": t for j, t in self.forward.pre_activations.items()})
        out.update({f"act.{j}": t for j, t in self.forward.activations.items()})
        if self.backward is not None:
            out["delta_input"] = self.backward.delta_input
            out.update({f"delta_pre.{j}": t for j, t in self.backward.delta_pre_activations.items()})
            out.update({f"delta_post.{j}": t for j, t in self.backward.delta_post_activations.items()})
        return out

    def tensor(self, name: str) -> CKKSTensor:
        t = self.tensors().get(name)
        if t is None:
            raise UnknownTensorError(f"step {self.step_id} holds no tensor {name!r}; it holds {sorted(self.tensors())}")
        return t


class StepStore:
    def __init__(self, *, max_steps: int) -> None:
        self._max = max(1, max_steps)
        self._lock = threading.Lock()
        self._steps: "OrderedDict[int, StepState]" = OrderedDict()

    def check_new(self, step_id: int) -> None:
        with self._lock:
            if step_id in self._steps:
                raise StepReplayError(f"step {step_id} is already held; release it or use a new step id")

    def put_forward(self, state: StepState) -> None:
        with self._lock:
            if state.step_id in self._steps:
                raise StepReplayError(f"step {state.step_id} is already held")
            self._steps[state.step_id] = state
            while len(self._steps) > self._max:
                self._steps.popitem(last=False)

    def get(self, step_id: int) -> StepState:
        with self._lock:
            s = self._steps.get(step_id)
        if s is None:
            raise UnknownStepError(f"step {step_id} is not held (never run, released, or dropped for newer steps)")
        return s

    def put_backward(self, *, step_id: int, backward: HEBackward) -> StepState:
        with self._lock:
            s = self._steps.get(step_id)
            if s is None:
                raise UnknownStepError(f"step {step_id} is not held")
            if s.backward is not None:
                raise StepReplayError(f"backward already ran for step {step_id}")
            s = StepState(step_id=s.step_id, batch=s.batch, weights=s.weights, forward=s.forward, backward=backward)
            self._steps[step_id] = s
            return s

    def release(self, step_id: int) -> StepState:
        with self._lock:
            s = self._steps.pop(step_id, None)
        if s is None:
            raise UnknownStepError(f"step {step_id} is not held")
        return s

    def held(self) -> int:
        with self._lock:
            return len(self._steps)
