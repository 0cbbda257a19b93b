"""The enclave's entry point: ``python -m ppml_hybrid.keyservice.enclave_entry`` (the image's ENTRYPOINT).

It replaces the socat pipeline the image used to need (socat and iproute2 came as .debs from a
live Debian mirror at build time, so no one could rebuild the same image and check PCR0): the
image now holds only the pinned base image and hash-checked wheels. Steps:

1. relay every connection on vsock 5000 (parties and E, through the parent's TCP relay) to K's
   Unix socket, byte for byte (:class:`~ppml_hybrid.rpc.vsock_relay.SocketRelay`: TLS ends in K);
2. accept ONE connection on vsock 5001 and read K's launch spec from it to the end (it carries
   the parent role's temporary AWS credentials: piped into K's stdin, never written anywhere);
3. start K (``python -m ppml_hybrid.keyservice``), hand it the spec, and send its ready line (or
   its failure line) to the parent, CID 3 vsock 5002, then close that connection;
4. run until K exits, with K's exit status.

Who learns what: nothing new. The relay and the entry see TLS records and the spec the parent
sent; the ready line is public. The listeners and the parent's address are injected, so the
same code runs over Unix sockets in the tests (vsock loopback does not connect there).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from typing import Any, Callable, List, Optional

from ppml_hybrid.rpc.vsock_relay import SocketRelay, vsock_listener

log = logging.getLogger(__name__)
KS_SOCK = "/tmp/k.sock"  # keyservice.address in conf/keyservice/enclave.yaml
RELAY_PORT, SPEC_PORT, PARENT_CID, READY_PORT = 5000, 5001, 3, 5002
MAX_SPEC_BYTES = 64 << 20  # the spec is public material's description, certificates and credentials: small


def read_all(conn: socket.socket, *, limit: int = MAX_SPEC_BYTES) -> bytes:
    buf = bytearray()
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise ValueError(f"launch spec larger than {limit} bytes")


def run_entry(*, relay_listener: socket.socket, spec_listener: socket.socket,
              connect_parent: Callable[[], socket.socket], ks_socket: str = KS_SOCK,
              k_command: Optional[List[str]] = None, started: Optional[List[Any]] = None) -> int:
    """Steps 1-4 of the module doc; returns K's exit status. ``started`` (tests) receives K's process."""
    relay = SocketRelay(listener=relay_listener, target_path=ks_socket).start()
    try:
        conn, _ = spec_listener.accept()
        with conn:
            spec = read_all(conn)
        spec_listener.close()
        k = subprocess.Popen(k_command or [sys.executable, "-m", "ppml_hybrid.keyservice"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
        if started is not None:
            started.append(k)
        to_k, from_k = k.stdin, k.stdout  # both pipes (PIPE above)
        to_k.write(spec)
        to_k.close()
        del spec
        line = from_k.readline()  # the ready line, or the failure line, or b"" if K died silently
        with connect_parent() as parent:
            parent.sendall(line or b'PPML_FAILED {"type": "KeyServiceExited", "message": "no ready line"}\n')
        for rest in from_k:  # K writes nothing more; keep the pipe drained anyway
            log.info("K: %s", rest.decode(errors="replace").rstrip())
        return k.wait()
    finally:
        relay.stop()


def _connect_vsock(cid: int, port: int) -> socket.socket:
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s.connect((cid, port))
    return s


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s enclave-entry %(levelname)s %(message)s")
    return run_entry(relay_listener=vsock_listener(port=RELAY_PORT), spec_listener=vsock_listener(port=SPEC_PORT),
                     connect_parent=lambda: _connect_vsock(PARENT_CID, READY_PORT))


if __name__ == "__main__":
    sys.exit(main())
