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
5. convert the XOR-shared bit to an arithmetic share: CrypTen's single-bit B2A (the dealer's
   pair ([r]_A, [r]_B) of a random bit r per element; open z = bit ^ r; [bit]_A =
   [r]_A (1 - 2z) + z; one round), with the opening done on the packed plane (each party packs
   its [r]_B bits the same way: 1/8 byte per element instead of CrypTen's 8). The result is an
   MPCTensor of 0/1 with encoder scale 1, the same encoding CrypTen's ``ge``/``gt`` return, so
   ``x * bit`` multiplies without truncation.

Who learns what: each party learns its own u_j, its XOR shares (uniform) and the openings:
the Beaver ANDs' x^a, y^b with fresh dealer triples and the B2A's bit ^ r, all uniform. Which
gates run depends on public sizes only (l, n, the number of elements). Nobody learns x or
the comparison bit. The dealer learns nothing of the data (it only sends randomness).

Cost, measured in one run against CrypTen's ``ge`` on the same shares
(tests/smpc_stage/test_compare.py: 4,096 values, TTP dealer; bytes sent + received per
element, peers and dealer, party 0 first since it also talks to the dealer; peer rounds):

=========  ====================================  ==============================
parties    CrypTen ``ge`` (64-bit A2B)           ours (l = 40)
=========  ====================================  ==============================
2          544 / 432 B, 8 rounds                 79 / 56 B, 8 rounds
3          1,913 / 1,696 B, 15 rounds            181 / 154 B, 9 rounds
=========  ====================================  ==============================

i.e. about 7x (2 parties) and 11x (3 parties) fewer bytes. The 2-party circuit is 112 ANDs
per word of 64 elements (40 g gates, then 39 + 19 + 9 + 3 + 1 + 1 prefix gates: a tree of
G and P combinations for the one output); each costs a party 32 B sent + received, so
112 x 32 / 64 = 56 B per element, plus 1/4 B for the packed B2A opening. With fewer than 64 elements the
words are padded, so per-element cost is higher for tiny tensors.
"""

from __future__ import annotations

from typing import Any

from ppml_hybrid.smpc_stage.bitsliced import b2a_bits, bit_slice, sum_bit_plane

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
    bit = b2a_bits(plane, n=n, crypten=crypten)  # step 5
    # Scale 1 (precision 0), like CrypTen's own comparison results.
    return MPCTensor.from_shares(bit.share.view(shape), precision=0)
