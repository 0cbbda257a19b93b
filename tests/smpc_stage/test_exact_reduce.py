"""Exact wrap-free truncation (smpc_stage.exact.reduce) against the plaintext formula.

Party 0 supplies raw ring values X and (optionally) its own share; party 1's share makes the
sum X. Checked for 2 and 3 parties: values inside the bound come out as floor(X / 2^t) - e with
e in [0, n-1]; values far outside (garbage, as a failed truncation leaves) come out wrapped into
the bound, never larger; shares chosen to straddle 2^64 (where CrypTen's local truncation is off
by 2^48) come out right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from ppml_hybrid.config import SMPCConfig
from ppml_hybrid.smpc_stage.launcher import run_parties


@dataclass(frozen=True)
class ReduceProgram:
    bound_bits: int
    shift: int

    def __call__(self, ctx: Any, inputs: Any) -> Any:
        from ppml_hybrid.smpc_stage.exact import reduce

        values, share0 = inputs if ctx.rank == 0 else (None, None)
        n = ctx.parties
        size = torch.Size([int(ctx.crypten.comm.get().broadcast_obj(values.numel() if ctx.rank == 0 else None, 0))])
        # Party 0 holds share0, party 1 holds X - share0 (mod 2^64), others zero: a sharing of X.
        if ctx.rank == 0:
            mine = share0
            ctx.crypten.comm.get().send(values - share0, 1)
        elif ctx.rank == 1:
            mine = ctx.crypten.comm.get().recv(torch.zeros(size, dtype=torch.long), 0)
        else:
            mine = torch.zeros(size, dtype=torch.long)
        x = ctx.crypten.mpc.MPCTensor.from_shares(mine, precision=0)
        out = reduce(x.share, bound_bits=self.bound_bits, shift=self.shift, crypten=ctx.crypten)
        opened = ctx.crypten.mpc.MPCTensor.from_shares(out, precision=0).reveal()
        local = ctx.crypten.mpc.MPCTensor.from_shares(mine.div(2 ** self.shift, rounding_mode="trunc"),
                                                      precision=0).reveal()
        return opened, local if n == 2 else None


def _wrap(x: np.ndarray, l: int) -> np.ndarray:
    return ((x.astype(object) + 2**l) % 2 ** (l + 1)) - 2**l


@pytest.mark.parametrize("parties", [2, 3])
def test_reduce_is_exact_inside_and_bounded_outside_the_bound(parties):
    l, t = 36, 16
    gen = np.random.default_rng(0)
    inside = gen.integers(-(2**l) + 1, 2**l, size=500)
    garbage = gen.integers(-(2**62), 2**62, size=300)  # what a failed truncation leaves
    values = torch.tensor(np.concatenate([inside, garbage]), dtype=torch.long)
    share0 = torch.tensor(gen.integers(-(2**63), 2**63 - 1, size=len(values)), dtype=torch.long)
    smpc = SMPCConfig(parties=parties, master_port=0, timeout_s=60.0)
    run = run_parties(smpc=smpc, program=ReduceProgram(bound_bits=l, shift=t),
                      party_inputs=[(values, share0)] + [None] * (parties - 1))
    opened = run.results[0][0].numpy().astype(object)
    expect = np.array([v // 2**t for v in _wrap(values.numpy(), l)], dtype=object)
    err = expect - opened
    assert all(0 <= e <= parties - 1 for e in err), sorted(set(err))
    assert max(abs(int(v)) for v in opened) <= 2 ** (l - t) + parties


def test_shares_that_wrap_break_local_truncation_but_not_reduce():
    l, t = 40, 16
    values = torch.tensor([1000 * 2**16, -7 * 2**16, 123456], dtype=torch.long)
    # s0 near -2^63 for X > 0 (near 2^63 for X < 0): s1 = X - s0 leaves the int64 range, a wrap
    share0 = torch.where(values > 0, torch.tensor(-(2**63) + 5), torch.tensor(2**63 - 5))
    smpc = SMPCConfig(parties=2, master_port=0, timeout_s=60.0)
    run = run_parties(smpc=smpc, program=ReduceProgram(bound_bits=l, shift=t), party_inputs=[(values, share0), None])
    opened, local = run.results[0]
    exact = values.numpy() // 2**t
    assert np.all(np.abs(opened.numpy() - exact) <= 1)
    assert np.all(np.abs(local.numpy() - exact) > 2**40)  # CrypTen's local truncation: off by ~2^48
