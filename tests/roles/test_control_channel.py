"""The coordinator's control channel and its messages: pickle-free encoding, pinned mutual TLS,
messages tagged with the caller's role, refusals before step 1."""

from __future__ import annotations

import pickle
import threading

import pytest
import torch

from ppml_hybrid.identity import make_link_identity
from ppml_hybrid.roles import messages as m
from ppml_hybrid.rpc.codec import WireFormatError, decode, encode
from ppml_hybrid.rpc.coordination import ControlChannelError, CoordinatorLink, CoordinatorServer
from ppml_hybrid.smpc_stage.transport import ChannelTraffic, Traffic
from ppml_hybrid.protocols.step_common import StageCost, StepOutput


def test_step_results_round_trip_exactly():
    out = StepOutput(noised_sums={"block1.conv.weight": torch.randn(4, 1, 3, 3), "b": torch.tensor([1.5, -2.0])},
                     batch_size=17, seconds=0.25, traffic=Traffic(peers=ChannelTraffic(3, 100, 90)),
                     stages=(StageCost("dp_step", 0.1, Traffic()),))
    back = decode(encode(m.StepDone(output=out)), types=m.TO_COORDINATOR)
    assert isinstance(back, m.StepDone) and back.output.batch_size == 17
    assert back.output.traffic == out.traffic and back.output.stages == out.stages
    for k, v in out.noised_sums.items():
        assert torch.equal(back.output.noised_sums[k], v) and back.output.noised_sums[k].dtype == v.dtype
    assert decode(encode(m.Start(train_rows=(3, 4))), types=m.TO_PARTY) == m.Start(train_rows=(3, 4))
    assert decode(encode(float("nan"))) != decode(encode(float("nan")))  # NaN survives as NaN


def test_a_party_accepts_only_the_commands_it_expects():
    with pytest.raises(WireFormatError, match="StepDone.*not accepted"):
        decode(encode(m.StepDone(output=None)), types=m.TO_PARTY)


class _Evil:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pwned')",))


@pytest.mark.parametrize("payload", [
    pickle.dumps(_Evil()),  # what a coordinator could do to a party if commands were pickled
    b"PPHC1\x00\x00\x00\x05{bad}",
    b"PPHC1\x00\x00\xff\xff{}",
    encode(torch.zeros(3))[:-1],  # tensor bytes cut short
    encode(torch.zeros(3)) + b"x",  # trailing bytes
])
def test_malformed_or_executable_payloads_are_refused(payload):
    with pytest.raises(WireFormatError):
        decode(payload, types=m.TO_PARTY)


def test_values_outside_the_codec_are_not_sent():
    with pytest.raises(WireFormatError):
        encode({"x": object()})
    with pytest.raises(WireFormatError):
        encode({1: 2})


@pytest.fixture
def identities():
    return {n: make_link_identity(f"ppml-hybrid {n}") for n in ("coordinator", "party-0", "party-1", "mallory")}


def _server(ids):
    return CoordinatorServer(address="127.0.0.1:0", identity=ids["coordinator"],
                             callers={"party-0": ids["party-0"].cert_pem, "party-1": ids["party-1"].cert_pem})


def test_messages_flow_both_ways_tagged_with_the_callers_pinned_role(identities):
    server = _server(identities)
    try:
        links = {n: CoordinatorLink(address=server.address, coordinator_cert_pem=identities["coordinator"].cert_pem,
                                    identity=identities[n], connect_timeout_s=10) for n in ("party-0", "party-1")}
        links["party-1"].send(b"hello from 1")
        assert server.recv(timeout_s=10) == ("party-1", b"hello from 1")
        links["party-0"].send(b"hello from 0")
        assert server.recv(timeout_s=10) == ("party-0", b"hello from 0")
        server.send("party-0", b"step 1")
        assert links["party-0"].recv() == b"step 1"
        links["party-1"].close()  # a vanished party reaches the coordinator as end of stream
        assert server.recv(timeout_s=10) == ("party-1", None)
        links["party-0"].close()
    finally:
        server.close()


def test_a_certificate_the_coordinator_does_not_pin_is_refused(identities):
    server = _server(identities)
    try:
        with pytest.raises(ControlChannelError):  # the TLS handshake itself fails
            CoordinatorLink(address=server.address, coordinator_cert_pem=identities["coordinator"].cert_pem,
                            identity=identities["mallory"], connect_timeout_s=3)
        with pytest.raises(TimeoutError):
            server.recv(timeout_s=0.5)
    finally:
        server.close()


def test_a_party_refuses_a_coordinator_other_than_the_pinned_one(identities):
    server = _server(identities)
    try:
        with pytest.raises(ControlChannelError, match="not the one pinned"):
            CoordinatorLink(address=server.address, coordinator_cert_pem=identities["mallory"].cert_pem,
                            identity=identities["party-0"], connect_timeout_s=3)
    finally:
        server.close()


def _sites_and_links(identities, *, host: str):
    """The coordinator's RemoteSites over a real server, and both parties' links to it."""
    from ppml_hybrid.consortium import parse_consortium
    from ppml_hybrid.roles.coordinator import RemoteSites

    server = _server(identities)
    roles = {n: {"host": host % (i + 1), "port": 1000 + i, "cert": identities[n].cert_pem.decode()}
             for i, n in enumerate(("party-0", "party-1", "coordinator"))}
    roles["dealer"] = {"host": "127.0.0.1", "port": 999, "cert": make_link_identity("d").cert_pem.decode()}
    sites = RemoteSites(server=server, consortium=parse_consortium({"roles": roles}), timeout_s=10)
    links = {n: CoordinatorLink(address=server.address, coordinator_cert_pem=identities["coordinator"].cert_pem,
                                identity=identities[n], connect_timeout_s=10) for n in ("party-0", "party-1")}
    return server, sites, links


def test_the_coordinator_refuses_a_site_with_another_config_before_step_one(identities, tmp_path):
    """A site whose run digest differs (another model, split, DP setting) is named and refused."""
    from ppml_hybrid.smpc_stage.errors import RendezvousError

    server, sites, links = _sites_and_links(identities, host="127.0.0.%d")
    try:
        links["party-0"].send(encode(m.Hello(role="party-0", run_digest="a" * 64, train_rows=5)))
        links["party-1"].send(encode(m.Hello(role="party-1", run_digest="b" * 64, train_rows=5)))
        with pytest.raises(RendezvousError, match=r"party-1 \(127.0.0.2:1001\) runs another configuration"):
            sites.join(digest="a" * 64, timeout_s=10)
        for link in links.values():
            link.close()
    finally:
        server.close()


def test_a_party_failure_is_reported_with_its_role_and_host_and_beats_the_peers_that_noticed(identities):
    from ppml_hybrid.smpc_stage.errors import PartyCrashedError

    server, sites, links = _sites_and_links(identities, host="10.0.0.%d")
    try:
        links["party-0"].send(encode(m.Failed(role="party-0", error="PeerCommunicationError", message="peer gone")))
        threading.Timer(0.2, links["party-1"].close).start()  # party-1's process dies
        with pytest.raises(PartyCrashedError, match=r"party-1 \(10.0.0.2:1001\) disconnected.*then party-0"):
            sites.step(0, {"w": torch.zeros(1)})
        links["party-0"].close()
    finally:
        server.close()


def test_an_idle_control_stream_survives_the_clients_keepalive_pings(identities, monkeypatch):
    """A step or a K verification can keep the control stream idle for minutes. The parties'
    keepalive pings must not make the coordinator close the stream ("too_many_pings" GOAWAY:
    gRPC servers by default tolerate two pings without data, which took a resumed run down
    after 30 s). Pings here every 0.5 s, 6 s idle."""
    import time

    from ppml_hybrid.rpc import coordination

    monkeypatch.setattr(coordination, "KEEPALIVE", (("grpc.keepalive_time_ms", 500),
                                                    *[o for o in coordination.KEEPALIVE
                                                      if o[0] != "grpc.keepalive_time_ms"]))
    server = _server(identities)
    try:
        link = CoordinatorLink(address=server.address, coordinator_cert_pem=identities["coordinator"].cert_pem,
                               identity=identities["party-0"], connect_timeout_s=10)
        link.send(b"hello")
        assert server.recv(timeout_s=10) == ("party-0", b"hello")
        time.sleep(6)
        server.send("party-0", b"start")
        assert link.recv() == b"start"
        link.send(b"ready")
        assert server.recv(timeout_s=10) == ("party-0", b"ready")
        link.close()
    finally:
        server.close()
