"""Build the OpenFHE CKKS CryptoContext from :class:`CKKSParams`.

FLEXIBLEAUTO scaling, not OpenFHE's default FLEXIBLEAUTOEXT: the EXT variant adds a modulus,
which at depth 5 and scale 2^50 pushes HEStd_128_classic from ring 2^14 to 2^15 (measured),
doubling every operation's cost.

Set ``OMP_NUM_THREADS`` before the first import of openfhe to control its thread count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import openfhe

from ppml_hybrid.he_stage.errors import HEParamsError
from ppml_hybrid.he_stage.params import CKKSParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContextInfo:
    """What the built context turned out to be (OpenFHE picks the ring for a security level)."""

    ring_dim: int
    slots: int
    multiplicative_depth: int
    security_level: str
    insecure: bool


@dataclass(frozen=True)
class HEContext:
    """A CryptoContext with the facts about it. Holds no keys."""

    cc: Any  # openfhe.CryptoContext
    params: CKKSParams
    info: ContextInfo


def enable_features(cc: Any) -> None:
    """Features every role needs (ADVANCEDSHE gives EvalLinearWSum)."""
    for feature in (openfhe.PKE, openfhe.KEYSWITCH, openfhe.LEVELEDSHE, openfhe.ADVANCEDSHE):
        cc.Enable(feature)


def build_context(*, params: CKKSParams) -> HEContext:
    """Build the CryptoContext for ``params`` and report its ring dimension and slot count."""
    p = openfhe.CCParamsCKKSRNS()
    p.SetMultiplicativeDepth(params.multiplicative_depth)
    p.SetScalingModSize(params.scale_bits)
    p.SetFirstModSize(params.first_mod_bits)
    p.SetScalingTechnique(openfhe.FLEXIBLEAUTO)
    p.SetSecurityLevel(getattr(openfhe, params.security_level))
    if params.ring_dim:
        p.SetRingDim(params.ring_dim)
    try:
        cc = openfhe.GenCryptoContext(p)
    except RuntimeError as exc:
        raise HEParamsError(
            f"OpenFHE rejected the CKKS parameters (depth {params.multiplicative_depth}, ring "
            f"{params.ring_dim or 'auto'}, {params.security_level}): {exc}. Leave he.ring_dim at 0 "
            "for secure parameters, or raise it."
        ) from exc
    enable_features(cc)
    return HEContext(cc=cc, params=params, info=describe(cc, params))


def describe(cc: Any, params: CKKSParams) -> ContextInfo:
    ring = cc.GetRingDimension()
    info = ContextInfo(
        ring_dim=ring,
        slots=ring // 2,
        multiplicative_depth=params.multiplicative_depth,
        security_level=params.security_level,
        insecure=params.insecure,
    )
    if params.insecure:
        log.warning("INSECURE CKKS parameters %r (ring %d): for tests only, never for real data", params.name, ring)
    log.info("CKKS context: ring 2^%d, %d slots, depth %d, %s", ring.bit_length() - 1, info.slots,
             info.multiplicative_depth, params.security_level)
    return info
