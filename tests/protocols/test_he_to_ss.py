"""HE->SS party side: int64 shares from masked decryption become CrypTen shares.

The shares here are made as K and E make them (:mod:`ppml_hybrid.he_stage.shares`: K shares
v + R, E shares -R with a fresh CSPRNG mask); ``test_he_to_ss_services`` uses real K and E.
"""

from __future__ import annotations

import numpy as np
import pytest

from conv_helpers import smpc
from ppml_hybrid.he_stage.shares import encode_fixed_point_mod, real_mask, split_additive, sum_shares
from ppml_hybrid.protocols import ConversionError
from ppml_hybrid.protocols.programs import HEToSSProgram
from ppml_hybrid.smpc_stage.launcher import run_parties

TOL = 4 * 2.0 ** -16  # 4 units of CrypTen's resolution (CKKS decryption error is ~0.06 units)


def _party_shares(values: np.ndarray, parties: int) -> list:
    r = real_mask(bits=30, shape=values.shape)  # E's fresh mask (real-valued)
    k = split_additive(encoded=encode_fixed_point_mod(values=values + r), parties=parties)  # K: v + R
    e = split_additive(encoded=encode_fixed_point_mod(values=-r), parties=parties)  # E: -R
    return [sum_shares(a, b) for a, b in zip(k, e)]


@pytest.mark.parametrize("parties", [2, 3])
def test_shares_enter_crypten_and_open_to_the_value(parties):
    rng = np.random.default_rng(parties)
    v = rng.uniform(-200, 200, size=(4, 5))
    v[0, :3] = [0.0, -1.5, 2 ** -16]
    shares = _party_shares(v, parties)
    run = run_parties(smpc=smpc(parties), program=HEToSSProgram(reveal=True), party_inputs=shares)
    for x, y in run.results:
        assert np.abs(x - v).max() <= TOL
        assert np.abs(y - (2 * v + 1)).max() <= 2 * TOL


def test_non_int64_share_is_refused():
    from ppml_hybrid.protocols.he_to_ss import share_to_mpc

    with pytest.raises(ConversionError, match="int64"):
        share_to_mpc(crypten=None, share=np.zeros(3, dtype=np.float64))
