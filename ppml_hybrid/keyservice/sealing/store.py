"""Where K keeps its sealed key: a file, or the parent instance's sealed-key store.

An enclave has no disk: a file inside it (its RAM disk) is gone at every restart, and K would
make new keys each time. The sealed key is ciphertext (AES-GCM under a KMS data key that only
an enclave with the pinned PCRs can obtain, public material bound as associated data:
:mod:`.sealed`), so the untrusted parent may keep it. ``keyservice.sealed_key_path`` is either
a path (a file K reads and writes itself) or the address of the parent's store
(``vsock:CID:PORT`` from inside the enclave, ``unix:PATH`` in tests), served by
``python -m ppml_hybrid sealed-store`` on the parent.

Protocol (one request per connection, stream socket):

1. K -> store ``b"G"``; store -> K an 8-byte big-endian length and that many bytes (0: nothing
   stored yet). K starts: it unseals what it got, or makes keys when the length is 0.
2. After making and sealing new keys, K -> store ``b"P"``, the 8-byte length and the blob;
   store -> K ``b"K"`` once the blob is on disk (written atomically, mode 0600).

Who learns what: the parent holds and sees only the sealed blob (ciphertext and public
material); it can withhold it (K then makes new keys: parties verify the new material anyway)
or hand back an older or a corrupted one (the AES-GCM tag and KMS's attestation check refuse a
forged one; an older genuine one is an earlier key of the same image, which unseals).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Optional, Union

from ppml_hybrid.errors import ConfigError
from ppml_hybrid.keyservice.sealing.errors import sealing_failure

log = logging.getLogger(__name__)
MAX_SEALED_BYTES = 1 << 30  # public material is 30-100 MB; refuse anything absurd from the parent
TIMEOUT_S = 120.0


def is_store_address(value: str) -> bool:
    return value.startswith(("vsock:", "unix:"))


class FileSealedStore:
    """A sealed-key file K reads and writes itself (outside an enclave, or a mounted disk)."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def read(self) -> Optional[bytes]:
        return self.path.read_bytes() if self.path.exists() else None

    def write(self, blob: bytes) -> None:
        _write_atomically(self.path, blob)


class RemoteSealedStore:
    """The parent's store at ``vsock:CID:PORT`` or ``unix:PATH`` (module doc)."""

    def __init__(self, address: str, *, timeout_s: float = TIMEOUT_S) -> None:
        self.address = address
        self._timeout_s = timeout_s

    def __str__(self) -> str:
        return f"the parent's sealed-key store at {self.address}"

    def read(self) -> Optional[bytes]:
        with self._connect() as s:
            s.sendall(b"G")
            n = int.from_bytes(_recv_exactly(s, 8, what=str(self)), "big")
            if n > MAX_SEALED_BYTES:
                raise sealing_failure(f"{self} offered {n} bytes (limit {MAX_SEALED_BYTES})")
            return _recv_exactly(s, n, what=str(self)) if n else None

    def write(self, blob: bytes) -> None:
        with self._connect() as s:
            s.sendall(b"P" + len(blob).to_bytes(8, "big"))
            s.sendall(blob)
            if _recv_exactly(s, 1, what=str(self)) != b"K":
                raise ConfigError(f"{self} did not confirm the sealed key was stored")

    def _connect(self) -> socket.socket:
        try:
            if self.address.startswith("vsock:"):
                _, cid, port = self.address.split(":")
                s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
                s.settimeout(self._timeout_s)
                s.connect((int(cid), int(port)))
            else:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(self._timeout_s)
                s.connect(self.address[len("unix:"):])
        except (OSError, ValueError) as exc:
            raise ConfigError(f"keyservice.sealed_key_path: cannot reach {self} ({type(exc).__name__}: {exc}); start "
                              "`python -m ppml_hybrid sealed-store` on the parent first (enclave/run.sh does)") from None
        return s


def sealed_store(value: str) -> Union[FileSealedStore, RemoteSealedStore]:
    """The store ``keyservice.sealed_key_path`` names."""
    return RemoteSealedStore(value) if is_store_address(value) else FileSealedStore(value)


class SealedStoreServer:
    """The parent's side (module doc): serves one file to connections on ``listener``."""

    def __init__(self, *, listener: socket.socket, path: Union[str, Path]) -> None:
        self._listener = listener
        self.path = Path(path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sealed-store", daemon=True)

    def start(self) -> "SealedStoreServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                try:
                    self._handle(conn)
                except (OSError, ConfigError) as exc:  # a broken request: the next one may be fine
                    log.warning("sealed-key store: request failed (%s)", exc)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(TIMEOUT_S)
        kind = _recv_exactly(conn, 1, what="K's request")
        if kind == b"G":
            blob = self.path.read_bytes() if self.path.exists() else b""
            conn.sendall(len(blob).to_bytes(8, "big") + blob)
            log.info("sealed-key store: handed K %s", f"{len(blob)} bytes" if blob else "nothing (no key sealed yet)")
        elif kind == b"P":
            n = int.from_bytes(_recv_exactly(conn, 8, what="K's request"), "big")
            if n > MAX_SEALED_BYTES:
                raise ConfigError(f"K offered {n} bytes (limit {MAX_SEALED_BYTES})")
            _write_atomically(self.path, _recv_exactly(conn, n, what="K's sealed key"))
            conn.sendall(b"K")
            log.info("sealed-key store: stored %d bytes in %s", n, self.path)
        else:
            raise ConfigError(f"unknown request {kind!r}")


def _recv_exactly(s: socket.socket, n: int, *, what: str) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConfigError(f"{what}: connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _write_atomically(path: Path, blob: bytes) -> None:
    tmp = Path(f"{path}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
