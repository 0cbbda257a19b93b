"""The plaintext-affine XOR chain under CKKS: Enc(b_1) -> Enc(b_1 ^ b_2) -> ... (design section 6).

Each party holds XOR shares b_j (0/1 per value) of a secret bit. P_1 starts the chain with a
fresh Enc(b_1); each later P_j maps ``ct <- ct * (1 - 2 b_j) + Enc(b_j)``: multiplying by the
packed plaintext (1 - 2 b_j) flips the encrypted bit where b_j = 1, and adding a *fresh*
encryption of b_j (public-key encryption, new randomness) both completes the XOR and
re-randomises the ciphertext, so the ciphertext passed on is fresh even where every b_j = 0 and
no one can tell a peer's bit share from its input and output ciphertexts. One level per step.

Who learns what: a party sees ciphertexts it cannot decrypt and its own bit shares only.
Everything here needs only the public key. Plaintexts and bit shares are never logged.
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

import numpy as np

from ppml_hybrid.he_stage.keys import deserialize_ciphertext, serialize_ciphertext
from ppml_hybrid.he_stage.layout import SlotLayout
from ppml_hybrid.protocols.errors import ChainError


def _packed_bits(*, layout: SlotLayout, bits: np.ndarray) -> list:
    b = np.asarray(bits)
    if b.ndim != 2:
        raise ChainError(f"bit shares must be a (batch, features) array; got shape {b.shape}")
    if b.size and not np.isin(b, (0, 1)).all():
        raise ChainError("bit shares must be 0 or 1")
    return layout.pack(values=b.astype(np.float64))


def encrypt_packed(*, cc: Any, public_key: Any, vectors: Sequence[np.ndarray]) -> Tuple[Any, ...]:
    """Fresh public-key encryptions of packed slot vectors."""
    return tuple(cc.Encrypt(public_key, cc.MakeCKKSPackedPlaintext(np.asarray(v, dtype=np.float64))) for v in vectors)


def start_chain(*, cc: Any, public_key: Any, layout: SlotLayout, bits: np.ndarray) -> Tuple[Any, ...]:
    """P_1's step: fresh Enc(b_1), one ciphertext per packed group of features."""
    return encrypt_packed(cc=cc, public_key=public_key, vectors=_packed_bits(layout=layout, bits=bits))


def xor_step(*, cc: Any, public_key: Any, layout: SlotLayout, cts: Sequence[Any], bits: np.ndarray) -> Tuple[Any, ...]:
    """P_j's step (j > 1): ``ct * (1 - 2 b_j) + Enc(b_j)``, re-randomised by the fresh Enc(b_j)."""
    vectors = _packed_bits(layout=layout, bits=bits)
    if len(vectors) != len(cts):
        raise ChainError(f"the chain message has {len(cts)} ciphertexts but the bit shares need {len(vectors)}")
    out = []
    for ct, v in zip(cts, vectors):
        flip = cc.MakeCKKSPackedPlaintext(1.0 - 2.0 * v, 1, ct.GetLevel())
        fresh = cc.Encrypt(public_key, cc.MakeCKKSPackedPlaintext(v))
        out.append(cc.EvalAdd(cc.EvalMult(ct, flip), fresh))
    return tuple(out)


def serialize_all(cts: Sequence[Any]) -> Tuple[bytes, ...]:
    return tuple(serialize_ciphertext(c) for c in cts)


def deserialize_all(data: Sequence[bytes]) -> Tuple[Any, ...]:
    return tuple(deserialize_ciphertext(d) for d in data)
