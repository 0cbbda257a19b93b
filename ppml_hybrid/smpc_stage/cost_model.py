"""Projecting an MPC step's time onto a network profile (``network``: bandwidth and RTT).

Model, per party: ``T = T_compute + rounds * rtt_s + 8 * bytes_sent / bandwidth_bps`` where
``rounds`` and ``bytes_sent`` are that party's counts on both channels (other parties and
dealer) from :class:`~ppml_hybrid.smpc_stage.transport.Transport`, and ``T_compute`` is the
step's wall time measured on loopback (whose own latency is negligible). Each communicator
call is charged one full RTT: conservative for a two-party exchange (both directions overlap)
and about right for a request to the dealer. The step time is the slowest party's (parties
wait for each other at every round). The same rule is what
:class:`~ppml_hybrid.smpc_stage.transport.LinkShaping` injects, so a shaped run checks that
the counters see every message and that computation and communication add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ppml_hybrid.config import NetworkConfig
from ppml_hybrid.smpc_stage.transport import LinkShaping, Traffic

# The named profiles of conf/network/ (a test keeps the two in step): every run projects onto
# all of them, so a sweep can name the best split per profile.
STANDARD_PROFILES = (
    NetworkConfig(name="lan", bandwidth_bps=10e9, rtt_s=0.2e-3),
    NetworkConfig(name="wan", bandwidth_bps=1e9, rtt_s=20e-3),
    NetworkConfig(name="wan_slow", bandwidth_bps=100e6, rtt_s=80e-3),
)


@dataclass(frozen=True)
class StepProjection:
    """Projected step time on one network profile, and its parts (seconds)."""

    network: str
    compute_s: float
    latency_s: float
    transfer_s: float
    rounds: int
    bytes_sent: int

    @property
    def total_s(self) -> float:
        return self.compute_s + self.latency_s + self.transfer_s


def shaping_for(network: NetworkConfig) -> LinkShaping:
    """The transport-level delay that emulates ``network`` on loopback."""
    return LinkShaping(rtt_s=network.rtt_s, bandwidth_bps=network.bandwidth_bps)


def project_step(*, traffic_per_party: Sequence[Traffic], compute_s: float, network: NetworkConfig) -> StepProjection:
    """Project one step (traffic of every party, loopback wall time) onto ``network``."""
    if not traffic_per_party:
        raise ValueError("project_step needs the traffic of at least one party")

    def comm(t: Traffic) -> float:
        return t.rounds * network.rtt_s + 8.0 * t.bytes_sent / network.bandwidth_bps

    slowest = max(traffic_per_party, key=comm)
    return StepProjection(
        network=network.name,
        compute_s=compute_s,
        latency_s=slowest.rounds * network.rtt_s,
        transfer_s=8.0 * slowest.bytes_sent / network.bandwidth_bps,
        rounds=slowest.rounds,
        bytes_sent=slowest.bytes_sent,
    )
