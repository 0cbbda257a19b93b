"""K's process: read the launch spec from stdin, generate keys, serve, print the ready line.

:func:`start_key_service` builds and starts the service inside the calling process (the
process entry point uses it; tests use it for fast in-process refusal checks).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any, Optional

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before openfhe is imported

from ppml_hybrid.errors import PPMLError  # noqa: E402

log = logging.getLogger("ppml_hybrid.keyservice")


@dataclass(frozen=True)
class RunningKeyService:
    server: Any  # grpc.Server
    address: str
    trust_pem: bytes
    public_material_sha256: str
    attestation_root_pem: Optional[bytes] = None  # development signer's root (pin it only with the dev opt-in)
    registry: Any = None  # the role registry K serves and attests

    def stop(self) -> None:
        self.server.stop(grace=1.0).wait()


def start_key_service(*, spec: Any, kms: Any = None, producer: Any = None,
                      server_identity: Any = None) -> RunningKeyService:
    """Generate (or unseal) the keys for ``spec`` (a KeyServiceSpec) and serve K in this process.

    ``producer``: the attestation producer (default from ``keyservice.attestation``). With
    ``keyservice.sealed_key_path`` set, ``kms`` (a KmsClient) seals fresh keys to that file, or
    unseals the keys found there (same public material as before the restart).
    ``server_identity``: K's TLS identity (a :class:`~ppml_hybrid.rpc.tls.ServerIdentity`; the
    consortium role's own certificate); default a fresh self-signed one. Either way the
    attestation binds it.
    """
    from ppml_hybrid.keyservice.attestor import KeyAttestor, make_producer
    from ppml_hybrid.keyservice.noise import NoiseBook
    from ppml_hybrid.keyservice.rounds import RoundBook
    from ppml_hybrid.keyservice.server import KeyServiceServicer
    from ppml_hybrid.rpc import keyservice_pb2_grpc as pb_grpc
    from ppml_hybrid.rpc.sockets import start_server_at
    from ppml_hybrid.rpc.tls import self_signed_server, server_credentials

    ks = spec.keyservice
    spec.registry.validate(parties=spec.run.parties)  # before any key exists: typed RegistryError
    producer = producer if producer is not None else make_producer(keyservice=ks)
    vault, published = _load_or_make_keys(spec=spec, kms=kms, producer=producer)
    book = RoundBook(parties=spec.run.parties, round_quota=ks.round_quota, max_open_rounds=ks.max_open_rounds,
                     hiding_bits=published.hiding_bits, max_mask_bits=published.max_mask_bits,
                     slots_per_ciphertext=published.material.layout.slots)
    identity = server_identity or self_signed_server(common_name="ppml-hybrid key service")
    attestor = KeyAttestor.build(producer=producer, published=published, keyservice=ks,
                                 tls_trust_pem=identity.trust_pem, registry=spec.registry)
    servicer = KeyServiceServicer(vault=vault, book=book, registry=spec.registry, published=published,
                                  tls_cert_pem=identity.leaf.cert_pem, share_wait_s=ks.share_wait_s,
                                  noise=NoiseBook(parties=spec.run.parties, request_quota=ks.round_quota,
                                                  max_open_steps=ks.max_open_rounds),
                                  attestor=attestor)
    server, address = start_server_at(
        address=ks.address, credentials=server_credentials(identity=identity, client_ca_pem=spec.client_ca_pem),
        register=lambda s: pb_grpc.add_KeyServiceServicer_to_server(servicer, s), wire_log=spec.wire_log)
    log.info("key service listening on %s", address)
    return RunningKeyService(server=server, address=address, trust_pem=identity.trust_pem,
                             public_material_sha256=published.material.digest(),
                             attestation_root_pem=attestor.development_root_pem, registry=spec.registry)


def resolved_hiding_bits(he: Any) -> int:
    """H from the run spec; the launcher resolves ``he.mask_hiding_bits: null`` before K starts."""
    from ppml_hybrid.errors import ConfigError

    if he.mask_hiding_bits is None:
        raise ConfigError("the key service's run spec must carry a resolved he.mask_hiding_bits (the launcher "
                          "derives it from the run's planned rounds); got null")
    return int(he.mask_hiding_bits)


def _load_or_make_keys(*, spec: Any, kms: Any, producer: Any):
    from ppml_hybrid.errors import ConfigError
    from ppml_hybrid.he_stage.material import PublishedMaterial
    from ppml_hybrid.keyservice.hazmat import KeyVault

    ks = spec.keyservice
    store = None
    if ks.sealed_key_path:
        from ppml_hybrid.keyservice.sealing.seal import seal_vault, unseal_vault
        from ppml_hybrid.keyservice.sealing.sealed import SealedKey
        from ppml_hybrid.keyservice.sealing.store import sealed_store

        if kms is None or not ks.kms_key_id:
            raise ConfigError("keyservice.sealed_key_path needs keyservice.kms_key_id and a KMS client")
        store = sealed_store(ks.sealed_key_path)  # a file, or the parent's store (an enclave has no disk)
        raw = store.read()
        if raw is not None:
            vault, published = unseal_vault(sealed=SealedKey.decode(raw), spec=spec.run, kms=kms, producer=producer,
                                            key_id=ks.kms_key_id)
            log.info("secret key unsealed from %s", store)
            return vault, published
        log.info("no sealed key at %s: making new keys", store)
    vault = KeyVault(spec=spec.run)
    he = spec.run.he
    published = PublishedMaterial(material=vault.public, hiding_bits=resolved_hiding_bits(he),
                                  max_mask_bits=he.max_mask_bits, parties=spec.run.parties)
    if store is not None:
        store.write(seal_vault(vault=vault, published=published, kms=kms, producer=producer,
                               key_id=ks.kms_key_id).encode())
        log.info("secret key sealed to %s", store)
    return vault, published


def cli_kms_client(spec: Any) -> Any:
    """The KMS client of ``python -m ppml_hybrid.keyservice``: AWS KMS when ``keyservice.sealed_key_path`` is set.

    Needs ``kms_key_id``, ``kms_region``, ``attestation: nsm`` and the launch spec's ``aws_credentials``
    (ConfigError otherwise, before any key is generated). The attesting fake KMS is never chosen
    here: tests and development pass it to :func:`start_key_service` in-process.
    """
    if not spec.keyservice.sealed_key_path:
        return None
    from ppml_hybrid.keyservice.sealing.awskms import from_config

    return from_config(keyservice=spec.keyservice, credentials=spec.aws_credentials)


def main() -> int:
    from ppml_hybrid.keyservice.spec import KeyServiceSpec
    from ppml_hybrid.rpc.launch import announce_ready, read_spec

    from ppml_hybrid.rpc.launch import configure_service_logging

    configure_service_logging("K")
    try:
        spec = KeyServiceSpec.from_json(read_spec())
        running = start_key_service(spec=spec, kms=cli_kms_client(spec))
        del spec  # the AWS credentials are needed only while unsealing / sealing at start
    except PPMLError as exc:
        from ppml_hybrid.rpc.launch import announce_failure

        log.error("%s: %s", type(exc).__name__, exc)
        announce_failure(exc)
        return exc.exit_code
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    announce_ready(address=running.address, trust_pem=running.trust_pem,
                   public_material_sha256=running.public_material_sha256,
                   development_attestation_root_pem=(running.attestation_root_pem or b"").decode())
    stop.wait()
    running.stop()
    return 0
