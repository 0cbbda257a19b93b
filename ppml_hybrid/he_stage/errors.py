"""Errors of the HE stage. Each message says what was wrong and what to do about it."""

from __future__ import annotations

from ppml_hybrid.errors import ConfigError, PPMLError


class HEError(PPMLError):
    """Base class of every error the HE stage raises on purpose."""

    exit_code = 5


class HEParamsError(HEError, ConfigError):
    """CKKS parameters cannot be derived or built from the configuration."""

    exit_code = 2


class LayoutError(HEError):
    """Data does not fit the slot layout (too many samples, wrong feature count, wrong shape)."""


class KeyMaterialError(HEError):
    """Public or secret key material is missing, malformed, or does not match the context."""


class WeightsError(HEError):
    """The public weights do not match the model's HE blocks."""
