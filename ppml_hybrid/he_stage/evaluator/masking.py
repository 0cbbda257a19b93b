"""HE->SS at E: add a fresh slot mask R, and split -R into the parties' shares.

Protocol (design section 6; who learns what):

1. E draws R, a fresh uniform value in [-2^mask_bits, 2^mask_bits) for EVERY slot of every
   ciphertext (a multiple of 2^-16, from the OS CSPRNG), and computes ct + R. Padding and
   tiled slots are masked too: they may hold partial sums of real values.
2. E submits the masked ciphertexts to K for the announced round; K learns v + R only.
3. E encodes -R of the used slots as CrypTen fixed point (exact: R is a multiple of 2^-16) and
   splits it into n additive shares; each party fetches its own over its mTLS channel.
4. Each party adds its K share and its E share (mod 2^64): the parties hold shares of v.
   E knows R but never sees v + R; no party sees R or v + R.

Hiding (statistical, per slot): for |v| < 2^value_bits the distributions of v + R for two
values differ by at most 2^(value_bits+1) / 2^(mask_bits+1) = 2^-(mask_bits - value_bits),
i.e. 2^-22 at the defaults (sigma = 22 bits). This is defence in depth: K is trusted for key
custody; CKKS noise in the decryption is not flooded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import numpy as np

from ppml_hybrid.he_stage.backends import CKKSTensor
from ppml_hybrid.he_stage.keys import serialize_ciphertext
from ppml_hybrid.he_stage.shares import SCALE, split_additive, uniform_mask_int


@dataclass(frozen=True)
class MaskedRound:
    ciphertexts: Tuple[bytes, ...]  # serialized ct + R
    neg_mask_shares: Tuple[np.ndarray, ...]  # n additive shares of -R (fixed point), (batch, features)

    def __repr__(self) -> str:
        return f"MaskedRound(<{len(self.ciphertexts)} ciphertexts>, <{len(self.neg_mask_shares)} shares>)"


def mask_tensor(*, cc: Any, tensor: CKKSTensor, batch: int, mask_bits: int, parties: int) -> MaskedRound:
    layout = tensor.layout
    r_int = uniform_mask_int(bits=mask_bits, shape=(len(tensor.cts), layout.slots))  # never reused
    masked = []
    for ct, r in zip(tensor.cts, r_int):
        pt = cc.MakeCKKSPackedPlaintext((r.astype(np.float64) / SCALE).tolist(), ct.GetNoiseScaleDeg(), ct.GetLevel())
        masked.append(serialize_ciphertext(cc.EvalAdd(ct, pt)))
    used = layout.unpack(vectors=list(r_int.astype(np.float64)), n_features=tensor.n_features, batch=batch)
    neg = -np.rint(used).astype(np.int64)  # exact: |r_int| < 2^47
    shares = split_additive(encoded=neg, parties=parties)
    return MaskedRound(ciphertexts=tuple(masked), neg_mask_shares=tuple(shares))
