"""Errors of key sealing. :class:`SealingError` is opaque (Fernet style): reason at DEBUG only."""

from __future__ import annotations

import logging

from ppml_hybrid.errors import PPMLError

log = logging.getLogger(__name__)


class SealingError(PPMLError):
    """The sealed key (or the KMS answer unwrapping it) was rejected; nothing was unsealed."""

    exit_code = 6

    def __init__(self) -> None:
        super().__init__("sealed key rejected")


class KmsError(PPMLError):
    """A KMS call failed; the message names the AWS error type and what to check."""

    exit_code = 6


class KmsAccessDeniedError(KmsError):
    """KMS refused the request (key policy / attestation conditions not met), as AWS's AccessDeniedException."""


class KmsCredentialsError(KmsError):
    """KMS did not accept the request's credentials or signature (expired, wrong, clock skew)."""


class KmsKeyError(KmsError):
    """The KMS key is missing in this region, disabled, pending deletion, or of the wrong kind."""


class KmsRequestError(KmsError):
    """KMS rejected the request as malformed (e.g. the Recipient attestation document)."""


class KmsUnavailableError(KmsError):
    """KMS could not be reached or answered with a server error / throttling / no usable answer."""


def sealing_failure(reason: str) -> SealingError:
    log.debug("sealing rejected: %s", reason)
    return SealingError()


class KmsInvalidCiphertextError(KmsError):
    """KMS could not decrypt the CiphertextBlob (wrong key, tampered), as AWS's InvalidCiphertextException."""
