"""Seal K's CKKS secret key under a KMS data key, and unseal it after a restart (inside K).

Seal: (1) fresh :class:`EphemeralRecipient` (RSA-2048); (2) attestation document with its public
key (``public_key``) from K's producer (NSM / development signer); (3) KMS ``GenerateDataKey``
with that ``Recipient`` -> ``CiphertextBlob`` + ``CiphertextForRecipient``; (4) K opens the
envelope -> 32-byte data key; (5) AES-GCM(data key, secret key bytes, aad = version, key id,
blob, material SHA-256); (6) store :class:`SealedKey` (no plaintext key anywhere).
Unseal: (1)-(2) as above; (3) KMS ``Decrypt(CiphertextBlob, Recipient)``; (4) open the envelope;
(5) AES-GCM open; (6) :meth:`KeyVault.restore` with the stored public material.
Who learns what: KMS learns the data key and the attestation document; the host stores
ciphertexts; only code with the PCRs the KMS key policy names ever holds the data key.
"""

from __future__ import annotations

import os
from typing import Tuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml_hybrid.he_stage.errors import HEError
from ppml_hybrid.he_stage.material import PublishedMaterial
from ppml_hybrid.he_stage.runspec import HERunSpec
from ppml_hybrid.keyservice.attestation.producer import AttestationProducer
from ppml_hybrid.keyservice.hazmat import KeyVault
from ppml_hybrid.keyservice.sealing.errors import KmsInvalidCiphertextError, sealing_failure
from ppml_hybrid.keyservice.sealing.hazmat_recipient import EphemeralRecipient
from ppml_hybrid.keyservice.sealing.kms import KmsClient, Recipient
from ppml_hybrid.keyservice.sealing.sealed import SealedKey


def _recipient(*, producer: AttestationProducer) -> Tuple[EphemeralRecipient, Recipient]:
    holder = EphemeralRecipient()
    doc = producer.attest(user_data=None, nonce=None, public_key=holder.public_der())
    return holder, Recipient(attestation_document=doc)


def seal_vault(*, vault: KeyVault, published: PublishedMaterial, kms: KmsClient, producer: AttestationProducer,
               key_id: str) -> SealedKey:
    holder, recipient = _recipient(producer=producer)
    res = kms.generate_data_key(key_id=key_id, recipient=recipient)
    data_key = holder.open(res.ciphertext_for_recipient)
    nonce = os.urandom(12)
    material = SealedKey.material_of(published)
    aad = SealedKey.aad(key_id=key_id, ciphertext_blob=res.ciphertext_blob,
                        material_sha256=SealedKey.material_sha256(material))
    ciphertext = AESGCM(data_key).encrypt(nonce, vault.export_for_sealing(), aad)
    return SealedKey(key_id=key_id, ciphertext_blob=res.ciphertext_blob, nonce=nonce, ciphertext=ciphertext,
                     material=material)


def unseal_vault(*, sealed: SealedKey, spec: HERunSpec, kms: KmsClient, producer: AttestationProducer,
                 key_id: str) -> Tuple[KeyVault, PublishedMaterial]:
    if sealed.key_id != key_id:
        raise sealing_failure("sealed under another KMS key")
    published = sealed.published()
    holder, recipient = _recipient(producer=producer)
    try:
        res = kms.decrypt(key_id=key_id, ciphertext_blob=sealed.ciphertext_blob, recipient=recipient)
    except KmsInvalidCiphertextError:
        raise sealing_failure("KMS cannot decrypt the stored CiphertextBlob") from None
    data_key = holder.open(res.ciphertext_for_recipient)
    aad = SealedKey.aad(key_id=key_id, ciphertext_blob=sealed.ciphertext_blob,
                        material_sha256=SealedKey.material_sha256(sealed.material))
    try:
        secret = AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except Exception:  # noqa: BLE001 - InvalidTag, ValueError (nonce length)
        raise sealing_failure("AES-GCM tag does not verify") from None
    try:
        vault = KeyVault.restore(spec=spec, public=published.material, secret_key=secret)
    except HEError as exc:
        raise sealing_failure(f"restore: {exc}") from None
    return vault, published
