"""Encrypt a batch into a :class:`CKKSTensor` and decrypt one back (K and tests only).

Encryption needs only the public key (the SS->HE conversion has each party encrypt its own
share); decryption needs the secret key and belongs to K's decrypt-and-share step. Decrypted
values are never logged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ppml_hybrid.he_stage.backends import CKKSTensor
from ppml_hybrid.he_stage.layout import SlotLayout


def encrypt_batch(*, cc: Any, public_key: Any, layout: SlotLayout, values: np.ndarray, level: int = 0) -> CKKSTensor:
    """(batch, features) -> packed ciphertexts under ``public_key``, ``level`` levels down (fewer
    towers: smaller and cheaper, for a ciphertext that only meets others at that level)."""
    x = np.asarray(values, dtype=np.float64)
    vectors = layout.pack(values=x)
    cts = tuple(cc.Encrypt(public_key, cc.MakeCKKSPackedPlaintext(v, 1, level)) for v in vectors)
    return CKKSTensor(cts, x.shape[1], layout)


def decrypt_batch(*, cc: Any, secret_key: Any, tensor: CKKSTensor, batch: int) -> np.ndarray:
    """Packed ciphertexts -> (batch, features)."""
    slots = tensor.layout.slots
    vectors = []
    for ct in tensor.cts:
        pt = cc.Decrypt(secret_key, ct)
        pt.SetLength(slots)
        vectors.append(np.asarray(pt.GetRealPackedValue(), dtype=np.float64))
    return tensor.layout.unpack(vectors=vectors, n_features=tensor.n_features, batch=batch)
