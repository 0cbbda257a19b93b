"""KMS sealing of K's CKKS secret key (AWS KMS with Recipient attestation; a local attesting fake).

:func:`~.seal.seal_vault` / :func:`~.seal.unseal_vault`, :class:`~.sealed.SealedKey`, the
:class:`~.kms.KmsClient` interface and :class:`~.fakekms.AttestingFakeKms`.
"""

from ppml_hybrid.keyservice.sealing.errors import KmsAccessDeniedError, KmsInvalidCiphertextError, SealingError
from ppml_hybrid.keyservice.sealing.fakekms import AttestingFakeKms
from ppml_hybrid.keyservice.sealing.kms import KmsClient, Recipient
from ppml_hybrid.keyservice.sealing.seal import seal_vault, unseal_vault
from ppml_hybrid.keyservice.sealing.sealed import SealedKey

__all__ = ["AttestingFakeKms", "KmsAccessDeniedError", "KmsClient", "KmsInvalidCiphertextError", "Recipient",
           "SealedKey", "SealingError", "seal_vault", "unseal_vault"]
