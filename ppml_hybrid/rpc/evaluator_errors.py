"""Refusals of the HE evaluator E (each maps to one gRPC status code)."""

from __future__ import annotations

from ppml_hybrid.rpc.errors import FailedPreconditionError, InvalidArgumentError, ResourceExhaustedError


class UnknownStepError(FailedPreconditionError):
    """The step is not held (never run, already released, or dropped for a newer one)."""


class StepReplayError(FailedPreconditionError):
    """Forward for a step id already held, or backward run twice."""


class UnknownTensorError(InvalidArgumentError):
    """The step holds no tensor of that name."""


class MaskReplayError(FailedPreconditionError):
    """E already masked that round (masks are never reused) or delivered that share."""


class MaskNotReadyError(FailedPreconditionError):
    """E has not masked the round within the wait time."""


class TooManyMaskRoundsError(ResourceExhaustedError):
    """Too many rounds whose mask shares were not fetched."""
