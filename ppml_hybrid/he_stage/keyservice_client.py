"""Typed clients of K, one per role. Each holds its own mTLS channel (its own certificate).

* :class:`PartyKeyClient` (party P_j): public material, attest, announce a round, fetch its share.
* :class:`EvaluatorKeyClient` (E): public material, attest, submit a masked round.

Wire code, shared by every caller of K (the parties' protocols, E); it sits on the HE stage's
floor rather than in :mod:`ppml_hybrid.rpc` because ``get_public_material`` hands back the HE
stage's own types (:mod:`.material`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from ppml_hybrid.he_stage.material import PublishedMaterial, from_chunks
from ppml_hybrid.rpc import common_pb2
from ppml_hybrid.rpc import keyservice_errors as _errors  # noqa: F401 - registers the typed refusals
from ppml_hybrid.rpc import keyservice_pb2 as pb
from ppml_hybrid.rpc import keyservice_pb2_grpc as pb_grpc
from ppml_hybrid.rpc.client import ServiceChannel
from ppml_hybrid.rpc.messages import RoundRef, ShareTensor


@dataclass(frozen=True)
class AttestationDoc:
    development: bool
    nonce: bytes
    public_material_sha256: str
    tls_certificate_sha256: str
    note: str
    cose_sign1: bytes = b""  # the attestation document; see verify_attestation


@dataclass(frozen=True)
class AnnounceReceipt:
    round: RoundRef
    announced: int
    parties: int


@dataclass(frozen=True)
class SubmitReceipt:
    round_id: int
    ciphertexts: int


class _KeyServiceClient(ServiceChannel):
    service_name = "key service"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._stub = pb_grpc.KeyServiceStub(self._channel)

    def get_public_material(self) -> PublishedMaterial:
        return from_chunks(self.stream(self._stub.GetPublicMaterial, pb.PublicMaterialRequest()))

    def attest(self, *, nonce: bytes) -> AttestationDoc:
        d = self.call(self._stub.Attest, pb.AttestRequest(nonce=nonce))
        return AttestationDoc(development=d.development, nonce=bytes(d.nonce),
                              public_material_sha256=d.public_material_sha256,
                              tls_certificate_sha256=d.tls_certificate_sha256, note=d.note,
                              cose_sign1=bytes(d.cose_sign1))


class PartyKeyClient(_KeyServiceClient):
    """Party P_j's channel to K (its client certificate decides which share it gets)."""

    def announce(self, *, round: RoundRef) -> AnnounceReceipt:
        r = self.call(self._stub.Announce, round.to_pb())
        return AnnounceReceipt(round=RoundRef.from_pb(r.round), announced=r.announced, parties=r.parties)

    def fetch_share(self, *, round_id: int) -> ShareTensor:
        return ShareTensor.from_pb(self.call(self._stub.FetchShare, common_pb2.FetchShareRequest(round_id=round_id)))


class EvaluatorKeyClient(_KeyServiceClient):
    """E's channel to K: it can submit masked rounds, never fetch a share."""

    def decrypt_and_share(self, *, round: RoundRef, ciphertexts: Sequence[bytes]) -> SubmitReceipt:
        def chunks() -> Iterator[pb.SubmitChunk]:
            yield pb.SubmitChunk(round=round.to_pb())
            for c in ciphertexts:
                yield pb.SubmitChunk(ciphertext=c)

        r = self.call(self._stub.DecryptAndShare, chunks())
        return SubmitReceipt(round_id=int(r.round_id), ciphertexts=int(r.ciphertexts))
