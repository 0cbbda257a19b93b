"""Secure sign tests [x >= 0] and [x > 0] by a cut bit-sliced adder (instead of CrypTen's A2B).

CrypTen holds x as the fixed-point integer X = x 2^16, additively shared mod 2^64. Its own
comparison converts the whole 64-bit sharing to XOR shares (a 64-bit binary adder) to read the
top bit. With a documented input bound only the low l + 1 bits matter (l = ``bits``, default
:data:`COMPARE_BITS` = 40):

    input bound: |X| < 2^l, i.e. |x| < 2^(l - 16) = 2^24 for l = 40 (for max pooling the
    bound holds for the DIFFERENCE of two candidates). Outside it the bit is wrong.
    (CrypTen's fixed point has its own, wider, limit |X| < 2^63.)

Steps (every party on its own share; CrypTen's Beaver AND and B2A do the interaction):

1. P_1 (rank 0) adds 2^l to its raw share (for ``gt_zero`` 2^l - 1: [X > 0] = [X - 1 >= 0]),
   so the shares sum to y = X + 2^l (resp. X - 1 + 2^l) in [0, 2^(l+1)) mod 2^64;
2. each party reduces its share mod 2^(l+1): u_j in [0, 2^(l+1)). Since 2^(l+1) divides 2^64,
   sum_j u_j = y mod 2^(l+1), so bit l of sum_j u_j (an integer < n 2^(l+1)) is bit l of y,
   which is 1 exactly when X >= 0;
3. each party bit-slices u_j (l + 1 planes of ceil(N/64) words) and inputs it as
   ``BinarySharedTensor(planes, src=j)`` (a pseudo-random zero sharing XOR the owner's planes:
   no traffic);
4. XOR shares of bit l of the sum (:func:`~ppml_hybrid.smpc_stage.bitsliced.sum_bit_plane`):
   with 3 parties one carry-save level (one AND round) makes two operands, mod 2^(l+1); then
   bit l = a_l ^ b_l ^ carry_into_l, the carry being ONE pruned Sklansky G-prefix over
   positions 0..l-1: one AND round for g, ceil(log2 l) rounds of prefix (6 for l = 40), and
   only the gates that feed that one output;
5. unslice the plane to one XOR-shared bit per element and convert it to an arithmetic share
   with CrypTen's single-bit B2A (dealer pair ([r]_A, [r]_B) of a random bit r; open the bit
   XOR r; one round). The result is an MPCTensor of 0/1 with encoder scale 1, the same
   encoding CrypTen's ``ge``/``gt`` return, so ``x * bit`` multiplies without truncation.

Who learns what: each party learns its own u_j, its XOR shares (uniform) and the openings:
the Beaver ANDs' x^a, y^b with fresh dealer triples and the B2A's bit ^ r, all uniform. Which
gates run depends on public sizes only (l, n, the number of elements). Nobody learns x or
the comparison bit. The dealer learns nothing of the data (it only sends randomness).

Cost, measured (tests/smpc_stage/test_compare.py; bytes sent + received per element by
party 0, peers and dealer, as the transport counts them) against CrypTen's ``ge`` in the same
run: see :data:`MEASURED` in the test log and benchmarks/README.md "SMPC conv stage".
"""

from __future__ import annotations

from typing import Any

from ppml_hybrid.smpc_stage.bitsliced import bit_slice, sum_bit_plane, unslice

# l: |X| < 2^l (|x| < 2^24 at f = 16); 40 leaves 2^24 of real range for activations and
# differences while costing ~2/3 of the gates a 62-bit bound would.
COMPARE_BITS = 40
MIN_BITS, MAX_BITS = 2, 62  # bit l + 1 <= 63 keeps y = X + 2^l below 2^63 (no sign-bit wrap)


def ge_zero(x: Any, *, crypten: Any, bits: int = COMPARE_BITS) -> Any:
    """MPCTensor of [x >= 0] (0/1, scale 1) for MPCTensor ``x`` with |X| < 2^bits."""
    return _sign_test(x, crypten=crypten, bits=bits, minus_one=False)


def gt_zero(x: Any, *, crypten: Any, bits: int = COMPARE_BITS) -> Any:
    """MPCTensor of [x > 0] = [X - 1 >= 0] (0/1, scale 1) for MPCTensor ``x`` with |X| < 2^bits."""
    return _sign_test(x, crypten=crypten, bits=bits, minus_one=True)


def check_bits(bits: Any) -> int:
    """The bound's exponent l, validated (ValueError names the allowed range)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits (inputs bounded by |X| < 2^bits, X = x * 2^16) must be an int in "
                         f"[{MIN_BITS}, {MAX_BITS}]; got {bits!r}")
    return bits


def _sign_test(x: Any, *, crypten: Any, bits: Any, minus_one: bool) -> Any:
    bits = check_bits(bits)
    # CrypTen comes in as the caller's module object (this package imports it only via crypten_compat).
    MPCTensor, BinarySharedTensor = crypten.mpc.MPCTensor, crypten.mpc.primitives.BinarySharedTensor
    comm = crypten.comm.get()
    rank, parties = comm.get_rank(), comm.get_world_size()
    share = x.share
    shape, n = share.shape, share.numel()
    flat = share.reshape(-1)
    if rank == 0:  # step 1: the public offset goes into one share only
        flat = flat + ((1 << bits) - (1 if minus_one else 0))
    u = flat & ((1 << (bits + 1)) - 1)  # step 2 (two's complement & = mod 2^(l+1))
    mine = bit_slice(u, bits=bits + 1)  # step 3
    ops = [BinarySharedTensor(mine if rank == j else None, size=mine.size(), src=j).share for j in range(parties)]
    plane = sum_bit_plane(ops, bit=bits)  # step 4
    xor_bit = unslice(plane, n=n).view(shape)
    # Step 5: scale 1 (precision 0) like CrypTen's own comparison results.
    b = MPCTensor.from_shares(xor_bit, precision=0, ptype=crypten.mpc.binary)
    return b._to_ptype(crypten.mpc.arithmetic, precision=0, bits=1)
