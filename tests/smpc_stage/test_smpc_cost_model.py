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
    """Rounds on every channel; the busier direction of the link over all channels (party 0
    receives the dealer's corrections: 1_250_000 received against 1_000_100 sent); the loopback's
    own share of the measured time taken off the compute."""
    t = Traffic(peers=ChannelTraffic(10, 1_000_000, 1_000_000), dealer=ChannelTraffic(5, 100, 250_000))
    p = project_step(traffic_per_party=[t, Traffic()], compute_s=1.0, network=NetworkConfig("x", 8e6, 0.1))
    assert p.rounds == 15 and p.link_bytes == 1_250_000
    assert abs(p.latency_s - 1.5) < 1e-9 and abs(p.transfer_s - 1.25) < 1e-9
    assert abs(p.total_s - 3.75) < 1e-9
    lo = project_step(traffic_per_party=[t, Traffic()], compute_s=1.0, network=NetworkConfig("x", 8e6, 0.1),
                      loopback=NetworkConfig("lo", 8e8, 0.01))
    assert abs(lo.compute_s - (1.0 - 0.15 - 0.0125)) < 1e-9


def test_dealer_requests_are_one_round_trip_and_their_answers_count_as_received():
    """CrypTen's TTP client makes three calls per request (send_obj, recv_obj, broadcast): one
    round, the request's bytes sent and both answers' bytes received."""
    import torch

    from ppml_hybrid.smpc_stage.transport import Transport

    class Group:
        def size(self):
            return 3

    ttp = Group()

    class Comm:
        ttp_group = ttp
        ttp_comm_group = ttp

        def get_rank(self):
            return 0

        def get_world_size(self):
            return 2

    t = Transport(Comm())
    t.wrap("send_obj", lambda *a, **k: None)({"op": "triple"}, 2, ttp)
    t.wrap("recv_obj", lambda *a, **k: (4, 4))(2, ttp)
    t.wrap("broadcast", lambda *a, **k: None)(torch.zeros(16, dtype=torch.long), 2, ttp)
    t.wrap("all_reduce", lambda *a, **k: None)(torch.zeros(8, dtype=torch.long))
    snap = t.snapshot()
    assert snap.dealer.rounds == 1 and snap.peers.rounds == 1
    assert snap.dealer.bytes_sent > 0 and snap.dealer.bytes_received >= 16 * 8


def _check(network: NetworkConfig, parties: int, rows_per_party: int, *, bound: str = "latency") -> None:
    net, inputs, _, _ = reference(MODEL_A, image_size=8, parties=parties, rows_per_party=rows_per_party)
    program = StageStep(model=MODEL_A, state_dict=net.state_dict(), image_size=8, stop=4,
                        shaping=shaping_for(network), warmup=True)
    run = run_parties(smpc=smpc(parties), program=program, party_inputs=inputs)
    unshaped = [r.extra["unshaped"] for r in run.results]
    projection = project_step(traffic_per_party=[u.traffic for u in unshaped],
                              compute_s=max(u.seconds for u in unshaped), network=network)
    measured = max(r.seconds for r in run.results)
    if bound == "bandwidth":  # the bytes (party 0: the dealer's downlink included) dominate
        assert projection.transfer_s > max(projection.latency_s, projection.compute_s), projection
    else:  # the network's round trips dominate: a real check
        assert projection.latency_s > projection.compute_s, projection
    assert abs(measured - projection.total_s) <= 0.25 * projection.total_s, (measured, projection)


def test_shaped_run_within_25_percent_of_projection():
    # RTT 30 ms: 42 rounds take 1.26 s, well above the step's compute even on a loaded 2-core
    # machine (at 10 ms, 0.42 s, a CI run measured 0.46 s of compute and the regime check failed)
    _check(NetworkConfig(name="test", bandwidth_bps=5e6, rtt_s=0.03), parties=2, rows_per_party=2)


def test_shaped_bandwidth_bound_run_within_25_percent_of_projection():
    """Another regime than the latency-bound one above: a thin link where the bytes dominate,
    so bytes missing from the projection (party 0's downlink from the dealer) would show."""
    _check(NetworkConfig(name="thin", bandwidth_bps=1e6, rtt_s=0.002), parties=2, rows_per_party=2,
           bound="bandwidth")


@pytest.mark.slow
@pytest.mark.parametrize("profile,parties", [("wan", 2), ("wan", 3), ("wan_slow", 2)])
def test_shaped_run_named_profiles(profile, parties):
    nets = {"wan": NetworkConfig("wan", 1e9, 0.020), "wan_slow": NetworkConfig("wan_slow", 100e6, 0.080)}
    _check(nets[profile], parties=parties, rows_per_party=4)
