"""Opening the MPC links survives hosts that connect to a link port and then misbehave.

Threat (and a CI hang this reproduces): a link port is reachable by anything that can route to
it. A host that connects and never starts a TLS handshake, or connects and drops, must not
keep the roster's own peers out: before, the acceptor gave each connection the whole
connect deadline (``smpc.timeout_s``, 300 s) and treated a dropped stranger as fatal.

Two roles (ranks 0 and 1) open their mesh in threads of this process, over real sockets and
TLS; a stranger connects to rank 0's port first.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from ppml_hybrid.identity import make_link_identity
from ppml_hybrid.smpc_stage import links
from ppml_hybrid.smpc_stage.launcher import free_port
from ppml_hybrid.smpc_stage.links import Member, Mesh, Roster

CONNECT_S = 20.0


def _two_roles():
    ids = [make_link_identity(f"rank-{r}") for r in range(2)]
    members = tuple(Member(rank=r, name=f"rank-{r}", host="127.0.0.1", port=free_port(), cert_pem=i.cert_pem)
                    for r, i in enumerate(ids))
    return ids, Roster(members=members, run_digest="d" * 64)


def _open_both(ids, roster, before_dial):
    """Rank 0 starts listening; ``before_dial(port)`` plays the stranger; then rank 1 dials."""
    opened, errors = {}, []

    def run(rank):
        try:
            opened[rank] = Mesh(me=rank, roster=roster, identity=ids[rank], timeout_s=CONNECT_S).open()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    t0 = threading.Thread(target=run, args=(0,))
    t0.start()
    before_dial(roster.member(0).port)
    start = time.monotonic()
    t1 = threading.Thread(target=run, args=(1,))
    t1.start()
    t0.join(CONNECT_S + 5)
    t1.join(CONNECT_S + 5)
    for mesh in opened.values():
        mesh.close()
    return opened, errors, time.monotonic() - start


def _connect_when_listening(port):
    """The stranger's connection, made as soon as rank 0 listens (no probe of our own: every
    connection counts)."""
    until = time.monotonic() + 10
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:
            if time.monotonic() > until:
                raise
            time.sleep(0.02)


@pytest.fixture
def short_handshake(monkeypatch):
    monkeypatch.setattr(links, "ACCEPT_HANDSHAKE_S", 1.0)


def test_a_host_that_connects_and_stalls_does_not_hold_up_the_mesh(short_handshake):
    ids, roster = _two_roles()
    stalled = []

    def stall(port):
        stalled.append(_connect_when_listening(port))  # connected, never says a word

    opened, errors, took = _open_both(ids, roster, stall)
    for s in stalled:
        s.close()
    assert not errors, errors
    assert set(opened) == {0, 1}
    assert took < CONNECT_S / 2, f"the mesh waited {took:.1f} s behind a stalled stranger"


def test_a_host_that_connects_and_drops_is_refused_and_the_mesh_opens(short_handshake):
    ids, roster = _two_roles()

    def drop(port):
        _connect_when_listening(port).close()
        s = _connect_when_listening(port)
        s.sendall(b"\x16\x03\x01 not a TLS client hello")
        s.close()

    opened, errors, _ = _open_both(ids, roster, drop)
    assert not errors, errors
    assert set(opened) == {0, 1}


class _SlowReader:
    """A socket whose every read waits first, so that what the peer sends back to back (its
    handshake's Finished, then its first frame) arrives in one read."""

    def __init__(self, sock):
        self._sock = sock

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def recv(self, n):
        time.sleep(0.3)
        return self._sock.recv(n)


def test_a_frame_read_together_with_the_handshake_is_delivered(monkeypatch):
    """The dialer's hello follows its Finished at once; when the acceptor reads both in its
    handshake's last read, the hello must still reach it (before: it sat in the TLS buffer
    until the peer's next send, and the mesh hung until its timeout)."""
    handshake = links._handshake

    def acceptor_reads_late(sock, tls, *args):
        return handshake(_SlowReader(sock) if tls.server_side else sock, tls, *args)

    monkeypatch.setattr(links, "_handshake", acceptor_reads_late)
    ids, roster = _two_roles()
    opened, errors, took = _open_both(ids, roster, lambda port: None)
    assert not errors, errors
    assert set(opened) == {0, 1}
    assert took < CONNECT_S / 2
