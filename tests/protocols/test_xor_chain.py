"""The XOR chain and E's combination as pure functions (no party processes)."""

from __future__ import annotations

import numpy as np
import pytest

from conv_helpers import SS_TO_HE_TOL, decrypt, insecure_keys
from ppml_hybrid.he_stage.backends import CKKSTensor
from ppml_hybrid.he_stage.keys import load_public_material
from ppml_hybrid.protocols import ChainError, ConversionParams
from ppml_hybrid.protocols.messages import ChainMessage
from ppml_hybrid.protocols.ss_to_he import chain_step, combine, encrypt_share
from ppml_hybrid.protocols.xor_chain import deserialize_all, start_chain, xor_step

BATCH, FEATURES = 5, 6


@pytest.fixture(scope="module")
def keys3():
    return insecure_keys(parties=3, batch=BATCH)


def _dec(keys, cts, n=FEATURES):
    return decrypt(keys, CKKSTensor(tuple(cts), n, keys.public.layout), BATCH)


def test_xor_chain_computes_xor_of_three_shares(keys3):
    rng = np.random.default_rng(0)
    b = [rng.integers(0, 2, size=(BATCH, FEATURES)) for _ in range(3)]
    ev = load_public_material(material=keys3.public)
    kw = dict(cc=ev.cc, public_key=ev.public_key, layout=ev.layout)
    ct = start_chain(bits=b[0], **kw)
    ct = xor_step(cts=ct, bits=b[1], **kw)
    ct = xor_step(cts=ct, bits=b[2], **kw)
    got = _dec(keys3, ct)
    assert np.abs(got - (b[0] ^ b[1] ^ b[2])).max() < 1e-8


def test_xor_step_rerandomises_even_for_zero_bit_shares(keys3):
    """The ciphertext a party passes on differs from what it received although its bits are all 0."""
    ev = load_public_material(material=keys3.public)
    kw = dict(cc=ev.cc, public_key=ev.public_key, layout=ev.layout)
    bits = np.random.default_rng(1).integers(0, 2, size=(BATCH, FEATURES))
    first = chain_step(rank=0, bits=[bits], received=None, **kw)
    second = chain_step(rank=1, bits=[np.zeros_like(bits)], received=first, **kw)
    assert all(a != b for a, b in zip(first.bits[0], second.bits[0]))
    # the same step twice gives different ciphertexts too (fresh randomness every time)
    again = chain_step(rank=1, bits=[np.zeros_like(bits)], received=first, **kw)
    assert all(a != b for a, b in zip(again.bits[0], second.bits[0]))
    assert np.abs(_dec(keys3, deserialize_all(second.bits[0])) - bits).max() < 1e-8


def test_chain_rejects_messages_out_of_order(keys3):
    ev = load_public_material(material=keys3.public)
    kw = dict(cc=ev.cc, public_key=ev.public_key, layout=ev.layout)
    bits = [np.zeros((BATCH, FEATURES), dtype=np.int64)]
    first = chain_step(rank=0, bits=bits, received=None, **kw)
    with pytest.raises(ChainError):
        chain_step(rank=2, bits=bits, received=first, **kw)
    with pytest.raises(ChainError):
        chain_step(rank=1, bits=[np.full((BATCH, FEATURES), 2)], received=first, **kw)


def test_combine_with_simulated_shares_three_parties(keys3):
    """E's step 4 on shares made in the clear (the MPC part is checked in test_ss_to_he)."""
    p = ConversionParams(parties=3)
    ev = load_public_material(material=keys3.public)
    rng = np.random.default_rng(2)
    x = rng.uniform(-255, 255, size=(BATCH, FEATURES))
    x[0, :3] = [p.clamp_bound, -p.clamp_bound, 0.0]
    X = np.rint(x * 2 ** 16).astype(np.int64)
    y = X + (1 << p.clamp_bits)
    m = p.modulus_bits
    u = [rng.integers(0, 1 << m, size=X.shape) for _ in range(2)]
    last = y - u[0] - u[1]
    u.append(np.mod(last, 1 << m))
    w = (u[0] + u[1] + u[2] - y) >> m
    assert set(np.unique(w)) <= {0, 1, 2} and len(np.unique(w)) >= 2
    shares = [encrypt_share(cc=ev.cc, public_key=ev.public_key, layout=ev.layout, u=u[j], params=p, party=j)
              for j in range(3)]
    kw = dict(cc=ev.cc, public_key=ev.public_key, layout=ev.layout)
    bit_shares = []  # bit_shares[k][j]: party j's XOR share of carry bit k
    for k in range(p.carry_bits):
        r1, r2 = rng.integers(0, 2, size=X.shape), rng.integers(0, 2, size=X.shape)
        bit_shares.append([r1, r2, ((w >> k) & 1) ^ r1 ^ r2])
    msg = None
    for j in range(3):
        msg = chain_step(rank=j, bits=[bit_shares[k][j] for k in range(p.carry_bits)], received=msg, **kw)
    out = combine(cc=ev.cc, public_key=ev.public_key, layout=ev.layout, shares=shares, chain=msg, params=p, shape=(BATCH, FEATURES))
    got = decrypt(keys3, out, BATCH)
    assert np.abs(got - X / 2 ** 16).max() < SS_TO_HE_TOL
