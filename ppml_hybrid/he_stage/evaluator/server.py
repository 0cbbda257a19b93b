"""E's gRPC service: the HE head on ciphertexts with per-step public weights, and HE->SS masking.

E holds only K's public material (context, public key, evaluation keys). Callers:
parties and the orchestrator drive steps (Forward, Backward, FetchCiphertexts,
MaskAndShare, ReleaseStep); FetchMaskShare is for parties only, each getting its own share.

Step protocol: Forward(step, batch, weights, Enc(a)) keeps every forward ciphertext under
the step id; Backward(step, Enc(delta_z)) adds the deltas; MaskAndShare(step, tensor, round)
converts one held tensor for an announced round (see :mod:`.masking`); ReleaseStep frees it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Executor
from typing import Any, Dict, Iterator, List, Optional, Tuple

import grpc
import numpy as np

from ppml_hybrid.he_stage.adopt import adopt_all
from ppml_hybrid.he_stage.backends import CKKSTensor
from ppml_hybrid.he_stage.errors import HEError
from ppml_hybrid.he_stage.evaluator.mask_book import MaskShareBook
from ppml_hybrid.he_stage.evaluator.masking import mask_tensor
from ppml_hybrid.he_stage.evaluator.store import StepState, StepStore
from ppml_hybrid.he_stage.head import HEHead
from ppml_hybrid.he_stage.keys import EvaluatorKeys, serialize_ciphertext
from ppml_hybrid.he_stage.keyservice_client import EvaluatorKeyClient
from ppml_hybrid.rpc import evaluator_pb2 as pb
from ppml_hybrid.rpc import evaluator_pb2_grpc as pb_grpc
from ppml_hybrid.rpc.errors import InvalidArgumentError, InvalidCiphertext
from ppml_hybrid.rpc.evaluator_errors import UnknownTensorError
from ppml_hybrid.rpc.keyservice_errors import RunStoppedError
from ppml_hybrid.rpc.messages import RoundRef, float64_from_pb
from ppml_hybrid.rpc.server import refusals
from ppml_hybrid.rpc.tls import ORCHESTRATOR, PARTY, Registry

log = logging.getLogger(__name__)
DRIVERS = (PARTY, ORCHESTRATOR)


class EvaluatorServicer(pb_grpc.EvaluatorServicer):
    def __init__(self, *, keys: EvaluatorKeys, head: HEHead, registry: Registry, key_client: EvaluatorKeyClient,
                 store: StepStore, masks: MaskShareBook, hiding_bits: int, max_mask_bits: int, parties: int,
                 share_wait_s: float, encoder: Optional[Executor] = None) -> None:
        self._keys = keys
        self._head = head
        self._registry = registry
        self._k = key_client
        self._store = store
        self._masks = masks
        self._hiding_bits = hiding_bits
        self._max_mask_bits = max_mask_bits
        self._parties = parties
        self._wait = share_wait_s
        self._compute = threading.Lock()  # one HE computation at a time (one thread per process)
        self._encoder = encoder  # its threads encode the weight plaintexts ahead (he_stage/linear.py)

    # ---------------------------------------------------------------- helpers

    def _read_step(self, chunks: Iterator[pb.StepChunk]) -> Tuple[pb.StepHeader, List[Any]]:
        import openfhe

        first = next(chunks, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgumentError("a step request starts with its header")
        cts = []
        for c in chunks:
            if c.WhichOneof("part") != "ciphertext":
                raise InvalidArgumentError("after the header, a step request holds only ciphertexts")
            try:
                cts.append(openfhe.DeserializeCiphertextString(bytes(c.ciphertext), openfhe.BINARY))
            except RuntimeError:
                raise InvalidCiphertext() from None
        return first.header, list(adopt_all(cc=self._keys.cc, public_key=self._keys.public_key, cts=cts))

    def _tensor(self, cts: List[Any], n_features: int) -> CKKSTensor:
        try:
            return CKKSTensor(tuple(cts), n_features, self._keys.layout)
        except HEError as exc:
            raise InvalidArgumentError(str(exc)) from None

    def _receipt(self, state: StepState) -> pb.StepReceipt:
        held = [pb.HeldTensor(name=n, n_features=t.n_features, ciphertexts=len(t.cts), level=int(t.cts[0].GetLevel()))
                for n, t in sorted(state.tensors().items())]
        return pb.StepReceipt(step_id=state.step_id, batch=state.batch, tensors=held)

    # ---------------------------------------------------------------- step RPCs

    @refusals
    def Forward(self, request_iterator, context: grpc.ServicerContext) -> pb.StepReceipt:
        role = self._registry.require(context, kinds=DRIVERS, operation="Forward")
        start = time.perf_counter()
        header, cts = self._read_step(request_iterator)
        received = time.perf_counter()
        self._store.check_new(int(header.step_id))
        if not 1 <= header.batch <= self._keys.layout.block:
            raise InvalidArgumentError(f"batch must be in 1..{self._keys.layout.block}; got {header.batch}")
        if header.n_features != self._head.n_inputs:
            raise InvalidArgumentError(f"forward takes {self._head.n_inputs} input features; got {header.n_features}")
        weights: Dict[str, np.ndarray] = dict(float64_from_pb(w) for w in header.weights)
        inputs = self._tensor(cts, header.n_features)
        try:
            w = self._head.load_weights(state_dict=weights)
            loaded = time.perf_counter()
            with self._compute:
                fwd = self._head.forward(cc=self._keys.cc, weights=w, inputs=inputs, encoder=self._encoder)
        except HEError as exc:
            raise InvalidArgumentError(str(exc)) from None
        state = StepState(step_id=int(header.step_id), batch=int(header.batch), weights=w, forward=fwd)
        self._store.put_forward(state)
        log.info("step %d forward done for %s (batch %d; s receiving %.2f, weights %.2f, computing %.2f)",
                 state.step_id, role, state.batch, received - start, loaded - received, time.perf_counter() - loaded)
        return self._receipt(state)

    @refusals
    def Backward(self, request_iterator, context: grpc.ServicerContext) -> pb.StepReceipt:
        self._registry.require(context, kinds=DRIVERS, operation="Backward")
        start = time.perf_counter()
        header, cts = self._read_step(request_iterator)
        received = time.perf_counter()
        state = self._store.get(int(header.step_id))
        if state.backward is not None:
            self._store.put_backward(step_id=state.step_id, backward=state.backward)  # raises the replay error
        delta = self._tensor(cts, self._head.n_logits)
        try:
            with self._compute:
                bwd = self._head.backward(cc=self._keys.cc, weights=state.weights, forward=state.forward,
                                          delta_logits=delta, encoder=self._encoder)
        except HEError as exc:
            raise InvalidArgumentError(str(exc)) from None
        state = self._store.put_backward(step_id=state.step_id, backward=bwd)
        log.info("step %d backward done (s receiving %.2f, computing %.2f)", state.step_id, received - start,
                 time.perf_counter() - received)
        return self._receipt(state)

    @refusals
    def FetchCiphertexts(self, request: pb.TensorRef, context: grpc.ServicerContext):
        self._registry.require(context, kinds=DRIVERS, operation="FetchCiphertexts")
        t = self._store.get(int(request.step_id)).tensor(request.name)
        for ct in t.cts:
            yield pb.CiphertextChunk(ciphertext=serialize_ciphertext(ct))

    @refusals
    def ReleaseStep(self, request: pb.StepRef, context: grpc.ServicerContext) -> pb.StepReceipt:
        self._registry.require(context, kinds=DRIVERS, operation="ReleaseStep")
        s = self._store.release(int(request.step_id))
        return pb.StepReceipt(step_id=s.step_id, batch=s.batch)

    # ---------------------------------------------------------------- HE->SS

    @refusals
    def MaskAndShare(self, request: pb.MaskRequest, context: grpc.ServicerContext) -> pb.MaskReceipt:
        self._registry.require(context, kinds=DRIVERS, operation="MaskAndShare")
        ref = RoundRef.from_pb(request.round)
        state = self._store.get(int(request.tensor.step_id))
        tensor = state.tensor(request.tensor.name)
        if ref.shape != (state.batch, tensor.n_features):
            raise UnknownTensorError(
                f"tensor {request.tensor.name!r} of step {state.step_id} has shape {(state.batch, tensor.n_features)}; "
                f"round {ref.round_id} announces {ref.shape}"
            )
        mask_bits = ref.value_bits + self._hiding_bits
        if mask_bits > self._max_mask_bits:
            raise InvalidArgumentError(f"round {ref.round_id} announces |v| < 2^{ref.value_bits}: a mask of 2^{mask_bits} "
                                       f"exceeds he.max_mask_bits={self._max_mask_bits}")
        self._masks.reserve(ref=ref)
        try:
            with self._compute:
                masked = mask_tensor(cc=self._keys.cc, tensor=tensor, batch=state.batch, mask_bits=mask_bits,
                                     parties=self._parties)
            receipt = self._k.decrypt_and_share(round=ref, ciphertexts=masked.ciphertexts)
        except RunStoppedError as exc:
            self._masks.stop(reason=str(exc))  # K ended the run: no share of any round is delivered
            raise
        except BaseException:
            self._masks.release(round_id=ref.round_id)  # the mask dies with the failed attempt
            raise
        self._masks.publish(ref=ref, shares=masked.neg_mask_shares)
        log.info("round %d (%s) masked and submitted to K", ref.round_id, ref.kind)
        return pb.MaskReceipt(round_id=receipt.round_id, ciphertexts=receipt.ciphertexts, mask_bits=mask_bits)

    @refusals
    def FetchMaskShare(self, request, context: grpc.ServicerContext):
        role = self._registry.require(context, kinds=(PARTY,), operation="FetchMaskShare")
        share = self._masks.fetch(party=role.party, round_id=int(request.round_id), wait_s=self._wait)
        return share.to_pb()
