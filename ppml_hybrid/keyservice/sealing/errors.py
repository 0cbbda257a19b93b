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


class KmsAccessDeniedError(PPMLError):
    """KMS refused the request (key policy / attestation conditions not met), as AWS's AccessDeniedException."""

    exit_code = 6


def sealing_failure(reason: str) -> SealingError:
    log.debug("sealing rejected: %s", reason)
    return SealingError()


class KmsInvalidCiphertextError(PPMLError):
    """KMS could not decrypt the CiphertextBlob (wrong key, tampered), as AWS's InvalidCiphertextException."""

    exit_code = 6
