"""Typed clients of E.

* :class:`EvaluatorClient` (a party or the orchestrator driving a step): forward, backward,
  fetch a held tensor's ciphertexts, mask-and-share a held tensor for a round, release a step.
* :class:`PartyMaskClient` (party P_j): fetch its own share of -R for a round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence, Tuple

from ppml_hybrid.rpc import common_pb2
from ppml_hybrid.rpc import evaluator_errors as _errors  # noqa: F401 - registers the typed refusals
from ppml_hybrid.rpc import evaluator_pb2 as pb
from ppml_hybrid.rpc import evaluator_pb2_grpc as pb_grpc
from ppml_hybrid.rpc import keyservice_errors as _kerrors  # noqa: F401 - K's refusals pass through E
from ppml_hybrid.rpc.client import ServiceChannel
from ppml_hybrid.rpc.messages import RoundRef, ShareTensor, weights_to_pb


@dataclass(frozen=True)
class HeldTensor:
    name: str
    n_features: int
    ciphertexts: int
    level: int


@dataclass(frozen=True)
class StepReceipt:
    step_id: int
    batch: int
    tensors: Tuple[HeldTensor, ...]

    @classmethod
    def from_pb(cls, r: pb.StepReceipt) -> "StepReceipt":
        return cls(step_id=int(r.step_id), batch=int(r.batch),
                   tensors=tuple(HeldTensor(name=t.name, n_features=t.n_features, ciphertexts=t.ciphertexts,
                                            level=t.level) for t in r.tensors))

    def names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.tensors)


@dataclass(frozen=True)
class MaskReceipt:
    round_id: int
    ciphertexts: int
    mask_bits: int


class _EvaluatorChannel(ServiceChannel):
    service_name = "HE evaluator"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._stub = pb_grpc.EvaluatorStub(self._channel)


class EvaluatorClient(_EvaluatorChannel):
    """Drives the HE head at E (ciphertexts in and out as OpenFHE binary serialization)."""

    def forward(self, *, step_id: int, batch: int, weights: Mapping[str, object], inputs: Sequence[bytes],
                n_features: int) -> StepReceipt:
        header = pb.StepHeader(step_id=step_id, batch=batch, weights=weights_to_pb(weights), n_features=n_features)
        return StepReceipt.from_pb(self.call(self._stub.Forward, _step_chunks(header, inputs)))

    def backward(self, *, step_id: int, delta_logits: Sequence[bytes], n_features: int) -> StepReceipt:
        header = pb.StepHeader(step_id=step_id, n_features=n_features)
        return StepReceipt.from_pb(self.call(self._stub.Backward, _step_chunks(header, delta_logits)))

    def fetch_ciphertexts(self, *, step_id: int, name: str) -> Tuple[bytes, ...]:
        chunks = self.stream(self._stub.FetchCiphertexts, pb.TensorRef(step_id=step_id, name=name))
        return tuple(bytes(c.ciphertext) for c in chunks)

    def mask_and_share(self, *, step_id: int, name: str, round: RoundRef) -> MaskReceipt:
        r = self.call(self._stub.MaskAndShare, pb.MaskRequest(tensor=pb.TensorRef(step_id=step_id, name=name),
                                                              round=round.to_pb()))
        return MaskReceipt(round_id=int(r.round_id), ciphertexts=int(r.ciphertexts), mask_bits=int(r.mask_bits))

    def release_step(self, *, step_id: int) -> None:
        self.call(self._stub.ReleaseStep, pb.StepRef(step_id=step_id))


class PartyMaskClient(_EvaluatorChannel):
    """Party P_j's channel to E: its own share of -R (chosen by its certificate)."""

    def fetch_mask_share(self, *, round_id: int) -> ShareTensor:
        return ShareTensor.from_pb(self.call(self._stub.FetchMaskShare, common_pb2.FetchShareRequest(round_id=round_id)))


def _step_chunks(header: pb.StepHeader, cts: Sequence[bytes]) -> Iterator[pb.StepChunk]:
    yield pb.StepChunk(header=header)
    for c in cts:
        yield pb.StepChunk(ciphertext=c)
