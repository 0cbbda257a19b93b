"""CMS EnvelopedData as KMS returns it in ``CiphertextForRecipient`` (RFC 5652, BER).

One KeyTransRecipientInfo with RSAES-OAEP (SHA-256, MGF1-SHA-256) key transport; content
AES-256-CBC (PKCS#7 padding) with the IV in the algorithm parameters. :func:`parse_enveloped`
is the path production and tests share; :func:`build_enveloped` is used by the fake KMS only
and emits the outer ContentInfo with indefinite lengths (BER, as KMS does).
No secret passes through :func:`parse_enveloped`: it returns the wrapped key and ciphertext.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from asn1crypto import algos, cms, core
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ppml_hybrid.keyservice.sealing.errors import sealing_failure

OAEP_SHA256 = asym_padding.OAEP(mgf=asym_padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@dataclass(frozen=True)
class Enveloped:
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes


def _oaep_params() -> algos.RSAESOAEPParams:
    return algos.RSAESOAEPParams({
        "hash_algorithm": {"algorithm": "sha256"},
        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
    })


def build_enveloped(*, plaintext: bytes, recipient_public_der: bytes) -> bytes:
    """EnvelopedData of ``plaintext`` to an RSA public key (SubjectPublicKeyInfo DER); BER output."""
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    pub = load_der_public_key(recipient_public_der)
    if not isinstance(pub, rsa.RSAPublicKey):
        raise ValueError("the recipient key is not RSA")
    cek, iv = os.urandom(32), os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(padded) + enc.finalize()
    ktri = cms.KeyTransRecipientInfo({
        "version": "v2",
        "rid": cms.RecipientIdentifier({"subject_key_identifier": os.urandom(20)}),
        "key_encryption_algorithm": {"algorithm": "rsaes_oaep", "parameters": _oaep_params()},
        "encrypted_key": pub.encrypt(cek, OAEP_SHA256),
    })
    env = cms.EnvelopedData({
        "version": "v2",
        "recipient_infos": [cms.RecipientInfo({"ktri": ktri})],
        "encrypted_content_info": {
            "content_type": "data",
            "content_encryption_algorithm": {"algorithm": "aes256_cbc", "parameters": core.OctetString(iv)},
            "encrypted_content": ciphertext,
        },
    })
    # ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content } with indefinite lengths (BER)
    oid = core.ObjectIdentifier("1.2.840.113549.1.7.3").dump()
    return b"\x30\x80" + oid + b"\xa0\x80" + env.dump() + b"\x00\x00" + b"\x00\x00"


def parse_enveloped(ber: bytes) -> Enveloped:
    """Structure checks of ``CiphertextForRecipient``; anything unexpected is the opaque SealingError."""
    try:
        info = cms.ContentInfo.load(ber)
        if info["content_type"].native != "enveloped_data":
            raise ValueError("not EnvelopedData")
        env = info["content"]
        recipients = env["recipient_infos"]
        if len(recipients) != 1 or recipients[0].name != "ktri":
            raise ValueError("expected one key-transport recipient")
        ktri = recipients[0].chosen
        alg = ktri["key_encryption_algorithm"]
        if alg["algorithm"].native != "rsaes_oaep":
            raise ValueError("key transport is not RSAES-OAEP")
        params = alg["parameters"]
        if (params["hash_algorithm"]["algorithm"].native != "sha256"
                or params["mask_gen_algorithm"]["parameters"]["algorithm"].native != "sha256"):
            raise ValueError("OAEP is not SHA-256/MGF1-SHA-256")
        eci = env["encrypted_content_info"]
        cea = eci["content_encryption_algorithm"]
        if cea["algorithm"].native != "aes256_cbc":
            raise ValueError("content is not AES-256-CBC")
        iv = cea["parameters"].native
        ciphertext = eci["encrypted_content"].native
        if not isinstance(iv, bytes) or len(iv) != 16 or not ciphertext or len(ciphertext) % 16:
            raise ValueError("bad IV or ciphertext length")
        return Enveloped(encrypted_key=ktri["encrypted_key"].native, iv=iv, ciphertext=ciphertext)
    except Exception as exc:  # noqa: BLE001 - asn1crypto raises many types on malformed input
        raise sealing_failure(f"CiphertextForRecipient: {type(exc).__name__}") from None
