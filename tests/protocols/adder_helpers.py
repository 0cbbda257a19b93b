"""Party program of the carry-adder tests: both adders on the same reduced shares, traffic of each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch

from ppml_hybrid.protocols.carry import carry_bits, reduce_share
from ppml_hybrid.protocols.params import ConversionParams


@dataclass(frozen=True)
class AdderProgram:
    """Party 0 shares ``inputs``; every party reduces its share (steps 2-3) and runs each adder.

    Returns (test aid) the party's u_j, each adder's carry-bit shares and its traffic.
    """

    params: ConversionParams
    adders: tuple = ("full", "cut")

    def __call__(self, ctx: Any, inputs: Any) -> Dict[str, Any]:
        torch.set_num_threads(1)
        x = ctx.share(inputs if ctx.rank == 0 else None, src=0)
        u = reduce_share(share=x.share.clone(), rank=ctx.rank, params=self.params)
        out: Dict[str, Any] = {"u": u.numpy()}
        for adder in self.adders:
            before = ctx.transport.snapshot()
            bits = carry_bits(u=u, rank=ctx.rank, parties=ctx.parties, params=self.params, adder=adder)
            traffic = ctx.transport.snapshot() - before
            out[adder] = dict(bits=tuple(b.numpy() for b in bits), bytes_total=traffic.bytes_total,
                              bytes_sent=traffic.bytes_sent, rounds=traffic.rounds)
        return out
