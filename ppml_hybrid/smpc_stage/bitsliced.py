"""Bit-sliced Boolean circuits on CrypTen XOR shares: packing, Beaver ANDs, a cut adder.

The primitive behind the SS->HE carry (:mod:`ppml_hybrid.protocols.carry`) and the cheap
comparison (:mod:`ppml_hybrid.smpc_stage.compare`). Values are packed 64 to an int64 word,
one word row per bit position ("planes": bit t of word [i, w] is bit i of value 64 w + t), so
one AND on a word is 64 gates and CrypTen's 64-bit Beaver AND costs one word per 64 values.

Steps of the adder on n operands (each a (bits, words) tensor of XOR shares; every party
runs them on its own shares, CrypTen's ``&`` does the interaction):

1. carry-save levels (only when n > 2, :func:`_csa`): every three operands a, b, c become
   s = a^b^c (local) and carry = maj(a, b, c) = ((a^c)&(b^c))^c shifted up one bit (one
   stacked AND per level, all triples together), until two operands are left;
2. generate g = a&b on the positions a later gate reads (one stacked AND), propagate
   p = a^b (local);
3. Sklansky parallel prefix, ceil(log2 k) levels of G[q] ^= P[q]&G[s], P[q] &= P[s]
   (s = (q >> L << L) - 1), keeping only the gates that feed the wanted G-prefixes (a
   liveness pass walking back from the outputs, :func:`_prefix_plan`); G-prefix[q] is the
   carry into bit q + 1, and sum bit i = p_i ^ carry_i.

Everything is exact modulo 2^k: a carry out of bit k-1 is dropped (:func:`_csa`), so the
callers pick k as the number of low sum bits they need.

Who learns what: inputs come in as ``BinarySharedTensor(planes, src=j)`` (a pseudo-random
zero sharing XOR the owner's planes: no traffic); the only openings are the Beaver ANDs'
x^a, y^b with fresh dealer triples, uniform. Outputs are XOR shares (uniform). Which gates run
depends on public sizes only (k, n, the number of values).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Set, Tuple

import torch

WORD_BITS = 64


def _and(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """XOR shares of x & y (one CrypTen Beaver AND: a dealer triple and one opening)."""
    from crypten.mpc.primitives import BinarySharedTensor

    return (BinarySharedTensor.from_shares(x) & BinarySharedTensor.from_shares(y)).share


def words_for(n: int) -> int:
    """Words holding ``n`` bit-sliced values (at least one, so empty inputs keep a shape)."""
    return max(1, math.ceil(n / WORD_BITS))


def bit_slice(values: torch.Tensor, *, bits: int) -> torch.Tensor:
    """(N,) int64 (low ``bits`` bits used) -> (bits, ceil(N/64)) planes: bit t of word [i, w] = bit i of value 64w+t."""
    n = values.numel()
    words = words_for(n)
    padded = torch.zeros(words * WORD_BITS, dtype=torch.int64)
    padded[:n] = values.reshape(-1)
    lanes = padded.view(words, WORD_BITS)
    shifts = torch.arange(WORD_BITS)
    out = torch.empty(bits, words, dtype=torch.int64)
    # One plane at a time: the (bits, N) intermediate of a single expression is ~bits x 8 B per value.
    for i in range(bits):
        out[i] = (((lanes >> i) & 1) << shifts).sum(-1)
    return out


def unslice(plane: torch.Tensor, *, n: int) -> torch.Tensor:
    """(words,) plane -> (n,) int64 0/1 (inverse of :func:`bit_slice` for one bit position)."""
    return ((plane.unsqueeze(-1) >> torch.arange(WORD_BITS)) & 1).reshape(-1)[:n]


def _csa(ops: List[Tuple[torch.Tensor, int]], k: int) -> List[Tuple[torch.Tensor, int]]:
    """One carry-save level: every three operands -> two (one stacked AND round), mod 2^k."""
    triples = [ops[i:i + 3] for i in range(0, len(ops) - len(ops) % 3, 3)]
    rest = ops[len(triples) * 3:]
    lefts, rights, widths = [], [], []
    for (a, wa), (b, wb), (c, wc) in triples:
        w = max(wa, wb, wc)
        lefts.append((a ^ c)[:w])
        rights.append((b ^ c)[:w])
        widths.append(w)
    prods = _and(torch.cat(lefts), torch.cat(rights))
    out, start = [], 0
    for ((a, wa), (b, wb), (c, wc)), w in zip(triples, widths):
        maj = prods[start:start + w] ^ c[:w]
        start += w
        carry = torch.zeros_like(a)
        top = min(w, k - 1)  # a carry out of bit k-1 is zero (sum < 2^k) or not wanted (mod 2^k)
        carry[1:top + 1] = maj[:top]
        out += [(a ^ b ^ c, w), (carry, min(w + 1, k))]
    return out + rest


def _prefix_plan(k: int, want: Set[int]) -> List[Tuple[List[int], List[int]]]:
    """Sklansky levels restricted to the gates that feed G-prefixes at ``want``.

    Returns per level L (g_updates, p_updates): positions q (bit L set) that combine with
    s = (q >> L << L) - 1, walking backwards from the outputs so no unused gate is evaluated.
    """
    levels = max(1, math.ceil(math.log2(k))) if k > 1 else 0
    need_g, need_p = set(want), set()
    plan = []
    for level in reversed(range(levels)):
        gq = sorted(q for q in need_g if q >> level & 1)
        pq = sorted(q for q in need_p if q >> level & 1)
        src = lambda q: ((q >> level) << level) - 1  # noqa: E731
        need_p |= set(gq) | {src(q) for q in pq}
        need_g |= {src(q) for q in gq}
        plan.append((gq, pq))
    plan.reverse()
    return plan


def _needed_initial(plan: Sequence[Tuple[List[int], List[int]]], want: Set[int]) -> Set[int]:
    """Positions whose initial g = a & b is read (G-prefix outputs plus every G source)."""
    need = set(want)
    for level, (gq, _) in enumerate(plan):
        need |= set(gq) | {((q >> level) << level) - 1 for q in gq}
    return need


def _carries(a: Tuple[torch.Tensor, int], b: Tuple[torch.Tensor, int], *, k: int,
             want: Sequence[int]) -> Dict[int, torch.Tensor]:
    """Shares of G-prefix[q] (the carry into q + 1) for q in ``want``, from operands a, b
    (positions 0 .. k-1 of them are read)."""
    (sa, wa), (sb, wb) = a, b
    wanted = set(want)
    plan = _prefix_plan(k, wanted)
    both = min(wa, wb)  # above it one operand is zero: g = 0
    g_pos = sorted(q for q in _needed_initial(plan, wanted) if q < both)
    G: Dict[int, torch.Tensor] = {q: torch.zeros_like(sa[0]) for q in range(k)}
    if g_pos:
        idx = torch.tensor(g_pos)
        prods = _and(sa[idx], sb[idx])
        for i, q in enumerate(g_pos):
            G[q] = prods[i]
    P = {q: sa[q] ^ sb[q] for q in range(k)}
    for level, (gq, pq) in enumerate(plan):
        if not gq and not pq:
            continue
        src = lambda q: ((q >> level) << level) - 1  # noqa: E731
        left = [P[q] for q in gq] + [P[q] for q in pq]
        right = [G[src(q)] for q in gq] + [P[src(q)] for q in pq]
        prods = _and(torch.stack(left), torch.stack(right))
        for i, q in enumerate(gq):
            G[q] = G[q] ^ prods[i]
        for i, q in enumerate(pq):
            P[q] = prods[len(gq) + i]
    return {q: G[q] for q in wanted}


def carry_planes(operands: Sequence[torch.Tensor], *, m: int, k: int, carry_bits: int) -> List[torch.Tensor]:
    """XOR shares of bit planes m .. m+carry_bits-1 of the sum of ``operands`` ((k, words) shares of
    bit-sliced values below 2^m whose sum is below 2^k): CSA levels, then the pruned prefix."""
    ops = [(o, m) for o in operands]
    while len(ops) > 2:
        ops = _csa(ops, k)
    (sa, _), (sb, _) = ops
    carries = _carries(ops[0], ops[1], k=k, want=range(m - 1, k - 1))  # carry into i: G-prefix at i-1
    return [sa[i] ^ sb[i] ^ carries[i - 1] for i in range(m, m + carry_bits)]


def sum_bit_plane(operands: Sequence[torch.Tensor], *, bit: int) -> torch.Tensor:
    """XOR shares of plane ``bit`` of the sum of ``operands`` ((bit+1, words) shares each).

    Only bits 0..bit matter, so the CSA levels work mod 2^(bit+1) and the prefix evaluates the
    single G-prefix at bit-1 (the carry into ``bit``) over positions 0..bit-1.
    """
    if bit < 1:
        raise ValueError(f"bit must be >= 1 (a carry into it exists); got {bit}")
    width = bit + 1
    ops = [(o, width) for o in operands]
    if len(ops) == 1:  # one party holds the whole value: nothing to add
        return ops[0][0][bit]
    while len(ops) > 2:
        ops = _csa(ops, width)
    (sa, _), (sb, _) = ops
    carry = _carries(ops[0], ops[1], k=bit, want=[bit - 1])[bit - 1]
    return sa[bit] ^ sb[bit] ^ carry


def b2a_bits(plane: torch.Tensor, *, n: int, crypten: Any) -> Any:
    """Arithmetic shares (encoder scale 1) of the n XOR-shared bits of a packed ``plane``.

    CrypTen's single-bit B2A with the opening bit-packed: the dealer pair ([r]_A, [r]_B) per
    element; each party packs its [r]_B bits like the plane; open z = b ^ r (1/8 byte per
    element); [b]_A = [r]_A (1 - 2 z) + z. The pairs cover every bit of the packed words, the
    padding too, so each opened word is a uniform 64-bit value (the padding bits of the plane
    are zeros: masked by zeros they would make the last word a small, recognisable number).
    """
    BinarySharedTensor = crypten.mpc.primitives.BinarySharedTensor
    padded = plane.numel() * WORD_BITS
    r_arith, r_bin = crypten.mpc.get_default_provider().B2A_rng(torch.Size([padded]))
    masked = plane ^ bit_slice(r_bin.share, bits=1)[0]
    z = unslice(BinarySharedTensor.from_shares(masked).reveal(), n=n)
    return r_arith[:n] * (1 - 2 * z) + z
