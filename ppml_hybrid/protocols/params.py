"""Parameters of the SS->HE conversion (design section 6), validated once at start-up.

* ``fraction_bits`` f: CrypTen's fixed point (16); the conversion reads CrypTen's raw shares.
* ``integer_bits``: values are clamped in MPC to ``|x| < 2^integer_bits``;
  ``clamp_bits`` l = f + integer_bits (the bound on the fixed-point integer ``|X| < 2^l``).
* ``modulus_bits`` m = l + 1: each party reduces its share mod 2^m.
* ``carry_bits``: ceil(log2(parties)) bits hold the carry w in {0..parties-1}.
* ``scale_bits``: the CKKS scale; at least 2^50 for CrypTen-level precision.
* ``adder``: how the MPC computes the carry (:mod:`~ppml_hybrid.protocols.carry`): ``"cut"``
  (default: bit-sliced adder on the low ``adder_bits`` = m + carry_bits bits only) or ``"full"``
  (CrypTen's 64-bit binary adder, kept for comparison).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ppml_hybrid.config import FIXED_POINT_BITS
from ppml_hybrid.protocols.errors import ConversionParamsError

CRYPTEN_FRACTION_BITS = FIXED_POINT_BITS
MIN_SCALE_BITS = 50
MAX_SCALE_BITS = 59
# u_j / 2^f must be exact in float64 (53-bit mantissa) before CKKS encoding.
MAX_MODULUS_BITS = 52
ADDERS = ("cut", "full")
# Headroom below the clamp bound, in units of 2^-f, so that |X| < 2^l holds after clamping.
CLAMP_MARGIN_UNITS = 2


@dataclass(frozen=True)
class ConversionParams:
    """What every party and E agree on for SS->HE; :meth:`check` runs in ``__post_init__``."""

    parties: int
    integer_bits: int = 8
    scale_bits: int = 50
    fraction_bits: int = CRYPTEN_FRACTION_BITS
    adder: str = "cut"

    def __post_init__(self) -> None:
        self.check()

    @property
    def clamp_bits(self) -> int:
        """l: clamped fixed-point values satisfy |X| < 2^l."""
        return self.fraction_bits + self.integer_bits

    @property
    def modulus_bits(self) -> int:
        """m = l + 1: shares are reduced mod 2^m."""
        return self.clamp_bits + 1

    @property
    def carry_bits(self) -> int:
        """Bits of the carry w = (sum u_j - y) / 2^m, which lies in {0, ..., parties - 1}."""
        return max(1, math.ceil(math.log2(self.parties)))

    @property
    def adder_bits(self) -> int:
        """k = m + carry_bits: sum_j u_j < parties * 2^m <= 2^k, so only the low k bits matter."""
        return self.modulus_bits + self.carry_bits

    @property
    def clamp_bound(self) -> float:
        """Largest |x| the clamp lets through (a real number, below 2^integer_bits)."""
        return ((1 << self.clamp_bits) - CLAMP_MARGIN_UNITS) / float(1 << self.fraction_bits)

    @property
    def chain_levels(self) -> int:
        """Multiplicative levels the XOR chain consumes (one per party after the first)."""
        return self.parties - 1

    def check(self) -> None:
        """Raise :class:`ConversionParamsError` naming the first unusable value."""
        if not isinstance(self.parties, int) or self.parties < 2:
            raise ConversionParamsError(f"SS->HE needs at least 2 parties; got parties={self.parties!r}")
        if self.fraction_bits != CRYPTEN_FRACTION_BITS:
            raise ConversionParamsError(
                f"fraction_bits must equal CrypTen's fixed point ({CRYPTEN_FRACTION_BITS}); got {self.fraction_bits}"
            )
        if not isinstance(self.integer_bits, int) or self.integer_bits < 1:
            raise ConversionParamsError(f"integer_bits (clamp |x| < 2^integer_bits) must be >= 1; got {self.integer_bits!r}")
        if self.modulus_bits > MAX_MODULUS_BITS:
            raise ConversionParamsError(
                f"modulus bits m = fraction_bits + integer_bits + 1 = {self.modulus_bits} exceed {MAX_MODULUS_BITS} "
                "(shares mod 2^m must be exact in float64): lower integer_bits"
            )
        if self.adder not in ADDERS:
            raise ConversionParamsError(f"adder must be one of {ADDERS}; got adder={self.adder!r}")
        if not MIN_SCALE_BITS <= self.scale_bits <= MAX_SCALE_BITS:
            raise ConversionParamsError(
                f"the CKKS scale must be 2^{MIN_SCALE_BITS}..2^{MAX_SCALE_BITS} for CrypTen-level precision; "
                f"got scale_bits={self.scale_bits}: set he.scale_bits accordingly"
            )

    def check_context(self, *, multiplicative_depth: int, scale_bits: int) -> None:
        """The CKKS context must match the scale and leave the chain's levels."""
        if scale_bits != self.scale_bits:
            raise ConversionParamsError(
                f"the CKKS context uses scale 2^{scale_bits} but the conversion was set up for 2^{self.scale_bits}"
            )
        if multiplicative_depth < self.chain_levels:
            raise ConversionParamsError(
                f"the CKKS depth {multiplicative_depth} leaves no room for the XOR chain's {self.chain_levels} "
                f"level(s) with {self.parties} parties: derive the parameters with parties={self.parties}"
            )
