"""SS->HE in real party processes (CrypTen + TTP dealer), 2 and 3 parties, insecure small ring.

Decryption happens here, on the test side, with K's secret key. The reference is the exact sum
of the parties' raw shares of the clamped value (CrypTen's encoder rounds differently from
round(x * 2^16)); the plaintext input is checked too, within 2^-15 (fixed-point resolution).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conv_helpers import SS_TO_HE_TOL, decrypt, insecure_keys, smpc, sum_int64
from ppml_hybrid.protocols import ConversionParams
from ppml_hybrid.protocols.programs import SSToHEProgram
from ppml_hybrid.protocols.ss_to_he import combine
from ppml_hybrid.smpc_stage.launcher import run_parties

log = logging.getLogger(__name__)
BATCH, FEATURES = 8, 10


def _inputs(p: ConversionParams) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    x = (torch.rand(BATCH, FEATURES, generator=g) * 2 - 1) * 200
    b = p.clamp_bound
    x[0, :8] = torch.tensor([b, -b, b - 2 ** -16, -(b - 2 ** -16), 255.9999, -255.9999, 0.0, -2 ** -16])
    x[1, :6] = torch.tensor([300.0, -300.0, 1e4, -1e4, 256.0, -256.0])  # clamped
    x[2, :4] = torch.tensor([-1e-3, -0.5, -17.25, 3e-5])
    return x


@pytest.fixture(scope="module", params=[2, 3], ids=["2-parties", "3-parties"])
def converted(request):
    n = request.param
    keys = insecure_keys(parties=n, batch=BATCH)
    p = ConversionParams(parties=n, integer_bits=8, scale_bits=50)
    x = _inputs(p)
    program = SSToHEProgram(material=keys.public, params=p, holder=0, transcript=True, reveal=True)
    run = run_parties(smpc=smpc(n), program=program, party_inputs=[x] + [None] * (n - 1))
    res = run.results
    from ppml_hybrid.he_stage.keys import load_public_material

    ev = load_public_material(material=keys.public)
    out = combine(cc=ev.cc, public_key=ev.public_key, layout=ev.layout, shares=[r.contribution.share for r in res],
                  chain=res[-1].contribution.chain, params=p, shape=(BATCH, FEATURES))
    return dict(n=n, keys=keys, params=p, x=x, res=res, out=out, got=decrypt(keys, out, BATCH), wall=run.wall_s)


def test_ss_to_he_matches_sum_of_shares(converted):
    exact = sum_int64(*[r.clamped_share for r in converted["res"]]).astype(np.float64) / 2 ** 16
    err = np.abs(converted["got"] - exact).max()
    log.info("SS->HE %d parties: max error %.3g = 2^%.1f", converted["n"], err, np.log2(max(err, 1e-300)))
    assert err < SS_TO_HE_TOL


def test_ss_to_he_matches_plaintext_with_clamp(converted):
    p = converted["params"]
    want = converted["x"].double().clamp(-p.clamp_bound, p.clamp_bound).numpy()
    err = np.abs(converted["got"] - want).max()
    assert err <= 2 ** -15 + SS_TO_HE_TOL  # CrypTen encoding + one comparison's rounding
    assert np.abs(converted["got"]).max() < 2 ** p.integer_bits


def test_carry_takes_every_value(converted):
    """The inputs force wraps: the carry w in {0..n-1} takes more than one value (2 parties: both)."""
    n, p = converted["n"], converted["params"]
    w = np.zeros((BATCH, FEATURES), dtype=np.int64)
    for k in range(p.carry_bits):
        bit = np.zeros((BATCH, FEATURES), dtype=np.int64)
        for r in converted["res"]:
            bit ^= r.carry_bits[k]
        w += bit << k
    values = set(np.unique(w).tolist())
    assert values <= set(range(n))
    assert values == set(range(n)) if n == 2 else len(values) >= 2


def test_chain_rerandomised_by_each_party(converted):
    res = converted["res"]
    assert res[0].transcript.received is None
    for j in range(1, converted["n"]):
        t = res[j].transcript
        assert t.received == res[j - 1].transcript.sent  # what P_{j-1} passed on
        for before, after in zip(t.received.bits, t.sent.bits):
            assert all(a != b for a, b in zip(before, after))


def test_output_level_and_layout(converted):
    out, n = converted["out"], converted["n"]
    assert out.layout == converted["keys"].public.layout and out.n_features == FEATURES
    assert max(ct.GetLevel() for ct in out.cts) <= n - 1
