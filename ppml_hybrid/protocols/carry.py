"""MPC part of SS->HE: clamp, offset, reduce mod 2^m, Boolean shares of the carry.

Steps (every party runs them on its own share; CrypTen does the interaction):

1. clamp in MPC: ``x <- x - relu(x - c) + relu(-x - c)`` with ``c`` = :attr:`clamp_bound`, so the
   fixed-point integer X satisfies |X| < 2^l; relu(v) = v * [v > 0] with the cut comparison
   (:func:`ppml_hybrid.smpc_stage.compare.gt_zero`, one stacked call for both), whose bound
   2^b, b = max(COMPARE_BITS, l) + 1, covers |X| + c 2^f for any input within CrypTen's
   activation bound |X| < 2^COMPARE_BITS (= 2^40, |x| < 2^24);
2. P_1 (rank 0) adds 2^l to its raw share, so the shares sum to y = X + 2^l in [0, 2^m);
3. each party reduces its share mod 2^m: u_j in [0, 2^m); then sum_j u_j = y + w 2^m with the
   carry w in {0, ..., n-1};
4. XOR shares of the bits of w = floor(sum_j u_j / 2^m), by one of two adders
   (``params.adder``):

   * ``"cut"`` (default, :func:`cut_carry_bits`): since every u_j < 2^m, sum_j u_j < 2^k with
     k = m + carry_bits (:attr:`ConversionParams.adder_bits`), so only k bit positions matter.
     Each party bit-slices its u_j (bit i of 64 values per int64 word: a (m, ceil(N/64)) plane
     tensor) and inputs it as ``BinarySharedTensor(planes, src=j)`` (a pseudo-random zero
     sharing XOR the owner's planes: no traffic). With n > 2 parties, carry-save adders
     (s = a^b^c, carry = maj(a, b, c) = ((a^c)&(b^c))^c, one AND round per CSA level, all triples
     of a level in one call) reduce the n operands to two. The last two go through a Sklansky
     parallel-prefix carry circuit (g = a&b, p = a^b, then ceil(log2 k) levels
     G[q] ^= P[q]&G[s], P[q] &= P[s]) in which only the gates that feed the carries into bits
     m .. k-1 are evaluated (a liveness pass prunes the rest); sum bit i = p_i ^ carry_i.
     Every AND of a level is one stacked CrypTen Beaver AND (``&``: dealer triple, one opening).
   * ``"full"`` (:func:`full_carry_bits`, for comparison): each party inputs u_j as
     ``BinarySharedTensor(u_j, src=j)`` and ``+`` runs CrypTen's 64-bit binary adder (n - 1
     times); bits m .. m+carry_bits-1 of the sum's shares are the XOR shares of w's bits.

   Measured in one run (tests/protocols/test_carry_adder.py: 4,096 values, TTP dealer; bytes
   sent + received per value and communicator rounds, peers and dealer, as the transport counts
   them; party 0 also talks to the dealer, so it is listed first):

   =========  ==================================  ==================================
   parties    full 64-bit adder                   cut adder
   =========  ==================================  ==================================
   2          520 / 416 B, 28 / 7 rounds          43 / 34 B, 24 / 6 rounds
   3          1,873 / 1,664 B, 56 / 14 rounds     111 / 98 B, 28 / 7 rounds
   =========  ==================================  ==================================

   i.e. about 12x (2 parties) and 17x (3 parties) fewer bytes; the AND rounds drop from
   7 (n - 1) to (CSA levels) + 1 (g) + ceil(log2 k) (prefix): 6 for 2 parties, 7 for 3. The full adder's 520 B
   matches design section 6's 522 B. With fewer than 64 values the bit-sliced words are padded
   (at most 63 unused slots per word), so per-value cost is higher for tiny batches.

Who learns what: each party learns only its own u_j and its XOR shares of w's bits (uniformly
random); nothing is opened except the Beaver ANDs' maskings x^a, y^b by fresh dealer triples,
which are uniform. Which gates are evaluated depends on public parameters only (m, n, the
number of values). Nobody learns x, y or w.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import torch

from ppml_hybrid.protocols.params import ConversionParams
from ppml_hybrid.smpc_stage.bitsliced import (  # noqa: F401  (re-exported: tests and callers import them from here)
    WORD_BITS,
    bit_slice,
    carry_planes,
    unslice,
    words_for,
)
from ppml_hybrid.smpc_stage.compare import COMPARE_BITS, gt_zero


@dataclass(frozen=True)
class CarryShares:
    """One party's local result of the MPC part (never logged)."""

    u: torch.Tensor  # int64 in [0, 2^m): this party's reduced share
    carry_bits: Tuple[torch.Tensor, ...]  # carry_bits[k]: int64 0/1, XOR share of bit k of w
    clamped_share: torch.Tensor  # this party's raw share of the clamped X (tests compare sums)


def clamp(*, x: Any, params: ConversionParams, crypten: Any) -> Any:
    """Step 1: |x| <= clamp_bound in MPC (two comparisons, stacked into one call)."""
    c = params.clamp_bound
    over = crypten.stack([x - c, -x - c])
    # |X -+ c 2^f| < 2^COMPARE_BITS + 2^l: one bit above the larger keeps the sign test exact.
    bits = max(COMPARE_BITS, params.clamp_bits) + 1
    relu = over * gt_zero(over, crypten=crypten, bits=bits)
    return x - relu[0] + relu[1]


def reduce_share(*, share: torch.Tensor, rank: int, params: ConversionParams) -> torch.Tensor:
    """Steps 2-3 on this party's raw share: P_1 adds 2^l, then mod 2^m."""
    if rank == 0:
        share = share + (1 << params.clamp_bits)
    return share & ((1 << params.modulus_bits) - 1)


def carry_shares(*, crypten: Any, rank: int, parties: int, x: Any, params: ConversionParams,
                 bounded: bool = False) -> CarryShares:
    """Steps 1-4 for MPCTensor ``x`` (fixed point, f = params.fraction_bits).

    ``bounded``: ``x`` already satisfies |X| < 2^l exactly (an exact clip made it so), and
    step 1's clamp is skipped.
    """
    xc = x if bounded else clamp(x=x, params=params, crypten=crypten)
    raw = xc.share.clone()
    u = reduce_share(share=raw, rank=rank, params=params)
    bits = carry_bits(u=u, rank=rank, parties=parties, params=params)
    return CarryShares(u=u, carry_bits=bits, clamped_share=raw)


def carry_bits(*, u: torch.Tensor, rank: int, parties: int, params: ConversionParams,
               adder: str | None = None) -> Tuple[torch.Tensor, ...]:
    """Step 4: XOR shares of the bits of w = floor(sum_j u_j / 2^m), by ``adder`` (default params')."""
    adder = params.adder if adder is None else adder
    if adder == "full":
        return full_carry_bits(u=u, rank=rank, parties=parties, params=params)
    if adder == "cut":
        return cut_carry_bits(u=u, rank=rank, parties=parties, params=params)
    raise ValueError(f"adder must be 'cut' or 'full'; got {adder!r}")


# ---------------------------------------------------------------------------------- full adder

def full_carry_bits(*, u: torch.Tensor, rank: int, parties: int, params: ConversionParams) -> Tuple[torch.Tensor, ...]:
    """CrypTen's 64-bit binary adder on ``BinarySharedTensor(u_j, src=j)`` (the reference path)."""
    from crypten.mpc.primitives import BinarySharedTensor

    m = params.modulus_bits
    total = None
    for j in range(parties):
        b = BinarySharedTensor(u if rank == j else None, size=u.size(), src=j)
        total = b if total is None else total + b
    return tuple((total.share >> (m + k)) & 1 for k in range(params.carry_bits))


# ----------------------------------------------------------------------------------- cut adder
# The bit-sliced machinery (packing, Beaver AND, CSA, pruned prefix) is the MPC stage's
# primitive (:mod:`ppml_hybrid.smpc_stage.bitsliced`); only the SS->HE wiring lives here.

def cut_carry_bits(*, u: torch.Tensor, rank: int, parties: int, params: ConversionParams) -> Tuple[torch.Tensor, ...]:
    """Bit-sliced adder on the low k = m + carry_bits bits only (see the module docstring)."""
    from crypten.mpc.primitives import BinarySharedTensor

    m, k = params.modulus_bits, params.adder_bits
    n_values = u.numel()
    mine = torch.zeros(k, words_for(n_values), dtype=torch.int64)
    mine[:m] = bit_slice(u, bits=m)
    ops = [BinarySharedTensor(mine if rank == j else None, size=mine.size(), src=j).share for j in range(parties)]
    planes = carry_planes(ops, m=m, k=k, carry_bits=params.carry_bits)
    return tuple(unslice(plane, n=n_values).view(u.shape) for plane in planes)
