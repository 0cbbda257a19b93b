"""Roles ``keyservice`` (K) and ``evaluator`` (E) of a consortium run.

``python -m ppml_hybrid keyservice ...`` and ``python -m ppml_hybrid evaluator ...`` start the
same K and E as the one-machine launcher, configured from the run config and the consortium
file instead of a launch spec:

* both listen on their consortium address with their own role certificate (what every client
  pins); K's attestation binds that certificate, so a party that verified K knows its channel
  ends in the attested code;
* K decrypts only for the certificates the consortium pins for ``party-0..`` and ``evaluator``
  (its role registry, inside the attested binding); E serves only the parties;
* E dials K as a client with its own key, waits until K answers (key generation can take a
  while), and verifies K's attestation before serving anything;
* the HE run spec (ring, layout capacity, hiding bits) is derived from the config alone
  (:func:`ppml_hybrid.training.plan.he_run_spec`), the same at every role.

Development attestation (no enclave) is a per-host choice: K writes its development signer's
root (public) to ``--development-root-out``; a client accepts it only with
``--accept-development-attestation ROOT.pem`` on its own command line, and says so loudly.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from ppml_hybrid.config import RunConfig
from ppml_hybrid.consortium import Consortium, party_role
from ppml_hybrid.identity import LinkIdentity
from ppml_hybrid.roles.common import check_pinned, read_development_root, service_registry, when_reachable

log = logging.getLogger("ppml_hybrid.roles.services")


def _server_identity(identity: LinkIdentity) -> Any:
    from ppml_hybrid.rpc.tls import Credential, ServerIdentity

    return ServerIdentity(leaf=Credential(cert_pem=identity.cert_pem, key_pem=identity.key_pem),
                          trust_pem=identity.cert_pem)


def _party_certs(consortium: Consortium) -> bytes:
    return b"".join(consortium.role(party_role(j)).cert_pem for j in range(consortium.parties))


def keyservice_spec(cfg: RunConfig, consortium: Consortium, *, address: str) -> Any:
    """K's launch spec from the run config and the consortium's published certificates: the HE
    run spec, whom K serves (every party's and, when blocks run under HE, E's pinned certificate)
    and the registry its attestation binds. Public only: it makes no key for anyone."""
    from ppml_hybrid.keyservice.spec import KeyServiceSpec
    from ppml_hybrid.training.plan import is_all_mpc, key_service_run_spec

    hybrid = not is_all_mpc(cfg)  # all-MPC runs use K for the DP noise only: no E to register
    return KeyServiceSpec(run=key_service_run_spec(cfg), keyservice=dataclasses.replace(cfg.keyservice, address=address),
                          client_ca_pem=_party_certs(consortium) + (consortium.role("evaluator").cert_pem
                                                                    if hybrid else b""),
                          registry=service_registry(consortium, with_evaluator=hybrid))


def _serve_until_signalled(stop_service: Callable[[], None]) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    stop_service()
    return 0


def run_keyservice_role(*, cfg: RunConfig, consortium: Consortium, identity: LinkIdentity,
                        bind_host: Optional[str] = None, development_root_out: Optional[Path] = None) -> int:
    """Generate (or unseal) the keys and serve K until SIGTERM (module doc)."""
    from ppml_hybrid.keyservice.main import cli_kms_client, start_key_service

    check_pinned(identity, consortium, "keyservice")
    me = consortium.role("keyservice")
    spec = keyservice_spec(cfg, consortium, address=f"{bind_host or me.host}:{me.port}")
    running = start_key_service(spec=spec, kms=cli_kms_client(spec), server_identity=_server_identity(identity))
    if running.attestation_root_pem:
        log.warning("K attests with a DEVELOPMENT signer (no enclave): clients refuse it unless their host "
                    "chooses --accept-development-attestation; never for real patients' data")
        if development_root_out is not None:
            _write_public(development_root_out, running.attestation_root_pem)
    log.info("key service (%s) ready on %s; public material %s", cfg.he.name, running.address,
             running.public_material_sha256[:16])
    return _serve_until_signalled(running.stop)


def run_evaluator_role(*, cfg: RunConfig, consortium: Consortium, identity: LinkIdentity,
                       bind_host: Optional[str] = None, development_root: Optional[Path] = None) -> int:
    """Wait for K, verify its attestation, serve E until SIGTERM (module doc)."""
    from ppml_hybrid.he_stage.evaluator.main import start_evaluator
    from ppml_hybrid.he_stage.evaluator.spec import EvaluatorSpec
    from ppml_hybrid.rpc.tls import Credential
    from ppml_hybrid.training.plan import he_run_spec

    check_pinned(identity, consortium, "evaluator")
    me, k = consortium.role("evaluator"), consortium.role("keyservice")
    development_root_pem = (read_development_root(development_root, timeout_s=cfg.keyservice.startup_timeout_s)
                            if development_root is not None else None)
    spec = EvaluatorSpec(
        run=he_run_spec(cfg), key_address=k.address, key_trust_pem=k.cert_pem,
        key_credential=Credential(cert_pem=identity.cert_pem, key_pem=identity.key_pem),
        client_ca_pem=_party_certs(consortium), registry=service_registry(consortium, with_evaluator=False),
        address=f"{bind_host or me.host}:{me.port}", share_wait_s=cfg.keyservice.share_wait_s,
        max_mask_rounds=cfg.keyservice.max_open_rounds, keyservice=cfg.keyservice,
        development_root_pem=development_root_pem or b"",
        key_registry=service_registry(consortium, with_evaluator=True),
        accept_development_attestation=development_root_pem is not None)
    running = when_reachable(lambda: start_evaluator(spec, server_identity=_server_identity(identity)),
                             timeout_s=cfg.keyservice.startup_timeout_s, what=f"the key service at {k.address}")
    log.info("HE evaluator ready on %s", running.address)
    return _serve_until_signalled(running.stop)


def _write_public(path: Path, data: bytes) -> None:
    """Write atomically (readers poll for the file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
