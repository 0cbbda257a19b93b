"""Client-side verification of K's attestation document (parties and E, before sending anything).

Steps, each failing with the one opaque :class:`AttestationError` (reason at DEBUG only):

1. parse COSE_Sign1 (ES384) and the CBOR payload;
2. ``cabundle[0]`` is byte-identical to the pinned root: the AWS Nitro root G1, or - only with
   ``allow_development`` - the development root the caller pinned; a development document
   (``module_id`` prefix) is refused without the opt-in even if its root were pinned;
3. each certificate is signed by the one before it (issuers are CAs), all valid at ``clock()``;
4. the COSE signature verifies under the leaf's P-384 key;
5. the nonce equals the caller's fresh nonce; the timestamp is within ``max_age_s`` of the clock;
6. PCR0/1/2 all zero (debug enclave) are refused unless ``allow_debug``; a document that is not
   from the development signer is refused unless the policy pins PCR0, PCR1 and PCR2 (and PCR8
   when the document's PCR8 is set, i.e. the image is signed): without pins, any genuine Nitro
   enclave of any AWS account would pass; every PCR in ``expected_pcrs`` matches;
7. ``user_data`` equals the :class:`KeyBinding` of what the caller received, and ``public_key``
   equals the expected channel binding (or RSA key, for KMS).

The caller learns: this document was made for its nonce by code with the expected measurements,
serving exactly the material it holds over the channel it uses.
"""

from __future__ import annotations

import datetime
import hmac
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ppml_hybrid.rpc.attestation import cose
from ppml_hybrid.rpc.attestation.binding import KeyBinding
from ppml_hybrid.rpc.attestation.document import PCR_BYTES, AttestationPayload
from ppml_hybrid.rpc.attestation.errors import reject
from ppml_hybrid.rpc.attestation.roots import aws_nitro_root_der, pem_to_der

Clock = Callable[[], datetime.datetime]
DEBUG_PCRS = (0, 1, 2)
REQUIRED_PCRS = (0, 1, 2)  # image, kernel and bootstrap, application
SIGNING_PCR = 8  # the image's signing certificate: pinned too when the image is signed


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass(frozen=True)
class AttestationPolicy:
    """What a client accepts. ``expected_pcrs``: index -> 48-byte value (from config)."""

    expected_pcrs: Mapping[int, bytes]
    allow_development: bool = False
    development_root_pem: Optional[bytes] = None
    allow_debug: bool = False
    max_age_s: float = 300.0
    clock: Clock = field(default=utc_now, compare=False)

    @classmethod
    def from_hex(cls, *, expected_pcrs: Mapping[int, str], **kwargs) -> "AttestationPolicy":
        return cls(expected_pcrs={int(i): bytes.fromhex(v) for i, v in expected_pcrs.items()}, **kwargs)


def _pinned_root(policy: AttestationPolicy, payload: AttestationPayload) -> bytes:
    if payload.development:
        if not policy.allow_development or policy.development_root_pem is None:
            raise reject("development document without the development opt-in")
        return pem_to_der(policy.development_root_pem)
    return aws_nitro_root_der()


def _valid_at(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def verify_chain(*, payload: AttestationPayload, root_der: bytes, now: datetime.datetime) -> x509.Certificate:
    """Check the bundle against the pinned root and return the verified leaf certificate."""
    if not hmac.compare_digest(payload.cabundle[0], root_der):
        raise reject("cabundle does not start with the pinned root")
    try:
        chain = [x509.load_der_x509_certificate(d) for d in (*payload.cabundle, payload.certificate)]
    except ValueError:
        raise reject("certificate does not parse") from None
    for issuer, cert in zip(chain, chain[1:]):
        if not _is_ca(issuer):
            raise reject("an issuing certificate is not a CA")
        try:
            cert.verify_directly_issued_by(issuer)
        except Exception:  # noqa: BLE001 - InvalidSignature, ValueError, TypeError
            raise reject("certificate signature does not verify") from None
    if not all(_valid_at(c, now) for c in chain):
        raise reject("a certificate is outside its validity period")
    if _is_ca(chain[-1]):
        raise reject("the signing certificate is a CA")
    return chain[-1]


def verify_document(*, document: bytes, policy: AttestationPolicy, nonce: bytes) -> AttestationPayload:
    """Steps 1-6: signature, chain, freshness, nonce, PCRs. Returns the payload for step 7."""
    return _verify(document=document, policy=policy, nonce=nonce, require_nonce=True)


def verify_recipient_document(*, document: bytes, policy: AttestationPolicy) -> AttestationPayload:
    """What KMS checks on a ``Recipient``: steps 1-4 and 6 (no caller nonce; freshness by timestamp)."""
    return _verify(document=document, policy=policy, nonce=b"", require_nonce=False)


def _verify(*, document: bytes, policy: AttestationPolicy, nonce: bytes, require_nonce: bool) -> AttestationPayload:
    message = cose.decode(document)
    payload = AttestationPayload.decode(message.payload)
    now = policy.clock()
    leaf = verify_chain(payload=payload, root_der=_pinned_root(policy, payload), now=now)
    pub = leaf.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise reject("leaf key is not EC")
    cose.verify_es384(message=message, public_key=pub)
    if require_nonce and (payload.nonce is None or not nonce or not hmac.compare_digest(payload.nonce, nonce)):
        raise reject("nonce mismatch")
    age_s = now.timestamp() - payload.timestamp_ms / 1000.0
    if not -60.0 <= age_s <= policy.max_age_s:
        raise reject("document timestamp outside the accepted window")
    if all(payload.pcrs.get(i) == bytes(PCR_BYTES) for i in DEBUG_PCRS) and not policy.allow_debug:
        raise reject("debug-mode enclave (PCR0/1/2 all zero)")
    if not payload.development:
        required = REQUIRED_PCRS + ((SIGNING_PCR,) if payload.pcrs.get(SIGNING_PCR, bytes(PCR_BYTES)) != bytes(
            PCR_BYTES) else ())
        missing = [i for i in required if i not in {int(k) for k in policy.expected_pcrs}]
        if missing:
            raise reject(f"the policy pins no PCR{missing[0]}: a Nitro document is accepted only against "
                         "pinned measurements")
    for i, want in policy.expected_pcrs.items():
        got = payload.pcrs.get(int(i))
        if got is None or not hmac.compare_digest(got, bytes(want)):
            raise reject(f"PCR{i} mismatch")
    return payload


def verify_key_service(*, document: bytes, policy: AttestationPolicy, nonce: bytes, binding: KeyBinding,
                       public_key: bytes) -> AttestationPayload:
    """All steps: the document binds exactly ``binding`` (what the caller received) and ``public_key``."""
    payload = verify_document(document=document, policy=policy, nonce=nonce)
    if payload.user_data is None or KeyBinding.from_user_data(payload.user_data) != binding:
        raise reject("public material hashes differ from the received material")
    if payload.public_key is None or not hmac.compare_digest(payload.public_key, public_key):
        raise reject("channel binding differs from the channel in use")
    return payload
