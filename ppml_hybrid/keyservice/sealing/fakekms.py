"""A local, attesting stand-in for AWS KMS (``GenerateDataKey`` / ``Decrypt`` with ``Recipient``).

It is a separate object holding its own KMS key (AES-256, in memory); K never sees that key.
Per request it (1) verifies the Recipient's attestation document under its
:class:`AttestationPolicy` - the equivalent of the key policy's ``kms:RecipientAttestation:PCR*``
conditions - and refuses with :class:`KmsAccessDeniedError` otherwise; (2) reads the RSA public
key from the document's ``public_key``; (3) answers with real CMS EnvelopedData (BER,
RSAES-OAEP-SHA-256, AES-256-CBC) that K opens with the production code path.
``CiphertextBlob`` here is ``version || nonce || AES-GCM(kms key, data key, aad = key id)``
(AWS's format is opaque too). moto cannot play this role: it ignores Recipient and key policies.
"""

from __future__ import annotations

import logging
import os

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import load_der_public_key

from ppml_hybrid.keyservice.sealing.cms import build_enveloped
from ppml_hybrid.keyservice.sealing.errors import KmsAccessDeniedError, KmsInvalidCiphertextError
from ppml_hybrid.rpc.attestation.errors import AttestationError
from ppml_hybrid.rpc.attestation.verifier import AttestationPolicy, verify_recipient_document
from ppml_hybrid.keyservice.sealing.kms import (
    RSAES_OAEP_SHA_256, DecryptResult, GenerateDataKeyResult, Recipient,
)

log = logging.getLogger(__name__)
_BLOB_VERSION = b"FK1"


class AttestingFakeKms:
    __slots__ = ("_key_id", "_kms_key", "_policy")

    def __init__(self, *, key_id: str, policy: AttestationPolicy) -> None:
        self._key_id = key_id
        self._kms_key = AESGCM.generate_key(bit_length=256)
        self._policy = policy

    def __repr__(self) -> str:
        return f"AttestingFakeKms({self._key_id})"

    def _recipient_key(self, *, key_id: str, recipient: Recipient) -> bytes:
        if key_id != self._key_id:
            raise KmsAccessDeniedError(f"no access to KMS key {key_id!r}")
        if recipient.key_encryption_algorithm != RSAES_OAEP_SHA_256:
            raise KmsAccessDeniedError("Recipient.KeyEncryptionAlgorithm must be RSAES_OAEP_SHA_256")
        try:
            payload = verify_recipient_document(document=recipient.attestation_document, policy=self._policy)
        except AttestationError:
            raise KmsAccessDeniedError("the Recipient attestation document does not satisfy the key policy") from None
        try:
            pub = load_der_public_key(payload.public_key or b"")
        except ValueError:
            raise KmsAccessDeniedError("the attestation document carries no RSA public key") from None
        if not isinstance(pub, rsa.RSAPublicKey) or pub.key_size < 2048:
            raise KmsAccessDeniedError("the attestation document's public key is not RSA >= 2048")
        return payload.public_key

    def generate_data_key(self, *, key_id: str, recipient: Recipient) -> GenerateDataKeyResult:
        public_der = self._recipient_key(key_id=key_id, recipient=recipient)
        data_key = os.urandom(32)
        nonce = os.urandom(12)
        blob = _BLOB_VERSION + nonce + AESGCM(self._kms_key).encrypt(nonce, data_key, key_id.encode())
        log.info("fake KMS: GenerateDataKey for an attested recipient")
        return GenerateDataKeyResult(key_id=key_id, ciphertext_blob=blob,
                                     ciphertext_for_recipient=build_enveloped(plaintext=data_key,
                                                                              recipient_public_der=public_der))

    def decrypt(self, *, key_id: str, ciphertext_blob: bytes, recipient: Recipient) -> DecryptResult:
        public_der = self._recipient_key(key_id=key_id, recipient=recipient)
        if not ciphertext_blob.startswith(_BLOB_VERSION) or len(ciphertext_blob) < len(_BLOB_VERSION) + 12 + 16:
            raise KmsInvalidCiphertextError("CiphertextBlob is not a ciphertext of this KMS")
        nonce = ciphertext_blob[len(_BLOB_VERSION):len(_BLOB_VERSION) + 12]
        try:
            data_key = AESGCM(self._kms_key).decrypt(nonce, ciphertext_blob[len(_BLOB_VERSION) + 12:], key_id.encode())
        except Exception:  # noqa: BLE001 - InvalidTag
            raise KmsInvalidCiphertextError("CiphertextBlob does not decrypt under this KMS key") from None
        log.info("fake KMS: Decrypt for an attested recipient")
        return DecryptResult(key_id=key_id, ciphertext_for_recipient=build_enveloped(
            plaintext=data_key, recipient_public_der=public_der))
