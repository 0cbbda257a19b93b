"""A byte relay from a listening socket (AF_VSOCK inside an enclave) to a Unix-socket service.

Steps per connection: accept on the listener, connect to the service's Unix socket, copy bytes
both ways until either side closes. It never parses or terminates TLS: who learns what is
unchanged (the relay sees TLS records only). The listening socket is injected so the relay is
tested with a Unix listener here; :func:`vsock_listener` makes the enclave's AF_VSOCK one
(fenced: vsock loopback does not connect on the development machines, so its test skips).
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import List

log = logging.getLogger(__name__)
VMADDR_CID_ANY = 0xFFFFFFFF
_BUF = 65536


def vsock_listener(*, port: int, cid: int = VMADDR_CID_ANY, backlog: int = 64) -> socket.socket:
    """An AF_VSOCK listening socket (inside a Nitro Enclave; the parent reaches it as CID:port)."""
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    sock.bind((cid, port))
    sock.listen(backlog)
    return sock


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(_BUF)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


class SocketRelay:
    """Relays every connection accepted on ``listener`` to the Unix socket at ``target_path``."""

    def __init__(self, *, listener: socket.socket, target_path: str) -> None:
        self._listener = listener
        self._target = target_path
        self._stop = threading.Event()
        self._conns: List[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="socket-relay", daemon=True)

    def start(self) -> "SocketRelay":
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                break
            try:
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                upstream.connect(self._target)
            except OSError as exc:
                log.warning("relay cannot reach the service (%s)", exc.strerror)
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for c in self._conns:
                c.close()
            self._conns.clear()
        self._thread.join(timeout=5)
