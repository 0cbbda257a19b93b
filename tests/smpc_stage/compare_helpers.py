"""Party program of the comparison tests: ours and CrypTen's ``ge`` on the same shares, traffic of each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch

from ppml_hybrid.smpc_stage.compare import ge_zero, gt_zero


@dataclass(frozen=True)
class CompareProgram:
    """Party 0 shares each tensor of ``inputs`` (float64, so X = x 2^16 is exact up to 2^52);
    every party runs ge_zero/gt_zero on each, and on ``inputs[cost_index]`` also CrypTen's
    ``ge(0)``, with the transport's traffic for both.

    Returns (test aid): per input the opened raw X and both opened bits; the traffic figures.
    """

    shapes: Tuple[Tuple[int, ...], ...]
    bits: Tuple[int, ...]  # the bound exponent per input
    cost_index: int = 0

    def __call__(self, ctx: Any, inputs: Any) -> Dict[str, Any]:
        torch.set_num_threads(1)
        crypten = ctx.crypten
        out: Dict[str, Any] = {"cases": []}
        for i, (shape, bits) in enumerate(zip(self.shapes, self.bits)):
            if ctx.rank == 0:
                x = crypten.cryptensor(inputs[i].double(), src=0)
            else:
                x = crypten.cryptensor(torch.zeros(shape, dtype=torch.float64), src=0)
            case: Dict[str, Any] = {"raw": x.reveal()}
            before = ctx.transport.snapshot()
            ge = ge_zero(x, crypten=crypten, bits=bits)
            traffic_ge = ctx.transport.snapshot() - before
            gt = gt_zero(x, crypten=crypten, bits=bits)
            case["ge"], case["gt"] = ge.get_plain_text(), gt.get_plain_text()
            case["scale"] = ge.encoder.scale
            case["relu"] = (x * gt).get_plain_text()
            if i == self.cost_index:
                before = ctx.transport.snapshot()
                theirs = x.ge(0.0)
                traffic_theirs = ctx.transport.snapshot() - before
                case["crypten_ge"] = theirs.get_plain_text()
                case["crypten_scale"] = theirs.encoder.scale
                out["cost"] = {name: dict(bytes_total=t.bytes_total, rounds=t.rounds, peer_rounds=t.peers.rounds,
                                          dealer_bytes=t.dealer.bytes_total)
                               for name, t in (("ours", traffic_ge), ("crypten", traffic_theirs))}
            out["cases"].append(case)
        return out
