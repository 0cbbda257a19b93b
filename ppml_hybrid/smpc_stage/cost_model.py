"""Projecting an MPC step's time onto a network profile (``network``: bandwidth and RTT).

Model, per party:

    T = T_compute + rounds * rtt_s + 8 * max(bytes_sent, bytes_received) / bandwidth_bps

* ``rounds``: that party's round trips on every channel (:class:`~.transport.Transport`: one
  per call with the other parties, one per dealer request, one per RPC to K or E; the project's
  dealer answers while party 0 works with its peers, so its requests add no round);
* bytes: everything the party sends and everything it receives, on every channel (peers, the
  dealer's link, K and E): a full-duplex access link is busy for the larger direction, which for
  party 0 is the dealer's downlink of corrections;
* ``T_compute``: the step's wall time measured on loopback, less what loopback itself spent
  moving that traffic (``loopback``: rounds x its RTT + bytes / its bandwidth, measured by
  :func:`measure_loopback`), so the transfer is not counted twice.

The step time is the slowest party's (parties wait for each other at every round). The same
rule is what :class:`~ppml_hybrid.smpc_stage.transport.LinkShaping` injects, so a shaped run
checks that the counters see every message and that computation and communication add up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

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
    link_bytes: int  # the busier direction of the slowest party's link

    @property
    def total_s(self) -> float:
        return self.compute_s + self.latency_s + self.transfer_s


def shaping_for(network: NetworkConfig) -> LinkShaping:
    """The transport-level delay that emulates ``network`` on loopback."""
    return LinkShaping(rtt_s=network.rtt_s, bandwidth_bps=network.bandwidth_bps)


def link_bytes(t: Traffic) -> int:
    """The busier direction of a party's access link over all its channels."""
    sent = t.peers.bytes_sent + t.dealer.bytes_sent + t.services.bytes_sent
    received = t.peers.bytes_received + t.dealer.bytes_received + t.services.bytes_received
    return max(sent, received)


def project_step(*, traffic_per_party: Sequence[Traffic], compute_s: float, network: NetworkConfig,
                 loopback: Optional[NetworkConfig] = None) -> StepProjection:
    """Project one step (traffic of every party, loopback wall time) onto ``network``."""
    if not traffic_per_party:
        raise ValueError("project_step needs the traffic of at least one party")

    def comm(t: Traffic, net: NetworkConfig) -> float:
        return t.rounds * net.rtt_s + 8.0 * link_bytes(t) / net.bandwidth_bps

    slowest = max(traffic_per_party, key=lambda t: comm(t, network))
    on_loopback = max(comm(t, loopback) for t in traffic_per_party) if loopback is not None else 0.0
    return StepProjection(
        network=network.name,
        compute_s=max(compute_s - on_loopback, 0.0),
        latency_s=slowest.rounds * network.rtt_s,
        transfer_s=8.0 * link_bytes(slowest) / network.bandwidth_bps,
        rounds=slowest.rounds,
        link_bytes=link_bytes(slowest),
    )


def measure_loopback(*, nbytes: int = 32 << 20, pings: int = 200) -> NetworkConfig:
    """This machine's TCP loopback: median ping-pong RTT of one byte and the throughput of one
    ``nbytes`` transfer (about 0.1 s)."""
    import socket
    import statistics
    import threading

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(pings):
                conn.sendall(conn.recv(1))
            left = nbytes
            while left > 0:
                left -= len(conn.recv(min(left, 1 << 20)))
            conn.sendall(b"k")

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    with socket.create_connection(server.getsockname()) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rtts = []
        for _ in range(pings):
            t0 = time.perf_counter()
            c.sendall(b"x")
            c.recv(1)
            rtts.append(time.perf_counter() - t0)
        payload = bytes(1 << 20)
        t0 = time.perf_counter()
        for _ in range(nbytes >> 20):
            c.sendall(payload)
        c.recv(1)
        seconds = time.perf_counter() - t0
    thread.join(timeout=5)
    server.close()
    return NetworkConfig(name="loopback", bandwidth_bps=8.0 * nbytes / seconds, rtt_s=statistics.median(rtts))
