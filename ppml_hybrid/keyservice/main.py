"""K's process: read the launch spec from stdin, generate keys, serve, print the ready line.

:func:`start_key_service` builds and starts the service inside the calling process (the
process entry point uses it; tests use it for fast in-process refusal checks).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before openfhe is imported

from ppml_hybrid.errors import PPMLError  # noqa: E402

log = logging.getLogger("ppml_hybrid.keyservice")


@dataclass(frozen=True)
class RunningKeyService:
    server: Any  # grpc.Server
    address: str
    trust_pem: bytes
    public_material_sha256: str

    def stop(self) -> None:
        self.server.stop(grace=1.0).wait()


def start_key_service(*, spec: Any) -> RunningKeyService:
    """Generate the keys for ``spec`` (a KeyServiceSpec) and serve K in this process."""
    from ppml_hybrid.keyservice.hazmat import KeyVault
    from ppml_hybrid.keyservice.material import PublishedMaterial
    from ppml_hybrid.keyservice.rounds import RoundBook
    from ppml_hybrid.keyservice.server import KeyServiceServicer
    from ppml_hybrid.rpc import keyservice_pb2_grpc as pb_grpc
    from ppml_hybrid.rpc.server import start_server
    from ppml_hybrid.rpc.tls import self_signed_server, server_credentials

    vault = KeyVault(spec=spec.run)
    he = spec.run.he
    published = PublishedMaterial(material=vault.public, mask_bits=he.mask_bits, value_bits=he.value_bits,
                                  parties=spec.run.parties)
    ks = spec.keyservice
    book = RoundBook(parties=spec.run.parties, round_quota=ks.round_quota, max_open_rounds=ks.max_open_rounds)
    identity = self_signed_server(common_name="ppml-hybrid key service")
    servicer = KeyServiceServicer(vault=vault, book=book, registry=spec.registry, published=published,
                                  tls_cert_pem=identity.leaf.cert_pem, share_wait_s=ks.share_wait_s)
    server, address = start_server(
        address=ks.address, credentials=server_credentials(identity=identity, client_ca_pem=spec.client_ca_pem),
        register=lambda s: pb_grpc.add_KeyServiceServicer_to_server(servicer, s), wire_log=spec.wire_log)
    log.info("key service listening on %s", address)
    return RunningKeyService(server=server, address=address, trust_pem=identity.trust_pem,
                             public_material_sha256=published.material.digest())


def main() -> int:
    from ppml_hybrid.keyservice.spec import KeyServiceSpec
    from ppml_hybrid.rpc.launch import announce_ready, read_spec

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s K %(levelname)s %(message)s")
    try:
        running = start_key_service(spec=KeyServiceSpec.from_json(read_spec()))
    except PPMLError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return exc.exit_code
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    announce_ready(address=running.address, trust_pem=running.trust_pem,
                   public_material_sha256=running.public_material_sha256)
    stop.wait()
    running.stop()
    return 0
