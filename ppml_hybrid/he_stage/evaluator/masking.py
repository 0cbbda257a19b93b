"""HE->SS at E: add a fresh slot mask R, and split -R into the parties' shares.

Protocol (design section 6; who learns what):

1. E draws R, a fresh value uniform on [-2^B, 2^B) at double resolution, for EVERY slot of
   every ciphertext (from the OS CSPRNG), and computes ct + R. B = V + H: V is the round's
   public bound |v| < 2^V (from the public weights, announced by every party), H the run's
   hiding bits. Padding and tiled slots are masked too.
2. E submits the masked ciphertexts to K for the announced round; K learns v + R only.
3. E encodes -R of the used slots as CrypTen fixed point mod 2^64 and splits it into n
   additive shares; each party fetches its own over its mTLS channel.
4. Each party adds its K share and its E share (mod 2^64): the parties hold shares of v,
   within one unit of 2^-16 plus the decoding error (about 2^(B-52) in doubles).
   E knows R but never sees v + R; no party sees R or v + R.

Hiding (statistical, per slot): R is finer than the value's own precision, so for |v|, |v'| <
2^V the distributions of v + R and v' + R differ by at most |v - v'| / 2^(B+1) < 2^-H; the union
over every slot of a run is stated in keyservice/PROTOCOL.md. This is defence in depth: K is
trusted for key custody.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import numpy as np

from ppml_hybrid.he_stage.backends import CKKSTensor
from ppml_hybrid.he_stage.keys import serialize_ciphertext
from ppml_hybrid.he_stage.shares import encode_fixed_point_mod, real_mask, split_additive


@dataclass(frozen=True)
class MaskedRound:
    ciphertexts: Tuple[bytes, ...]  # serialized ct + R
    neg_mask_shares: Tuple[np.ndarray, ...]  # n additive shares of -R (fixed point), (batch, features)

    def __repr__(self) -> str:
        return f"MaskedRound(<{len(self.ciphertexts)} ciphertexts>, <{len(self.neg_mask_shares)} shares>)"


def mask_tensor(*, cc: Any, tensor: CKKSTensor, batch: int, mask_bits: int, parties: int) -> MaskedRound:
    """Steps 1 and 3 for one round: ``mask_bits`` is B = V + H."""
    layout = tensor.layout
    r = real_mask(bits=mask_bits, shape=(len(tensor.cts), layout.slots))  # never reused
    masked = []
    for ct, row in zip(tensor.cts, r):
        pt = cc.MakeCKKSPackedPlaintext(row.tolist(), ct.GetNoiseScaleDeg(), ct.GetLevel())
        masked.append(serialize_ciphertext(cc.EvalAdd(ct, pt)))
    used = layout.unpack(vectors=list(r), n_features=tensor.n_features, batch=batch)
    shares = split_additive(encoded=encode_fixed_point_mod(values=-used), parties=parties)
    return MaskedRound(ciphertexts=tuple(masked), neg_mask_shares=tuple(shares))
