"""One opaque error for every failed attestation check (Fernet style: the caller learns "no").

The reason is logged at DEBUG only (it may help an operator; it must not help an attacker
probe which check failed, and it never carries key material).
"""

from __future__ import annotations

import logging

from ppml_hybrid.errors import PPMLError

log = logging.getLogger(__name__)


class AttestationError(PPMLError):
    """The attestation document was rejected. Nothing it claims may be trusted."""

    exit_code = 5

    def __init__(self) -> None:
        super().__init__("attestation document rejected")


def reject(reason: str) -> AttestationError:
    """Log ``reason`` at debug level and return the opaque error to raise."""
    log.debug("attestation rejected: %s", reason)
    return AttestationError()
