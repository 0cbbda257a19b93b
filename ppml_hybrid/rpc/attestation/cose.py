"""COSE_Sign1 (RFC 8152) with ES384, as the AWS Nitro NSM emits it.

Structure: ``[protected: bstr({1: -35}), unprotected: {}, payload: bstr, signature: bstr(r || s)]``,
optionally under CBOR tag 18. The signature covers
``Sig_structure = ["Signature1", protected, b"", payload]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from ppml_hybrid.rpc.attestation.errors import reject

ES384 = -35
COSE_SIGN1_TAG = 18
_P384_BYTES = 48


@dataclass(frozen=True)
class CoseSign1:
    protected: bytes
    payload: bytes
    signature: bytes

    def encode(self, *, tagged: bool = False) -> bytes:
        body = [self.protected, {}, self.payload, self.signature]
        return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, body) if tagged else body)


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def sign_es384(*, payload: bytes, key: ec.EllipticCurvePrivateKey) -> CoseSign1:
    """Sign ``payload`` with a P-384 key (the development signer's leaf)."""
    protected = cbor2.dumps({1: ES384})
    der = key.sign(_sig_structure(protected, payload), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    return CoseSign1(protected=protected, payload=payload,
                     signature=r.to_bytes(_P384_BYTES, "big") + s.to_bytes(_P384_BYTES, "big"))


def decode(raw: bytes) -> CoseSign1:
    """Parse a COSE_Sign1 message; anything malformed is the opaque AttestationError."""
    try:
        obj = cbor2.loads(raw)
    except Exception:  # noqa: BLE001 - cbor2 raises several types on garbage
        raise reject("not CBOR") from None
    if isinstance(obj, cbor2.CBORTag):
        if obj.tag != COSE_SIGN1_TAG:
            raise reject("unexpected CBOR tag")
        obj = obj.value
    # under a tag, cbor2 decodes arrays as tuples and maps as frozen maps (immutable values)
    if not (isinstance(obj, (list, tuple)) and len(obj) == 4):
        raise reject("not a COSE_Sign1 array")
    protected, unprotected, payload, signature = obj
    if not all(isinstance(x, bytes) for x in (protected, payload, signature)) or not isinstance(unprotected, Mapping):
        raise reject("COSE_Sign1 fields of the wrong type")
    try:
        header = cbor2.loads(protected)
    except Exception:  # noqa: BLE001
        raise reject("protected header is not CBOR") from None
    if not isinstance(header, dict) or header.get(1) != ES384:
        raise reject("algorithm is not ES384")
    return CoseSign1(protected=protected, payload=payload, signature=signature)


def verify_es384(*, message: CoseSign1, public_key: ec.EllipticCurvePublicKey) -> None:
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp384r1":
        raise reject("signing certificate does not hold a P-384 key")
    if len(message.signature) != 2 * _P384_BYTES:
        raise reject("signature length")
    r = int.from_bytes(message.signature[:_P384_BYTES], "big")
    s = int.from_bytes(message.signature[_P384_BYTES:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), _sig_structure(message.protected, message.payload),
                          ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise reject("COSE signature does not verify") from None
