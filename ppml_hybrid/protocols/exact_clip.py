"""Exact, bounded clipping of per-sample vectors under MPC (shared by the DP step and SS->HE).

Clipping under MPC must hold exactly: the bound it promises (a gradient's contribution below
C; a split activation's L2 norm below R, which sets the HE->SS mask width) may not depend on
CrypTen's probabilistic truncation. The pattern, for per-sample vectors reduced exactly into
public ranges (:func:`~ppml_hybrid.smpc_stage.exact.reduce`) and an upper bound ``n_i`` of their
squared norms computed by exact products:

1. ``c_i ~ min(1, B'/sqrt(n_i))`` (``B' = (1 - 2^-10) B``) by CrypTen's ``inv_sqrt`` in one of
   four ranges plus Newton steps (:func:`approximate_clip_factors`; its errors are harmless);
2. ``f_i = c'_i [c'_i >= 0] [n_i < 2^NORM_BITS] [c'_i up(c'_i n_i) < B^2]`` with ``c'`` = c
   reduced exactly into (-2, 2) and exact comparisons (:func:`checked_factors`): so
   ``f_i^2 n_i < B^2`` for every sample, exactly;
3. :func:`clip_rows`: each row times its factor, reduced back to scale 2^16 exactly.

Who learns what: nothing is opened but Beaver and B2A openings masked by fresh dealer
randomness; factors, norms and flags stay shares.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ppml_hybrid.config import FIXED_POINT_BITS
from ppml_hybrid.smpc_stage import exact
from ppml_hybrid.smpc_stage.compare import ge_zero, gt_zero

# c_i uses C' = (1 - 2^-10) C: an accurate c passes the exact check with room.
CLIP_MARGIN_BITS = 10
# CrypTen's inv_sqrt is accurate for inputs in about [0.1, 100]: u = n / C'^2 is scaled by
# 256^-k for u above 25.6 * 256^(k-1), so the scaled value stays in [0.1, 25.6]; four ranges
# cover per-sample norms up to about 20,000 C (beyond that c is inaccurate and the exact check
# drops the sample rather than let it exceed C).
_RANGE_BASE = 25.6
_RANGE_STEP = 256
_RANGES = 4
_NEWTON_STEPS = 3
F = FIXED_POINT_BITS  # CrypTen's fixed-point bits
# n_i at or above 2^NORM_BITS drops the sample: keeps c' n_i and c' up(c' n_i) below 2^62 at scale 2^32.
NORM_BITS = 28


def bits_for(x: float) -> int:
    return max(1, math.ceil(math.log2(max(x, 1.0))))


class Exact:
    """Exact bounded arithmetic on raw shares for one party (step 1-2 helpers)."""

    def __init__(self, crypten: Any) -> None:
        self.crypten = crypten
        comm = crypten.comm.get()
        self.rank, self.parties = comm.get_rank(), comm.get_world_size()

    def reduce(self, raw: torch.Tensor, *, value_bits: int, scale_bits: int, shift: int) -> torch.Tensor:
        """|v| < 2^value_bits at scale 2^scale_bits -> scale 2^(scale_bits - shift), wrapped into range."""
        return exact.reduce(raw, bound_bits=value_bits + scale_bits, shift=shift, crypten=self.crypten)

    def reduce_up(self, raw: torch.Tensor, *, value_bits: int, scale_bits: int, shift: int) -> torch.Tensor:
        """As :meth:`reduce` for a non-negative value, rounded UP (an upper bound of v / 2^shift)."""
        out = self.reduce(raw, value_bits=value_bits, scale_bits=scale_bits, shift=shift)
        return out + self.parties if self.rank == 0 else out

    def const(self, value: int, like: torch.Tensor) -> torch.Tensor:
        """Shares of a public integer (party 0 holds it)."""
        return torch.full_like(like, value) if self.rank == 0 else torch.zeros_like(like)


def approximate_clip_factors(sq_norms: Any, *, bound: float, crypten: Any) -> Any:
    """Step 1: ``c_i ~ min(1, B' / sqrt(n_i))`` (MPCTensor, approximate; step 2 makes it safe).

    ``u = n / B'^2`` is brought into CrypTen ``inv_sqrt``'s accurate range by one of
    ``_RANGES`` public scalings (256^k, chosen by comparisons with public thresholds, one
    stacked sign test, and selected with 0/1 products, so no out-of-range value is ever
    multiplied), then ``_NEWTON_STEPS`` Newton steps ``r (3 - (u r) r) / 2``. Products are
    ordered so that no intermediate falls below fixed-point resolution (``u r`` ~ ||g|| / B,
    never ``r^2``). The sign tests are the cut adder's on 62 bits: exact for every value the
    factor can be accurate for; any other value only spoils c, which step 2 catches.
    """
    u = sq_norms / ((bound * (1.0 - 2.0 ** -CLIP_MARGIN_BITS)) ** 2)
    thresholds = [_RANGE_BASE * _RANGE_STEP ** (k - 1) for k in range(1, _RANGES)]
    above = gt_zero(crypten.stack([u - t for t in thresholds]), crypten=crypten, bits=62)  # 0/1, scale 1
    scaled, factor = u, u * 0.0 + 1.0  # factor: a fixed-point sharing of 1 (local)
    for k in range(1, _RANGES):
        # the comparison bits are encoded at scale 1: multiply them only by sharings (a public
        # fraction times a scale-1 bit would be rounded to an integer)
        step_u = u / float(_RANGE_STEP ** k) - u / float(_RANGE_STEP ** (k - 1))
        step_f = 1.0 / math.sqrt(_RANGE_STEP ** k) - 1.0 / math.sqrt(_RANGE_STEP ** (k - 1))
        scaled = scaled + above[k - 1] * step_u
        factor = factor + above[k - 1] * (u * 0.0 + step_f)
    r = scaled.inv_sqrt() * factor
    for _ in range(_NEWTON_STEPS):
        r = r * (3.0 - (u * r) * r) * 0.5
    over = r - 1.0
    c = r - over * gt_zero(over, crypten=crypten, bits=62)  # min(1, r)
    # One fixed-point unit less, and >= 0: c rounds down rather than up.
    c = c - 2.0 ** -F
    return c * gt_zero(c, crypten=crypten, bits=62)


def checked_factors(c: Any, sq_norm_raw: torch.Tensor, *, bound: float, crypten: Any) -> torch.Tensor:
    """Step 2: raw shares (scale 2^16) of ``f = c' [c' >= 0] [n < 2^NORM_BITS] [c' up(c' n) < C^2]``.

    ``c'`` is c reduced exactly into (-2, 2); ``up(c' n)`` rounds c' n up to 2^-16, so for
    ``c' >= 0`` the test implies ``c'^2 n < C^2`` (never ``c'^2`` first: at 2^-16 resolution it
    would swamp large norms). Every product stays below 2^62 when the tests it feeds pass.
    """
    ex = Exact(crypten)
    c_red = ex.reduce(c.share, value_bits=1, scale_bits=F, shift=0)  # |c'| < 2, whatever c was
    cn = exact.mul(c_red, sq_norm_raw, crypten=crypten)  # at 2^32; below 2^62 when n < 2^NORM_BITS
    cn = ex.reduce_up(cn, value_bits=NORM_BITS + 1, scale_bits=2 * F, shift=F)  # >= c' n
    prod = exact.mul(c_red, cn, crypten=crypten)  # at 2^32, >= c'^2 n for c' >= 0
    limit = ex.const((1 << (NORM_BITS + F)) - 1, sq_norm_raw) - sq_norm_raw  # >= 0  <=>  n < 2^NORM_BITS
    c_sq = ex.const(int(math.floor(bound ** 2 * 2.0 ** (2 * F))), prod) - prod  # > 0 <=> below C^2
    # three sign tests in one call: |X| < 2^62 whenever the result matters (c' is below 2^18 always)
    tests = crypten.mpc.MPCTensor.from_shares(torch.stack([limit, c_sq - 1, c_red]), precision=0)
    passed = ge_zero(tests, crypten=crypten, bits=62).share
    both = exact.mul(torch.cat([passed[0], c_red]), torch.cat([passed[1], passed[2]]), crypten=crypten)
    n = c_red.numel()
    return exact.mul(both[n:], both[:n], crypten=crypten)  # c' [c' >= 0] [n < 2^NORM_BITS] [c' up(c' n) < C^2]


def clip_rows(x: Any, *, bound: float, elem_bits: int, crypten: Any) -> Any:
    """Step 3 for an ``MPCTensor`` of rows (b, d) at scale 2^16: every row's L2 norm below
    ``bound + sqrt(d) n 2^-16`` exactly (rows above ``bound`` scaled down; garbage rows, beyond
    ``2^elem_bits`` per element, wrapped into range and then clipped or dropped like any other)."""
    ex = Exact(crypten)
    b, d = int(x.size(0)), int(x.size(1))
    xr = ex.reduce(x.share, value_bits=elem_bits, scale_bits=F, shift=0)
    sq = exact.square(xr, crypten=crypten).sum(1)  # exact at 2^32
    n = ex.reduce_up(sq, value_bits=2 * elem_bits + bits_for(d), scale_bits=2 * F, shift=F)
    c = approximate_clip_factors(crypten.mpc.MPCTensor.from_shares(n, precision=F), bound=bound, crypten=crypten)
    f = checked_factors(c, n, bound=bound, crypten=crypten)
    y = exact.mul(f.view(b, 1), xr, crypten=crypten)  # at 2^32, |f x| <= bound per row
    y = ex.reduce(y, value_bits=bits_for(bound) + 1, scale_bits=2 * F, shift=F)
    return crypten.mpc.MPCTensor.from_shares(y, precision=F)


def clipped_row_norm_bound(*, bound: float, width: int, parties: int) -> float:
    """The L2 bound :func:`clip_rows` guarantees: ``bound`` plus the exact reduction's rounding."""
    return bound + math.sqrt(width) * parties * 2.0 ** -F
