"""Exact, wrap-free truncation and range reduction of CrypTen shares (bounded output for ANY input).

CrypTen's two-party truncation divides each share locally; when the shares wrap around 2^64
(probability about |X| / 2^64 per element) the result is off by about 2^48 (2^32 in value),
and a squared norm computed from such a value overflows into garbage. The DP step cannot let
that happen after it checks a clip factor. :func:`reduce` instead computes, exactly,

    out = floor(W(X) / 2^t) - e,   W(X) = ((X + 2^l) mod 2^(l+1)) - 2^l,   e in [0, n-1],

i.e. X itself when |X| < 2^l (the usual case), and a value wrapped into [-2^l, 2^l) otherwise:
the output is bounded by 2^(l-t) (+ n - 1 units) whatever the input, and is a deterministic
function of the shared value (up to the sub-unit rounding e), so a quantity computed from it
(a squared norm) is exact and cannot overflow.

Steps (as SS->HE's carry, :mod:`ppml_hybrid.protocols.carry`, with a shift):

1. P_1 (rank 0) adds 2^l to its raw share; each party reduces its share mod 2^m (m = l + 1):
   u_j in [0, 2^m), sum_j u_j = Y + w 2^m with Y = (X + 2^l) mod 2^m and a carry w in [0, n-1];
2. XOR shares of w's bits by the cut bit-sliced adder (:func:`~.bitsliced.carry_planes`, on
   m + ceil(log2 n) bits), then arithmetic shares of each bit by a packed single-bit B2A;
3. each party shifts locally, q_j = u_j >> t; then sum_j q_j = floor((Y + w 2^m) / 2^t) - e, so
   out = sum_j q_j - w 2^(m-t) - 2^(l-t) (P_1 subtracts the constant).

Who learns what: each party learns its own u_j and q_j, XOR shares (uniform) and the openings
of the Beaver ANDs and of the B2A (masked by fresh dealer randomness: uniform). Which gates run
depends only on public sizes (l, t, n, the number of elements).
"""

from __future__ import annotations

import math
from typing import Any, List, Sequence, Tuple

import torch

from ppml_hybrid.smpc_stage.bitsliced import b2a_bits, bit_slice, carry_planes, words_for

MAX_BOUND_BITS = 62  # m = l + 1 <= 63: the offset share stays below 2^63


def check_reduce_bits(bound_bits: int, shift: int) -> None:
    if not isinstance(bound_bits, int) or not 1 <= bound_bits <= MAX_BOUND_BITS:
        raise ValueError(f"bound_bits must be an int in [1, {MAX_BOUND_BITS}]; got {bound_bits!r}")
    if not isinstance(shift, int) or not 0 <= shift <= bound_bits:
        raise ValueError(f"shift must be an int in [0, bound_bits={bound_bits}]; got {shift!r}")


def reduce(share: torch.Tensor, *, bound_bits: int, shift: int, crypten: Any) -> torch.Tensor:
    """This party's share of ``floor(W(X) / 2^shift) - e`` for its raw share of X (module doc).

    Every party calls it with its own raw int64 share (same shape); returns its raw int64 share
    of the result (the caller wraps it with the encoder scale it means).
    """
    return reduce_many([(share, bound_bits, shift)], crypten=crypten)[0]


def reduce_many(items: Sequence[Tuple[torch.Tensor, int, int]], *, crypten: Any) -> List[torch.Tensor]:
    """:func:`reduce` of several independent tensors ``(share, bound_bits, shift)`` in ONE adder pass.

    Each tensor with bound l is first multiplied by 2^(L - l) (L the largest bound): that wraps
    exactly as X wraps at 2^l, one level up, and its shift grows by as much, so every value
    comes out as if reduced alone; the rounds are those of one reduction, whatever the count.
    """
    for _, l, t in items:
        check_reduce_bits(l, t)
    comm = crypten.comm.get()
    rank, parties = comm.get_rank(), comm.get_world_size()
    big = max(l for _, l, _ in items)
    m = big + 1
    carry_bits = max(1, math.ceil(math.log2(parties)))
    flats, shifts = [], []
    for share, l, t in items:
        flats.append(share.reshape(-1) * (1 << (big - l)))  # mod 2^64: X 2^(L - l)
        shifts.append(torch.full((share.numel(),), t + big - l, dtype=torch.int64))
    flat, shift = torch.cat(flats), torch.cat(shifts)
    if rank == 0:
        flat = flat + (1 << big)
    u = flat & ((1 << m) - 1)  # step 1 (two's complement & = mod 2^m)
    n = u.numel()
    k = m + carry_bits
    mine = torch.zeros(k, words_for(n), dtype=torch.int64)
    mine[:m] = bit_slice(u, bits=m)
    BinarySharedTensor = crypten.mpc.primitives.BinarySharedTensor
    ops = [BinarySharedTensor(mine if rank == j else None, size=mine.size(), src=j).share for j in range(parties)]
    planes = carry_planes(ops, m=m, k=k, carry_bits=carry_bits)  # step 2
    out = u >> shift  # step 3 (u >= 0: a logical shift)
    one = torch.ones_like(shift)
    for i, plane in enumerate(planes):
        bit = b2a_bits(plane, n=n, crypten=crypten)
        out = out - bit.share * (one << (m - shift + i))
    if rank == 0:
        out = out - (one << (big - shift))
    results, start = [], 0
    for share, _, _ in items:
        results.append(out[start:start + share.numel()].reshape(share.shape))
        start += share.numel()
    return results


def reduce_tensor(x: Any, *, bound_bits: int, shift: int, precision: int, crypten: Any) -> Any:
    """:func:`reduce` on an ``MPCTensor``; the result is wrapped with fixed-point ``precision``."""
    raw = reduce(x.share, bound_bits=bound_bits, shift=shift, crypten=crypten)
    return crypten.mpc.MPCTensor.from_shares(raw, precision=precision)


# ---------------------------------------------------------------- exact ring products (no truncation)


def _shared(raw: torch.Tensor, crypten: Any) -> Any:
    return crypten.mpc.primitives.ArithmeticSharedTensor.from_shares(raw, precision=0)


def mul(x: torch.Tensor, y: torch.Tensor, *, crypten: Any) -> torch.Tensor:
    """Raw shares of x * y (elementwise, broadcasting) mod 2^64: one Beaver product, no truncation
    (the result's scale is the product of the inputs' scales)."""
    from crypten.mpc.primitives import beaver

    return beaver.mul(_shared(x, crypten), _shared(y, crypten)).share


def square(x: torch.Tensor, *, crypten: Any) -> torch.Tensor:
    """Raw shares of x^2 mod 2^64 (a Beaver square pair, no truncation)."""
    from crypten.mpc.primitives import beaver

    return beaver.square(_shared(x, crypten)).share


def matmul(x: torch.Tensor, y: torch.Tensor, *, crypten: Any) -> torch.Tensor:
    """Raw shares of x @ y mod 2^64 (no truncation)."""
    from crypten.mpc.primitives import beaver

    return beaver.matmul(_shared(x, crypten), _shared(y, crypten)).share


def conv2d(x: torch.Tensor, w: torch.Tensor, *, crypten: Any, **kwargs: Any) -> torch.Tensor:
    """Raw shares of conv2d(x, w) mod 2^64 (no truncation)."""
    from crypten.mpc.primitives import beaver

    return beaver.conv2d(_shared(x, crypten), _shared(w, crypten), **kwargs).share
