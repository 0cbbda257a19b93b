"""MPC forward and backward against PyTorch autograd, with the same public weights.

One multi-process launch per (model, parties) checks every layer of that model: the output,
the weight gradients (summed over the batch) of every conv/dense/poly parameter, and the
per-layer traffic. Tolerances (fixed point f=16) are in smpc_helpers.
"""

from __future__ import annotations

import pytest

from ppml_hybrid.smpc_stage.launcher import run_parties
from ppml_hybrid.smpc_stage.programs import StageStep
from smpc_helpers import FORWARD_ATOL, FORWARD_RTOL, GRAD_ATOL, GRAD_RTOL, MODEL_A, MODEL_B, close, reference, smpc

CASES = [(MODEL_A, 8, 2), (MODEL_B, 9, 2), (MODEL_A, 8, 3), (MODEL_B, 9, 3)]


@pytest.mark.parametrize("model,image_size,parties", CASES, ids=[f"{m.name}-{p}p" for m, _, p in CASES])
def test_forward_backward_match_pytorch(model, image_size, parties):
    net, inputs, out, grads = reference(model, image_size=image_size, parties=parties)
    program = StageStep(model=model, state_dict=net.state_dict(), image_size=image_size, stop=len(model.blocks), reveal=True)
    run = run_parties(smpc=smpc(parties), program=program, party_inputs=inputs)
    revealed = [r.revealed for r in run.results]
    # Every party opens the same values.
    for other in revealed[1:]:
        assert all((other[k] == revealed[0][k]).all() for k in revealed[0])
    got = revealed[0]
    ok, err, bound = close(got["output"], out, FORWARD_ATOL, FORWARD_RTOL)
    assert ok, f"output error {err:.2e} > {bound:.2e}"
    assert set(grads) == {k[len("grad:"):] for k in got if k.startswith("grad:")}
    for name, want in grads.items():
        ok, err, bound = close(got[f"grad:{name}"], want, GRAD_ATOL, GRAD_RTOL)
        assert ok, f"{name}: gradient error {err:.2e} > {bound:.2e}"
    # Deltas exist (as shares) for every layer but the first one's input.
    kinds = {c.layer: c.kind for c in run.results[0].costs}
    assert {k[len("delta_in:"):] for k in got if k.startswith("delta_in:")} == set(kinds) - {"block1.conv"}

    # Accounting: public-weight linear layers are free with two parties (forward and delta).
    for rep in run.results:
        for c in rep.costs:
            if c.kind in ("conv", "linear", "avgpool", "flatten") and c.direction in ("forward", "backward"):
                if parties == 2:
                    assert c.traffic.rounds == 0 and c.traffic.bytes_total == 0, c
                else:  # only the truncation protocol (no Beaver triple) with three
                    assert c.traffic.dealer.rounds <= 3 * c.traffic.peers.rounds, c
            if c.kind in ("relu", "maxpool", "poly", "square") and c.direction == "forward":
                assert c.traffic.peers.rounds > 0, c
    # correlated randomness came from the dealer process (its requests overlap the peer rounds: bytes, no rounds)
    assert run.results[0].traffic.dealer.bytes_received > 0 and run.results[0].traffic.dealer.rounds == 0
    # Only party 0 talks to the dealer (CrypTen's TTP: the others derive theirs from a seed).
    assert all(r.traffic.dealer.bytes_total == 0 for r in run.results[1:])
