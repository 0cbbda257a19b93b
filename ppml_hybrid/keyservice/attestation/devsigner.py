"""Development attestation signer: the NSM's document format, signed by a chain made at start-up.

At construction it generates a P-384 root -> intermediate -> leaf chain (root and intermediate
keys are dropped once the leaf is issued; the leaf key stays in this object only). Documents
carry ``module_id = "DEVELOPMENT-..."`` and chain to :attr:`root_pem`, which is NOT the AWS root:
a verifier accepts them only with ``allow_development=True`` and this root pinned explicitly.

Who learns what: anyone may read the documents; nobody outside this process can sign one. This
proves nothing about the code that runs (no enclave measures it); its PCRs are a digest of the
installed package sources, so that PCR checks can be exercised locally.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import secrets
from pathlib import Path
from typing import Dict, Mapping, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ppml_hybrid.rpc.attestation.cose import sign_es384
from ppml_hybrid.rpc.attestation.document import DEV_MODULE_PREFIX, PCR_BYTES, AttestationPayload
from ppml_hybrid.rpc.attestation.verifier import Clock, utc_now

log = logging.getLogger(__name__)
NUM_PCRS = 16


def development_pcrs() -> Dict[int, bytes]:
    """PCR0..15 for development: PCR0 = SHA-384 of the package's .py sources, PCR1/2 fixed labels."""
    root = Path(__file__).resolve().parents[2]  # ppml_hybrid/
    h = hashlib.sha384()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    pcrs = {i: bytes(PCR_BYTES) for i in range(NUM_PCRS)}
    pcrs[0] = h.digest()
    pcrs[1] = hashlib.sha384(b"ppml-hybrid development kernel").digest()
    pcrs[2] = hashlib.sha384(b"ppml-hybrid development application").digest()
    return pcrs


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ppml-hybrid DEVELOPMENT"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(*, subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
          now: datetime.datetime, lifetime: datetime.timedelta, path_length: Optional[int], ca: bool) -> x509.Certificate:
    return (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(signer, hashes.SHA384())
    )


class DevelopmentSigner:
    """Makes development attestation documents (same COSE_Sign1/CBOR structure as the NSM)."""

    development = True
    __slots__ = ("_leaf_key", "_leaf_der", "_bundle", "_pcrs", "_clock", "_module_id", "root_pem")

    def __init__(self, *, pcrs: Optional[Mapping[int, bytes]] = None, clock: Clock = utc_now,
                 leaf_lifetime: datetime.timedelta = datetime.timedelta(hours=3)) -> None:
        now = clock()
        root_key = ec.generate_private_key(ec.SECP384R1())
        inter_key = ec.generate_private_key(ec.SECP384R1())
        self._leaf_key = ec.generate_private_key(ec.SECP384R1())
        root = _cert(subject="ppml-hybrid DEVELOPMENT attestation root", issuer=_name(
            "ppml-hybrid DEVELOPMENT attestation root"), key=root_key, signer=root_key, now=now,
            lifetime=datetime.timedelta(days=30), path_length=1, ca=True)
        inter = _cert(subject="ppml-hybrid DEVELOPMENT attestation intermediate", issuer=root.subject, key=inter_key,
                      signer=root_key, now=now, lifetime=datetime.timedelta(days=7), path_length=0, ca=True)
        leaf = _cert(subject="ppml-hybrid DEVELOPMENT enclave", issuer=inter.subject, key=self._leaf_key,
                     signer=inter_key, now=now, lifetime=leaf_lifetime, path_length=None, ca=False)
        der = serialization.Encoding.DER
        self._leaf_der = leaf.public_bytes(der)
        self._bundle = (root.public_bytes(der), inter.public_bytes(der))
        self.root_pem = root.public_bytes(serialization.Encoding.PEM)
        self._pcrs = dict(development_pcrs() if pcrs is None else pcrs)
        self._clock = clock
        self._module_id = f"{DEV_MODULE_PREFIX}i-{secrets.token_hex(8)}-enc{secrets.token_hex(8)}"
        log.warning("DEVELOPMENT attestation signer in use (module %s): documents prove no enclave", self._module_id)

    def __repr__(self) -> str:
        return f"DevelopmentSigner({self._module_id})"

    @property
    def pcrs(self) -> Mapping[int, bytes]:
        return dict(self._pcrs)

    def attest(self, *, user_data: Optional[bytes], nonce: Optional[bytes], public_key: Optional[bytes]) -> bytes:
        payload = AttestationPayload(
            module_id=self._module_id, digest="SHA384", timestamp_ms=int(self._clock().timestamp() * 1000),
            pcrs=self._pcrs, certificate=self._leaf_der, cabundle=self._bundle, public_key=public_key,
            user_data=user_data, nonce=nonce)
        return sign_es384(payload=payload.encode(), key=self._leaf_key).encode(tagged=False)
