"""Errors of the conversion protocols (SS->HE, HE->SS). Each message says what to do."""

from __future__ import annotations

from ppml_hybrid.errors import ConfigError, PPMLError


class ConversionError(PPMLError):
    """Base class of every error the conversion protocols raise on purpose."""

    exit_code = 6


class ConversionParamsError(ConversionError, ConfigError):
    """Conversion parameters (clamp bits, modulus bits, CKKS scale, parties) are unusable."""

    exit_code = 2


class ChainError(ConversionError):
    """A message of the SS->HE XOR chain is missing, malformed or does not fit the run."""


class MaskWidthError(ConversionError):
    """A tensor's public value bound (from the current weights) needs a mask wider than K allows."""


class BatchCapacityError(ConversionError):
    """A step's batch does not fit the HE slot layout fixed for the run."""


class KeyServiceNotVerifiedError(ConversionError):
    """A step names a key service or public key this party did not verify itself (attestation
    of K over its own channel); nothing is encrypted under it."""
