"""A party that crashes, raises or hangs stops the run with an error naming it; no orphans."""

from __future__ import annotations

import time

import pytest

from ppml_hybrid.config import SMPCConfig
from ppml_hybrid.smpc_stage.errors import PartyCrashedError, PartyTimeoutError, RendezvousError
from ppml_hybrid.smpc_stage.launcher import run_parties
from ppml_hybrid.smpc_stage.programs import FaultPlan, StageStep
from ppml_hybrid.smpc_stage.rendezvous import Rendezvous, rendezvous_for
from smpc_helpers import MODEL_A, process_alive, reference, smpc


def _run_with_fault(fault: FaultPlan, parties: int = 2, timeout_s: float = 60.0):
    net, inputs, _, _ = reference(MODEL_A, image_size=8, parties=parties)
    program = StageStep(model=MODEL_A, state_dict=net.state_dict(), image_size=8, stop=4, fault=fault)
    pids: list = []
    start = time.time()
    with pytest.raises((PartyCrashedError, PartyTimeoutError)) as info:
        run_parties(smpc=smpc(parties, timeout_s), program=program, party_inputs=inputs, pids_out=pids)
    return info.value, time.time() - start, pids


@pytest.mark.parametrize("kind", ["crash", "raise"])
def test_crash_names_the_party_and_leaves_no_process(kind):
    err, elapsed, pids = _run_with_fault(FaultPlan(party=1, kind=kind))
    assert isinstance(err, PartyCrashedError)
    assert err.party == 1 and "party 1" in str(err), str(err)
    assert err.exit_code == 6
    assert elapsed < 30
    assert len(pids) == 3 and not any(process_alive(p) for p in pids)


def test_hang_times_out_naming_the_party():
    timeout = 3.0
    err, elapsed, pids = _run_with_fault(FaultPlan(party=2, kind="hang"), parties=3, timeout_s=timeout)
    assert isinstance(err, PartyTimeoutError)
    assert err.party == 2 and str(err).startswith("party 2 (running a program) made no progress"), str(err)
    # start-up (fork server warm: ~1 s) + the timeout + tear-down
    assert elapsed < timeout + 15
    assert len(pids) == 4 and not any(process_alive(p) for p in pids)


def test_rendezvous_config_is_checked():
    rz = rendezvous_for(SMPCConfig(parties=3, master_addr="10.0.0.5", master_port=29600), rank=3)
    assert rz.is_dealer and rz.environment()["RENDEZVOUS"] == "tcp://10.0.0.5:29600"
    assert rz.environment()["WORLD_SIZE"] == "3"
    with pytest.raises(RendezvousError, match="out of range"):
        Rendezvous(master_addr="x", master_port=1, parties=2, rank=3)
    with pytest.raises(RendezvousError, match="parties must be 2 or 3"):
        Rendezvous(master_addr="x", master_port=1, parties=4, rank=0)
    with pytest.raises(RendezvousError, match="one entry"):
        run_parties(smpc=SMPCConfig(parties=2), program=print, party_inputs=[1])
    with pytest.raises(RendezvousError, match="smpc.rank"):
        run_parties(smpc=SMPCConfig(parties=2, rank=0), program=print, party_inputs=[1, 2])
