"""The KMS interface K uses (AWS KMS's ``GenerateDataKey`` / ``Decrypt`` with ``Recipient``).

AWS request shapes (JSON over HTTPS; from an enclave via ``vsock-proxy`` to kms.<region>.amazonaws.com:443,
signed with SigV4 credentials the parent passes in from its instance role):

* ``GenerateDataKey {KeyId, KeySpec: "AES_256", Recipient: {KeyEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
  AttestationDocument}}`` -> ``{KeyId, CiphertextBlob, CiphertextForRecipient, Plaintext: null}``
* ``Decrypt {KeyId, CiphertextBlob, Recipient: {...}}`` -> ``{KeyId, CiphertextForRecipient, Plaintext: null}``

``CiphertextForRecipient`` is CMS EnvelopedData (BER): the data key under AES-256-CBC, its content
key under RSAES-OAEP-SHA-256 to the RSA public key in the attestation document's ``public_key``.
KMS evaluates the key policy's ``kms:RecipientAttestation:PCR*`` / ``ImageSha384`` conditions on
the document. Who learns what: KMS learns the data key (it made it); the parent host relays
only ciphertexts; only the enclave holding the RSA key opens ``CiphertextForRecipient``.

The real client is :class:`~ppml_hybrid.keyservice.sealing.awskms.AwsKmsClient` (SigV4 in
:mod:`~ppml_hybrid.keyservice.sealing.sigv4`, over the parent's vsock-proxy inside an enclave);
locally and in tests :class:`~ppml_hybrid.keyservice.sealing.fakekms.AttestingFakeKms` answers with
the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

RSAES_OAEP_SHA_256 = "RSAES_OAEP_SHA_256"


@dataclass(frozen=True)
class Recipient:
    attestation_document: bytes
    key_encryption_algorithm: str = RSAES_OAEP_SHA_256


@dataclass(frozen=True)
class GenerateDataKeyResult:
    key_id: str
    ciphertext_blob: bytes  # the data key under the KMS key (stored next to the sealed secret)
    ciphertext_for_recipient: bytes  # CMS EnvelopedData (BER) to the recipient's RSA key


@dataclass(frozen=True)
class DecryptResult:
    key_id: str
    ciphertext_for_recipient: bytes


class KmsClient(Protocol):
    def generate_data_key(self, *, key_id: str, recipient: Recipient) -> GenerateDataKeyResult:
        ...

    def decrypt(self, *, key_id: str, ciphertext_blob: bytes, recipient: Recipient) -> DecryptResult:
        ...
