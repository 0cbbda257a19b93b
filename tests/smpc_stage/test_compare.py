"""The cut sign test (ppml_hybrid.smpc_stage.compare) against the plaintext sign and CrypTen's ``ge``.

One launch per party count runs every case (random values, 0, +-1 ulp, the +-2^23 range and
the bound's edge, shapes that are not multiples of 64, a wider bound) and measures the bytes
of one comparison of ours and of CrypTen's ``ge`` on the same 4,096 shares.
"""

from __future__ import annotations

import logging

import pytest
import torch

from compare_helpers import CompareProgram
from ppml_hybrid.smpc_stage.compare import COMPARE_BITS, ge_zero, gt_zero
from ppml_hybrid.smpc_stage.launcher import run_parties
from smpc_helpers import smpc

log = logging.getLogger(__name__)
ULP = 2.0 ** -16
N_COST = 4096


def _values(n: int, *, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * scale
    return torch.round(v / ULP) * ULP  # on the fixed-point grid: X is exactly v 2^16


def _cases():
    edge = 2.0 ** (COMPARE_BITS - 16) - ULP  # |X| = 2^40 - 1: the largest allowed
    special = torch.tensor([0.0, ULP, -ULP, 2 * ULP, -2 * ULP, 1.0, -1.0, 2.0 ** 23, -(2.0 ** 23),
                            2.0 ** 23 - ULP, -(2.0 ** 23) + ULP, edge, -edge, 0.5, -0.5], dtype=torch.float64)
    big = _values(N_COST, scale=2.0 ** 23, seed=1)
    big[: special.numel()] = special
    small = _values(N_COST, scale=4.0, seed=2)  # many values within a few ulp of 0
    small[:64] = torch.arange(-32, 32, dtype=torch.float64) * ULP
    wide_edge = 2.0 ** (50 - 16) - ULP
    wide = torch.cat([_values(61, scale=2.0 ** 33, seed=3), torch.tensor([wide_edge, -wide_edge, 0.0], dtype=torch.float64)])
    inputs = [big, small.view(64, 64), _values(3 * 7 * 11, scale=100.0, seed=4).view(3, 7, 11),
              torch.tensor([-ULP], dtype=torch.float64), _values(130, scale=2.0 ** 20, seed=5).view(2, 65),
              wide.view(8, 8)]
    bits = (COMPARE_BITS,) * 5 + (50,)
    return inputs, bits


@pytest.fixture(scope="module", params=[2, 3], ids=["2-parties", "3-parties"])
def compared(request):
    n = request.param
    inputs, bits = _cases()
    program = CompareProgram(shapes=tuple(tuple(x.shape) for x in inputs), bits=bits, cost_index=0)
    res = run_parties(smpc=smpc(n), program=program, party_inputs=[inputs] + [None] * (n - 1)).results
    return dict(n=n, inputs=inputs, res=res)


def test_bits_equal_the_plaintext_sign(compared):
    inputs, res = compared["inputs"], compared["res"]
    for i, x in enumerate(inputs):
        raw = res[0]["cases"][i]["raw"]
        assert torch.equal(raw, torch.round(x * 2 ** 16).long())  # the test really hits these X
        for r in res:  # every party opens the same bits
            case = r["cases"][i]
            assert case["ge"].shape == x.shape and case["gt"].shape == x.shape
            assert torch.equal(case["ge"], (raw >= 0).float()), f"case {i}: ge differs"
            assert torch.equal(case["gt"], (raw > 0).float()), f"case {i}: gt differs"
            # ReLU as the layer computes it: x * [x > 0], exact (the bit has scale 1: no truncation).
            assert torch.equal(case["relu"], (raw.clamp(min=0).double() / 2 ** 16).float())
    both = torch.cat([res[0]["cases"][0]["ge"], res[0]["cases"][1]["ge"].reshape(-1)])
    assert 0 < both.sum() < both.numel()  # both outcomes occur


def test_same_encoding_as_crypten_ge(compared):
    case = compared["res"][0]["cases"][0]
    assert torch.equal(case["ge"], case["crypten_ge"])
    assert case["scale"] == case["crypten_scale"] == 1


def test_fewer_bytes_than_crypten_ge(compared):
    n, res = compared["n"], compared["res"]
    per = {k: [r["cost"][k]["bytes_total"] / N_COST for r in res] for k in ("ours", "crypten")}
    rounds = {k: [r["cost"][k]["rounds"] for r in res] for k in ("ours", "crypten")}
    log.info("sign test, %d parties, %d values: bytes/value per party ours=%s crypten=%s; rounds ours=%s crypten=%s",
             n, N_COST, [round(v, 1) for v in per["ours"]], [round(v, 1) for v in per["crypten"]],
             rounds["ours"], rounds["crypten"])
    for ours, theirs in zip(per["ours"], per["crypten"]):
        assert 3 * ours <= theirs
    assert max(rounds["ours"]) <= max(rounds["crypten"])


@pytest.mark.parametrize("bits", [1, 63, 40.0, True, None])
def test_bits_are_checked(bits):
    for fn in (ge_zero, gt_zero):
        with pytest.raises(ValueError, match="bits"):
            fn(None, crypten=None, bits=bits)


@pytest.mark.parametrize("parties", [1, 2, 3, 4, 5])
def test_sum_bit_circuit_in_the_clear(monkeypatch, parties):
    """The circuit (CSA mod 2^(l+1), one pruned G-prefix) on plaintext bits, any operand count."""
    import ppml_hybrid.smpc_stage.bitsliced as bs

    monkeypatch.setattr(bs, "_and", lambda x, y: x & y)
    bit, n = 40, 200
    g = torch.Generator().manual_seed(parties)
    u = torch.randint(0, 1 << (bit + 1), (parties, n), generator=g, dtype=torch.int64)
    u[:, 0] = (1 << (bit + 1)) - 1  # every carry set
    u[:, 1] = 0
    u[0, 2], u[1 % parties, 3] = 1 << bit, (1 << bit) - 1
    plane = bs.sum_bit_plane([bs.bit_slice(u[j], bits=bit + 1) for j in range(parties)], bit=bit)
    assert torch.equal(bs.unslice(plane, n=n), (u.sum(0) >> bit) & 1)
