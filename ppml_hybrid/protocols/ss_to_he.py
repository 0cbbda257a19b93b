"""SS->HE, exact, with wrap-bit correction (design section 6).

CrypTen holds x as fixed point X = x 2^f shared additively in Z_2^64. CKKS cannot cancel a
mod-2^64 wrap, so raw 64-bit shares are never encrypted. Instead, with l = f + integer bits and
m = l + 1 (:class:`~ppml_hybrid.protocols.params.ConversionParams`):

1. MPC (all parties, :mod:`~ppml_hybrid.protocols.carry`): clamp |X| < 2^l; P_1 adds 2^l so
   y = X + 2^l is in [0, 2^m); each party reduces its share mod 2^m (u_j); a binary adder on
   the parties' bit-sliced u_j, cut to m + ceil(log2 n) bits (``ConversionParams.adder``;
   ``"full"`` is CrypTen's 64-bit adder), gives every party XOR shares of the bits of the
   carry w = (sum_j u_j - y) / 2^m;
2. each P_j encrypts u_j / 2^f under K's public key at level n - 1, where step 4 adds it
   (:class:`EncryptedShare`, to the combiner); P_1 does this after sending its chain message
   (step 3), every later party while the previous party's message is on its way;
3. XOR chain P_1 -> ... -> P_n -> E on each carry bit (:mod:`~ppml_hybrid.protocols.xor_chain`):
   P_1 sends Enc(b_1); P_j maps ct <- ct (1 - 2 b_j) + Enc(b_j) (fresh: re-randomised) and passes
   it on; P_n's message goes to the combiner (n - 1 levels);
4. the combiner (public material only, :func:`combine`; in training the last party, which drives E):
   Enc(x) = sum_j Enc(u_j / 2^f) - 2^(m-f) sum_k 2^k Enc(w_k) - 2^(l-f), computed with additions
   and doublings only (no level), packed with the run's :class:`SlotLayout`.

Who learns what: P_j learns its own shares, u_j, its XOR shares of the carry bits (uniform), the
adder's masked openings, and ciphertexts it cannot decrypt; it never sees a ciphertext before
and after a peer's step without a fresh encryption added in between. E learns ciphertexts only.
K is not involved. The batch size and feature count are public.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ppml_hybrid.he_stage.adopt import adopt_groups
from ppml_hybrid.he_stage.backends import CKKSTensor
from ppml_hybrid.he_stage.codec import encrypt_batch
from ppml_hybrid.he_stage.layout import SlotLayout
from ppml_hybrid.he_stage.linear import rescaled
from ppml_hybrid.protocols.carry import CarryShares, carry_shares
from ppml_hybrid.protocols.errors import ChainError
from ppml_hybrid.protocols.messages import ChainMessage, ChainTranscript, EncryptedShare, PartyContribution
from ppml_hybrid.protocols.params import ConversionParams
from ppml_hybrid.protocols.xor_chain import deserialize_all, serialize_all, start_chain, xor_step

log = logging.getLogger(__name__)


def encrypt_share(*, cc: Any, public_key: Any, layout: SlotLayout, u: np.ndarray, params: ConversionParams,
                  party: int) -> EncryptedShare:
    """Step 2: Enc(u_j / 2^f) for this party's reduced share (batch, features), encrypted at the
    level the chain's output reaches (n - 1), where step 4 adds it: one tower fewer per chain step."""
    values = np.asarray(u, dtype=np.int64).astype(np.float64) / float(1 << params.fraction_bits)
    t = encrypt_batch(cc=cc, public_key=public_key, layout=layout, values=values, level=params.parties - 1)
    return EncryptedShare(party=party, cts=serialize_all(t.cts))


def chain_step(*, cc: Any, public_key: Any, layout: SlotLayout, rank: int, bits: Sequence[np.ndarray],
               received: Optional[ChainMessage]) -> ChainMessage:
    """Step 3 at party ``rank``: start the chain (rank 0) or apply this party's XOR step."""
    if rank == 0:
        if received is not None:
            raise ChainError("party 0 starts the XOR chain and receives no chain message")
        out = tuple(serialize_all(start_chain(cc=cc, public_key=public_key, layout=layout, bits=b)) for b in bits)
        return ChainMessage(sender=0, bits=out)
    if received is None or received.sender != rank - 1:
        raise ChainError(f"party {rank} expects the chain message of party {rank - 1}; got {received and received.sender}")
    if len(received.bits) != len(bits):
        raise ChainError(f"the chain message carries {len(received.bits)} carry bits; expected {len(bits)}")
    incoming = adopt_groups(cc=cc, public_key=public_key, groups=[deserialize_all(cts) for cts in received.bits])
    out = tuple(serialize_all(xor_step(cc=cc, public_key=public_key, layout=layout, cts=cts, bits=b))
                for cts, b in zip(incoming, bits))
    return ChainMessage(sender=rank, bits=out)


def ss_to_he_party(*, ctx: Any, x: Any, keys: Any, params: ConversionParams, transcript: bool = False,
                   bounded: bool = False) -> Tuple[PartyContribution, Optional[ChainTranscript], CarryShares]:
    """Steps 1-3 at one party, in a CrypTen party process (``ctx``: :class:`PartyContext`).

    ``x`` is a (batch, features) MPCTensor; ``keys`` the party's
    :class:`~ppml_hybrid.he_stage.keys.EvaluatorKeys` (public material only). The chain
    messages travel party to party over the MPC's communicator. Returns this party's
    contribution for E (the last party's includes the chain message), the chain transcript when
    ``transcript`` (tests), and the local carry shares (callers must not reveal them).
    ``bounded``: x is already within the clamp bound exactly (the clamp comparisons are skipped).
    """
    params.check_context(multiplicative_depth=keys.params.multiplicative_depth, scale_bits=keys.params.scale_bits)
    if params.parties != ctx.parties:
        raise ChainError(f"the conversion was set up for {params.parties} parties but the MPC has {ctx.parties}")
    if len(tuple(x.size())) != 2:
        raise ChainError(f"SS->HE converts (batch, features) tensors; got shape {tuple(x.size())}: flatten first")
    cs = carry_shares(crypten=ctx.crypten, rank=ctx.rank, parties=ctx.parties, x=x, params=params, bounded=bounded)
    comm = ctx.crypten.comm.get()
    bits = [b.numpy() for b in cs.carry_bits]
    last = ctx.rank == ctx.parties - 1

    def own_share() -> EncryptedShare:
        return encrypt_share(cc=keys.cc, public_key=keys.public_key, layout=keys.layout, u=cs.u.numpy(),
                             params=params, party=ctx.rank)

    received = None
    if ctx.rank > 0:
        share = own_share()  # while the previous party's chain message is on its way
        raw = comm.recv_obj(ctx.rank - 1)
        received = ChainMessage(sender=int(raw[0]), bits=tuple(tuple(b) for b in raw[1]))
    sent = chain_step(cc=keys.cc, public_key=keys.public_key, layout=keys.layout, rank=ctx.rank, bits=bits,
                      received=received)
    if not last:  # plain tuples: CrypTen's receiver unpickles with a restricted unpickler
        comm.send_obj((sent.sender, sent.bits), ctx.rank + 1)
    if ctx.rank == 0:
        share = own_share()  # after the chain message: the next party waits for that, not for this
    log.debug("party %d: SS->HE contribution ready (%d ciphertexts)", ctx.rank, len(share.cts))
    contribution = PartyContribution(share=share, chain=sent if last else None, shape=tuple(int(s) for s in x.size()))
    return contribution, (ChainTranscript(received=received, sent=sent) if transcript else None), cs


def combine(*, cc: Any, public_key: Any, layout: SlotLayout, shares: Sequence[EncryptedShare], chain: ChainMessage,
            params: ConversionParams, shape: Tuple[int, int]) -> CKKSTensor:
    """Step 4 at E: Enc(x) from every Enc(u_j / 2^f) and the chain's Enc(w_k).

    Uses additions and doublings only, so the output sits at the chain's level (n - 1), rescaled
    (one tower fewer to send than the un-rescaled chain output). Padding slots decrypt to 0.
    """
    batch, n_features = shape
    if sorted(s.party for s in shares) != list(range(params.parties)):
        raise ChainError(f"E needs one encrypted share from each of the {params.parties} parties; "
                         f"got parties {sorted(s.party for s in shares)}")
    if chain.sender != params.parties - 1 or len(chain.bits) != params.carry_bits:
        raise ChainError(f"E needs the last party's chain message with {params.carry_bits} carry bit(s)")
    k_cts = layout.num_ciphertexts(n_features)
    if any(len(s.cts) != k_cts for s in shares) or any(len(b) != k_cts for b in chain.bits):
        raise ChainError(f"every message must hold {k_cts} ciphertexts for {n_features} features")
    offset = layout.pack(values=np.full((batch, n_features), -float(1 << (params.clamp_bits - params.fraction_bits))))
    adopted = adopt_groups(cc=cc, public_key=public_key,
                           groups=[deserialize_all(s.cts) for s in shares] + [deserialize_all(b) for b in chain.bits])
    u_cts, w_cts = adopted[:len(shares)], adopted[len(shares):]
    out = []
    for i in range(k_cts):
        acc = cc.EvalAdd(u_cts[0][i], cc.MakeCKKSPackedPlaintext(offset[i], 1, u_cts[0][i].GetLevel()))
        for j in range(1, len(u_cts)):
            acc = cc.EvalAdd(acc, u_cts[j][i])
        w = w_cts[-1][i]  # Horner: w = sum_k 2^k w_k
        for k in range(len(w_cts) - 2, -1, -1):
            w = cc.EvalAdd(cc.EvalAdd(w, w), w_cts[k][i])
        for _ in range(params.modulus_bits - params.fraction_bits):
            w = cc.EvalAdd(w, w)
        out.append(rescaled(cc, cc.EvalSub(acc, w)))
    return CKKSTensor(tuple(out), n_features, layout)
