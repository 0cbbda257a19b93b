"""KMS sealing of K's CKKS secret key (AWS KMS with Recipient attestation; a local attesting fake).

:func:`~.seal.seal_vault` / :func:`~.seal.unseal_vault`, :class:`~.sealed.SealedKey`, the
:class:`~.kms.KmsClient` interface, the real :class:`~.awskms.AwsKmsClient` (SigV4,
:class:`~.sigv4.AwsCredentials`) and, for tests and development, :class:`~.fakekms.AttestingFakeKms`.
"""

from ppml_hybrid.keyservice.sealing.awskms import AwsKmsClient
from ppml_hybrid.keyservice.sealing.errors import (
    KmsAccessDeniedError, KmsCredentialsError, KmsError, KmsInvalidCiphertextError, KmsKeyError, KmsRequestError,
    KmsUnavailableError, SealingError,
)
from ppml_hybrid.keyservice.sealing.fakekms import AttestingFakeKms
from ppml_hybrid.keyservice.sealing.kms import KmsClient, Recipient
from ppml_hybrid.keyservice.sealing.seal import seal_vault, unseal_vault
from ppml_hybrid.keyservice.sealing.sealed import SealedKey
from ppml_hybrid.keyservice.sealing.sigv4 import AwsCredentials

__all__ = ["AttestingFakeKms", "AwsCredentials", "AwsKmsClient", "KmsAccessDeniedError", "KmsClient",
           "KmsCredentialsError", "KmsError", "KmsInvalidCiphertextError", "KmsKeyError", "KmsRequestError",
           "KmsUnavailableError", "Recipient", "SealedKey", "SealingError", "seal_vault", "unseal_vault"]
