"""K's gRPC service: public material, attestation, and the round protocol of :mod:`rounds`.

Who may call what (callers identified by their client certificate's fingerprint):

=================  ===========================  ====================================
RPC                callers                      returns
=================  ===========================  ====================================
Attest             any registered               attestation document (COSE_Sign1)
GetPublicMaterial  any registered               context, public + evaluation keys
Announce           parties                      how many parties announced the round
DecryptAndShare    E                            a receipt (round id, count) only
FetchShare         parties (own share only)     the caller's share of the round
FetchNoise         parties (own share only)     the caller's share of a step's DP noise
=================  ===========================  ====================================

Nothing here logs a share, a decrypted value or noise: only round and step ids, kinds and shapes.
"""

from __future__ import annotations

import logging

import grpc

from typing import Optional

from ppml_hybrid.he_stage.material import PublishedMaterial, to_chunks
from ppml_hybrid.keyservice.attestor import KeyAttestor
from ppml_hybrid.keyservice.hazmat import KeyVault
from ppml_hybrid.keyservice.noise import NoiseBook
from ppml_hybrid.keyservice.rounds import RoundBook
from ppml_hybrid.rpc import keyservice_pb2 as pb
from ppml_hybrid.rpc import keyservice_pb2_grpc as pb_grpc
from ppml_hybrid.rpc import common_pb2
from ppml_hybrid.rpc.errors import InvalidCiphertext, PermissionDeniedError
from ppml_hybrid.rpc.keyservice_errors import NotRegisteredError, RoundMismatchError
from ppml_hybrid.rpc.messages import NoiseRequest, RoundRef, int64_to_pb
from ppml_hybrid.rpc.server import refusals
from ppml_hybrid.rpc.tls import EVALUATOR, PARTY, Registry, fingerprint

log = logging.getLogger(__name__)
DEV_NOTE = ("DEVELOPMENT attestation stub: not signed, not produced by an enclave; the enclave issue "
            "replaces it with an NSM COSE_Sign1 document")


class KeyServiceServicer(pb_grpc.KeyServiceServicer):
    def __init__(self, *, vault: KeyVault, book: RoundBook, registry: Registry, published: PublishedMaterial,
                 tls_cert_pem: bytes, share_wait_s: float, noise: NoiseBook,
                 attestor: Optional[KeyAttestor] = None) -> None:
        self._noise = noise
        self._attestor = attestor
        self._vault = vault
        self._book = book
        self._registry = registry
        self._published = published
        self._tls_sha = fingerprint(tls_cert_pem)
        self._wait = share_wait_s

    def _role(self, context: grpc.ServicerContext, *kinds: str, op: str):
        try:
            if kinds:
                return self._registry.require(context, kinds=kinds, operation=op)
            return self._registry.caller(context)
        except PermissionDeniedError as exc:
            raise NotRegisteredError(str(exc)) from None

    @refusals
    def Attest(self, request: pb.AttestRequest, context: grpc.ServicerContext) -> pb.AttestationDocument:
        self._role(context, op="Attest")
        if self._attestor is None:
            return pb.AttestationDocument(development=True, nonce=bytes(request.nonce)[:64],
                                          public_material_sha256=self._published.material.digest(),
                                          tls_certificate_sha256=self._tls_sha, note=DEV_NOTE)
        document = self._attestor.document(nonce=bytes(request.nonce))
        return pb.AttestationDocument(development=self._attestor.development, nonce=bytes(request.nonce),
                                      public_material_sha256=self._published.material.digest(),
                                      tls_certificate_sha256=self._tls_sha, cose_sign1=document,
                                      note="DEVELOPMENT attestation: no enclave measured this code"
                                      if self._attestor.development else "AWS Nitro Enclave attestation")

    @refusals
    def GetPublicMaterial(self, request: pb.PublicMaterialRequest, context: grpc.ServicerContext):
        role = self._role(context, op="GetPublicMaterial")
        log.info("public material requested by %s", role)
        yield from to_chunks(self._published)

    @refusals
    def Announce(self, request, context: grpc.ServicerContext) -> pb.AnnounceReceipt:
        role = self._role(context, PARTY, op="Announce")
        ref = RoundRef.from_pb(request)
        res = self._book.announce(party=role.party, ref=ref)
        log.info("round %d (%s) announced by %s: %d of %d", ref.round_id, ref.kind, role, res.announced, res.parties)
        return pb.AnnounceReceipt(round=ref.to_pb(), announced=res.announced, parties=res.parties)

    @refusals
    def DecryptAndShare(self, request_iterator, context: grpc.ServicerContext) -> pb.SubmitReceipt:
        role = self._role(context, EVALUATOR, op="DecryptAndShare")
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "round":
            raise RoundMismatchError("a submission starts with its round (id, kind, shape)")
        ref = RoundRef.from_pb(first.round)
        expected = self._vault.expected_ciphertexts(ref=ref)
        cts = []
        for chunk in request_iterator:
            if chunk.WhichOneof("part") != "ciphertext":
                raise RoundMismatchError("after the round, a submission holds only ciphertexts")
            cts.append(bytes(chunk.ciphertext))
            if len(cts) > expected:
                break
        agreed = self._book.begin_decryption(caller=str(role), ref=ref, n_ciphertexts=len(cts),
                                             expected_ciphertexts=expected)
        try:
            shares = self._vault.decrypt_and_split(ref=agreed, ciphertexts=cts)
        except InvalidCiphertext:
            log.error("round %d: decryption refused; the run is stopped", agreed.round_id)
            raise self._book.stop(round_id=agreed.round_id, reason="ciphertext rejected") from None
        finally:
            cts.clear()
        self._book.complete_decryption(round_id=agreed.round_id, shares=list(shares))
        log.info("round %d (%s, shape %s) decrypted into %d shares", agreed.round_id, agreed.kind, agreed.shape,
                 len(shares))
        return pb.SubmitReceipt(round_id=agreed.round_id, ciphertexts=expected)

    @refusals
    def FetchShare(self, request, context: grpc.ServicerContext):
        role = self._role(context, PARTY, op="FetchShare")
        share = self._book.fetch(party=role.party, round_id=int(request.round_id), wait_s=self._wait)
        log.info("round %d: share delivered to %s", share.round.round_id, role)
        return share.to_pb()

    @refusals
    def FetchNoise(self, request, context: grpc.ServicerContext) -> common_pb2.NoiseShare:
        role = self._role(context, PARTY, op="FetchNoise")
        req = NoiseRequest.from_pb(request)
        share = self._noise.fetch(party=role.party, request=req)
        log.info("step %d: noise share (%d values in %d sums) delivered to %s", req.step, share.size,
                 len(req.slots), role)
        return common_pb2.NoiseShare(step=req.step, share=int64_to_pb(share))
