"""Deserialized ciphertexts made as fast to compute on as ones this process made itself.

Measured with openfhe-python 1.6 at the default 128-bit parameters (ring 2^14, 6 towers): a
ciphertext from ``DeserializeCiphertextString`` costs about 3x as much in every later
multiplication and 7x in every addition as a ciphertext this process encrypted, and every
result computed from it inherits the slowness (E's whole forward and backward ran about 1.35x
slower on received inputs than on its own). A sum ``z + ct`` takes its bookkeeping from its
first operand, so adding ``ct`` to an exact zero ciphertext of this process (``e - e`` for a
fresh ``e`` at the same level, noise-scale degree and scale) gives the same ciphertext, bit
for bit, with the fast bookkeeping. Decryption is not affected.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np


def adopt_all(*, cc: Any, public_key: Any, cts: Sequence[Any]) -> Tuple[Any, ...]:
    """``cts`` (deserialized) as this process's own: the same ciphertexts, bit for bit.

    One zero per distinct (level, noise-scale degree) among ``cts`` (one encryption each, about
    20 ms at the defaults); a ciphertext whose zero does not match its level, degree and scale
    exactly is returned as it is (slow, never altered).
    """
    zeros: Dict[Tuple[int, int], Any] = {}
    out = []
    for ct in cts:
        key = (int(ct.GetLevel()), int(ct.GetNoiseScaleDeg()))
        if key not in zeros:
            pt = cc.MakeCKKSPackedPlaintext(np.zeros(cc.GetRingDimension() // 2), key[1], key[0])
            e = cc.Encrypt(public_key, pt)
            zeros[key] = cc.EvalSub(e, e)
        z = zeros[key]
        same = (z.GetLevel(), z.GetNoiseScaleDeg(), z.GetScalingFactor()) == (ct.GetLevel(), ct.GetNoiseScaleDeg(),
                                                                             ct.GetScalingFactor())
        out.append(cc.EvalAdd(z, ct) if same else ct)
    return tuple(out)


def adopt_groups(*, cc: Any, public_key: Any, groups: Sequence[Sequence[Any]]) -> List[Tuple[Any, ...]]:
    """:func:`adopt_all` over several lists of ciphertexts at once (one zero per level and degree
    for all of them, not per list), returned as the same lists."""
    flat = adopt_all(cc=cc, public_key=public_key, cts=[ct for g in groups for ct in g])
    out, start = [], 0
    for g in groups:
        out.append(flat[start:start + len(g)])
        start += len(g)
    return out
