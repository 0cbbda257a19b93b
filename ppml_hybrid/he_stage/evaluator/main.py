"""E's process: read the launch spec, fetch public material from K, check K's attestation
(fresh nonce; code identity, the material E received, the decryption policy and the TLS
channel: ``rpc.keyservice_verify.attest_key_service``, the parties' check), serve, print the ready
line. A rejected attestation stops E before it serves anything (exit code 5)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before openfhe is imported

from ppml_hybrid.errors import PPMLError  # noqa: E402

log = logging.getLogger("ppml_hybrid.he_stage.evaluator")


@dataclass
class RunningEvaluator:
    """E serving in this process: where it listens, the certificate to trust, and ``stop``."""

    address: str
    trust_pem: bytes
    server: Any
    key_client: Any
    encoder: Optional[ThreadPoolExecutor] = None

    def stop(self) -> None:
        self.server.stop(grace=1.0).wait()
        self.key_client.close()
        if self.encoder is not None:
            self.encoder.shutdown(wait=True, cancel_futures=True)


def start_evaluator(spec: Any, *, server_identity: Any = None) -> RunningEvaluator:
    """Fetch and verify K's material, then serve E's API in this process (an ``EvaluatorSpec``).
    ``server_identity``: E's TLS identity (the consortium role's own certificate); default a
    fresh self-signed one (the one-machine launcher reports it in E's ready line)."""
    from ppml_hybrid.he_stage.errors import KeyMaterialError
    from ppml_hybrid.he_stage.evaluator.mask_book import MaskShareBook
    from ppml_hybrid.he_stage.evaluator.server import EvaluatorServicer
    from ppml_hybrid.he_stage.evaluator.store import StepStore
    from ppml_hybrid.he_stage.keys import load_public_material
    from ppml_hybrid.he_stage.keyservice_client import EvaluatorKeyClient
    from ppml_hybrid.he_stage.runspec import run_head, run_layout
    from ppml_hybrid.rpc import evaluator_pb2_grpc as pb_grpc
    from ppml_hybrid.rpc.server import start_server
    from ppml_hybrid.rpc.tls import self_signed_server, server_credentials

    k = EvaluatorKeyClient(address=spec.key_address, server_trust_pem=spec.key_trust_pem,
                           credential=spec.key_credential, wire_log=spec.wire_log)
    published = k.get_public_material()
    _check_key_service(k, published, spec)
    keys = load_public_material(material=published.material)
    layout = run_layout(spec=spec.run, slots=keys.info.slots)
    if layout != keys.layout or published.parties != spec.run.parties:
        raise KeyMaterialError(f"K published layout {keys.layout} for {published.parties} parties; this run needs "
                               f"{layout} for {spec.run.parties}: start K and E with the same run config")
    head = run_head(spec=spec.run, layout=layout)
    missing = set(head.rotation_indices) - set(keys.rotation_indices)
    if missing:
        raise KeyMaterialError(f"K published no rotation keys for {sorted(missing)}; the run configs differ")
    threads = spec.run.he.encoder_threads
    encoder = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="E-encode") if threads else None
    servicer = EvaluatorServicer(
        keys=keys, head=head, registry=spec.registry, key_client=k,
        store=StepStore(max_steps=spec.run.he.max_held_steps),
        masks=MaskShareBook(parties=spec.run.parties, max_rounds=spec.max_mask_rounds),
        hiding_bits=published.hiding_bits, max_mask_bits=published.max_mask_bits, parties=spec.run.parties,
        share_wait_s=spec.share_wait_s, encoder=encoder)
    identity = server_identity or self_signed_server(common_name="ppml-hybrid HE evaluator")
    server, address = start_server(
        address=spec.address, credentials=server_credentials(identity=identity, client_ca_pem=spec.client_ca_pem),
        register=lambda s: pb_grpc.add_EvaluatorServicer_to_server(servicer, s), wire_log=spec.wire_log)
    log.info("HE evaluator listening on %s", address)
    return RunningEvaluator(address=address, trust_pem=identity.trust_pem, server=server, key_client=k,
                            encoder=encoder)


def serve(raw_spec: dict) -> None:
    from ppml_hybrid.he_stage.evaluator.spec import EvaluatorSpec
    from ppml_hybrid.rpc.launch import announce_ready

    running = start_evaluator(EvaluatorSpec.from_json(raw_spec))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    announce_ready(address=running.address, trust_pem=running.trust_pem)
    stop.wait()
    running.stop()


def _check_key_service(client, published, spec) -> None:
    from ppml_hybrid.rpc.keyservice_verify import attest_key_service, development_note
    from ppml_hybrid.rpc.tls import RegistryError

    if spec.key_registry is None:
        raise RegistryError("E was started without the role registry K must attest: refusing to trust K")
    payload = attest_key_service(client=client, published=published, keyservice=spec.keyservice,
                                 development_root_pem=spec.development_root_pem or None,
                                 tls_trust_pem=spec.key_trust_pem, registry=spec.key_registry,
                                 accept_development=spec.accept_development_attestation)
    log.info("verified the key service's attestation%s", development_note(payload))


def main() -> int:
    from ppml_hybrid.rpc.launch import read_spec

    from ppml_hybrid.rpc.launch import configure_service_logging

    configure_service_logging("E")
    try:
        serve(read_spec())
    except PPMLError as exc:
        from ppml_hybrid.rpc.launch import announce_failure

        log.error("%s: %s", type(exc).__name__, exc)
        announce_failure(exc)
        return exc.exit_code
    return 0
