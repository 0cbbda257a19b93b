"""MPC part of SS->HE: clamp, offset, reduce mod 2^m, Boolean shares of the carry.

Steps (every party runs them on its own share; CrypTen does the interaction):

1. clamp in MPC: ``x <- x - relu(x - c) + relu(-x - c)`` with ``c`` = :attr:`clamp_bound`, so the
   fixed-point integer X satisfies |X| < 2^l (two secure comparisons);
2. P_1 (rank 0) adds 2^l to its raw share, so the shares sum to y = X + 2^l in [0, 2^m);
3. each party reduces its share mod 2^m: u_j in [0, 2^m); then sum_j u_j = y + w 2^m with the
   carry w in {0, ..., n-1};
4. each party inputs u_j as ``BinarySharedTensor(u_j, src=j)``; ``+`` runs CrypTen's binary
   adder (Beaver AND triples from the dealer); bits m .. m+carry_bits-1 of each party's share of
   the sum are its XOR shares of the bits of w.

Who learns what: each party learns only its own u_j and its XOR shares of w's bits (uniformly
random); the adder's openings are masked by dealer triples. Nobody learns x, y or w.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import torch

from ppml_hybrid.protocols.params import ConversionParams


@dataclass(frozen=True)
class CarryShares:
    """One party's local result of the MPC part (never logged)."""

    u: torch.Tensor  # int64 in [0, 2^m): this party's reduced share
    carry_bits: Tuple[torch.Tensor, ...]  # carry_bits[k]: int64 0/1, XOR share of bit k of w
    clamped_share: torch.Tensor  # this party's raw share of the clamped X (tests compare sums)


def clamp(*, x: Any, params: ConversionParams) -> Any:
    """Step 1: |x| <= clamp_bound in MPC (two comparisons)."""
    c = params.clamp_bound
    return x - (x - c).relu() + (-x - c).relu()


def carry_shares(*, crypten: Any, rank: int, parties: int, x: Any, params: ConversionParams) -> CarryShares:
    """Steps 1-4 for MPCTensor ``x`` (fixed point, f = params.fraction_bits)."""
    from crypten.mpc.primitives import BinarySharedTensor

    xc = clamp(x=x, params=params)
    share = xc.share.clone()
    l, m = params.clamp_bits, params.modulus_bits
    raw = share.clone()
    if rank == 0:
        share = share + (1 << l)
    u = share & ((1 << m) - 1)
    total = None
    for j in range(parties):
        b = BinarySharedTensor(u if rank == j else None, size=u.size(), src=j)
        total = b if total is None else total + b
    bits = tuple((total.share >> (m + k)) & 1 for k in range(params.carry_bits))
    return CarryShares(u=u, carry_bits=bits, clamped_share=raw)
