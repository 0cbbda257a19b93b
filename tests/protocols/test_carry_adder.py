"""The cut (bit-sliced, k = m + carry_bits bits) carry adder against CrypTen's full 64-bit adder.

Both run on the same reduced shares u_j in one run per party count; each must give XOR shares of
w = floor(sum_j u_j / 2^m) exactly, and the cut adder must send fewer bytes per value.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from adder_helpers import AdderProgram
from conv_helpers import smpc
from ppml_hybrid.protocols import ConversionParams
from ppml_hybrid.protocols.carry import bit_slice, unslice
from ppml_hybrid.smpc_stage.launcher import run_parties

log = logging.getLogger(__name__)
N_VALUES = 4096


def test_bit_slice_round_trip():
    g = torch.Generator().manual_seed(1)
    v = torch.randint(0, 1 << 25, (130,), generator=g, dtype=torch.int64)
    v[0], v[1] = (1 << 25) - 1, 0
    planes = bit_slice(v, bits=25)
    assert planes.shape == (25, 3)
    back = sum(unslice(planes[i], n=130) << i for i in range(25))
    assert torch.equal(back, v)


@pytest.fixture(scope="module", params=[2, 3], ids=["2-parties", "3-parties"])
def adders(request):
    n = request.param
    p = ConversionParams(parties=n, integer_bits=8)
    g = torch.Generator().manual_seed(11)
    x = (torch.rand(N_VALUES, generator=g) * 2 - 1) * 255.0
    b = p.clamp_bound
    x[:8] = torch.tensor([b, -b, b - 2 ** -16, -(b - 2 ** -16), 0.0, -2 ** -16, 2 ** -16, 1.0])
    x = x.view(64, N_VALUES // 64)
    res = run_parties(smpc=smpc(n), program=AdderProgram(params=p), party_inputs=[x] + [None] * (n - 1)).results
    total = sum(r["u"].astype(np.int64) for r in res)  # < n 2^m: exact
    want = total >> p.modulus_bits
    return dict(n=n, p=p, res=res, want=want)


def _carry(res, adder, p):
    w = 0
    for k in range(p.carry_bits):
        bit = 0
        for r in res:
            bit = bit ^ r[adder]["bits"][k]
        w = w + (bit << k)
    return w


@pytest.mark.parametrize("adder", ["full", "cut"])
def test_adder_gives_the_exact_carry(adders, adder):
    p, n = adders["p"], adders["n"]
    got = _carry(adders["res"], adder, p)
    assert got.shape == adders["want"].shape
    assert np.array_equal(got, adders["want"])
    assert set(np.unique(got).tolist()) == set(range(n))  # every carry value 0..n-1 occurs
    for r in adders["res"]:  # shares are bits
        assert all(set(np.unique(b).tolist()) <= {0, 1} for b in r[adder]["bits"])


def test_cut_adder_sends_fewer_bytes_per_value(adders):
    n = adders["n"]
    per = {a: [r[a]["bytes_total"] / N_VALUES for r in adders["res"]] for a in ("full", "cut")}
    rounds = {a: [r[a]["rounds"] for r in adders["res"]] for a in ("full", "cut")}
    log.info("carry adder, %d parties, %d values: bytes/value per party full=%s cut=%s; rounds full=%s cut=%s",
             n, N_VALUES, [round(v, 1) for v in per["full"]], [round(v, 1) for v in per["cut"]],
             rounds["full"], rounds["cut"])
    for full, cut in zip(per["full"], per["cut"]):
        assert cut < full / 4
    assert max(rounds["cut"]) <= max(rounds["full"])


@pytest.mark.parametrize("parties", [2, 3, 4, 5, 8])
def test_cut_circuit_in_the_clear(monkeypatch, parties):
    """The circuit itself (CSA levels with a left-over operand for n > 3, pruned prefix), on one
    'party' holding plaintext bits: the MPC supports 2-3 parties, the circuit any n."""
    import ppml_hybrid.protocols.carry as carry
    import ppml_hybrid.smpc_stage.bitsliced as bitsliced

    monkeypatch.setattr(bitsliced, "_and", lambda x, y: x & y)  # the circuit's AND lives in the primitive
    p = ConversionParams(parties=parties, integer_bits=8)
    m, k = p.modulus_bits, p.adder_bits
    g = torch.Generator().manual_seed(parties)
    u = torch.randint(0, 1 << m, (parties, 200), generator=g, dtype=torch.int64)
    u[:, 0] = (1 << m) - 1  # the largest sum
    u[:, 1] = 0
    ops = []
    for j in range(parties):
        planes = torch.zeros(k, 4, dtype=torch.int64)
        planes[:m] = bit_slice(u[j], bits=m)
        ops.append(planes)
    bits = carry.carry_planes(ops, m=m, k=k, carry_bits=p.carry_bits)
    got = sum(unslice(b, n=200) << i for i, b in enumerate(bits))
    assert torch.equal(got, u.sum(0) >> m)
    assert int(got[0]) == parties - 1 and int(got[1]) == 0


def test_adder_parameter_is_checked():
    from ppml_hybrid.protocols import ConversionParamsError

    p = ConversionParams(parties=3)
    assert p.adder == "cut" and p.adder_bits == p.modulus_bits + 2 == 27
    assert ConversionParams(parties=2, adder="full").adder_bits == 26
    with pytest.raises(ConversionParamsError, match="adder"):
        ConversionParams(parties=2, adder="ripple")
