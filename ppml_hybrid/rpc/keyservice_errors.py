"""Refusals of the key service. Each maps to one gRPC status code (see ppml_hybrid.rpc.errors)."""

from __future__ import annotations

from ppml_hybrid.rpc.errors import (
    FailedPreconditionError, InvalidArgumentError, PermissionDeniedError, ResourceExhaustedError,
)


class NotRegisteredError(PermissionDeniedError):
    """The caller's certificate is unknown, or its role may not call this operation."""


class UnknownRoundError(FailedPreconditionError):
    """The round was not announced by every party (K decrypts nothing else)."""


class OutOfOrderRoundError(FailedPreconditionError):
    """Rounds are announced by each party and decrypted in order 0, 1, 2, ..."""


class RoundReplayError(FailedPreconditionError):
    """The round (announcement, decryption or share delivery) already happened."""


class AnnouncementMismatchError(FailedPreconditionError):
    """A party announced a round with another (kind, shape) than a peer did."""


class ShareNotReadyError(FailedPreconditionError):
    """The round was not decrypted within the wait time."""


class RoundMismatchError(InvalidArgumentError):
    """The submission names another kind or shape than the parties announced, or the wrong count."""


class QuotaExceededError(ResourceExhaustedError):
    """The caller used up its request quota for this round."""


class TooManyOpenRoundsError(ResourceExhaustedError):
    """Announcing further ahead of the decryptions than ``keyservice.max_open_rounds`` allows."""


class ValueBoundError(InvalidArgumentError):
    """A round announces a value bound whose mask would exceed ``he.max_mask_bits``."""


class RunStoppedError(FailedPreconditionError):
    """K refused a decryption (out of the announced range, or malformed) and stopped the run: no
    round is decrypted or delivered any more (a retry would give E a range oracle)."""
