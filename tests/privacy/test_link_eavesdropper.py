"""A network eavesdropper between the MPC roles learns nothing of what they exchange.

The attack: a passive tap on the wire (a raw socket on the loopback interface, which carries
every MPC link on one machine) records a real run in which each party opens a secret sum,
and then looks for the share each party sent in the opening. Whoever has both shares has the
value. On CrypTen's own gloo links (``hazmat_crypten_ttp=True``, the transport before the
fix: the real old code path, kept for regression tests) the tap finds the shares in the
captured bytes; on the mutually authenticated TLS links it finds none of them.
"""

from __future__ import annotations

import socket

import pytest

from link_tap import LoopbackTap, OpenAndReport, windows
from ppml_hybrid.config import SMPCConfig
from ppml_hybrid.smpc_stage.launcher import run_parties


def _tap_or_skip() -> LoopbackTap:
    try:
        return LoopbackTap()
    except PermissionError:
        pytest.skip("a raw socket on lo needs CAP_NET_RAW (root): the eavesdropper cannot be built here")


def _found(capture: bytes, shares) -> int:
    """How many 64-byte pieces of the parties' shares appear verbatim on the wire."""
    return sum(1 for share in shares for w in windows(share) if w in capture)


@pytest.mark.parametrize("old_transport", [True, False], ids=["gloo-in-clear", "tls-links"])
def test_a_wire_tap_sees_the_shares_only_on_the_old_transport(old_transport):
    tap = _tap_or_skip().start()
    try:
        run = run_parties(smpc=SMPCConfig(parties=2, timeout_s=60), program=OpenAndReport(),
                          party_inputs=[None, None], hazmat_crypten_ttp=old_transport)
    finally:
        capture = tap.stop()
    shares = run.results
    assert len(capture) > 2 * sum(len(s) for s in shares), "the tap recorded the run's traffic"
    found = _found(capture, shares)
    if old_transport:
        assert found >= len(shares), f"the attack must work on gloo in clear (found {found} pieces)"
    else:
        assert found == 0, f"{found} pieces of the parties' shares were readable on the wire"
