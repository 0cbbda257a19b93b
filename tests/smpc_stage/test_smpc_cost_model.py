"""The cost model's projection matches a run with delay and bandwidth limits in the transport.

One launch runs the step on loopback (traffic counts and compute time), then the same step
with per-round delay and bandwidth limits injected in each party's transport; the shaped
run's wall time must be within 25% of the projection made from the unshaped run.
"""

from __future__ import annotations

import pytest

from ppml_hybrid.config import NetworkConfig
from ppml_hybrid.smpc_stage.cost_model import project_step, shaping_for
from ppml_hybrid.smpc_stage.launcher import run_parties
from ppml_hybrid.smpc_stage.programs import StageStep
from ppml_hybrid.smpc_stage.transport import ChannelTraffic, Traffic
from smpc_helpers import MODEL_A, reference, smpc


def test_projection_arithmetic():
    t = Traffic(peers=ChannelTraffic(10, 1_000_000, 1_000_000), dealer=ChannelTraffic(5, 100, 250_000))
    p = project_step(traffic_per_party=[t, Traffic()], compute_s=1.0, network=NetworkConfig("x", 8e6, 0.1))
    assert p.rounds == 15 and p.bytes_sent == 1_000_100
    assert abs(p.latency_s - 1.5) < 1e-9 and abs(p.transfer_s - 1.0001) < 1e-9
    assert abs(p.total_s - 3.5001) < 1e-9


def _check(network: NetworkConfig, parties: int, rows_per_party: int) -> None:
    net, inputs, _, _ = reference(MODEL_A, image_size=8, parties=parties, rows_per_party=rows_per_party)
    program = StageStep(model=MODEL_A, state_dict=net.state_dict(), image_size=8, stop=4,
                        shaping=shaping_for(network), warmup=True)
    run = run_parties(smpc=smpc(parties), program=program, party_inputs=inputs)
    unshaped = [r.extra["unshaped"] for r in run.results]
    projection = project_step(traffic_per_party=[u.traffic for u in unshaped],
                              compute_s=max(u.seconds for u in unshaped), network=network)
    measured = max(r.seconds for r in run.results)
    assert projection.latency_s > projection.compute_s  # the network dominates: a real check
    assert abs(measured - projection.total_s) <= 0.25 * projection.total_s, (measured, projection)


def test_shaped_run_within_25_percent_of_projection():
    _check(NetworkConfig(name="test", bandwidth_bps=5e6, rtt_s=0.01), parties=2, rows_per_party=2)


@pytest.mark.slow
@pytest.mark.parametrize("profile,parties", [("wan", 2), ("wan", 3), ("wan_slow", 2)])
def test_shaped_run_named_profiles(profile, parties):
    nets = {"wan": NetworkConfig("wan", 1e9, 0.020), "wan_slow": NetworkConfig("wan_slow", 100e6, 0.080)}
    _check(nets[profile], parties=parties, rows_per_party=4)
