"""Mutually authenticated, encrypted point-to-point links between the MPC processes.

The MPC roles (parties 0..n-1 and the dealer, rank n) talk over one TLS 1.3 connection per
pair, on fixed ports: rank r listens on its own ``host:port`` from the :class:`Roster` and
dials every lower rank. Why TLS and not gloo: this torch build's gloo has no TLS, its data
links use ephemeral ports that no firewall rule can name, and its rendezvous store is
unauthenticated. Why TLS and not our own AEAD framing: TLS 1.3 gives authenticated key
exchange, AES-GCM records and per-record sequence numbers (no replay, reordering or
truncation within a connection; fresh ephemeral keys per connection, so a recorded session
cannot be replayed into a new one) from a reviewed implementation (OpenSSL); we add only
framing.

Setup, per link (steps):

1. the higher rank dials the lower rank's ``host:port`` (retrying until ``connect_timeout_s``:
   roles start in any order; a dial that lands on itself, or whose handshake stalls past
   ``DIAL_HANDSHAKE_S``, is retried; one refused or broken fails at once). The acceptor gives
   each connecting host ``ACCEPT_HANDSHAKE_S`` and refuses, logs and forgets one that fails: a
   stranger that connects and stalls or drops cannot keep the roster's peers out;
2. TLS 1.3 handshake, both sides presenting their own certificate: each side's trust store
   holds exactly the roster's pinned certificates, and after the handshake each side checks
   the SHA-256 fingerprint of the peer's certificate against the roster entry of the rank it
   expects (the acceptor: the rank whose pinned certificate was presented);
3. inside TLS, each side sends a hello naming its rank and the run digest (a hash of the
   run config both sides must share); a different digest stops the run before any MPC
   message with :class:`ConfigMismatchError` naming the peer.

Who learns what: a network observer sees the TLS handshakes (certificates included, as in
any TLS 1.3 mutual authentication only encrypted) and the sizes and timing of records; a
process that is not in the roster cannot complete a handshake; a roster member cannot
impersonate another (its certificate's fingerprint is pinned to its rank). No key or
payload is logged or written; the private key stays in the process that made it.

Framing, inside TLS: ``kind`` (1 byte), meta length (4), data length (8), a small JSON meta
(operation, per-link sequence number, dtype, shapes), then the raw data. A reader thread per
link decrypts and queues frames, so a large send never blocks on a peer that is itself
sending (no deadlock in exchanges) and the dealer's answers arrive while party 0 computes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ppml_hybrid.consortium import Consortium, RoleEntry, mpc_roles
from ppml_hybrid.identity import LinkIdentity
from ppml_hybrid.smpc_stage.errors import (
    ConfigMismatchError,
    LinkSetupError,
    PeerCommunicationError,
    PeerIdentityError,
)

log = logging.getLogger(__name__)

HEADER = struct.Struct("<BIQ")
KIND_DATA = 1
KIND_HELLO = 2
KIND_BYE = 3
READ_CHUNK = 1 << 20
LINK_PROTOCOL = "ppml-hybrid mpc link v1"
# A TLS handshake takes milliseconds; these bound one connection's, so that a host that
# connects and stalls cannot hold up the mesh until its deadline.
ACCEPT_HANDSHAKE_S = 15.0
DIAL_HANDSHAKE_S = 30.0


class _HandshakeStalled(LinkSetupError):
    """A connection made no progress in its TLS handshake within its bound."""


# ---------------------------------------------------------------------------- roster


@dataclass(frozen=True)
class Member(RoleEntry):
    """One MPC role in the roster: a consortium entry (name, address, pinned certificate) and
    its rank in the MPC world."""

    rank: int


@dataclass(frozen=True)
class Roster:
    """Every MPC role of one run (ranks 0..n), plus the digest of the run config they share."""

    members: Tuple[Member, ...]
    run_digest: str

    def __post_init__(self) -> None:
        ranks = [m.rank for m in self.members]
        if ranks != list(range(len(ranks))):
            raise LinkSetupError(f"the MPC roster must list ranks 0..{len(ranks) - 1} in order; got {ranks}")
        fps = [m.fingerprint for m in self.members]
        if len(set(fps)) != len(fps):
            raise LinkSetupError("two MPC roles in the roster pin the same certificate: every role needs its own key")

    @classmethod
    def from_consortium(cls, consortium: Consortium, *, run_digest: str) -> "Roster":
        """The MPC roles of a consortium file (parties in rank order, then the dealer)."""
        roles = mpc_roles(consortium)
        members = tuple(Member(rank=r, name=e.name, host=e.host, port=e.port, cert_pem=e.cert_pem)
                        for r, e in enumerate(roles))
        return cls(members=members, run_digest=run_digest)

    def member(self, rank: int) -> Member:
        if not 0 <= rank < len(self.members):
            raise LinkSetupError(f"rank {rank} is not in the MPC roster (ranks 0..{len(self.members) - 1})")
        return self.members[rank]


# ---------------------------------------------------------------------------- one link


@dataclass(frozen=True)
class Frame:
    """One received message: its meta (operation, sequence, shapes) and raw data."""

    meta: Dict[str, Any]
    data: bytearray


def _tls_context(*, server: bool, identity: LinkIdentity, trusted: Sequence[bytes]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = False  # identity is the pinned fingerprint, checked after the handshake
    if server:
        ctx.num_tickets = 0  # no resumption: every connection does a full handshake
    ctx.load_verify_locations(cadata="".join(pem.decode("ascii") for pem in trusted))
    # ssl loads keys only from paths: an anonymous in-memory file (never on disk)
    fd = os.memfd_create("link-identity", os.MFD_CLOEXEC)
    try:
        os.write(fd, identity.cert_pem + b"\n" + identity.key_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return ctx


class Link:
    """One established TLS connection to a peer rank (thread-safe send; one reader thread)."""

    def __init__(self, *, sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO, me: Member, peer: Member, timeout_s: float) -> None:
        self.me, self.peer, self.timeout_s = me, peer, timeout_s
        self._sock, self._tls, self._in, self._out = sock, tls, incoming, outgoing
        self._tls_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._frames: "queue.Queue[Any]" = queue.Queue()
        self._head = bytearray()  # header and meta of the frame being received
        self._meta: Tuple[int, Dict[str, Any]] = (0, {})
        self._data: Optional[bytearray] = None  # its data, filled by decryption
        self._filled = 0
        self._send_seq = 0
        self._recv_seq = 0
        self._closed = False

    # -------------------------------------------------------------- sending

    def send(self, op: str, data: Sequence[Any] = (), **meta: Any) -> None:
        """Send one frame: ``meta`` (JSON-able) and the concatenation of ``data`` buffers."""
        meta = dict(meta, op=op, seq=self._send_seq)
        self._send_seq += 1
        self._send_frame(KIND_DATA, meta, data)

    def _send_frame(self, kind: int, meta: Dict[str, Any], data: Sequence[Any]) -> None:
        views = [memoryview(d).cast("B") for d in data]
        meta_b = json.dumps(meta, separators=(",", ":")).encode()
        header = HEADER.pack(kind, len(meta_b), sum(v.nbytes for v in views))
        with self._send_lock:
            try:
                for part in (memoryview(header + meta_b), *views):
                    for off in range(0, part.nbytes, READ_CHUNK):
                        with self._tls_lock:
                            self._tls.write(part[off:off + READ_CHUNK])
                            out = self._out.read()
                        self._sock.sendall(out)
            except (OSError, ssl.SSLError) as exc:
                raise self._gone(f"sending failed ({type(exc).__name__}: {exc})") from None

    # -------------------------------------------------------------- receiving

    def start_reader(self) -> None:
        threading.Thread(target=self._read_loop, name=f"link-{self.peer.rank}", daemon=True).start()

    def _read_loop(self) -> None:
        try:
            # The handshake's last read can carry the peer's first records too (its hello, sent
            # right after its Finished): decrypt what the BIO already holds before waiting on the
            # socket, or that frame waits for the peer's next send (a hang until the timeout).
            with self._tls_lock:
                if self._decrypt_available():
                    return
            while True:
                chunk = self._sock.recv(READ_CHUNK)
                if not chunk:
                    raise ConnectionResetError("connection closed by the peer")
                with self._tls_lock:
                    self._in.write(chunk)
                    if self._decrypt_available():
                        return
        except (OSError, ssl.SSLError, ValueError) as exc:
            if not self._closed:
                self._frames.put(exc)

    def _decrypt_available(self) -> bool:
        """Decrypt everything TLS can give now into the frame being assembled (a frame's data
        is decrypted straight into its own buffer: one copy); queue complete frames. True once
        the peer said goodbye."""
        while True:
            try:
                if self._data is not None:
                    view = memoryview(self._data)[self._filled:]
                    self._filled += self._tls.read(len(view), view)
                elif len(self._head) < HEADER.size:
                    self._head += self._tls.read(HEADER.size - len(self._head))
                else:
                    _, meta_len, _ = HEADER.unpack_from(self._head)
                    self._head += self._tls.read(HEADER.size + meta_len - len(self._head))
            except ssl.SSLWantReadError:
                return False
            except ssl.SSLZeroReturnError:
                raise ConnectionResetError("TLS closed by the peer") from None
            if self._data is None and len(self._head) >= HEADER.size:
                kind, meta_len, data_len = HEADER.unpack_from(self._head)
                if len(self._head) == HEADER.size + meta_len:
                    self._meta = (kind, json.loads(bytes(self._head[HEADER.size:])))
                    self._data, self._filled = bytearray(data_len), 0
            if self._data is not None and self._filled == len(self._data):
                kind, meta = self._meta
                data, self._data, self._head = self._data, None, bytearray()
                if kind == KIND_BYE:
                    self._frames.put(EOFError("the peer left the run"))
                    return True
                self._frames.put((kind, meta, data))

    def recv(self, op: str, *, timeout_s: Optional[float] = None) -> Frame:
        """The next frame from the peer, which must be operation ``op`` (else the two
        processes run different programs: a clear error rather than garbage)."""
        got = self._next(timeout_s)
        kind, meta, data = got
        if kind != KIND_DATA or meta.get("op") != op or meta.get("seq") != self._recv_seq:
            raise PeerCommunicationError(
                f"{self.me.name}: {self.peer.describe()} sent {meta.get('op')!r} (#{meta.get('seq')}) where "
                f"{op!r} (#{self._recv_seq}) was expected: the roles run different programs or configs"
            )
        self._recv_seq += 1
        return Frame(meta, data)

    def _next(self, timeout_s: Optional[float]) -> Tuple[int, Dict[str, Any], bytearray]:
        wait = self.timeout_s if timeout_s is None else timeout_s
        try:
            got = self._frames.get(timeout=wait)
        except queue.Empty:
            raise self._gone(f"no message for {wait:g} s (smpc.timeout_s)") from None
        if isinstance(got, BaseException):
            self._frames.put(got)  # every later call fails the same way
            raise self._gone(f"{type(got).__name__}: {got}")
        return got

    def _gone(self, why: str) -> PeerCommunicationError:
        return PeerCommunicationError(f"{self.me.name}: link to {self.peer.describe()} failed: {why}")

    # -------------------------------------------------------------- closing

    def close(self, *, polite: bool = True) -> None:
        if self._closed:
            return
        if polite:
            try:
                self._send_frame(KIND_BYE, {}, ())
            except PeerCommunicationError:
                pass
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


# ---------------------------------------------------------------------------- setup


def _handshake(sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
               deadline: float) -> None:
    while True:
        try:
            tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        out = outgoing.read()
        if out:
            sock.sendall(out)
        if done:
            return
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(READ_CHUNK)
        if not chunk:
            raise ConnectionResetError("closed during the TLS handshake")
        incoming.write(chunk)


def _peer_fingerprint(tls: ssl.SSLObject) -> str:
    der = tls.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else ""


class Mesh:
    """All of one process's links (steps: module doc). ``link(rank)`` is the link to ``rank``."""

    def __init__(self, *, me: int, roster: Roster, identity: LinkIdentity, timeout_s: float,
                 connect_timeout_s: Optional[float] = None, bind_host: Optional[str] = None) -> None:
        self.me = roster.member(me)
        if identity.fingerprint != self.me.fingerprint:
            raise PeerIdentityError(
                f"{self.me.name}: this process's certificate ({identity.fingerprint[:16]}...) is not the one the "
                f"roster pins for it ({self.me.fingerprint[:16]}...): wrong identity file or consortium file"
            )
        self.roster, self.timeout_s = roster, timeout_s
        self.connect_timeout_s = timeout_s if connect_timeout_s is None else connect_timeout_s
        self._bind_host = self.me.host if bind_host is None else bind_host
        others = [m.cert_pem for m in roster.members if m.rank != me]
        self._server_ctx = _tls_context(server=True, identity=identity, trusted=others)
        self._client_ctx = _tls_context(server=False, identity=identity, trusted=others)
        self._links: Dict[int, Link] = {}

    def link(self, rank: int) -> Link:
        return self._links[rank]

    def open(self) -> "Mesh":
        """Listen, dial every lower rank, accept every higher one, exchange hellos."""
        deadline = time.monotonic() + self.connect_timeout_s
        expect_in = [m for m in self.roster.members if m.rank > self.me.rank]
        listener = None
        if expect_in:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind((self._bind_host, self.me.port))
            except OSError as exc:
                listener.close()
                raise LinkSetupError(
                    f"{self.me.name} cannot listen on {self._bind_host}:{self.me.port} ({exc.strerror or exc}): "
                    "the port is in use or the address is not this host's"
                ) from None
            listener.listen(len(expect_in) + 4)
        errors: List[BaseException] = []
        acceptor = None
        if listener is not None:
            acceptor = threading.Thread(target=self._accept_all, args=(listener, expect_in, deadline, errors),
                                        name="link-accept", daemon=True)
            acceptor.start()
        try:
            for peer in self.roster.members[: self.me.rank]:
                self._links[peer.rank] = self._dial(peer, deadline)
            if acceptor is not None:
                acceptor.join(max(0.0, deadline - time.monotonic()) + 1.0)
        finally:
            if listener is not None:
                listener.close()
        if errors:
            self.close(polite=False)
            raise errors[0]
        missing = [m for m in self.roster.members if m.rank != self.me.rank and m.rank not in self._links]
        if missing:
            self.close(polite=False)
            raise LinkSetupError(
                f"{self.me.name}: no authenticated link from {', '.join(m.describe() for m in missing)} within "
                f"{self.connect_timeout_s:g} s: is that role running, and can it reach {self.me.address}?"
            )
        for link in self._links.values():
            link.start_reader()
        self._exchange_hellos()
        return self

    def _dial(self, peer: Member, deadline: float) -> Link:
        last: Optional[BaseException] = None
        while time.monotonic() < deadline:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(max(0.05, min(2.0, deadline - time.monotonic())))
            try:
                sock.connect((peer.host, peer.port))
                if sock.getsockname() == sock.getpeername():
                    # TCP simultaneous open onto itself: the kernel gave this dial the peer's port as
                    # its own while the peer was not listening yet. Not a link; try again.
                    raise ConnectionRefusedError(f"port {peer.port} not listening yet (self-connect)")
            except OSError as exc:
                sock.close()
                last = exc
                time.sleep(0.1)
                continue
            try:
                return self._secure(sock, peer=peer, server=False,
                                    deadline=min(deadline, time.monotonic() + DIAL_HANDSHAKE_S))
            except _HandshakeStalled as exc:  # a listener that accepts and says nothing: redial
                last = exc
                time.sleep(0.1)
        raise LinkSetupError(
            f"{self.me.name} could not reach {peer.describe()} within {self.connect_timeout_s:g} s "
            f"({type(last).__name__ if last else 'timeout'}: {last}): is it running, and is port {peer.port} "
            f"open on {peer.host} for this host?"
        )

    def _accept_all(self, listener: socket.socket, expect: List[Member], deadline: float,
                    errors: List[BaseException]) -> None:
        waiting = {m.fingerprint: m for m in expect}
        while waiting and time.monotonic() < deadline:
            listener.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
            try:
                sock, addr = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                # Each connecting host gets ACCEPT_HANDSHAKE_S, not the whole deadline: a connection
                # that never completes its handshake must not keep the roster's peers waiting.
                link = self._secure(sock, peer=None, server=True, candidates=waiting,
                                    deadline=min(deadline, time.monotonic() + ACCEPT_HANDSHAKE_S))
            except LinkSetupError as exc:  # PeerIdentityError included
                # a stranger, or a connection that broke or stalled before it authenticated:
                # refuse it and keep waiting for the roster
                log.warning("%s", exc)
                continue
            except BaseException as exc:  # noqa: BLE001 - reported by open()
                errors.append(exc)
                return
            del waiting[link.peer.fingerprint]
            self._links[link.peer.rank] = link

    def _secure(self, sock: socket.socket, *, peer: Optional[Member], server: bool, deadline: float,
                candidates: Optional[Dict[str, Member]] = None) -> Link:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        ctx = self._server_ctx if server else self._client_ctx
        tls = ctx.wrap_bio(incoming, outgoing, server_side=server)
        where = peer.describe() if peer is not None else "a connecting host"
        try:
            _handshake(sock, tls, incoming, outgoing, deadline)
        except ssl.SSLError as exc:
            sock.close()
            raise PeerIdentityError(
                f"{self.me.name}: TLS handshake with {where} failed ({exc.reason or exc}): its certificate is not "
                "pinned in the consortium file, or it does not trust ours"
            ) from None
        except socket.timeout:
            sock.close()
            raise _HandshakeStalled(f"{self.me.name}: {where} connected but did not complete the TLS handshake "
                                    "in time") from None
        except OSError as exc:
            sock.close()
            raise LinkSetupError(f"{self.me.name}: connection to {where} broke during the TLS handshake ({exc})") from None
        fp = _peer_fingerprint(tls)
        if peer is None:
            peer = (candidates or {}).get(fp)
            if peer is None:
                sock.close()
                raise PeerIdentityError(f"{self.me.name}: refused a connection whose certificate ({fp[:16]}...) "
                                        "is pinned for no higher rank of this run")
        elif fp != peer.fingerprint:
            sock.close()
            raise PeerIdentityError(
                f"{self.me.name}: {peer.describe()} presented certificate {fp[:16]}..., but the roster pins "
                f"{peer.fingerprint[:16]}... for it: refused (wrong host, or an impostor)"
            )
        sock.settimeout(None)
        return Link(sock=sock, tls=tls, incoming=incoming, outgoing=outgoing, me=self.me, peer=peer,
                    timeout_s=self.timeout_s)

    def _exchange_hellos(self) -> None:
        hello = {"protocol": LINK_PROTOCOL, "rank": self.me.rank, "run": self.roster.run_digest}
        for link in self._links.values():
            link._send_frame(KIND_HELLO, hello, ())
        for rank, link in self._links.items():
            kind, meta, _ = link._next(self.connect_timeout_s)
            if kind != KIND_HELLO or meta.get("protocol") != LINK_PROTOCOL or meta.get("rank") != rank:
                self.close(polite=False)
                raise PeerIdentityError(f"{self.me.name}: {link.peer.describe()} did not greet as rank {rank}")
            if meta.get("run") != self.roster.run_digest:
                self.close(polite=False)
                raise ConfigMismatchError(
                    f"{self.me.name}: {link.peer.describe()} runs a different run config (digest "
                    f"{str(meta.get('run'))[:12]}... vs ours {self.roster.run_digest[:12]}...): every site must use "
                    "the same model, split, DP and HE settings; stopped before any MPC message"
                )

    def close(self, *, polite: bool = True) -> None:
        for link in self._links.values():
            link.close(polite=polite)
        self._links = {}
