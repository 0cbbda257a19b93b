"""Where a service listens: TCP loopback, a Unix socket, or (inside an enclave) vsock via a relay.

One gRPC schema and the same mTLS on every transport; only the socket differs:

* ``127.0.0.1:PORT`` - :func:`ppml_hybrid.rpc.server.start_server` (TCP loopback);
* ``unix:/abs/path`` - gRPC's own Unix-socket listener (the file is created mode 0600 by
  umask-free chmod after bind; an existing socket file is refused, not replaced);
* ``vsock:PORT`` - inside a Nitro Enclave: K listens on a Unix socket and
  :class:`ppml_hybrid.rpc.vsock_relay.SocketRelay` relays AF_VSOCK connections to it byte for
  byte. TLS terminates in K, inside the enclave; the relay and the parent see only TLS records.
"""

from __future__ import annotations

import os
import stat
from concurrent import futures
from pathlib import Path
from typing import Callable, Optional, Tuple

import grpc

from ppml_hybrid.errors import ConfigError
from ppml_hybrid.rpc.options import GRPC_OPTIONS
from ppml_hybrid.rpc.server import start_server
from ppml_hybrid.rpc.wire import ServerRecorder, WireLog

UNIX_PREFIX = "unix:"


def is_unix(address: str) -> bool:
    return address.startswith(UNIX_PREFIX)


def unix_path(address: str) -> Path:
    path = Path(address[len(UNIX_PREFIX):])
    if not path.is_absolute():
        raise ConfigError(f"a Unix-socket address names an absolute path (unix:/run/k.sock); got {address!r}")
    return path


def start_server_at(*, address: str, credentials: grpc.ServerCredentials, register: Callable[[grpc.Server], None],
                    wire_log: Optional[str] = None, workers: int = 16) -> Tuple[grpc.Server, str]:
    """Start a TLS gRPC server on ``address`` (TCP loopback or ``unix:/path``); return it and its address."""
    if not is_unix(address):
        return start_server(address=address, credentials=credentials, register=register, wire_log=wire_log,
                            workers=workers)
    path = unix_path(address)
    if path.exists():
        raise ConfigError(f"{path} already exists; remove the stale socket of a stopped service first")
    interceptors = (ServerRecorder(WireLog(path=wire_log)),) if wire_log else ()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=GRPC_OPTIONS,
                         interceptors=interceptors)
    register(server)
    if not server.add_secure_port(f"{UNIX_PREFIX}{path}", credentials):
        raise ConfigError(f"cannot bind {address!r}")
    server.start()
    if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
        os.chmod(path, 0o600)
    return server, f"{UNIX_PREFIX}{path}"
