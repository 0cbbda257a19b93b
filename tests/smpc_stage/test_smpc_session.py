"""A PartySession runs many programs in the same party processes: same results as one-shot
runs, a per-process cache that survives between programs, failures that name the party and
leave no process behind."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

from ppml_hybrid.smpc_stage.errors import PartyCrashedError, RendezvousError
from ppml_hybrid.smpc_stage.launcher import PartySession, run_parties
from ppml_hybrid.smpc_stage.programs import FaultPlan, StageStep
from smpc_helpers import MODEL_A, process_alive, reference, smpc


@dataclass(frozen=True)
class CountCalls:
    """Counts this process's programs in ``ctx.session`` and opens a shared sum (same world)."""

    def __call__(self, ctx, inputs):
        ctx.session["calls"] = ctx.session.get("calls", 0) + 1
        mine = [ctx.crypten.cryptensor(torch.tensor([float(r + 1)]) if r == ctx.rank else torch.zeros(1), src=r)
                for r in range(ctx.parties)]
        total = mine[0] + mine[1]
        return ctx.session["calls"], os.getpid(), float(total.get_plain_text())


def test_session_keeps_processes_and_cache_between_programs():
    net, inputs, _, _ = reference(MODEL_A, image_size=8, parties=2)
    step = StageStep(model=MODEL_A, state_dict=net.state_dict(), image_size=8, stop=4)
    one_shot = run_parties(smpc=smpc(2), program=step, party_inputs=inputs)
    with PartySession(smpc=smpc(2), party_inputs=inputs) as session:
        first = session.run(CountCalls())
        again = session.run(step)
        second = session.run(CountCalls())
        pids = session.pids
    assert [c for c, _, _ in first.results] == [1, 1] and [c for c, _, _ in second.results] == [2, 2]
    assert [p for _, p, _ in first.results] == [p for _, p, _ in second.results] == list(pids[:2])
    # each party shares its own value (1 and 2) and both open the sum: the world still works
    assert [v for _, _, v in first.results] == [v for _, _, v in second.results] == [3.0, 3.0]
    # a program run inside a session sees the same world: same public outputs as a fresh run
    assert [r.batch for r in again.results] == [r.batch for r in one_shot.results]
    assert not any(process_alive(p) for p in pids)


def test_failure_in_a_later_program_names_the_party_and_ends_the_session():
    net, inputs, _, _ = reference(MODEL_A, image_size=8, parties=2)
    ok = StageStep(model=MODEL_A, state_dict=net.state_dict(), image_size=8, stop=4)
    bad = StageStep(model=MODEL_A, state_dict=net.state_dict(), image_size=8, stop=4,
                    fault=FaultPlan(party=1, kind="raise"))
    pids: list = []
    with PartySession(smpc=smpc(2, timeout_s=30), party_inputs=inputs, pids_out=pids) as session:
        session.run(ok)
        with pytest.raises(PartyCrashedError) as info:
            session.run(bad)
        assert info.value.party == 1 and "party 1" in str(info.value)
        with pytest.raises(RendezvousError, match="already failed"):
            session.run(ok)
    assert len(pids) == 3 and not any(process_alive(p) for p in pids)


def test_crypten_randomness_from_torch_generators_is_fenced_off():
    """In a party process, CrypTen's ring-element helpers refuse torch generators (Mersenne
    Twister) and draw local randomness from os.urandom."""
    from ppml_hybrid.config import SMPCConfig
    from ppml_hybrid.smpc_stage.launcher import run_parties

    run = run_parties(smpc=SMPCConfig(parties=2, master_port=0, timeout_s=60.0), program=_probe_rng,
                      party_inputs=[None, None])
    for refused, local in run.results:
        assert refused == "InsecureRandomnessError"
        assert local[0] != local[1]


def _probe_rng(ctx, _inputs):
    import torch
    from crypten.common import rng

    try:
        rng.generate_random_ring_element((4,), generator=torch.Generator())
        refused = None
    except Exception as exc:  # noqa: BLE001 - the type name is the result
        refused = type(exc).__name__
    local = [int(rng.generate_random_ring_element((1,))[0]) for _ in range(2)]
    return refused, local
